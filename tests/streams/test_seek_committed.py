"""Recovery's seek to the committed offsets, on a real broker (Tansu).

During a rebalance Faust skips records its fetcher has already taken and relies on
this seek to deliver them again; a partition the seek leaves alone loses them. These
tests pin where each kind of partition ends up (streams.app.seek_to_committed_offsets),
show the aiokafka behaviour it replaces, and that no partition is sought before every
offset is known.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from streams.app import seek_to_committed_offsets
from tests.support.stack import produce

pytestmark = pytest.mark.integration


async def _consumed_to_the_end(bootstrap: str, stream: str, changelog: str) -> AIOKafkaConsumer:
    """A member of a fresh group holding every partition of both topics, having read
    them all (so every position is past the records)."""
    consumer = AIOKafkaConsumer(
        stream,
        changelog,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    want = {TopicPartition(stream, 0): 3, TopicPartition(stream, 1): 2, TopicPartition(changelog, 0): 2}
    for _ in range(150):
        await consumer.getmany(timeout_ms=200)
        if consumer.assignment() == set(want) and [await consumer.position(tp) for tp in want] == list(want.values()):
            return consumer
    await consumer.stop()
    raise AssertionError(f"never read every partition to its end: {consumer.assignment()}")


@pytest.fixture
def topics(broker: str) -> tuple[str, str]:
    stream, changelog = f"s-{uuid.uuid4().hex[:8]}", f"s-{uuid.uuid4().hex[:8]}-changelog"

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(stream, 2, 1), NewTopic(changelog, 1, 1)])
        finally:
            await admin.close()

    asyncio.run(create())
    produce(broker, stream, [(b"a", b"1"), (b"a", b"2"), (b"a", b"3")], partition=0)
    produce(broker, stream, [(b"b", b"1"), (b"b", b"2")], partition=1)
    produce(broker, changelog, [(b"a", b"x"), (b"b", b"y")], partition=0)
    return stream, changelog


def test_offset_zero_and_no_commit_are_sought_and_changelogs_left_alone(broker: str, topics: tuple[str, str]) -> None:
    stream, changelog = topics
    s0, s1, c0 = TopicPartition(stream, 0), TopicPartition(stream, 1), TopicPartition(changelog, 0)

    async def go() -> None:
        consumer = await _consumed_to_the_end(broker, stream, changelog)
        try:
            await consumer.commit({s0: OffsetAndMetadata(0, "")})  # s1 and the changelog: no commit
            # What aiokafka alone does: offset 0 and "no commit" are not sought.
            assert await consumer.seek_to_committed() == {s0: 0, s1: None, c0: None}
            assert [await consumer.position(tp) for tp in (s0, s1, c0)] == [3, 2, 2]

            committed = await seek_to_committed_offsets(consumer, "earliest", {changelog})
            assert committed == {s0: 0, s1: None, c0: None}
            assert [await consumer.position(tp) for tp in (s0, s1, c0)] == [0, 0, 2]
            records = await consumer.getmany(s0, timeout_ms=5000)
            assert [r.value for r in records[s0]] == [b"1", b"2", b"3"], "delivered again from offset 0"

            await consumer.commit({s0: OffsetAndMetadata(2, ""), c0: OffsetAndMetadata(1, "")})
            await seek_to_committed_offsets(consumer, "latest", {changelog})
            assert [await consumer.position(tp) for tp in (s0, s1, c0)] == [2, 2, 1]
        finally:
            await consumer.stop()

    asyncio.run(go())


class _Spy:
    """The consumer, with its calls recorded in order."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.consumer = consumer
        self.calls: list[str] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        attr = getattr(self.consumer, name)
        if name not in {"committed", "beginning_offsets", "seek"}:
            return attr
        self.calls.append(name)
        return attr


def test_every_offset_is_looked_up_before_any_partition_is_sought(broker: str, topics: tuple[str, str]) -> None:
    """The consumer keeps fetching while the lookups await the broker; a partition
    sought before them would hand over records that Faust, whose read offsets are
    reset only when the seek returns, drops as already read."""
    stream, changelog = topics

    async def go() -> None:
        consumer = await _consumed_to_the_end(broker, stream, changelog)
        try:
            await consumer.commit({TopicPartition(stream, 0): OffsetAndMetadata(1, "")})
            spy = _Spy(consumer)
            await seek_to_committed_offsets(spy, "earliest", {changelog})
            first_seek = spy.calls.index("seek")
            assert set(spy.calls[first_seek:]) == {"seek"}, spy.calls
            assert spy.calls.count("seek") == 2  # the stream partitions; the changelog has no commit
        finally:
            await consumer.stop()

    asyncio.run(go())
