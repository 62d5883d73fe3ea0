"""KuaiRand-1K's random-exposure log, replayed through the online ranking code.

KuaiRand (Gao et al., "KuaiRand: An Unbiased Sequential Recommendation Dataset with
Randomly Exposed Videos", CIKM 2022; CC BY-SA 4.0) logged what 1,000 Kuaishou users did
with videos inserted into their feeds **at random**: which videos a user was shown does
not depend on any recommender, so ranking a user's held-out impressions measures a
ranker without the exposure bias of an ordinary log. The CSVs live in
``shared/data/ranking`` (its README describes them); they are read where they are and
never copied into the repository.

Protocol (:func:`evaluate`):

1. every video becomes a :class:`~core.records.ClipPublished` at its upload date, its
   embedding a vector of its features (:class:`ItemFeatures`: tags, video type, upload
   type, music type, duration bucket, each a one-hot block, L2-normalised);
2. one global time splits the log (:func:`split_times`): rows before it become
   :class:`~core.records.Interaction` records (:class:`LogMapping`) and are replayed in
   time order through :class:`~ranking.state.RankingState`;
3. each user's impressions after the split are the candidates: the online scorer orders
   them (:class:`~ranking.offline.FeedScorer`), so do the baselines, and per signal
   (``is_click``, ``long_view``, ``is_like``) each ordering gets a per-user AUC and
   NDCG@10 (binary relevance), averaged over users with a positive (and, for AUC, a
   negative).

Choices that could be tuned are tuned on a validation split carved from the training
period only (:func:`validation_times`, :func:`tune`); the test period is read once, with
the configuration validation chose.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from core.records import ClipMedia, ClipPublished, GeneratorInfo, Interaction
from ranking.engagement import REACTION_WEIGHTS
from ranking.feed import FeedWeights
from ranking.index import ClipIndex
from ranking.offline import (
    FeedScorer,
    MostPopular,
    NewestFirst,
    OfflineEvalError,
    RandomOrder,
    Ranker,
    RankingQuestion,
    RankingResult,
    Replay,
    Summary,
    cutoff_at,
    evaluate_rankings,
)
from ranking.signals import SignalWeights
from ranking.state import RankingState

if TYPE_CHECKING:
    import polars as pl

#: ``shared/data/ranking`` beside the repository (``/work/shared/data/ranking``).
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ranking"
LOG_FILE = "kuairand_1k_log_random.csv"
VIDEOS_FILE = "kuairand_video_features_basic.csv"
SIGNALS = ("is_click", "long_view", "is_like")
ATTRIBUTION = (
    'KuaiRand (Gao et al., "KuaiRand: An Unbiased Sequential Recommendation Dataset with Randomly '
    'Exposed Videos", CIKM 2022), CC BY-SA 4.0'
)
#: Epoch ms in the log are absolute; upload dates are calendar days in Beijing time.
BEIJING = timezone(timedelta(hours=8))
#: Ids in the replayed records: stable UUIDs derived from KuaiRand's integers.
NAMESPACE = uuid.UUID("0b7f4d2c-6a51-4e0f-9d3a-2f8c1e5b7a90")
#: Upper edges (seconds) of the duration buckets.
DURATION_EDGES_S = (7.0, 15.0, 30.0, 60.0, 120.0, 300.0)
MAX_WATCH_MS = 24 * 3600 * 1000
#: Engagement that counts a view as a good reaction: in KuaiRand a view is a click, a
#: choice the user made (the online weights count only completions, likes and shares,
#: because Clipstream's client reports a view for every autoplay). Skips then add
#: nothing a view does not already say (every impression is one or the other).
CLICK_REACTIONS: Mapping[str, float] = {**REACTION_WEIGHTS, "view": 1.0, "skip": 0.0}


class DatasetMissingError(OfflineEvalError):
    """The KuaiRand CSVs are not where they were looked for."""


def clip_uuid(video_id: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"video:{video_id}")


def user_uuid(user_id: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"user:{user_id}")


def author_uuid(author_id: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"author:{author_id}")


# ---------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class KuaiRand:
    """The log (one row per random impression, in time order) and the video features."""

    log: pl.DataFrame
    videos: pl.DataFrame
    source: Path

    @property
    def times(self) -> np.ndarray:
        """Impression times, epoch seconds."""
        return self.log["time_ms"].to_numpy() / 1000.0


def load(data_dir: Path | str | None = None, users: int | None = None) -> KuaiRand:
    """Read the two CSVs with polars. The one row the source repeats is dropped; rows
    are sorted by time. ``users``: keep only the first that many user ids (a slice)."""
    import polars as pl

    folder = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    log_path, videos_path = folder / LOG_FILE, folder / VIDEOS_FILE
    missing = [p.name for p in (log_path, videos_path) if not p.is_file()]
    if missing:
        raise DatasetMissingError(f"KuaiRand data not found in {folder}: missing {', '.join(missing)}")
    log = pl.read_csv(log_path).unique(maintain_order=True)
    if users is not None:
        log = log.filter(pl.col("user_id") < users)
    log = log.sort("time_ms", "user_id", "video_id", maintain_order=True)
    videos = pl.read_csv(videos_path, schema_overrides={"tag": pl.String})
    return KuaiRand(log=log, videos=videos, source=folder)


# ---------------------------------------------------------------------------- items
@dataclass(frozen=True)
class ItemFeatures:
    """Which features make a video's vector, and how much each block weighs (a block is
    one-hot, or multi-hot over tags, scaled to its weight; 0 leaves it out)."""

    tag: float = 1.0
    video_type: float = 0.0
    upload_type: float = 0.0
    music_type: float = 0.0
    duration: float = 0.0
    #: Subtract the catalogue's mean vector before normalising: what every video shares
    #: (the common upload type, music type, …) then says nothing, so a taste built mostly
    #: from skips does not turn against the features every video has.
    center: bool = False

    def blocks(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items() if k != "center" and v}

    def label(self) -> str:
        used = [f"{k}={v:g}" for k, v in self.blocks().items()]
        return ",".join(used) + (",centered" if self.center else "") if used else "none"


def _duration_bucket(duration_ms: float | None) -> str:
    if duration_ms is None or not math.isfinite(duration_ms):
        return "unknown"
    seconds = duration_ms / 1000.0
    for i, edge in enumerate(DURATION_EDGES_S):
        if seconds < edge:
            return f"<{edge:g}s" if i == 0 else f"{DURATION_EDGES_S[i - 1]:g}-{edge:g}s"
    return f">{DURATION_EDGES_S[-1]:g}s"


def _tokens(row: Mapping[str, Any]) -> dict[str, list[str]]:
    tags = [t for t in str(row.get("tag") or "").split(",") if t.strip()]
    music = row.get("music_type")
    return {
        "tag": tags or ["none"],
        "video_type": [str(row.get("video_type"))],
        "upload_type": [str(row.get("upload_type"))],
        "music_type": ["none" if music is None else f"{float(music):g}"],
        "duration": [_duration_bucket(row.get("duration"))],
    }


def item_vectors(videos: pl.DataFrame, features: ItemFeatures) -> tuple[list[int], np.ndarray]:
    """(video ids, one L2-normalised vector per video) from the feature table; the
    vocabulary of each block is every value the table holds (no log is read, so the
    vectors cannot leak anything about interactions)."""
    rows = videos.to_dicts()
    weights = features.blocks()
    if not weights:
        raise OfflineEvalError("item features need at least one block with a weight")
    tokens = [_tokens(r) for r in rows]
    offsets: dict[tuple[str, str], int] = {}
    for block in weights:
        for value in sorted({v for t in tokens for v in t[block]}):
            offsets[(block, value)] = len(offsets)
    matrix = np.zeros((len(rows), len(offsets)), np.float32)
    for i, t in enumerate(tokens):
        for block, w in weights.items():
            values = t[block]
            for value in values:
                matrix[i, offsets[(block, value)]] = w / math.sqrt(len(values))
    if features.center:
        matrix -= matrix.mean(axis=0, keepdims=True)
    matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
    return [int(r["video_id"]) for r in rows], matrix


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class LogMapping:
    """How one KuaiRand row becomes Clipstream interactions. Every row is an
    ``impression``; a clicked row is a ``view`` with its play time as watch time; an
    unclicked row (the video auto-played for ~2 s and the user moved on) is what
    ``unclicked`` says: another ``view`` with its play time (what the web client reports
    whenever playback stops), a ``skip``, or nothing more. Likes, forwards, comments and
    hates map to ``like``, ``share``, ``comment`` and ``see_less``."""

    unclicked: Literal["view", "skip", "impression"] = "view"


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, UTC)


def _rows_between(log: pl.DataFrame, start: float, end: float) -> pl.DataFrame:
    """Rows with start <= time < end (epoch seconds; split points are impression times,
    so rounding to whole milliseconds recovers them exactly)."""
    import polars as pl

    keep = pl.lit(True)
    if math.isfinite(start):
        keep = keep & (pl.col("time_ms") >= round(start * 1000))
    if math.isfinite(end):
        keep = keep & (pl.col("time_ms") < round(end * 1000))
    return log.filter(keep)


def published_records(
    videos: pl.DataFrame, features: ItemFeatures, durations: Mapping[int, int]
) -> list[ClipPublished]:
    """One ClipPublished per video, at midnight (Beijing) of its upload date, carrying
    its feature vector as the embedding. ``durations`` (video → ms, from the log) fills
    a missing ``video_duration``."""
    import polars as pl

    _, matrix = item_vectors(videos.with_columns(pl.col("video_duration").alias("duration")), features)
    generator = GeneratorInfo(name="kuairand", version="1k-random", seed=0, render_ms=0)
    model = f"kuairand-features:{features.label()}"
    out = []
    for row, vec in zip(videos.iter_rows(named=True), matrix, strict=True):
        vid = int(row["video_id"])
        duration = row["video_duration"] or durations.get(vid) or 10_000
        day = datetime.strptime(str(row["upload_dt"]), "%Y-%m-%d").replace(tzinfo=BEIJING)
        media = ClipMedia(
            video_key=f"kuairand/{vid}.mp4", poster_key=f"kuairand/{vid}.jpg", frame_keys=[], frame_indices=[],
            mime_type="video/mp4", width=int(row["server_width"] or 720), height=int(row["server_height"] or 1280),
            fps=30, frame_count=0, duration_s=float(duration) / 1000.0, sha256="0" * 64,
        )  # fmt: skip
        out.append(
            ClipPublished(
                clip_id=clip_uuid(vid), prompt_id=uuid.uuid5(NAMESPACE, f"prompt:{vid}"),
                user_id=author_uuid(int(row["author_id"])), creator_handle=f"author{row['author_id']}",
                text=f"tags {row['tag']}", media=media, generator=generator, checks=[],
                embedding=[float(x) for x in vec], embedding_model=model, occurred_at=day.astimezone(UTC),
            )
        )  # fmt: skip
    return out


def interaction_records(rows: Iterable[Mapping[str, Any]], mapping: LogMapping) -> Iterator[Interaction]:
    """The interactions of log rows, in row order (an impression before its view)."""
    for row in rows:
        user, clip, at = user_uuid(int(row["user_id"])), clip_uuid(int(row["video_id"])), _at(int(row["time_ms"]))
        watch = min(max(int(row["play_time_ms"] or 0), 0), MAX_WATCH_MS)
        yield Interaction(user_id=user, clip_id=clip, kind="impression", occurred_at=at)
        if row["is_click"] or mapping.unclicked == "view":
            yield Interaction(user_id=user, clip_id=clip, kind="view", watch_ms=watch, occurred_at=at)
        elif mapping.unclicked == "skip":
            yield Interaction(user_id=user, clip_id=clip, kind="skip", watch_ms=watch, occurred_at=at)
        for column, kind in (("is_like", "like"), ("is_forward", "share"), ("is_comment", "comment"),
                             ("is_hate", "see_less")):  # fmt: skip
            if row[column]:
                yield Interaction(user_id=user, clip_id=clip, kind=kind, occurred_at=at)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- protocol
def split_times(data: KuaiRand, fraction: float = 0.8) -> float:
    """The global time (epoch s) before which ``fraction`` of the impressions lie."""
    return cutoff_at(data.times, fraction)


def validation_times(data: KuaiRand, fraction: float = 0.8) -> tuple[float, float]:
    """(fit until, validate until): the training period (before :func:`split_times`)
    split again at the same fraction of its impressions. The test period is not read."""
    train_until = split_times(data, fraction)
    times = data.times
    return cutoff_at(times[times < train_until], fraction), train_until


def questions(data: KuaiRand, start: float, end: float) -> list[RankingQuestion]:
    """Per user with impressions in [start, end): the distinct videos shown, with each
    signal's label (a video shown twice is positive if either showing was)."""
    import polars as pl

    window = _rows_between(data.log, start, end)
    per_video = (
        window.group_by("user_id", "video_id", maintain_order=True)
        .agg(*[pl.col(s).max() for s in SIGNALS])
        .group_by("user_id", maintain_order=True)
        .agg(pl.col("video_id"), *[pl.col(s) for s in SIGNALS])
        .sort("user_id")
    )
    out = []
    for row in per_video.iter_rows(named=True):
        out.append(
            RankingQuestion(
                user_id=str(user_uuid(int(row["user_id"]))),
                candidates=tuple(str(clip_uuid(int(v))) for v in row["video_id"]),
                labels={s: tuple(float(x) for x in row[s]) for s in SIGNALS},
            )
        )
    return out


def positives(data: KuaiRand, until: float) -> dict[str, dict[str, float]]:
    """Per signal, clip id → positives before ``until``: what popularity ranks by."""
    import polars as pl

    before = _rows_between(data.log, float("-inf"), until)
    out: dict[str, dict[str, float]] = {}
    for s in SIGNALS:
        counts = before.group_by("video_id").agg(pl.col(s).sum())
        out[s] = {str(clip_uuid(int(v))): float(n) for v, n in counts.iter_rows() if n}
    return out


@dataclass(frozen=True)
class Variant:
    """One configuration of the ranker under test: item vector, log mapping, taste
    signal weights (these three shape the replayed state), the scorer's weights, and
    whether the engagement prior is the replayed log's own average
    (:func:`~ranking.offline.empirical_prior`) instead of ``weights.prior_like_rate``."""

    features: ItemFeatures = ItemFeatures()
    mapping: LogMapping = LogMapping()
    signals: SignalWeights = field(default_factory=SignalWeights)
    weights: FeedWeights = field(default_factory=FeedWeights.load)
    diversify: bool = True
    empirical_prior: bool = False

    def label(self) -> str:
        default = FeedWeights.load()
        changed = [
            f"{k}={v:g}" for k, v in self.weights.__dict__.items() if k != "reactions" and v != getattr(default, k)
        ]
        if self.weights.reactions is not default.reactions and dict(self.weights.reactions) != dict(default.reactions):
            changed.append(
                "reactions=click-through" if self.weights.reactions == CLICK_REACTIONS else "reactions=custom"
            )
        if self.empirical_prior:
            changed.append("prior=empirical")
        return (
            f"features[{self.features.label()}] unclicked={self.mapping.unclicked} "
            f"scorer[{', '.join(changed) or 'online defaults'}]"
        )


def replayed_state(data: KuaiRand, until: float, variant: Variant) -> RankingState:
    """A RankingState fed every video and every interaction before ``until``, in time order."""
    import polars as pl

    durations = dict(data.log.group_by("video_id").agg(pl.col("duration_ms").max()).iter_rows())
    clips = published_records(data.videos, variant.features, durations)
    dim = len(clips[0].embedding or ())
    state = RankingState(dim, index=ClipIndex(dim), weights=variant.signals)
    train = _rows_between(data.log, float("-inf"), until)
    replay = Replay(state, [*clips, *interaction_records(train.iter_rows(named=True), variant.mapping)])
    replay.advance(until)
    return state


def baselines(data: KuaiRand, until: float, seed: int = 0) -> list[Ranker]:
    """Random, newest upload first, and per signal the videos with the most training
    positives of that signal."""
    pop = positives(data, until)
    out: list[Ranker] = [RandomOrder(seed), NewestFirst(seed)]
    out += [MostPopular(counts=pop[s], seed=seed, signal=s) for s in SIGNALS]
    return out


def evaluate(
    data: KuaiRand,
    train_until: float,
    test_until: float | None,
    variants: Sequence[Variant],
    *,
    names: Sequence[str] | None = None,
    with_baselines: bool = True,
    k: int = 10,
    seed: int = 0,
) -> RankingResult:
    """Replay the log before ``train_until`` and rank each user's impressions in
    [train_until, test_until) with every variant of the online scorer (variants that
    share a replayed state share one replay) and the baselines."""
    end = float("inf") if test_until is None else test_until
    qs = questions(data, train_until, end)
    if not qs:
        raise OfflineEvalError("no impressions after the split: nothing to evaluate")
    names = list(names or [f"ranker[{i}]" if len(variants) > 1 else "ranker" for i in range(len(variants))])
    result = RankingResult(k)
    by_state: dict[tuple[ItemFeatures, LogMapping, str], list[int]] = {}
    for i, v in enumerate(variants):
        by_state.setdefault((v.features, v.mapping, repr(v.signals)), []).append(i)
    state = None
    for indices in by_state.values():
        state = replayed_state(data, train_until, variants[indices[0]])
        scorers: list[Ranker] = [
            FeedScorer(
                variants[i].weights,
                diversify=variants[i].diversify,
                name=names[i],
                prior_from_log=variants[i].empirical_prior,
            )
            for i in indices
        ]
        part = evaluate_rankings(state, qs, scorers, train_until, k)
        result.auc.update(part.auc)
        result.ndcg.update(part.ndcg)
    if with_baselines and state is not None:
        part = evaluate_rankings(state, qs, baselines(data, train_until, seed), train_until, k)
        result.auc.update(part.auc)
        result.ndcg.update(part.ndcg)
    return result


def objective(result: RankingResult, ranker: str) -> float:
    """What validation maximises: (AUC + NDCG@k) / 2 per signal, averaged over signals
    weighted by how many users each was measured on, so a signal seen by twenty users
    (likes) cannot outvote one seen by four hundred (clicks) with its noise."""
    total = weight = 0.0
    for signal in result.auc[ranker]:
        a = Summary.of(result.auc[ranker][signal].values())
        n = Summary.of(result.ndcg[ranker][signal].values())
        if a.n and n.n:
            total += a.n * a.mean / 2 + n.n * n.mean / 2
            weight += (a.n + n.n) / 2
    return total / weight if weight else float("nan")


def default_grid(quick: bool = False) -> list[Variant]:
    """The configurations validation chooses from: which features make the item vector,
    what an unclicked impression says, which reactions count as engagement and how much
    the scorer trusts engagement against taste (the online defaults are in the grid).
    ``quick``: a smaller grid (the centred tag vector, two mappings)."""
    online = FeedWeights.load()
    clicks = replace(online, reactions=CLICK_REACTIONS)
    feature_sets = [ItemFeatures(tag=1.0, center=True)]
    if not quick:
        feature_sets = [
            ItemFeatures(tag=1.0),
            *feature_sets,
            ItemFeatures(tag=1.0, video_type=0.5, upload_type=0.5, music_type=0.5, duration=0.5, center=True),
        ]
    scorers = [
        (online, False),
        (clicks, True),
        (replace(clicks, engagement=2.0), True),
        (replace(clicks, similarity=0.25, engagement=2.0), True),
        (replace(clicks, similarity=0.0), True),
    ]
    # The engagement feature shrunk toward what videos with these features earn (a
    # content prior) instead of toward the catalogue's rate: a video here has about
    # four training impressions, so its own counts say little.
    blended = replace(clicks, similarity=0.25, engagement=2.0, content_prior=True)
    scorers += [
        (replace(blended, prior_ridge=ridge, prior_weight=strength), True)
        for ridge in ((100.0,) if quick else (10.0, 100.0, 1000.0))
        for strength in ((20.0,) if quick else (10.0, 20.0, 40.0))
    ]
    mappings: list[Literal["view", "skip", "impression"]] = (
        ["skip", "view"] if quick else ["skip", "view", "impression"]
    )
    return [
        Variant(features=f, mapping=LogMapping(unclicked=u), weights=w, empirical_prior=e)
        for f in feature_sets
        for u in mappings
        for w, e in scorers
    ]


@dataclass
class Tuning:
    """Every variant's validation result and the one chosen."""

    variants: list[Variant]
    result: RankingResult
    scores: list[float]

    @property
    def best(self) -> Variant:
        return self.variants[int(np.argmax(self.scores))]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"variant": v.label(), "objective": s, **self._means(f"ranker[{i}]")}
            for i, (v, s) in enumerate(zip(self.variants, self.scores, strict=True))
        ]

    def _means(self, name: str) -> dict[str, float]:
        out = {}
        for signal in self.result.auc[name]:
            out[f"auc {signal}"] = Summary.of(self.result.auc[name][signal].values()).mean
            out[f"ndcg {signal}"] = Summary.of(self.result.ndcg[name][signal].values()).mean
        return out


def tune(data: KuaiRand, grid: Sequence[Variant] | None = None, fraction: float = 0.8) -> Tuning:
    """Evaluate every variant on the validation split (training period only)."""
    variants = list(grid if grid is not None else default_grid())
    fit_until, val_until = validation_times(data, fraction)
    names = [f"ranker[{i}]" for i in range(len(variants))]
    result = evaluate(data, fit_until, val_until, variants, names=names)
    return Tuning(variants, result, [objective(result, n) for n in names])
