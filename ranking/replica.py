"""LogTail: one process's own copy of the ranking state, fed from the log.

Each API replica reads every partition of the topics that make up the ranking state
(published, flagged and decided clips, and interactions) with a plain consumer of its
own — no consumer group, so every replica sees everything — and applies each record to
its :class:`~ranking.state.RankingState`. Replicas share nothing but the log: add one
and it catches up by itself.

Start: from a snapshot's positions when one is given (see :mod:`ranking.snapshot`),
otherwise from the beginning of each partition. The tail is *ready* once it has
applied everything that was in the log when it started; until then the API serves the
newest-first feed from the SQL store instead. A record this reader cannot decode is
counted and skipped: the materializer, which consumes the same topics in a group,
dead-letters it, and a second copy in the DLQ would help nobody.

Records are applied in small batches under the state's lock, in a worker thread, so a
catch-up of millions of records never holds a feed request up for more than one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from core.aio import stop_if_cancelling
from core.errors import RecordError
from core.records import Record
from core.topics import CLIPS_FLAGGED, CLIPS_PUBLISHED, INTERACTIONS, MODERATION_DECISIONS, TopicSpec, decode
from ranking.state import RankingState

log = logging.getLogger(__name__)

TOPICS: tuple[TopicSpec, ...] = (CLIPS_PUBLISHED, CLIPS_FLAGGED, MODERATION_DECISIONS, INTERACTIONS)
APPLY_BATCH = 200
Positions = dict[str, int]  # "topic:partition" → next offset to read


def position_key(tp: TopicPartition) -> str:
    return f"{tp.topic}:{tp.partition}"


@dataclass
class TailStatus:
    ready: bool
    applied: int
    skipped: int
    lag: int | None
    last_error: str | None
    caught_up_s: float | None


class LogTail:
    def __init__(
        self,
        state: RankingState,
        bootstrap_servers: str,
        *,
        positions: Mapping[str, int] | None = None,
        fetch_max_wait_ms: int = 50,
        retry_s: float = 2.0,
        topics: tuple[TopicSpec, ...] = TOPICS,
    ) -> None:
        self.state = state
        self.bootstrap_servers = bootstrap_servers
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.retry_s = retry_s
        self.topics = {spec.name: spec for spec in topics}
        self.positions: Positions = dict(positions or {})
        self.ready = asyncio.Event()
        self.applied = 0
        self.skipped = 0
        self.last_error: str | None = None
        self._targets: Positions = {}  # end offsets when the tail started: "ready" once passed
        self._ends: Positions = {}  # latest end offsets seen (for lag)
        self._started = time.monotonic()
        self.caught_up_s: float | None = None
        self._consumer: AIOKafkaConsumer | None = None

    # ------------------------------------------------------------------ status
    def lag(self) -> int | None:
        if not self._ends:
            return None
        return sum(max(0, end - self.positions.get(key, 0)) for key, end in self._ends.items())

    def status(self) -> TailStatus:
        return TailStatus(
            self.ready.is_set(), self.applied, self.skipped, self.lag(), self.last_error, self.caught_up_s
        )

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Read and apply until cancelled; reconnects after broker trouble."""
        while True:
            try:
                await self._run_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 — broker away or restarting: retry
                stop_if_cancelling(e)
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("ranking log tail: %s; retrying in %.1f s", self.last_error, self.retry_s)
                await asyncio.sleep(self.retry_s)
            finally:
                consumer, self._consumer = self._consumer, None
                if consumer is not None:
                    with contextlib.suppress(Exception):
                        await consumer.stop()

    async def _run_once(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer = consumer
        await consumer.start()
        partitions: list[TopicPartition] = []
        for name in self.topics:
            parts = consumer.partitions_for_topic(name)
            if not parts:
                await consumer.client.force_metadata_update()
                parts = consumer.partitions_for_topic(name)
            if not parts:
                raise RuntimeError(f"topic {name} does not exist (run `clipstream topics`)")
            partitions += [TopicPartition(name, p) for p in sorted(parts)]
        consumer.assign(partitions)
        for tp in partitions:
            at = self.positions.get(position_key(tp))
            if at is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, at)
        for tp in partitions:
            # Where reading starts (past anything retention already deleted).
            self.positions[position_key(tp)] = await consumer.position(tp)
        ends = await consumer.end_offsets(partitions)
        if not self._targets:
            self._targets = {position_key(tp): end for tp, end in ends.items()}
        self._ends = {position_key(tp): end for tp, end in ends.items()}
        self.last_error = None
        self._check_ready()
        # Catch-up reads clips before interactions: a like replayed before its clip is
        # known could not move the liker's taste. Live, clips precede their likes anyway.
        clip_parts = [tp for tp in partitions if tp.topic != INTERACTIONS.name]
        held = [tp for tp in partitions if tp.topic == INTERACTIONS.name]
        if held and not self._reached(clip_parts):
            consumer.pause(*held)
        else:
            held = []
        last_ends = time.monotonic()
        while True:
            if held and self._reached(clip_parts):
                consumer.resume(*held)
                held = []
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, messages in batches.items():
                spec = self.topics[tp.topic]
                records: list[tuple[Record, tuple[int, int] | None]] = []
                is_interactions = tp.topic == INTERACTIONS.name
                for m in messages:
                    try:
                        records.append((decode(spec, m.value), (tp.partition, m.offset) if is_interactions else None))
                    except RecordError as e:
                        self.skipped += 1
                        log.info("ranking log tail skips %s@%d: %s", position_key(tp), m.offset, e)
                key = position_key(tp)
                for i in range(0, len(records), APPLY_BATCH):
                    last = i + APPLY_BATCH >= len(records)
                    done = (key, messages[-1].offset + 1) if last else None
                    await asyncio.to_thread(self._apply, records[i : i + APPLY_BATCH], done)
                if messages and not records:
                    self.positions[key] = messages[-1].offset + 1
            if not self.ready.is_set() or time.monotonic() - last_ends > 5.0:
                for tp in partitions:
                    # highwater() is the end offset from the last fetch response.
                    high = consumer.highwater(tp)
                    if high is not None:
                        self._ends[position_key(tp)] = high
                last_ends = time.monotonic()
            self._check_ready()

    def _apply(
        self, records: Sequence[tuple[Record, tuple[int, int] | None]], done: tuple[str, int] | None = None
    ) -> None:
        """Apply records; ``done`` (partition key, next offset) moves the position under
        the same lock, so a snapshot never holds a record without its position."""
        with self.state.lock:
            for rec, position in records:
                try:
                    self.state.apply(rec, position)
                except Exception as e:  # noqa: BLE001 — one record it cannot use must not stop the tail
                    self.skipped += 1
                    log.warning("ranking log tail cannot apply %s %s: %s", type(rec).__name__, rec.event_id, e)
            if done is not None:
                self.positions[done[0]] = done[1]
        self.applied += len(records)

    def _reached(self, partitions: list[TopicPartition]) -> bool:
        at, target = self.positions, self._targets
        return all(at.get(position_key(tp), 0) >= target.get(position_key(tp), 0) for tp in partitions)

    def _check_ready(self) -> None:
        if self.ready.is_set():
            return
        if all(self.positions.get(key, 0) >= end for key, end in self._targets.items()):
            self.caught_up_s = round(time.monotonic() - self._started, 3)
            log.info("ranking log tail caught up: %d records in %.1f s", self.applied, self.caught_up_s)
            self.ready.set()

    async def wait_ready(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), timeout)
        return self.ready.is_set()
