"""Simulated users with latent tastes over the generator's vocabulary, for offline
evaluation of the whole feed, CLIP embeddings included.

The world (:func:`build_world`):

* a catalogue of prompts the procedural renderer understands ("a fox running in the
  forest at night"), one or two subjects and a scene each, by a few dozen creators,
  published over ``days`` (a good part on day one). The truth about a clip is what the
  renderer's own parser read from its prompt (``Vocabulary.parse``), as the frame
  filter's training data does;
* each clip's embedding is what production computes (:func:`clip_embeddings`): rendered
  at production size, encoded to H.264, decoded and scanned by the shipped frame filter
  (``FrameFilter.scan_video`` on the same frames); a clip the filter would not publish
  is left out. Embeddings are cached on disk under ``var/cache/ranking-sim``, keyed by
  the prompts, the renderer version and the frame model's weights;
* each user likes a few subjects and scenes (latent, never shown to the ranker); their
  liking of a clip is a logistic function of how well it matches, plus the clip's own
  appeal that everybody shares (so popularity is a fair baseline, not a straw man);
* the log: users come in sessions and are shown clips **at random** from what is live
  and unseen (the exposure does not depend on any ranker, as in KuaiRand), and react
  by their taste: an impression, then a view with its watch time or a quick skip, a
  like drawn from their liking, now and then "see less" for a clip far from their taste.

Evaluation (:func:`evaluate`): the log is replayed in time order through
:class:`~ranking.state.RankingState`; at each checkpoint every user who has been active
gets a page of ten from :func:`ranking.feed.build_feed` and from each baseline over the
same live, unseen clips, judged by the user's true liking (NDCG@10), the clips they
would like (Recall@10), catalogue coverage and intra-list diversity of CLIP embeddings.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.records import ClipMedia, ClipPublished, GeneratorInfo, Interaction
from generation.vocabulary import Vocabulary, default_vocabulary
from ranking.feed import FeedWeights
from ranking.offline import (
    FeedPages,
    MostPopular,
    NewestFirst,
    PageQuestion,
    PageResult,
    RandomOrder,
    Ranker,
    Replay,
    evaluate_pages,
    time_ordered,
)
from ranking.state import RankingState

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = ROOT / "var" / "cache" / "ranking-sim"
EPOCH = datetime(2026, 1, 5, tzinfo=UTC).timestamp()
NAMESPACE = uuid.UUID("5e1f3c9a-2b7d-4c61-8a0e-9d4b6f2a1c37")
DAY_S = 86_400.0
CLIP_SECONDS = 3.0  # the procedural renderer's production clips
MOTIONS = ["", "", "walking", "running", "jumping", "floating", "spinning", "dancing"]
TIMES = ["", "", "", "at night", "at sunset", "in the morning"]

#: An embedder: clips → (clip id → normalised embedding of the clips it would publish).
Embedder = Callable[[Sequence["SimClip"]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class SimConfig:
    clips: int = 300
    users: int = 200
    creators: int = 40
    days: float = 10.0
    launch_share: float = 0.4  # of the catalogue published at the start
    sessions_per_day: float = 1.2
    session_length: int = 6
    subjects: int = 24  # distinct safe subjects the catalogue draws from
    scenes: int = 8
    favourite_subjects: int = 3
    favourite_scenes: int = 2
    like_threshold: float = 0.8  # utility at which a like is a coin toss
    like_slope: float = 8.0
    checkpoints: tuple[float, ...] = (0.5, 0.75, 1.0)  # shares of the log's time span
    seed: int = 0

    @classmethod
    def quick(cls) -> SimConfig:
        return cls(clips=120, users=80, creators=20, days=6.0, subjects=12, scenes=6)


@dataclass(frozen=True)
class SimClip:
    clip_id: str
    prompt: str
    seed: int
    creator: int
    subjects: tuple[str, ...]
    scene: str | None
    published_at: float


@dataclass
class SimUser:
    user_id: str
    subjects: dict[str, float]  # latent liking of each subject
    scenes: dict[str, float]


@dataclass
class World:
    config: SimConfig
    clips: list[SimClip]
    users: list[SimUser]
    appeal: dict[str, float]
    embeddings: dict[str, np.ndarray]
    records: list[Any] = field(default_factory=list)

    @property
    def end(self) -> float:
        return EPOCH + self.config.days * DAY_S

    def utility(self, user: SimUser, clip: SimClip) -> float:
        subject = max((user.subjects.get(s, 0.0) for s in clip.subjects), default=0.0)
        scene = user.scenes.get(clip.scene, 0.0) if clip.scene else 0.0
        return subject + scene + self.appeal[clip.clip_id]

    def like_probability(self, user: SimUser, clip: SimClip) -> float:
        c = self.config
        return 1.0 / (1.0 + math.exp(-c.like_slope * (self.utility(user, clip) - c.like_threshold)))


# ---------------------------------------------------------------------------- catalogue
def catalogue(config: SimConfig, vocab: Vocabulary | None = None) -> list[SimClip]:
    """Prompts over a slice of the vocabulary, each with the subjects and scene the
    renderer parses from it, published over the configured days."""
    vocab = vocab or default_vocabulary()
    rng = np.random.default_rng([config.seed, 1])
    safe = [k for k in vocab.concepts["subjects"] if k not in vocab.unsafe]
    subjects = [str(s) for s in rng.choice(safe, size=min(config.subjects, len(safe)), replace=False)]
    all_scenes = list(vocab.concepts["scenes"])
    scenes = [str(s) for s in rng.choice(all_scenes, size=min(config.scenes, len(all_scenes)), replace=False)]
    launch = int(config.launch_share * config.clips)
    out: list[SimClip] = []
    while len(out) < config.clips:
        n = 2 if rng.random() < 0.2 else 1
        picked = [str(s).replace("_", " ") for s in rng.choice(subjects, size=n, replace=False)]
        words = " and ".join(f"{'an' if s[0] in 'aeiou' else 'a'} {s}" for s in picked)
        motion, when = str(rng.choice(MOTIONS)), str(rng.choice(TIMES))
        prompt = " ".join(w for w in [words, motion, f"in the {rng.choice(scenes)}", when] if w)
        analysis = vocab.parse(prompt)
        keys = tuple(dict.fromkeys(s.key for s in analysis.subjects))
        if not keys or any(k in vocab.unsafe for k in keys):
            continue  # the parser bound the words otherwise: skip rather than mislabel
        i = len(out)
        at = EPOCH + (i * 60.0 if i < launch else float(rng.uniform(0.0, config.days)) * DAY_S)
        out.append(
            SimClip(
                clip_id=str(uuid.uuid5(NAMESPACE, f"clip:{config.seed}:{i}:{prompt}")),
                prompt=prompt,
                seed=int(config.seed * 100_000 + i),
                creator=int(rng.integers(config.creators)),
                subjects=keys,
                scene=analysis.scene,
                published_at=at,
            )
        )
    return out


def make_users(config: SimConfig, clips: Sequence[SimClip]) -> list[SimUser]:
    """Users who love a few subjects and like a few scenes, and are lukewarm (noise
    around zero) about everything else."""
    rng = np.random.default_rng([config.seed, 2])
    subjects = sorted({s for c in clips for s in c.subjects})
    scenes = sorted({c.scene for c in clips if c.scene})
    users = []
    for u in range(config.users):
        fav_subjects = set(rng.choice(subjects, size=min(config.favourite_subjects, len(subjects)), replace=False))
        fav_scenes = set(rng.choice(scenes, size=min(config.favourite_scenes, len(scenes)), replace=False))
        users.append(
            SimUser(
                user_id=str(uuid.uuid5(NAMESPACE, f"user:{config.seed}:{u}")),
                subjects={
                    s: float(rng.uniform(0.7, 1.0)) if s in fav_subjects else float(rng.normal(0.0, 0.15))
                    for s in subjects
                },
                scenes={s: float(rng.uniform(0.25, 0.45)) if s in fav_scenes else 0.0 for s in scenes},
            )
        )
    return users


# ---------------------------------------------------------------------------- embeddings
def concept_embedder(dim: int = 64, noise: float = 0.3, seed: int = 0) -> Embedder:
    """A stand-in for the frame model (tests, quick looks): a random direction per
    subject and scene, summed, plus per-clip noise, normalised. No rendering."""

    def embed(clips: Sequence[SimClip]) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([seed, 3])
        names = sorted({s for c in clips for s in c.subjects} | {c.scene or "" for c in clips})
        axes = {n: rng.normal(size=dim).astype(np.float32) / math.sqrt(dim) for n in names}
        out = {}
        for c in clips:
            v = sum((axes[s] for s in c.subjects), np.zeros(dim, np.float32)) + 0.6 * axes[c.scene or ""]
            v = v + noise * rng.normal(size=dim).astype(np.float32) / math.sqrt(dim)
            out[c.clip_id] = (v / np.linalg.norm(v)).astype(np.float32)
        return out

    return embed


_worker: dict[str, Any] = {}


def _init_renderer(preprocess: Any, per_second: int) -> None:
    import torch

    from generation.procedural import ProceduralRenderer

    torch.set_num_threads(1)
    _worker.update(renderer=ProceduralRenderer(), preprocess=preprocess, per_second=per_second)


def _render_and_decode(clip: SimClip) -> Any:
    """Production's path up to the model (``production_inputs``): render, encode, decode
    the frames the filter samples and preprocess them."""
    from generation.base import RenderRequest
    from moderation.frame_training.data import production_inputs

    request = RenderRequest("sim", clip.clip_id, clip.prompt, clip.seed, f"creator{clip.creator}")
    return production_inputs(_worker["renderer"], request, (_worker["preprocess"],), _worker["per_second"])[0]


def _cache_key(clips: Sequence[SimClip]) -> str:
    from generation.encoding import sha256_file
    from generation.procedural import GENERATOR_VERSION
    from moderation.frame_filter import DEFAULT_CONCEPTS, DEFAULT_MODEL_DIR, INPUTS_VERSION

    digest = hashlib.sha256(f"{GENERATOR_VERSION}\x00{INPUTS_VERSION}".encode())
    for weights in [*sorted(DEFAULT_MODEL_DIR.glob("*.safetensors")), DEFAULT_CONCEPTS]:
        digest.update(sha256_file(weights).encode())
    for c in clips:
        digest.update(f"{c.clip_id}\x00{c.prompt}\x00{c.seed}\x00{c.creator}\n".encode())
    return digest.hexdigest()[:16]


def clip_embeddings(cache_dir: Path | None = DEFAULT_CACHE_DIR, workers: int = 2) -> Embedder:
    """The production embedder: the shipped frame filter's verdict on each rendered
    clip; clips it would flag or block are left out (production would not publish
    them). Rendering runs in ``workers`` processes; results are cached in ``cache_dir``."""

    def embed(clips: Sequence[SimClip]) -> dict[str, np.ndarray]:
        path = None if cache_dir is None else Path(cache_dir) / f"embeddings-{_cache_key(clips)}.npz"
        if path is not None and path.is_file():
            with np.load(path) as cached:
                return {str(k): v for k, v in zip(cached["ids"], cached["vectors"], strict=True) if str(k)}
        from moderation.frame_filter import load_frame_filter

        out: dict[str, np.ndarray] = {}
        frame_filter = load_frame_filter()
        init = (frame_filter.clip.preprocess, frame_filter.concepts.frames_per_second)
        with mp.get_context("fork").Pool(workers, initializer=_init_renderer, initargs=init) as pool:
            inputs = pool.imap(_render_and_decode, clips, chunksize=4)
            for clip, x in zip(clips, inputs, strict=True):
                verdict = frame_filter.judge(frame_filter.embed_inputs(x))
                if verdict.action == "publish":
                    out[clip.clip_id] = np.asarray(verdict.embedding, np.float32)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            ids = list(out)
            vectors = np.stack([out[i] for i in ids]) if ids else np.zeros((0, 1), np.float32)
            np.savez(path, ids=np.array(ids), vectors=vectors)
        return out

    return embed


# ---------------------------------------------------------------------------- the log
def _uuid(s: str) -> uuid.UUID:
    return uuid.UUID(s)


def _at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def published_record(clip: SimClip, vector: np.ndarray) -> ClipPublished:
    media = ClipMedia(
        video_key=f"sim/{clip.clip_id}.mp4", poster_key=f"sim/{clip.clip_id}.jpg", frame_keys=[], frame_indices=[],
        mime_type="video/mp4", width=288, height=512, fps=12, frame_count=36, duration_s=CLIP_SECONDS,
        sha256="0" * 64,
    )  # fmt: skip
    return ClipPublished(
        clip_id=_uuid(clip.clip_id), prompt_id=uuid.uuid5(NAMESPACE, f"prompt:{clip.clip_id}"),
        user_id=uuid.uuid5(NAMESPACE, f"creator:{clip.creator}"), creator_handle=f"creator{clip.creator}",
        text=clip.prompt, media=media,
        generator=GeneratorInfo(name="procedural", version="sim", seed=clip.seed, concepts=list(clip.subjects),
                                render_ms=0),
        checks=[], embedding=[float(x) for x in vector], embedding_model="frame-model",
        occurred_at=_at(clip.published_at),
    )  # fmt: skip


def simulate_log(world: World) -> list[Any]:
    """Clips published and users' reactions to random exposures, in time order."""
    c = world.config
    rng = np.random.default_rng([c.seed, 4])
    live = sorted((clip for clip in world.clips if clip.clip_id in world.embeddings), key=lambda x: x.published_at)
    records: list[Any] = [published_record(clip, world.embeddings[clip.clip_id]) for clip in live]
    publish_times = np.array([clip.published_at for clip in live])
    duration_ms = int(CLIP_SECONDS * 1000)
    for user in world.users:
        seen: set[str] = set()
        uid = _uuid(user.user_id)
        sessions = rng.poisson(c.sessions_per_day * c.days)
        for start in np.sort(rng.uniform(EPOCH, world.end, size=sessions)):
            t = float(start)
            available = [i for i in range(int(np.searchsorted(publish_times, t))) if live[i].clip_id not in seen]
            if not available:
                continue
            for i in rng.permutation(available)[: c.session_length]:
                clip = live[int(i)]
                seen.add(clip.clip_id)
                cid = _uuid(clip.clip_id)
                utility = world.utility(user, clip)
                p_like = world.like_probability(user, clip)
                fraction = float(
                    np.clip(0.1 + 1.1 / (1 + math.exp(-6 * (utility - 0.5))) + rng.normal(0, 0.1), 0.03, 2)
                )
                watch = int(fraction * duration_ms)
                records.append(Interaction(user_id=uid, clip_id=cid, kind="impression", occurred_at=_at(t)))
                t += max(watch, 300) / 1000.0
                kind: Literal["skip", "view"] = "skip" if fraction < 0.3 else "view"
                records.append(Interaction(user_id=uid, clip_id=cid, kind=kind, watch_ms=watch, occurred_at=_at(t)))
                if rng.random() < p_like:
                    records.append(Interaction(user_id=uid, clip_id=cid, kind="like", occurred_at=_at(t)))
                elif utility < 0.0 and rng.random() < 0.05:
                    records.append(Interaction(user_id=uid, clip_id=cid, kind="see_less", occurred_at=_at(t)))
                t += 1.0
    return time_ordered(records)


def build_world(config: SimConfig, embedder: Embedder) -> World:
    clips = catalogue(config)
    rng = np.random.default_rng([config.seed, 5])
    world = World(
        config=config,
        clips=clips,
        users=make_users(config, clips),
        appeal={c.clip_id: float(rng.normal(0.0, 0.2)) for c in clips},
        embeddings=embedder(clips),
    )
    world.records = simulate_log(world)
    return world


# ---------------------------------------------------------------------------- evaluation
def page_questions(world: World, state: RankingState, now: float) -> list[PageQuestion]:
    """Every user active before ``now``: their pool is every live clip they have not
    seen, judged by their true liking; the relevant set is what they would more likely
    like than not."""
    by_id = {c.clip_id: c for c in world.clips}
    live = state.catalog.ids()
    out = []
    for user in world.users:
        us = state.user(user.user_id)
        if us is None:
            continue
        pool = tuple(cid for cid in live if cid not in us.seen and cid not in us.rejected)
        gains = {cid: world.like_probability(user, by_id[cid]) for cid in pool}
        out.append(PageQuestion(user.user_id, pool, gains, frozenset(cid for cid, g in gains.items() if g >= 0.5)))
    return out


def rankers(extra: Sequence[Ranker] = (), weights: FeedWeights | None = None, seed: int = 0) -> list[Ranker]:
    """The feed with the shipped weights (``ranking/data/feed_weights.json``), any other
    configurations of it, and the baselines."""
    return [
        FeedPages(weights or FeedWeights.load(), name="ranker (online weights)"),
        *extra,
        RandomOrder(seed),
        NewestFirst(seed),
        MostPopular(kinds=("like",), seed=seed),
    ]


def evaluate(world: World, ranker_list: Sequence[Ranker] | None = None, k: int = 10) -> PageResult:
    """Replay the world's log in time order, stopping at each checkpoint to serve every
    active user a page from each ranker."""
    state = RankingState(len(next(iter(world.embeddings.values()))))
    replay = Replay(state, world.records)
    result = PageResult(k)
    by_id = {c.clip_id: c for c in world.clips}

    def distinct_subjects(page: Sequence[str]) -> float | None:
        return len({by_id[cid].subjects[0] for cid in page}) / len(page) if page else None

    for share in world.config.checkpoints:
        now = EPOCH + share * world.config.days * DAY_S
        replay.advance(now)
        part = evaluate_pages(
            state, page_questions(world, state, now), ranker_list or rankers(), now, k, label=share,
            page_metrics={"distinct subjects": distinct_subjects},
        )  # fmt: skip
        result.merge(part)
    return result


def summary(world: World) -> Mapping[str, Any]:
    """What the world holds, for the report."""
    kinds: dict[str, int] = {}
    for r in world.records:
        if isinstance(r, Interaction):
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
    return {
        "clips rendered": len(world.clips),
        "clips published": len(world.embeddings),
        "users": len(world.users),
        "days": world.config.days,
        "subjects": len({s for c in world.clips for s in c.subjects}),
        "scenes": len({c.scene for c in world.clips if c.scene}),
        **{f"{k}s": v for k, v in sorted(kinds.items())},
    }
