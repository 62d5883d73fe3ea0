"""Ranking role: interactions → each user's taste, kept in the Faust table ``user_taste``.

For every interaction the agent looks the clip up in the SQL store (status, embedding,
duration, author, one driver-level query; a bounded LRU cache in front), applies the
interaction to the user's entry with the same code every RankingState runs
(ranking.taste_table.advance → ranking.state.interact) and writes the entry back. The
table is partitioned like ``interactions`` (keyed by user id), so one worker owns each
user; its compacted changelog, created by the topic catalog, is what survives a
restart and what the API reads (ranking.taste_table.read_taste_table).

Each entry records the partition and offset of the last message applied to it, and a
message at or below that offset is skipped: a redelivery after a crash (Faust flushes
the changelog before it commits offsets, so the entry is never behind the commit)
changes nothing. A copy of an event the API's outbox sent again (same event id, a later
offset) is caught by the ids of the user's last interactions, which the entry keeps too.

The handler keeps the decoded UserState of the entries it wrote last (bounded LRU), so
a user's next interaction does not decode the entry again. A kept state is used only
while the table still holds the very value it was written as: after a recovery or a
rebalance the table holds other objects, and the entry is decoded afresh.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import faust
import numpy as np
from sqlalchemy import Uuid, bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_sessionmaker
from core.db.driver_query import DriverQuery
from core.db.models import Clip
from core.errors import ConfigurationError
from core.records import Interaction
from core.settings import Settings
from core.topics import INTERACTIONS, USER_TASTE
from ranking.signals import SignalWeights
from ranking.state import RecentIds, UserState
from ranking.taste_table import (
    ClipFacts,
    already_applied,
    applied_lately,
    apply_to,
    encode_entry,
    recent_events,
    remember_event,
    state_of,
)
from streams.app import RecordSender
from streams.errors import ErrorPolicy, register_agent

log = logging.getLogger(__name__)

CLIP_CACHE_SIZE = 20_000
#: Decoded states kept for the users written last (a few KB each without the seen set).
STATE_CACHE_SIZE = 20_000
#: How long a cached clip is trusted: a takedown stops moving taste vectors within this.
CLIP_CACHE_TTL_S = 60.0


#: The four columns the taste update reads, by primary key, run on the driver
#: (core.db.driver_query): an ORM ``session.get`` loaded the whole row into the identity
#: map and was most of the worker's time on a clip its cache did not hold.
_FACT_COLUMNS = (Clip.status, Clip.embedding, Clip.duration_s, Clip.user_id)  # clip_facts' arguments
_CLIP_FACTS = DriverQuery(
    lambda _: select(*_FACT_COLUMNS).where(Clip.id == bindparam("id", type_=Uuid)),
    raw=(2,),  # a float as every driver gives it (PostgreSQL's Float processor needs the column's type code)
)


def _recent_clips(n: int) -> DriverQuery:
    """The ``n`` clips published last, with the columns of :data:`_CLIP_FACTS` (the
    feed's index on status and publication time serves it)."""
    return DriverQuery(
        lambda _: (
            select(Clip.id, *_FACT_COLUMNS)
            .where(Clip.status == "published", Clip.published_at.is_not(None))
            .order_by(Clip.published_at.desc(), Clip.id.desc())
            .limit(n)
        ),
        raw=(3,),
    )


def clip_facts(status: str, embedding: list[float] | None, duration_s: float, author: uuid.UUID) -> ClipFacts:
    """A clip's row → what the taste update reads; only a published clip with an
    embedding moves taste (as only live clips are in a RankingState's index)."""
    vector = None
    if status == "published" and embedding:
        x = np.asarray(embedding, np.float32)
        norm = float(np.linalg.norm(x))
        if np.isfinite(x).all() and norm >= 1e-6:
            vector = x / norm  # as ClipIndex stores it
    return ClipFacts(vector=vector, duration_ms=int(float(duration_s) * 1000), author_id=str(author))


class ClipLookup:
    """Clip id → ClipFacts from the SQL store, with a bounded LRU cache of found clips.

    A clip not found is not cached: an interaction can arrive before the materializer
    has stored the clip, and the next one should find it.
    """

    def __init__(
        self, factory: sessionmaker[Session], max_size: int = CLIP_CACHE_SIZE, ttl_s: float = CLIP_CACHE_TTL_S
    ) -> None:
        self.factory = factory
        self.max_size = max_size
        self.ttl_s = ttl_s
        self._cache: OrderedDict[uuid.UUID, tuple[float, ClipFacts]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def cached(self, clip_id: uuid.UUID) -> ClipFacts | None:
        """The clip's facts if the cache holds them, fresh; never touches the store, so
        the event loop can call it without a thread hop."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(clip_id)
            if cached is not None and now - cached[0] < self.ttl_s:
                self._cache.move_to_end(clip_id)
                self.hits += 1
                return cached[1]
        return None

    def warm(self) -> int:
        """Fill the cache with the clips published last (as many as it holds), in one
        query: most interactions are on recent clips, and a worker that just started
        (after a crash, with a backlog to catch up on) would otherwise wait on a query
        for each of them. Clips already cached are left as they are."""
        with self.factory() as session:
            rows = _recent_clips(self.max_size).rows(session.connection(), {})
        now = time.monotonic()
        with self._lock:
            for clip_id, *columns in reversed(rows):  # the newest end up most recently used
                if clip_id not in self._cache:
                    self._put(clip_id, now, clip_facts(*columns))
        return len(rows)

    def _put(self, clip_id: uuid.UUID, at: float, facts: ClipFacts) -> None:
        """Cache ``facts`` as the most recently used (the caller holds the lock)."""
        self._cache[clip_id] = (at, facts)
        self._cache.move_to_end(clip_id)
        while len(self._cache) > self.max_size:
            self._cache.popitem(last=False)

    def get(self, clip_id: uuid.UUID) -> ClipFacts | None:
        hit = self.cached(clip_id)
        if hit is not None:
            return hit
        now = time.monotonic()
        self.misses += 1
        with self.factory() as session:
            rows = _CLIP_FACTS.rows(session.connection(), {"id": clip_id})
        facts = clip_facts(*rows[0]) if rows else None
        if facts is not None:
            with self._lock:
                self._put(clip_id, now, facts)
        return facts


class RankingHandler:
    """One interaction → the user's ``user_taste`` entry."""

    def __init__(
        self, table: Any, clips: ClipLookup, weights: SignalWeights | None = None, max_states: int = STATE_CACHE_SIZE
    ) -> None:
        self.table = table
        self.clips = clips
        self.weights = weights or SignalWeights()
        self.max_states = max_states
        self._states: OrderedDict[bytes, tuple[Any, UserState]] = OrderedDict()
        self.applied = self.duplicates = self.unknown_clips = self.decoded = 0
        #: Event ids written lately. A record delivered again at the same offset is
        #: caught by the entry's position; one sent again by the API's outbox (its
        #: producer timed out on a record the broker took) has a later offset and the
        #: same event id. The entry itself keeps its user's last 32 ids (through
        #: restarts and rebalances); this set also catches a copy that comes after
        #: more of that user's events. Remembered only once the entry is written, so
        #: a record whose write failed is applied when the error policy retries it.
        self._recent = RecentIds()

    def _state(self, key: bytes, value: Any, user_id: uuid.UUID) -> UserState:
        """The entry's state: the one kept when this value was written, else decoded."""
        kept = self._states.get(key)
        if kept is not None and value is not None and kept[0] is value:
            return kept[1]
        self.decoded += 1
        return state_of(value, user_id)

    async def __call__(self, rec: Interaction, message: Any) -> None:
        page = rec.clip_ids  # a feed page's impression: one record naming its clips
        if page is None and rec.clip_id is None:
            return
        key = str(rec.user_id).encode()
        value = self.table.get(key)
        recent = recent_events(value)
        if (
            rec.event_id in self._recent
            or already_applied(value, message.partition, message.offset)
            or applied_lately(recent, rec.event_id)
        ):
            self.duplicates += 1  # redelivered, or sent twice: no lookup needed
            log.debug("skipping %s:%s for user %s: already applied", message.partition, message.offset, rec.user_id)
            return
        clip: ClipFacts | None = None
        if rec.clip_id is not None:
            # A cache hit is a dict read: only a miss pays for a thread hop and a query (a
            # hop per record made the worker wait on the pool, not work: 1,100 records/s).
            clip = self.clips.cached(rec.clip_id) or await asyncio.to_thread(self.clips.get, rec.clip_id)
        user = self._state(key, value, rec.user_id)
        try:
            if page is not None:
                # What an impression of each clip would do to the entry: an impression
                # weighs nothing, so no vector, see-less list or affinity moves and no
                # clip is looked up (the replicas apply pages the same way,
                # RankingState._page_shown); the seen set is not part of the entry.
                user.version += len(page)
                user.last_at = max(user.last_at, rec.occurred_at.timestamp())
            else:
                apply_to(user, rec, clip, self.weights)
            user.seen.clear()  # not part of the entry (replicas keep seen sets): keep memory flat
            updated = encode_entry(user, message.partition, message.offset, remember_event(recent, rec.event_id))
            self.table[key] = updated
        except BaseException:
            self._states.pop(key, None)  # the kept state may be ahead of the table now
            raise
        self._recent.add(rec.event_id)
        self._states[key] = (updated, user)
        self._states.move_to_end(key)
        while len(self._states) > self.max_states:
            self._states.popitem(last=False)
        self.unknown_clips += page is None and clip is None
        self.applied += 1


def register(app: faust.App, settings: Settings) -> ErrorPolicy[Any]:
    table = app.Table(
        USER_TASTE.table,
        key_type=bytes,  # the user id as UTF-8: readable by any Kafka client
        partitions=USER_TASTE.partitions,
        help=USER_TASTE.description,
    )
    if table.changelog_topic.get_topic_name() != USER_TASTE.name:  # the catalog creates it by that name
        raise ConfigurationError(f"user_taste changelog would be {table.changelog_topic.get_topic_name()!r}")
    clips = ClipLookup(make_sessionmaker(make_engine(settings.database_url)))
    handler = RankingHandler(table, clips, max_states=settings.ranking.worker_states)

    @app.task
    async def warm_clip_cache() -> None:
        try:
            n = await asyncio.to_thread(clips.warm)
        except Exception:  # a cold cache only costs a query per clip
            log.exception("ranking: warming the clip cache failed")
            return
        log.info("ranking: clip cache warmed with the %d clips published last", n)

    return register_agent(app, INTERACTIONS, settings, handler, name="rank", sender=RecordSender(app))
