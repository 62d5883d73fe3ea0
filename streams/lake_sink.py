"""The lake sink: every topic archived to Parquet (layout and files: core/lake.py).

    clipstream lake sink          # `clipstream up` runs it with the workers
    clipstream lake compact       # merge small files

Not a Faust agent. Faust acknowledges a message once its agent moves on and commits
on its own schedule, but rows wait in memory until their file is written, so a crash
would lose what Faust had already committed. Here the files are the record of what is
archived: on every partition assignment the consumer is sought to the offset after the
last one in that partition's files (the beginning when there are none), and the
group's committed offsets only follow the files, for lag monitoring. A restarted or
rebalanced sink therefore neither skips nor repeats a record, and partitions given to
another member are flushed to files first.

A file holds one partition's consecutive offsets within one hour (broker timestamp),
so a partition's buffer is written when the hour of the next record differs (a late
record starts a file in its own, earlier hour), when it reaches ``roll_rows`` rows or
``roll_bytes`` bytes, or ``roll_seconds`` after its first row. A value that does not
decode as its topic's record goes to the topic's dead-letter twin with the pipeline's
``x-dlq-*`` headers (consumer ``clipstream-lake``) and is archived from there; the
archive never drops anything silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from core import metrics
from core.errors import RecordError
from core.health import HEARTBEAT_FILE, HEARTBEAT_INTERVAL_S, HEARTBEAT_STALE_S
from core.lake import Lake, Row, archived_topics, frame
from core.records import Record
from core.settings import Settings
from core.topics import BY_NAME, decode
from streams.errors import send_dead_letter

log = logging.getLogger(__name__)

GROUP = "clipstream-lake"


@dataclass
class _Buffer:
    hour: datetime
    first: int
    last: int = -1
    rows: list[Row] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    nbytes: int = 0
    opened: float = field(default_factory=time.monotonic)


@dataclass
class SinkStats:
    consumed: int = 0
    files: int = 0
    rows: int = 0
    dead_lettered: int = 0


class LakeSink:
    def __init__(
        self,
        lake: Lake,
        bootstrap: str,
        *,
        topics: Sequence[str] | None = None,
        roll_rows: int = 50_000,
        roll_bytes: int = 64 << 20,
        roll_seconds: float = 60.0,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 1_000,
        fetch_max_wait_ms: int = 100,
        heartbeat_file: Any = None,
    ) -> None:
        self.lake = lake
        self.bootstrap = bootstrap
        self.topics = list(topics or archived_topics())
        self.roll_rows, self.roll_bytes, self.roll_seconds = roll_rows, roll_bytes, roll_seconds
        self.consumer_options = {
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "fetch_max_wait_ms": fetch_max_wait_ms,
        }
        self.heartbeat_file = heartbeat_file
        self.liveness = metrics.LoopProbe(HEARTBEAT_STALE_S)
        self.buffers: dict[TopicPartition, _Buffer] = {}
        self.stats = SinkStats()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LakeSink:
        lk, k = settings.lake, settings.kafka
        return cls(
            Lake(lk.root),
            k.servers,
            roll_rows=lk.roll_rows,
            roll_bytes=lk.roll_bytes,
            roll_seconds=lk.roll_seconds,
            session_timeout_ms=int(k.session_timeout_s * 1000),
            heartbeat_interval_ms=int(k.heartbeat_interval_s * 1000),
            fetch_max_wait_ms=k.fetch_max_wait_ms,
            heartbeat_file=settings.workers.data_dir / "lake" / HEARTBEAT_FILE,
        )

    # --- the loop ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> SinkStats:
        removed = await asyncio.to_thread(self.lake.remove_leftovers)
        if removed:
            log.info("lake: removed %d leftover file(s) of interrupted writes or compactions", removed)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=GROUP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.consumer_options,
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self.producer.start()
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        beat = 0.0
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(timeout_ms=200, max_records=5_000)
                for tp, messages in batch.items():
                    dead = self.stats.dead_lettered
                    for m in messages:
                        await self._add(tp, m)
                    dead = self.stats.dead_lettered - dead
                    metrics.MESSAGES.labels(GROUP, tp.topic, "processed").inc(len(messages) - dead)
                    if dead:
                        metrics.MESSAGES.labels(GROUP, tp.topic, "dead_lettered").inc(dead)
                await self._flush_due()
                if time.monotonic() - beat > HEARTBEAT_INTERVAL_S:
                    self.liveness.beat()
                    if self.heartbeat_file is not None:
                        self.heartbeat_file.parent.mkdir(parents=True, exist_ok=True)
                        self.heartbeat_file.touch()
                    metrics.set_lag(GROUP, await self.lags())
                    beat = time.monotonic()
            await self.flush(list(self.buffers))
        finally:
            await self.consumer.stop()
            await self.producer.stop()
        return self.stats

    async def _add(self, tp: TopicPartition, m: Any) -> None:
        self.stats.consumed += 1
        spec = BY_NAME.get(tp.topic)
        record: Record | None = None
        if spec is not None:
            try:
                record = decode(spec, m.value)
            except RecordError as e:
                await self._dead_letter(spec.dlq, m, e)
        row = Row(m.partition, m.offset, m.timestamp, m.key, m.value, tuple(m.headers or ()))
        buf = self.buffers.get(tp)
        if buf is not None and buf.hour != row.hour:
            await self.flush([tp])
            buf = None
        if buf is None:
            buf = self.buffers[tp] = _Buffer(row.hour, m.offset)
        buf.last = m.offset
        if spec is None or record is not None:
            buf.rows.append(row)
            if record is not None:
                buf.records.append(record)
            buf.nbytes += len(m.value or b"") + len(m.key or b"")
        if len(buf.rows) >= self.roll_rows or buf.nbytes >= self.roll_bytes:
            await self.flush([tp])

    async def _dead_letter(self, dlq: str, m: Any, exc: BaseException) -> None:
        producer = self.producer
        assert producer is not None

        async def send(topic: str, key: bytes | None, value: bytes | None, headers: dict[str, bytes]) -> None:
            await producer.send_and_wait(topic, value, key=key, headers=list(headers.items()))

        await send_dead_letter(send, dlq, m, exc, 0, GROUP)
        self.stats.dead_lettered += 1
        log.warning("lake: dead-lettered %s:%s@%s: %s", m.topic, m.partition, m.offset, exc)

    async def _flush_due(self) -> None:
        now = time.monotonic()
        due = [tp for tp, b in self.buffers.items() if now - b.opened >= self.roll_seconds]
        if due:
            await self.flush(due)

    async def flush(self, tps: Sequence[TopicPartition]) -> None:
        """Write the buffers of ``tps`` to files, then commit past them."""
        commits = {}
        for tp in tps:
            buf = self.buffers.pop(tp, None)
            if buf is None:
                continue
            if buf.rows:
                df = frame(tp.topic, buf.rows, buf.records if BY_NAME.get(tp.topic) else None)
                await asyncio.to_thread(self.lake.write, tp.topic, df, buf.hour, buf.first, buf.last)
                self.stats.files += 1
                self.stats.rows += len(buf.rows)
                commits[tp] = buf.last + 1
            # A buffer of nothing but dead-lettered records writes no file: a restart
            # reads them again and dead-letters them again (the same x-dlq-source-*).
        if commits and self.consumer is not None:
            try:
                await self.consumer.commit(commits)
            except Exception as e:  # noqa: BLE001 — informational: the files are what counts
                log.warning("lake: commit failed (positions come from the files): %s", e)

    async def lags(self) -> list[tuple[str, int, int]]:
        """``(topic, partition, lag)``: records not yet in a file, for every partition held."""
        assert self.consumer is not None
        out = []
        for tp in sorted(self.consumer.assignment()):
            end = self.consumer.highwater(tp)
            if end is None:
                continue
            buf = self.buffers.get(tp)
            start = buf.first if buf is not None else await self.consumer.position(tp)
            out.append((tp.topic, tp.partition, end - start))
        return out

    def readiness(self) -> tuple[bool, str]:
        """Ready once the consumer holds partitions (``/readyz``)."""
        held = self.consumer.assignment() if self.consumer is not None else set()
        return bool(held), f"archiving {len(held)} partition(s)" if held else "joining the group"

    def resume_offsets(self, assigned: set[TopicPartition]) -> dict[TopicPartition, int | None]:
        """Where each partition resumes: after the last offset its files hold (None:
        nothing archived yet, from the beginning)."""
        nxt = {topic: self.lake.next_offsets(topic) for topic in {tp.topic for tp in assigned}}
        return {tp: nxt[tp.topic].get(tp.partition) for tp in assigned}

    async def seek(self, offsets: dict[TopicPartition, int | None]) -> None:
        """Position the consumer where the files end; the group's commits play no part
        (a new lake root starts from the beginning whatever the group committed)."""
        assert self.consumer is not None
        for tp, offset in offsets.items():
            self.buffers.pop(tp, None)
            if offset is not None:
                self.consumer.seek(tp, offset)
        fresh = [tp for tp, offset in offsets.items() if offset is None]
        if fresh:
            await self.consumer.seek_to_beginning(*fresh)
        log.info("lake: assigned %d partition(s), resuming after what the files hold", len(offsets))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, sink: LakeSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.sink.flush([tp for tp in revoked if tp in self.sink.buffers])

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.sink.seek(await asyncio.to_thread(self.sink.resume_offsets, set(assigned)))


def run(settings: Settings) -> None:
    """``clipstream lake sink``: archive until SIGINT/SIGTERM, then flush and stop."""
    import signal

    sink = LakeSink.from_settings(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stats = await sink.run(stop)
        log.info("lake: stopped; %s", stats)

    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    metrics.serve(settings.workers.metrics_port, liveness=sink.liveness, readiness=sink.readiness)
    asyncio.run(main())
