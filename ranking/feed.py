"""The personalised feed as named, single-purpose stages.

    candidates = sources(...)      # where clips come from, each tagged with its source
    kept, removed = filters(...)   # each filter says what it removed and why
    scored = score(...)            # weighted signals; the weights are data
    page = rerank(...)             # diversity (MMR) and an author cap per page

Every stage is a plain function of in-memory state (:class:`~ranking.catalog.Catalog`,
engagement counts, the viewer's graph and taste), so each is testable alone and the
offline evaluator replays the same code the API runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ranking.catalog import Catalog, ClipInfo
from ranking.engagement import KINDS, PRIOR_WEIGHT, REACTION_WEIGHTS, ClipCounts, ContentPrior, quality

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_WEIGHTS_FILE = DATA_DIR / "feed_weights.json"


# ---------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Steering:
    """What a user asked the feed for in words, embedded by the CLIP text tower."""

    text: str
    more: np.ndarray | None = None  # normalised mean of the "more of" phrases
    less: np.ndarray | None = None  # normalised mean of the "less of" phrases
    more_phrases: tuple[str, ...] = ()  # as parsed from the text
    less_phrases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Viewer:
    user_id: str | None
    following: frozenset[str] = frozenset()
    friends: frozenset[str] = frozenset()  # mutual follows
    hidden: frozenset[str] = frozenset()  # blocked either way, or muted
    seen: Collection[str] = frozenset()  # clips already shown to them
    vector: np.ndarray | None = None  # normalised taste, None while cold
    steering: Steering | None = None
    avoid: tuple[np.ndarray, ...] = ()  # clips they asked to see less like
    rejected: Collection[str] = frozenset()  # clips they said "see less" to or reported: never shown again
    liked: tuple[str, ...] = ()  # recently liked clip ids, newest first
    affinity: Mapping[str, float] = field(default_factory=dict)  # author → closeness 0..1


@dataclass
class Candidate:
    clip: ClipInfo
    sources: set[str]
    score: float = 0.0
    vector: np.ndarray | None = field(default=None, repr=False)  # the clip's embedding, set by the scorer
    #: (names, columns, row) of the scorer's feature table: ``features`` reads its row
    #: when asked (explain, evaluation), so scoring hundreds of candidates builds no dicts.
    _table: tuple[Sequence[str], Sequence[np.ndarray], int] | None = field(default=None, repr=False, compare=False)

    @property
    def features(self) -> dict[str, float]:
        if self._table is None:
            return {}
        names, columns, row = self._table
        return {k: float(col[row]) for k, col in zip(names, columns, strict=True)}


@dataclass(frozen=True)
class Removed:
    clip_id: str
    filter: str
    reason: str


@dataclass(frozen=True)
class FeedWeights:
    """Scorer and stage settings; :meth:`load` reads them from a JSON file."""

    similarity: float = 1.0
    steer_more: float = 1.5
    steer_less: float = -2.0
    engagement: float = 0.8
    freshness: float = 0.6
    freshness_half_life_h: float = 24.0
    social: float = 1.2
    cast_me: float = 1.5
    negative: float = -3.0
    exploration: float = 0.25
    mmr_lambda: float = 0.75
    author_cap: int = 2
    exploration_share: float = 0.15
    per_author: int = 4
    followed_max_age_h: float = 168.0
    neighbours: int = 200
    trending: int = 100
    fresh: int = 60
    fresh_max_impressions: int = 50
    prior_like_rate: float = 0.05
    #: Shrink each clip's engagement toward what clips like it earn (a ContentPrior the
    #: state fits on its counts) instead of toward ``prior_like_rate`` alone.
    content_prior: bool = False
    #: Impressions' worth of weight the prior carries against a clip's own counts.
    prior_weight: float = PRIOR_WEIGHT
    #: Ridge penalty of the content prior's fit, in impressions.
    prior_ridge: float = 100.0
    #: Reaction kind → weight in the engagement feature (ranking.engagement.quality).
    reactions: Mapping[str, float] = field(default_factory=lambda: REACTION_WEIGHTS, hash=False)

    @classmethod
    def load(cls, path: Path = DEFAULT_WEIGHTS_FILE) -> FeedWeights:
        data = json.loads(Path(path).read_text())
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known - {"about"}
        if unknown:
            raise ValueError(f"{path}: unknown feed weights {sorted(unknown)}")
        strange = set(data.get("reactions", {})) - set(KINDS)
        if strange:
            raise ValueError(f"{path}: reactions of unknown kinds {sorted(strange)}")
        # The content prior's settings divide and regularise: a zero weight would divide
        # by zero for every clip nobody has been shown, so they are checked here, once.
        if not isinstance(data.get("content_prior", False), bool):
            raise ValueError(f"{path}: content_prior must be true or false, not {data['content_prior']!r}")
        for name, lowest, strict in (("prior_weight", 0.0, True), ("prior_ridge", 0.0, False)):
            value = data.get(name, 1.0)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or value < lowest
                or (strict and value == lowest)
            ):
                bound = "above" if strict else "at least"
                raise ValueError(f"{path}: {name} must be a number {bound} {lowest:g}, not {value!r}")
        return cls(**{k: v for k, v in data.items() if k in known})


# ---------------------------------------------------------------------------- sources
Source = tuple[str, str]  # (clip id, source name)


def source_followed(catalog: Catalog, viewer: Viewer, now: float, w: FeedWeights) -> list[Source]:
    """Recent clips by people the viewer follows; friends (mutuals) tagged apart."""
    since = now - w.followed_max_age_h * 3600
    out: list[Source] = []
    for author in viewer.following:
        name = "friends" if author in viewer.friends else "following"
        out += [(cid, name) for cid in catalog.by_author(author, w.per_author, since)]
    return out


def source_cameos(catalog: Catalog, viewer: Viewer, now: float, w: FeedWeights) -> list[Source]:
    """Clips that cast the viewer or one of their friends."""
    if viewer.user_id is None:
        return []
    since = now - w.followed_max_age_h * 3600
    out = [(cid, "cast_me") for cid in catalog.casting(viewer.user_id, w.per_author * 2, since)]
    for friend in viewer.friends:
        out += [(cid, "cast_friend") for cid in catalog.casting(friend, w.per_author, since)]
    return out


def query_vector(viewer: Viewer, w: FeedWeights) -> np.ndarray | None:
    """Taste plus steering: what the neighbour search looks for."""
    parts = []
    if viewer.vector is not None:
        parts.append(np.asarray(viewer.vector, np.float32))
    if viewer.steering is not None and viewer.steering.more is not None:
        parts.append(w.steer_more * np.asarray(viewer.steering.more, np.float32))
    if not parts:
        return None
    q = np.sum(parts, axis=0)
    if viewer.steering is not None and viewer.steering.less is not None:
        q = q - 0.5 * np.asarray(viewer.steering.less, np.float32)
    norm = float(np.linalg.norm(q))
    return None if norm < 1e-6 else (q / norm).astype(np.float32)


def source_neighbours(catalog: Catalog, viewer: Viewer, w: FeedWeights) -> list[Source]:
    """The clips closest to the viewer's taste (and steering) in the embedding index."""
    q = query_vector(viewer, w)
    if q is None or len(catalog.index) == 0:
        return []
    return [(h.clip_id, "neighbours") for h in catalog.index.search(q, w.neighbours, exclude=viewer.seen)]


def source_trending(trending: Sequence[str], w: FeedWeights) -> list[Source]:
    return [(cid, "trending") for cid in trending[: w.trending]]


def source_fresh(catalog: Catalog, engagement: Mapping[str, ClipCounts], now: float, w: FeedWeights) -> list[Source]:
    """New clips that have not had their chance yet (exploration)."""
    out: list[Source] = []
    for cid in catalog.newest(w.fresh * 4, since=now - 72 * 3600):
        counts = engagement.get(cid)
        if counts is None or counts.total.get("impression", 0) < w.fresh_max_impressions:
            out.append((cid, "fresh"))
            if len(out) >= w.fresh:
                break
    return out


def source_remixes(catalog: Catalog, viewer: Viewer, w: FeedWeights) -> list[Source]:
    """Remixes of clips the viewer liked."""
    out: list[Source] = []
    for cid in viewer.liked[:20]:
        out += [(r, "remixes") for r in catalog.remixes_of(cid, w.per_author)]
    return out


def gather(catalog: Catalog, sources: Iterable[Source]) -> list[Candidate]:
    """Candidates hydrated from the catalogue, one per clip, with every source that named it."""
    by_id: dict[str, Candidate] = {}
    for cid, name in sources:
        cand = by_id.get(cid)
        if cand is None:
            info = catalog.get(cid)
            if info is None:
                continue  # removed between the source and now
            by_id[cid] = Candidate(info, {name})
        else:
            cand.sources.add(name)
    return list(by_id.values())


# ---------------------------------------------------------------------------- filters
Filter = Callable[[Candidate], str | None]  # a reason to remove, or None to keep


def filters_for(viewer: Viewer, catalog: Catalog, served: Container[str] = frozenset()) -> list[tuple[str, Filter]]:
    def seen(c: Candidate) -> str | None:
        if c.clip.clip_id in served:
            return "already on an earlier page"
        return "already seen" if c.clip.clip_id in viewer.seen else None

    def rejected(c: Candidate) -> str | None:
        return "viewer asked to see less of it or reported it" if c.clip.clip_id in viewer.rejected else None

    def hidden_author(c: Candidate) -> str | None:
        return "author blocked or muted" if c.clip.author_id in viewer.hidden else None

    def live(c: Candidate) -> str | None:
        return None if c.clip.clip_id in catalog else "no longer published"

    def own(c: Candidate) -> str | None:
        return "viewer's own clip" if viewer.user_id is not None and c.clip.author_id == viewer.user_id else None

    return [("live", live), ("hidden_author", hidden_author), ("rejected", rejected), ("seen", seen), ("own", own)]


def apply_filters(
    candidates: Sequence[Candidate], named: Sequence[tuple[str, Filter]]
) -> tuple[list[Candidate], list[Removed]]:
    kept: list[Candidate] = []
    removed: list[Removed] = []
    for cand in candidates:
        for name, check in named:
            reason = check(cand)
            if reason is not None:
                removed.append(Removed(cand.clip.clip_id, name, reason))
                break
        else:
            kept.append(cand)
    return kept, removed


# ---------------------------------------------------------------------------- scorer
def embeddings(candidates: Sequence[Candidate], catalog: Catalog | None = None) -> np.ndarray:
    """The candidates' embeddings as one matrix (zeros where a clip has none), read from
    the index's vector store in one gather when ``catalog`` is given; each candidate's
    ``vector`` is set to its row."""
    matrix: np.ndarray | None = None
    if catalog is not None and len(catalog.index):
        matrix = catalog.index.vectors([c.clip.clip_id for c in candidates])
    if matrix is None:
        dim = next((len(c.clip.embedding) for c in candidates if c.clip.embedding is not None), 1)
        matrix = np.zeros((len(candidates), dim), np.float32)
        for i, c in enumerate(candidates):
            if c.clip.embedding is not None:
                matrix[i] = c.clip.embedding
    for i, c in enumerate(candidates):
        c.vector = matrix[i]
    return matrix


def score(
    candidates: Sequence[Candidate],
    viewer: Viewer,
    engagement: Mapping[str, ClipCounts],
    now: float,
    w: FeedWeights,
    catalog: Catalog | None = None,
    prior: ContentPrior | None = None,
) -> list[Candidate]:
    """Features and a weighted score for each candidate, best first. Similarities are
    computed for all candidates at once (one matrix product each). With ``prior``, each
    clip's engagement shrinks toward the rate it predicts from the clip's embedding."""
    if not candidates:
        return []
    decay = math.log(2) / (w.freshness_half_life_h * 3600)
    e = embeddings(candidates, catalog)
    n = len(candidates)
    zeros = np.zeros(n, np.float32)

    def cos(v: np.ndarray | None) -> np.ndarray:
        return e @ np.asarray(v, np.float32) if v is not None else zeros

    s = viewer.steering
    rate, reactions, strength = w.prior_like_rate, w.reactions, w.prior_weight
    expected: Sequence[float | None] = prior.predict(e).tolist() if prior is not None else [None] * n
    friends, following, affinity = viewer.friends, viewer.following, viewer.affinity
    features = {
        "similarity": cos(viewer.vector),
        "steer_more": cos(s.more if s is not None else None),
        "steer_less": cos(s.less if s is not None else None),
        "negative": (e @ np.stack(viewer.avoid).T).max(axis=1) if viewer.avoid else zeros,
        "engagement": np.fromiter(
            (
                quality(engagement.get(c.clip.clip_id), rate, reactions, x, strength)
                for c, x in zip(candidates, expected, strict=True)
            ),
            np.float64,
            n,
        ),
        "freshness": np.exp(
            -decay * np.maximum(0.0, now - np.fromiter((c.clip.published_at for c in candidates), np.float64, n))
        ),
        "social": np.fromiter(
            (
                max(1.0 if a in friends else 0.6 if a in following else 0.0, float(affinity.get(a, 0.0)))
                for a in (c.clip.author_id for c in candidates)
            ),
            np.float64,
            n,
        ),
        "cast_me": np.fromiter(
            (1.0 if "cast_me" in c.sources else 0.5 if "cast_friend" in c.sources else 0.0 for c in candidates),
            np.float64,
            n,
        ),
        "exploration": np.fromiter(("fresh" in c.sources for c in candidates), np.float64, n),
    }
    total = (
        w.similarity * features["similarity"]
        + w.steer_more * features["steer_more"]
        + w.steer_less * np.maximum(0.0, features["steer_less"])
        + w.negative * np.maximum(0.0, features["negative"])
        + w.engagement * features["engagement"]
        + w.freshness * features["freshness"]
        + w.social * features["social"]
        + w.cast_me * features["cast_me"]
        + w.exploration * features["exploration"]
    ).tolist()
    names = list(features)
    columns = [features[k] for k in names]
    for i, c in enumerate(candidates):
        c.score = total[i]
        c._table = (names, columns, i)
    return sorted(candidates, key=lambda c: (-c.score, c.clip.clip_id))


# ---------------------------------------------------------------------------- re-rank
def rerank(
    candidates: Sequence[Candidate], limit: int, w: FeedWeights, emb: np.ndarray | None = None
) -> list[Candidate]:
    """Maximal marginal relevance over clip embeddings (``emb``, one row per candidate,
    or the candidates' own vectors), at most ``author_cap`` clips per author and a
    bounded share of exploration slots for fresh clips. When the caps would leave the
    page short (a new user, a small catalogue), the exploration cap is lifted first,
    then the author cap: a full page beats an empty one."""
    pool = list(candidates)
    if not pool:
        return []
    scores = np.array([c.score for c in pool], np.float64)
    # Scaled to 0..1 only when scores spread over more than one unit: near-ties (a cold
    # start, where clips differ by seconds of freshness) must not be stretched into a
    # full range that would drown the diversity term.
    spread = max(float(scores.max() - scores.min()), 1.0)
    relevance = (scores - scores.min()) / spread
    if emb is None:
        if all(c.vector is not None for c in pool):
            emb = np.stack([c.vector for c in pool])  # type: ignore[misc]
        else:
            emb = embeddings(pool)
    # MMR = λ·relevance − (1−λ)·max(0, highest similarity to a chosen clip); the penalty
    # only grows, so it is kept in place: one matrix-vector product a pick.
    gain = (w.mmr_lambda * relevance).astype(np.float32)
    penalty = np.zeros(len(pool), np.float32)
    mmr = np.empty(len(pool), np.float32)
    chosen: list[Candidate] = []
    per_author: dict[str, int] = {}
    used = np.zeros(len(pool), bool)
    explored = 0
    for explore_slots, author_cap in [
        (max(1, round(w.exploration_share * limit)), w.author_cap),
        (limit, w.author_cap),
        (limit, limit),
    ]:
        closed = used.copy()  # chosen, or skipped in this pass
        while len(chosen) < limit:
            np.subtract(gain, penalty, out=mmr)
            mmr[closed] = -np.inf
            best = int(np.argmax(mmr))
            if mmr[best] == -np.inf:
                break
            closed[best] = True
            c = pool[best]
            only_fresh = c.sources == {"fresh"}
            if per_author.get(c.clip.author_id, 0) >= author_cap or (only_fresh and explored >= explore_slots):
                continue
            chosen.append(c)
            used[best] = True
            explored += only_fresh
            per_author[c.clip.author_id] = per_author.get(c.clip.author_id, 0) + 1
            sims = emb @ emb[best]
            sims *= 1.0 - w.mmr_lambda
            np.maximum(penalty, sims, out=penalty)
        if len(chosen) >= limit:
            break
    return chosen


# ---------------------------------------------------------------------------- the request
@dataclass
class FeedResult:
    page: list[Candidate]
    removed: list[Removed]
    candidates: int
    by_source: dict[str, int]

    def explain(self) -> list[dict[str, Any]]:
        return [
            {"clip_id": c.clip.clip_id, "score": round(c.score, 4), "sources": sorted(c.sources), **c.features}
            for c in self.page
        ]


def build_feed(
    catalog: Catalog,
    viewer: Viewer,
    engagement: Mapping[str, ClipCounts],
    trending: Sequence[str],
    now: float,
    limit: int = 20,
    weights: FeedWeights | None = None,
    served: Container[str] = frozenset(),
    prior: ContentPrior | None = None,
) -> FeedResult:
    """One page of the viewer's feed: sources → filters → scorer → re-rank (``prior``:
    the content prior of the engagement feature, see :func:`score`)."""
    w = weights or FeedWeights()
    raw: list[Source] = []
    raw += source_followed(catalog, viewer, now, w)
    raw += source_cameos(catalog, viewer, now, w)
    raw += source_neighbours(catalog, viewer, w)
    raw += source_trending(trending, w)
    raw += source_fresh(catalog, engagement, now, w)
    raw += source_remixes(catalog, viewer, w)
    by_source: dict[str, int] = {}
    for _, name in raw:
        by_source[name] = by_source.get(name, 0) + 1
    candidates = gather(catalog, raw)
    kept, removed = apply_filters(candidates, filters_for(viewer, catalog, served))
    ranked = score(kept, viewer, engagement, now, w, catalog, prior)
    page = rerank(ranked, limit, w)
    return FeedResult(page, removed, len(candidates), by_source)
