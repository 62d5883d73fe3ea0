"""The live catalogue: every published clip a feed may serve, indexed the ways sources ask.

Fed from the log (``clips.published`` adds, ``moderation.decisions`` takedowns and
restores, deletions and revoked cameos remove), so every process that serves feeds
holds its own copy and a removal takes effect there the moment its event is read.
Lookups a feed request makes are all in memory: by author (newest first), by cast
member (cameos), by parent (remixes), the freshest clips, and the embedding index.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ranking.index import ClipIndex


@dataclass(frozen=True)
class ClipInfo:
    clip_id: str
    author_id: str
    published_at: float  # epoch seconds
    duration_ms: int = 3000
    cast: tuple[str, ...] = ()  # user ids of the people a clip casts (cameos)
    parent_clip_id: str | None = None
    #: Kept as a read-only float32 array, whatever sequence it is given as: a tuple of
    #: 128 Python floats takes about 4 KB, the array about 0.6 KB, and a replica keeps
    #: one per clip (bench/feed.py: 100k clips).
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        e = self.embedding
        if e is not None and not (isinstance(e, np.ndarray) and e.dtype == np.float32 and not e.flags.writeable):
            vector = np.array(e, np.float32)  # a copy: the caller's array stays theirs
            vector.flags.writeable = False
            object.__setattr__(self, "embedding", vector)


class Catalog:
    """Live clips by id, author, cast member and parent, plus the embedding index."""

    def __init__(self, index: ClipIndex) -> None:
        self.index = index
        self._lock = threading.RLock()
        self._clips: dict[str, ClipInfo] = {}
        self._by_author: dict[str, list[tuple[float, str]]] = {}
        self._by_cast: dict[str, list[tuple[float, str]]] = {}
        self._by_parent: dict[str, list[tuple[float, str]]] = {}
        self._recent: list[tuple[float, str]] = []  # all live clips, oldest first
        #: author or cast member → when (wall clock) their latest clip arrived here: a
        #: feed plan made before that is missing a followed author's new clip.
        self.arrived: dict[str, float] = {}
        self.last_arrival = 0.0  # when (wall clock) any clip last arrived

    def __len__(self) -> int:
        return len(self._clips)

    def __contains__(self, clip_id: object) -> bool:
        return clip_id in self._clips

    def get(self, clip_id: str) -> ClipInfo | None:
        return self._clips.get(clip_id)

    def many(self, clip_ids: Iterable[str]) -> list[ClipInfo]:
        clips = self._clips
        return [c for c in (clips.get(i) for i in clip_ids) if c is not None]

    # ------------------------------------------------------------------ writes
    def add(self, clip: ClipInfo, index: bool = True) -> None:
        """Add or replace a published clip (a restore after review adds it back);
        ``index=False`` when the index already holds its vector (a snapshot restore).
        The catalogue keeps no second copy of a vector the index holds (600 bytes a
        clip): :meth:`with_embedding` puts it back on the way out."""
        with self._lock:
            if clip.clip_id in self._clips:
                self._unlink(self._clips[clip.clip_id])
            if clip.embedding is not None and index:
                self.index.add(clip.clip_id, clip.embedding)
            if clip.embedding is not None and clip.clip_id in self.index:
                clip = dataclasses.replace(clip, embedding=None)
            self._clips[clip.clip_id] = clip
            entry = (clip.published_at, clip.clip_id)
            bisect.insort(self._by_author.setdefault(clip.author_id, []), entry)
            for user in set(clip.cast):
                bisect.insort(self._by_cast.setdefault(user, []), entry)
            if clip.parent_clip_id:
                bisect.insort(self._by_parent.setdefault(clip.parent_clip_id, []), entry)
            bisect.insort(self._recent, entry)
            now = time.time()
            for user in (clip.author_id, *clip.cast):
                self.arrived[user] = now
            self.last_arrival = now

    def with_embedding(self, clip: ClipInfo) -> ClipInfo:
        """``clip`` with its vector from the index (as stored there: normalised) when it
        has none of its own; for a clip leaving the catalogue that may come back."""
        if clip.embedding is not None:
            return clip
        vector = self.index.vector(clip.clip_id)
        return clip if vector is None else dataclasses.replace(clip, embedding=vector)

    def remove(self, clip_id: str) -> bool:
        """Take a clip out of every feed (takedown, deletion, revoked cameo)."""
        with self._lock:
            clip = self._clips.pop(clip_id, None)
            if clip is None:
                return False
            self._unlink(clip)
            self.index.remove(clip_id)
            return True

    def remove_casting(self, user_id: str) -> list[str]:
        """Remove every clip that casts ``user_id`` (their cameo consent was revoked)."""
        with self._lock:
            ids = [cid for _, cid in self._by_cast.get(user_id, [])]
            return [cid for cid in ids if self.remove(cid)]

    def _unlink(self, clip: ClipInfo) -> None:
        entry = (clip.published_at, clip.clip_id)
        for table, key in [
            (self._by_author, clip.author_id),
            *[(self._by_cast, u) for u in set(clip.cast)],
            *([(self._by_parent, clip.parent_clip_id)] if clip.parent_clip_id else []),
        ]:
            rows = table.get(key)
            if rows:
                i = bisect.bisect_left(rows, entry)
                if i < len(rows) and rows[i] == entry:
                    rows.pop(i)
                if not rows:
                    del table[key]
        i = bisect.bisect_left(self._recent, entry)
        if i < len(self._recent) and self._recent[i] == entry:
            self._recent.pop(i)

    # ------------------------------------------------------------------ reads
    @staticmethod
    def _newest(rows: Sequence[tuple[float, str]], limit: int, since: float) -> Iterator[str]:
        for at, cid in reversed(rows[-limit:] if limit else rows):
            if at < since:
                break
            yield cid

    def by_author(self, author_id: str, limit: int, since: float = 0.0) -> list[str]:
        with self._lock:
            return list(self._newest(self._by_author.get(author_id, []), limit, since))

    def casting(self, user_id: str, limit: int, since: float = 0.0) -> list[str]:
        with self._lock:
            return list(self._newest(self._by_cast.get(user_id, []), limit, since))

    def remixes_of(self, clip_id: str, limit: int) -> list[str]:
        with self._lock:
            return list(self._newest(self._by_parent.get(clip_id, []), limit, 0.0))

    def newest(self, limit: int, since: float = 0.0) -> list[str]:
        with self._lock:
            return list(self._newest(self._recent, limit, since))

    def infos(self) -> list[ClipInfo]:
        with self._lock:
            return list(self._clips.values())

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._clips)
