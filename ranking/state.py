"""RankingState: everything a feed request reads, built by applying the event log.

One class, fed record by record, holds the live catalogue and embedding index, windowed
engagement per clip, each user's taste vector, seen set, likes, "see less" list and
author affinity, and the trending board. The ranking worker applies the log to it (and
keeps user vectors in a Faust table), each API replica applies the same log to its own
copy, and the offline evaluator replays a recorded log through it: the same code in all
three places.

Records it understands: ``ClipPublished`` (add), ``ClipFlagged`` (kept aside until a
reviewer publishes it), ``ModerationDecision`` (``publish``/``restore`` add,
``takedown``/``block`` remove at once), ``Interaction`` (everything else).
"""

from __future__ import annotations

import dataclasses
import heapq
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.records import ClipFlagged, ClipPublished, Interaction, ModerationDecision
from ranking.catalog import Catalog, ClipInfo
from ranking.engagement import (
    STEP_S,
    TRENDING_WEIGHTS,
    WINDOWS_S,
    ClipCounts,
    ContentPrior,
    fit_content_prior,
    kinds_of,
    reactions_and_shown,
    trending_score,
)
from ranking.feed import FeedWeights, Steering, Viewer
from ranking.index import ClipIndex
from ranking.signals import SignalWeights, apply, query_vector

SEEN_MAX = 5000
LIKED_MAX = 50
AVOID_MAX = 20
REJECTED_MAX = 1000
AFFINITY_MAX = 200
TRENDING_SIZE = 300
TRENDING_REFRESH_S = 5.0
#: Seconds between fits of the engagement feature's content prior.
PRIOR_REFRESH_S = 600.0
AFFINITY_SATURATION = 5.0
SEEN_KINDS = frozenset({"impression", "view", "skip", "like", "share", "see_less", "report"})
AFFINITY_WEIGHTS = {"like": 1.0, "share": 1.5, "comment": 1.0, "view": 0.1, "see_less": -1.0, "report": -2.0}


def _rounded(v: np.ndarray) -> list[float]:
    """Six decimals, vectorised (a snapshot writes thousands of these under the lock)."""
    return np.round(np.asarray(v, np.float64), 6).tolist()  # type: ignore[no-any-return]


@dataclass
class UserState:
    vector: np.ndarray | None = None  # unnormalised taste (see ranking.signals)
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    liked: deque[str] = field(default_factory=lambda: deque(maxlen=LIKED_MAX))
    avoid: deque[np.ndarray] = field(default_factory=lambda: deque(maxlen=AVOID_MAX))
    rejected: OrderedDict[str, None] = field(default_factory=OrderedDict)  # see-less'd or reported: never again
    affinity: dict[str, float] = field(default_factory=dict)
    version: int = 0  # bumped on every change: the API knows a page is stale
    #: Bumped by every interaction except an impression (which only adds to the seen set,
    #: a filter applied live): a precomputed feed plan made at another value is stale.
    #: Process-local, not saved.
    ranked_version: int = field(default=0, compare=False)
    last_at: float = 0.0  # time of their latest interaction (who is active)

    def mark_seen(self, clip_id: str) -> None:
        self.seen[clip_id] = None
        self.seen.move_to_end(clip_id)
        while len(self.seen) > SEEN_MAX:
            self.seen.popitem(last=False)

    def reject(self, clip_id: str) -> None:
        self.rejected[clip_id] = None
        self.rejected.move_to_end(clip_id)
        while len(self.rejected) > REJECTED_MAX:
            self.rejected.popitem(last=False)

    def to_json(self, encode_vector: Callable[[np.ndarray], Any] = _rounded) -> dict[str, Any]:
        """The state without its seen set; vectors as ``encode_vector`` writes them
        (default: lists of six-decimal floats)."""
        return {
            "rejected": list(self.rejected),
            "vector": None if self.vector is None else encode_vector(self.vector),
            "liked": list(self.liked),
            "avoid": [encode_vector(v) for v in self.avoid],
            "affinity": self.affinity,
            "version": self.version,
            "last_at": self.last_at,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UserState:
        user = cls()
        if data.get("vector") is not None:
            user.vector = np.asarray(data["vector"], np.float32)
        user.liked.extend(data.get("liked", []))
        user.avoid.extend(np.asarray(v, np.float32) for v in data.get("avoid", []))
        user.affinity = {str(k): float(v) for k, v in data.get("affinity", {}).items()}
        for clip_id in data.get("rejected", []):
            user.reject(str(clip_id))
        user.version = int(data.get("version", 0))
        user.last_at = float(data.get("last_at", 0.0))
        return user


def interact(
    user: UserState,
    rec: Interaction,
    vector: np.ndarray | None,
    *,
    duration_ms: int | None,
    author: str | None,
    weights: SignalWeights,
) -> None:
    """One interaction's effect on the user who made it: seen set, likes, taste vector,
    see-less list, author affinity, version.

    ``vector`` is the clip's normalised embedding while it is live (None: the clip is
    unknown or taken down, and the taste vector stays as it is). RankingState and the
    ranking worker (streams/roles/ranking.py) both call this, so the user vectors the
    worker keeps and the ones each replica rebuilds move the same way.
    """
    if rec.clip_id is None:
        return
    clip_id, user_id = str(rec.clip_id), str(rec.user_id)
    if rec.kind in SEEN_KINDS:
        user.mark_seen(clip_id)
    if rec.kind in ("see_less", "report"):
        user.reject(clip_id)
    if rec.kind == "like":
        if clip_id in user.liked:
            user.liked.remove(clip_id)
        user.liked.appendleft(clip_id)
    elif rec.kind == "unlike" and clip_id in user.liked:
        user.liked.remove(clip_id)
    if vector is not None:
        updated = apply(user.vector, vector, rec.kind, watch_ms=rec.watch_ms, duration_ms=duration_ms, weights=weights)
        if updated is not None:
            user.vector = updated
        if rec.kind == "see_less":
            user.avoid.append(vector)
    if author is not None and author != user_id and rec.kind in AFFINITY_WEIGHTS:
        score = 0.95 * user.affinity.get(author, 0.0) + AFFINITY_WEIGHTS[rec.kind]
        user.affinity[author] = score
        if len(user.affinity) > AFFINITY_MAX:
            for weakest in heapq.nsmallest(
                len(user.affinity) - AFFINITY_MAX, user.affinity, key=lambda a: user.affinity[a]
            ):
                del user.affinity[weakest]
    user.version += 1
    user.last_at = max(user.last_at, rec.occurred_at.timestamp())
    if rec.kind != "impression":
        user.ranked_version += 1


def clip_info(rec: ClipPublished | ClipFlagged, published_at: float) -> ClipInfo:
    return ClipInfo(
        clip_id=str(rec.clip_id),
        author_id=str(rec.user_id),
        published_at=published_at,
        duration_ms=int(rec.media.duration_s * 1000),
        cast=tuple(str(c.user_id) for c in rec.cameos),
        parent_clip_id=str(rec.parent_clip_id) if rec.parent_clip_id else None,
        embedding=np.asarray(rec.embedding, np.float32) if rec.embedding else None,
    )


class RecentIds:
    """The event ids seen lately: the last ``size`` to ``2 × size`` of them, in two sets
    that take turns (no per-id bookkeeping beyond a set insert)."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._now: set[int] = set()
        self._before: set[int] = set()

    def __contains__(self, event_id: uuid.UUID) -> bool:
        key = event_id.int
        return key in self._now or key in self._before

    def add(self, event_id: uuid.UUID) -> None:
        self._add(event_id.int)

    def _add(self, key: int) -> None:
        if len(self._now) >= self.size:
            self._before, self._now = self._now, set()
        self._now.add(key)

    def seen_before(self, event_id: uuid.UUID) -> bool:
        """True if ``event_id`` came lately; otherwise remembers it."""
        if event_id in self:
            return True
        self.add(event_id)
        return False

    def copy(self) -> RecentIds:
        """A copy to encode later (a set copy is cheap; encoding 100,000 ids is not, and
        a snapshot copies under the state's lock)."""
        out = RecentIds(self.size)
        out._now, out._before = set(self._now), set(self._before)
        return out

    def to_bytes(self) -> bytes:
        """The ids as 16 bytes each, the older window first, then the current one."""
        return b"".join([b"".join(i.to_bytes(16, "big") for i in ids) for ids in (self._before, self._now)])

    @classmethod
    def from_bytes(cls, raw: bytes, size: int = 50_000) -> RecentIds:
        """Ids written by :meth:`to_bytes`, remembered in order: the most recent
        ``size``–``2 × size`` of them, as if they had just been seen."""
        if len(raw) % 16:
            raise ValueError(f"{len(raw)} bytes of event ids is not a whole number of ids")
        out = cls(size)
        for at in range(0, len(raw), 16):
            out._add(int.from_bytes(raw[at : at + 16], "big"))
        return out


class RankingState:
    def __init__(self, dim: int = 128, index: ClipIndex | None = None, weights: SignalWeights | None = None) -> None:
        self.catalog = Catalog(index or ClipIndex(dim))
        self.engagement: dict[str, ClipCounts] = {}
        self.users: dict[str, UserState] = {}
        self.seeded: dict[str, tuple[int, int]] = {}  # user → (partition, offset) of their table entry
        self.weights = weights or SignalWeights()
        self._held: dict[str, ClipInfo] = {}  # flagged or taken down: kept for publish/restore
        self.durations: dict[str, int] = {}
        self.authors: dict[str, str] = {}
        self._lock = threading.RLock()
        self._trending: list[str] = []
        self._trending_at = float("-inf")
        #: clip → time of its latest event that trending weighs (not an impression, the
        #: most common event, which counts for nothing): trending scans only these, not
        #: the catalogue. None until the first refresh after a restore (then the clips
        #: whose counts hold such events, each as of the end of its latest bucket).
        self._active: dict[str, float] | None = {}
        #: users whose ranked_version moved since the last take_touched (plans to remake)
        self._touched: set[str] = set()
        self.applied = 0
        #: Interactions are delivered at least once: an event the API's producer timed
        #: out on can reach the log twice (the outbox sends it again). A repeat of an
        #: event id seen lately changes nothing (counted in ``repeats``). Snapshots keep
        #: them: a copy sent again can arrive after the snapshot's positions while the
        #: first copy came before them.
        self.recent_events = RecentIds()
        self.repeats = 0
        #: (reactions, ridge) → (fitted at, the prior): refitted every PRIOR_REFRESH_S.
        self._priors: dict[tuple[tuple[tuple[str, float], ...], float], tuple[float, ContentPrior | None]] = {}
        self._refitting: set[tuple[tuple[tuple[str, float], ...], float]] = set()

    # ------------------------------------------------------------------ log
    def seed_tastes(self, entries: Mapping[str, Any]) -> None:
        """Start users from the ranking worker's ``user_taste`` table (values unpack as
        (UserState, partition, offset)): interactions at or before an entry's offset
        then update only engagement and seen sets, never the taste twice."""
        with self._lock:
            for user_id, (user, partition, offset) in entries.items():
                self.users[user_id] = user
                self.seeded[user_id] = (partition, offset)

    def apply(self, record: Any, position: tuple[int, int] | None = None) -> None:
        """Apply one record; ``position`` is (partition, offset) of an interaction."""
        with self._lock:
            self.applied += 1
            if isinstance(record, ClipPublished):
                self._publish(clip_info(record, record.occurred_at.timestamp()))
            elif isinstance(record, ClipFlagged):
                info = clip_info(record, record.occurred_at.timestamp())
                self._held[info.clip_id] = info
                self._remember(info)
            elif isinstance(record, ModerationDecision):
                self._decide(record)
            elif isinstance(record, Interaction):
                self._interact(record, position)

    def apply_many(self, records: Iterable[Any]) -> None:
        """Apply a batch under one acquisition of the lock."""
        with self._lock:
            for record in records:
                self.apply(record)

    @property
    def lock(self) -> threading.RLock:
        """Held while reading several parts of the state together (a feed request)."""
        return self._lock

    def held(self) -> list[ClipInfo]:
        """Clips flagged or taken down, kept so a publish or restore can bring them back."""
        return list(self._held.values())

    def restore_held(self, infos: Iterable[ClipInfo]) -> None:
        self._held.update({i.clip_id: i for i in infos})

    def _remember(self, info: ClipInfo) -> None:
        self.durations[info.clip_id] = info.duration_ms
        self.authors[info.clip_id] = info.author_id

    def _publish(self, info: ClipInfo) -> None:
        self._held.pop(info.clip_id, None)
        self._remember(info)
        self.catalog.add(info)

    def _decide(self, rec: ModerationDecision) -> None:
        clip_id = str(rec.clip_id)
        if rec.decision in ("takedown", "block"):
            info = self.catalog.get(clip_id)
            if info is not None:
                self._held[clip_id] = self.catalog.with_embedding(info)
            self.catalog.remove(clip_id)
        elif rec.decision in ("publish", "restore"):
            held = self._held.get(clip_id)
            if held is not None:
                self._publish(dataclasses.replace(held, published_at=rec.occurred_at.timestamp()))

    def _interact(self, rec: Interaction, position: tuple[int, int] | None = None) -> None:
        if self.recent_events.seen_before(rec.event_id):
            self.repeats += 1
            return
        if rec.clip_ids is not None:
            self._page_shown(rec, rec.clip_ids, position)
            return
        if rec.clip_id is None:
            return
        clip_id, user_id, at = str(rec.clip_id), str(rec.user_id), rec.occurred_at.timestamp()
        duration = self.durations.get(clip_id)
        counts = self._counts(clip_id)
        kinds = kinds_of(rec.kind, rec.watch_ms, duration)
        for kind in kinds:
            counts.add(kind, at)
        if self._active is not None and any(k in TRENDING_WEIGHTS for k in kinds):
            self._active[clip_id] = max(at, self._active.get(clip_id, at))
        user = self._user(user_id)
        if self._in_table(user_id, position):
            if rec.kind in SEEN_KINDS:
                user.mark_seen(clip_id)  # the table's entry already holds this one's taste
            return
        # Only a reaction that moves the taste, or a "see less" (kept as a vector to
        # avoid), needs the clip's vector: impressions, most of the log, do not.
        moves = rec.kind == "see_less" or self.weights.weight(rec.kind, rec.watch_ms, duration) != 0.0
        vector = self.catalog.index.vector(clip_id) if moves else None
        interact(user, rec, vector, duration_ms=duration, author=self.authors.get(clip_id), weights=self.weights)
        if rec.kind != "impression":
            self._touched.add(user_id)

    def _page_shown(self, rec: Interaction, clip_ids: Sequence[uuid.UUID], position: tuple[int, int] | None) -> None:
        """A feed page's impression: what an impression record of each clip it showed
        does (counted, seen, the viewer's version moved on), without making those
        records: every replica applies every page, and building twenty records a page
        was a third of the cost of applying it."""
        user_id, at = str(rec.user_id), rec.occurred_at.timestamp()
        active = self._active if "impression" in TRENDING_WEIGHTS else None  # (it weighs none today)
        user = self._user(user_id)
        for clip in clip_ids:
            clip_id = str(clip)
            self._counts(clip_id).add("impression", at)
            if active is not None:
                active[clip_id] = max(at, active.get(clip_id, at))
            user.mark_seen(clip_id)
        if self._in_table(user_id, position):
            return  # the table's entry already holds this page (version and time included)
        user.version += len(clip_ids)
        user.last_at = max(user.last_at, at)

    def _counts(self, clip_id: str) -> ClipCounts:
        counts = self.engagement.get(clip_id)
        if counts is None:
            counts = self.engagement[clip_id] = ClipCounts()
        return counts

    def _user(self, user_id: str) -> UserState:
        user = self.users.get(user_id)
        if user is None:
            user = self.users[user_id] = UserState()
        return user

    def _in_table(self, user_id: str, position: tuple[int, int] | None) -> bool:
        """Whether the user's ``user_taste`` entry this state was seeded from already
        holds the record read at ``position`` (its taste and version)."""
        seeded = self.seeded.get(user_id)
        return seeded is not None and position is not None and position[0] == seeded[0] and position[1] <= seeded[1]

    def take_touched(self) -> list[str]:
        """Users whose ranking inputs changed since the last call."""
        with self._lock:
            out, self._touched = list(self._touched), set()
            return out

    def recent_users(self, n: int) -> list[str]:
        """The ``n`` users with the latest interactions, latest first."""
        with self._lock:
            return heapq.nlargest(n, self.users, key=lambda u: self.users[u].last_at)

    # ------------------------------------------------------------------ reads
    def user(self, user_id: str | None) -> UserState | None:
        return None if user_id is None else self.users.get(user_id)

    def taste(self, user_id: str | None) -> np.ndarray | None:
        user = self.user(user_id)
        return None if user is None else query_vector(user.vector)

    def closeness(self, user_id: str | None) -> dict[str, float]:
        """Author → 0..1 from the user's interactions with their clips: about five
        likes' worth of (decayed) interaction makes an author as close as a friend, so
        one like says a little about the author and mostly about the clip."""
        user = self.user(user_id)
        if user is None or not user.affinity:
            return {}
        return {a: min(1.0, s / AFFINITY_SATURATION) for a, s in user.affinity.items() if s > 0}

    def viewer(
        self,
        user_id: str | None,
        *,
        following: frozenset[str] = frozenset(),
        friends: frozenset[str] = frozenset(),
        hidden: frozenset[str] = frozenset(),
        steering: Steering | None = None,
    ) -> Viewer:
        """The feed's view of a user: what this state knows of them (taste, seen set,
        see-less list, likes, author closeness) plus the social graph and steering the
        caller reads elsewhere. Call it under :attr:`lock`; the seen and rejected sets
        are live views, not copies."""
        user = self.user(user_id)
        return Viewer(
            user_id=user_id,
            following=following,
            friends=friends,
            hidden=hidden,
            seen=user.seen.keys() if user is not None else frozenset(),
            vector=self.taste(user_id),
            steering=steering,
            avoid=tuple(user.avoid) if user is not None else (),
            rejected=user.rejected.keys() if user is not None else frozenset(),
            liked=tuple(user.liked) if user is not None else (),
            affinity=self.closeness(user_id),
        )

    def trending(self, now: float) -> list[str]:
        """Live clips with the most weighted engagement in the last hour, recomputed at
        most every few seconds from the clips that had an event within the window (a
        feed request never pays for the whole catalogue, and neither does a refresh)."""
        with self._lock:
            if now - self._trending_at >= TRENDING_REFRESH_S or now < self._trending_at:
                if self._active is None:  # after a restore: when each clip's counts say
                    latest = ((cid, counts.latest(TRENDING_WEIGHTS)) for cid, counts in self.engagement.items())
                    self._active = {cid: at for cid, at in latest if at is not None}
                horizon = now - WINDOWS_S["1h"] - STEP_S
                for cid in [c for c, at in self._active.items() if at < horizon]:
                    del self._active[cid]
                scored = []
                for clip_id in self._active:
                    counts = self.engagement.get(clip_id)
                    if counts is not None and clip_id in self.catalog and counts.buckets:
                        s = trending_score(counts, now)
                        if s > 0:
                            scored.append((s, clip_id))
                self._trending = [cid for _, cid in heapq.nlargest(TRENDING_SIZE, scored)]
                self._trending_at = now
            return list(self._trending)

    def prior_for(self, now: float, w: FeedWeights) -> ContentPrior | None:
        """The content prior the weights ask for (None when they do not)."""
        return self.content_prior(now, w.reactions, w.prior_ridge) if w.content_prior else None

    def content_prior(self, now: float, reactions: Mapping[str, float], ridge: float) -> ContentPrior | None:
        """The engagement feature's content prior (:func:`~ranking.engagement.fit_content_prior`)
        over every live clip with impressions, refitted at most every PRIOR_REFRESH_S (a
        clip's own counts move the feature at once; what clips like it earn moves slowly).
        Only the list of clips is taken under the lock; summing and the fit (a d×d solve)
        are done outside it (call this before taking the lock, as the API does)."""
        key = (tuple(sorted(reactions.items())), ridge)
        with self._lock:
            cached = self._priors.get(key)
            if cached is not None and (0 <= now - cached[0] < PRIOR_REFRESH_S or key in self._refitting):
                return cached[1]  # fresh, or another thread is refitting it: the last one will do
            self._refitting.add(key)
            every = list(self.engagement.items())
        # Filtered and summed outside the lock (a clip's counts may move meanwhile: a prior
        # can miss an event or two, or a clip taken down a moment ago); the API holds this
        # lock for every request.
        prior = None
        try:
            shown = [(cid, counts) for cid, counts in every if cid in self.catalog]
            if shown:
                sums = np.array([reactions_and_shown(counts, reactions) for _, counts in shown], np.float64)
                vectors = self.catalog.index.vectors([cid for cid, _ in shown])
                prior = fit_content_prior(vectors, sums[:, 0], sums[:, 1], ridge)
            with self._lock:
                if len(self._priors) >= 16:  # weights are few; a long evaluation grid must not grow this
                    self._priors.clear()
                self._priors[key] = (now, prior)
        finally:
            with self._lock:
                self._refitting.discard(key)
        return prior

    def forget_activity(self) -> None:
        """After a restore: the next trending refresh looks at every clip with counts once."""
        with self._lock:
            self._active = None
