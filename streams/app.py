"""Faust app factory and raw topic helpers shared by every worker role."""

from __future__ import annotations

import logging
import uuid
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
    commit as ``reset`` ("earliest" / "latest") says. Returns the committed offsets."""
    committed: dict[Any, int | None] = {}
    for tp in consumer.assignment():
        offset = await consumer.committed(tp)
        committed[tp] = offset
        if tp.topic in changelogs:
            if offset:
                consumer.seek(tp, offset)
        elif offset is not None and offset >= 0:
            consumer.seek(tp, offset)
        elif reset == "earliest":
            await consumer.seek_to_beginning(tp)
        elif reset == "latest":
            await consumer.seek_to_end(tp)
    return committed


def _install_seek_to_committed_zero() -> None:
    """Make Faust's recovery seek really rewind a stream partition committed at
    offset 0, or not committed at all.

    After a rebalance Faust resumes the stream partitions, seeks them to their
    committed offsets, then lets records through; records its fetcher handed over in
    between (or took for a partition recovery had paused) are skipped, and the seek
    is what brings them back. aiokafka's ``seek_to_committed`` seeks only where the
    committed offset is above 0, so a partition committed at 0, or new to the group,
    kept its position past the skipped records: a restarted worker silently lost
    them (the ranking role test caught a worker that never applied three users'
    interactions). Here offset 0 is sought like any other, and a stream partition
    without a commit goes where the reset policy puts a new consumer. Changelog
    partitions are left as aiokafka leaves them (recovery reads them itself).
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


def create_app(settings: Settings, role: str) -> faust.App:
    """One Faust app (and consumer group) per worker role."""
    k = settings.kafka
    _install_fetch_max_wait(k.fetch_max_wait_ms)
    _install_true_highwaters()
    _install_seek_to_committed_zero()
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
