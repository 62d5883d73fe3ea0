"""Faust app factory and raw topic helpers shared by every worker role."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TopicT

from core.broker import end_offsets
from core.records import CLIPSTREAM_NAMESPACE, GenerationStatus, PromptStatusValue, Record
from core.settings import Settings
from core.topics import GENERATION_STATUS, TopicSpec, record_key

log = logging.getLogger(__name__)

_FETCH_MAX_WAIT_MS: int | None = None


def _install_fetch_max_wait(ms: int) -> None:
    """Make Faust's consumers use ``ms`` as fetch_max_wait_ms (it hard-codes 1500).

    aiokafka reads the value from the consumer object when it starts its fetcher, so
    setting it right after Faust constructs the consumer is enough.
    """
    global _FETCH_MAX_WAIT_MS
    _FETCH_MAX_WAIT_MS = ms
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._create_worker_consumer
    if getattr(original, "_clipstream_fetch_wait", False):
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        if _FETCH_MAX_WAIT_MS is not None:
            consumer._fetch_max_wait_ms = _FETCH_MAX_WAIT_MS
        return consumer

    create_worker_consumer._clipstream_fetch_wait = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def _install_true_highwaters() -> None:
    """Make Faust read a table's changelog to its real end when it recovers the table.

    Faust restores a table by reading its changelog up to the end offsets that
    ListOffsets reports, which Tansu gets wrong after a batch of several records
    (see core.broker.end_offsets); Faust batches changelog writes, so a restarted
    worker would silently lose the latest updates of some keys. The end offsets are
    checked with a fetch from a short-lived consumer of our own (Faust's consumer
    must keep its positions).
    """
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._highwaters
    if getattr(original, "_clipstream_true_highwaters", False):
        return

    async def highwaters(self: Any, partitions: list[Any]) -> Any:
        ends = await original(self, partitions)
        if self.consumer.in_transaction or not any(v > 0 for v in ends.values()):
            return ends
        probe = AIOKafkaConsumer(
            bootstrap_servers=driver.server_list(self.transport.url, self.transport.default_port),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        await probe.start()
        try:
            tps = [TopicPartition(tp.topic, tp.partition) for tp in ends]
            probe.assign(tps)
            checked = await end_offsets(probe, tps)
        finally:
            await probe.stop()
        fixed = {tp: max(v, checked[TopicPartition(tp.topic, tp.partition)]) for tp, v in ends.items()}
        if fixed != ends:
            log.info(
                "end offsets corrected by a fetch: %s",
                {f"{t.topic}:{t.partition}": v for t, v in fixed.items() if v != ends[t]},
            )
        return fixed

    highwaters._clipstream_true_highwaters = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._highwaters = highwaters  # type: ignore[method-assign]


async def seek_to_committed_offsets(consumer: Any, reset: str, changelogs: set[str]) -> dict[Any, int | None]:
    """Seek every partition ``consumer`` (an AIOKafkaConsumer) is assigned to its
    group's committed offset, 0 included; a partition of a topic in ``changelogs`` only
    when that offset is above 0 (as aiokafka does), and a stream partition without a
    commit as ``reset`` ("earliest" / "latest") says. Returns the committed offsets.

    Every offset is looked up first and the partitions are then sought together, with
    no await in between: the consumer keeps fetching meanwhile, and a record fetched
    from a partition already sought must not reach Faust before Faust has reset its
    read offsets from what this returns (Faust drops a record below its read offset).
    """
    assigned = list(consumer.assignment())
    committed: dict[Any, int | None] = {tp: await consumer.committed(tp) for tp in assigned}
    fresh = [tp for tp, c in committed.items() if tp.topic not in changelogs and (c is None or c < 0)]
    starts = await consumer.beginning_offsets(fresh) if fresh and reset == "earliest" else {}
    for tp in assigned:
        offset = committed[tp]
        if tp.topic in changelogs:
            if offset:
                consumer.seek(tp, offset)
        elif offset is not None and offset >= 0:
            consumer.seek(tp, offset)
        elif tp in starts:
            consumer.seek(tp, starts[tp])
    if fresh and reset == "latest":  # nothing before the end is delivered again: order does not matter
        await consumer.seek_to_end(*fresh)
    return committed


def _install_seek_to_committed_zero() -> None:
    """Make Faust's recovery seek really rewind a stream partition committed at
    offset 0, or not committed at all.

    During a rebalance Faust skips records its fetcher has already taken (for a
    partition it paused, from an earlier generation, while flow control was off) and
    relies on the seek to the committed offsets at the end of recovery to deliver them
    again. aiokafka's ``seek_to_committed`` seeks only where the committed offset is
    above 0, so a partition committed at 0, or new to the group, kept its position past
    the skipped records: a restarted worker silently lost them (the ranking role test
    caught a worker that never applied three users' interactions). Here offset 0 is
    sought like any other, and a stream partition without a commit goes where the
    reset policy puts a new consumer. Changelog partitions are left as aiokafka leaves
    them (recovery reads them itself).
    """
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread.seek_to_committed
    if getattr(original, "_clipstream_seek_zero", False):
        return

    async def seek_to_committed(self: Any) -> Any:
        reset = str(self.app.conf.consumer_auto_offset_reset)
        changelogs = set(self.app.tables.changelog_topics)
        return await self.call_thread(seek_to_committed_offsets, self._ensure_consumer(), reset, changelogs)

    seek_to_committed._clipstream_seek_zero = True  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]


def holding_stream_resumes(original: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """Faust's ``Consumer.resume_partitions``, except that while the consumer holds a
    set in ``_clipstream_held`` stream partitions go there instead of resuming."""

    def resume_partitions(self: Any, tps: Any) -> None:
        held: set[Any] | None = getattr(self, "_clipstream_held", None)
        tps = set(tps)
        if held is not None:
            streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
            held |= streams
            tps -= streams
        original(self, tps)

    return resume_partitions


def resuming_after(method: Any, resume: Callable[[Any, Any], None]) -> Any:
    """A Recovery method that ends a rebalance, with the stream partitions it resumes
    held back until it has returned (and so sought them), then resumed with
    ``resume`` unless another rebalance has begun."""

    async def run(self: Any, generation_id: int = 0) -> None:
        consumer = self.app.consumer
        held: set[Any] = set()
        consumer._clipstream_held = held
        try:
            await method(self, generation_id)
        finally:
            consumer._clipstream_held = None
        if not held:
            return
        if self.app.consumer_generation_id != generation_id:
            log.info("another rebalance began: %d stream partition(s) stay paused for it", len(held))
            return
        assigned = held & set(consumer.assignment())
        resume(consumer, assigned)
        log.info("resumed %d stream partition(s) after the seek to committed offsets", len(assigned))

    return run


def _install_resume_after_seek() -> None:
    """Keep a worker's stream partitions paused until recovery has sought them.

    At the end of a rebalance Faust resumes the stream partitions first and seeks them
    to the committed offsets after. In between, the fetcher can already hand the agent
    records that lie past the ones skipped during the rebalance; the agent applies
    them, and when the seek delivers the skipped ones again, a handler that ignores
    what is at or below the last offset it applied (the ranking worker) drops them as
    duplicates. Here the resume that recovery asks for is held back for stream
    partitions and done when recovery returns: after the seek and the reset of Faust's
    read offsets, with flow control back on. Changelog partitions resume as before. If
    recovery fails or another rebalance starts, they stay paused (the next rebalance
    pauses and resumes them anyway).
    """
    from faust.tables.recovery import Recovery
    from faust.transport.consumer import Consumer

    original = Consumer.resume_partitions
    if getattr(original, "_clipstream_after_seek", False):
        return
    patched = holding_stream_resumes(original)
    patched._clipstream_after_seek = True  # type: ignore[attr-defined]
    Consumer.resume_partitions = patched  # type: ignore[method-assign,assignment]
    Recovery.on_recovery_completed = resuming_after(Recovery.on_recovery_completed, original)  # type: ignore[method-assign]
    Recovery._resume_streams = resuming_after(Recovery._resume_streams, original)  # type: ignore[method-assign]


#: How long a role's producer waits to fill a batch. Only the ranking worker waits: it
#: produces nothing but its table's changelog (one record per interaction), and sending
#: each in its own request cost it a quarter of its throughput (bench/interactions.py:
#: 733 → 1,013 events/s). The other roles produce the pipeline's records, where every
#: millisecond is prompt → published latency.
PRODUCER_LINGER_MS = {"ranking": 10}


def create_app(settings: Settings, role: str) -> faust.App:
    """One Faust app (and consumer group) per worker role."""
    k = settings.kafka
    _install_fetch_max_wait(k.fetch_max_wait_ms)
    _install_true_highwaters()
    _install_seek_to_committed_zero()
    _install_resume_after_seek()
    return faust.App(
        f"clipstream-{role}",
        broker=[f"kafka://{server.strip()}" for server in k.servers.split(",")],
        store="memory://",
        datadir=str(settings.workers.data_dir / role),
        broker_session_timeout=k.session_timeout_s,
        broker_rebalance_timeout=k.rebalance_timeout_s,
        broker_heartbeat_interval=k.heartbeat_interval_s,
        # Source topics are created by `clipstream topics` with fixed partition
        # counts; Faust must not create them with its own defaults.
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        # A new consumer group must not skip prompts sent before it first joined.
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=PRODUCER_LINGER_MS.get(role, 0),
        stream_wait_empty=True,
    )


def raw_topic(app: faust.App, name: str) -> TopicT:
    """Bytes in, bytes out: records are decoded by us so bad ones can be dead-lettered."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        allow_empty=True,
    )


def derived_event_id(source_event_id: uuid.UUID, purpose: str) -> uuid.UUID:
    """Event ids of outputs are derived from their input, so a redelivered input
    re-emits byte-identical events that downstream dedupe recognises."""
    return uuid.uuid5(CLIPSTREAM_NAMESPACE, f"{purpose}:{source_event_id}")


class RecordSender:
    """Sends records to catalog topics and waits until the broker has them.

    Waiting for the ack before the input is acknowledged is what makes the pipeline
    at-least-once: a crash before the ack means the input is processed again.
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._topics: dict[str, TopicT] = {}

    def topic(self, name: str) -> TopicT:
        if name not in self._topics:
            self._topics[name] = raw_topic(self.app, name)
        return self._topics[name]

    async def send(self, spec: TopicSpec, record: Record, headers: dict[str, bytes] | None = None) -> Any:
        topic = self.topic(spec.name)
        fut = await topic.send(key=record_key(spec, record), value=record.to_bytes(), headers=headers)
        return await fut

    async def send_status(
        self,
        source_event_id: uuid.UUID,
        prompt_id: uuid.UUID,
        status: PromptStatusValue,
        *,
        clip_id: uuid.UUID | None = None,
        reason: str | None = None,
        stage_ms: int | None = None,
    ) -> Any:
        """A step of the prompt's life on generation.status, with an event id derived
        from the input that caused it (so a replay re-sends the same event)."""
        record = GenerationStatus(
            event_id=derived_event_id(source_event_id, f"status.{status}"),
            prompt_id=prompt_id,
            status=status,
            clip_id=clip_id,
            reason=reason[:500] if reason else None,
            stage_ms=stage_ms,
        )
        return await self.send(GENERATION_STATUS, record)

    async def send_raw(self, name: str, key: bytes | None, value: bytes | None, headers: dict[str, bytes]) -> Any:
        fut = await self.topic(name).send(key=key, value=value, headers=headers)
        return await fut
