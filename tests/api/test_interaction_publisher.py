"""The API's interaction publisher against a real broker: a feed page's impressions go
as one batch per partition, each on the partition a keyed send picks for its user, in
order, and nothing is lost or repeated."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from api.events import InteractionPublisher
from api.feed_service import impressions_for
from core.records import Interaction
from core.topics import INTERACTIONS, decode, record_key
from tests.support.stack import read_topic

pytestmark = pytest.mark.integration


async def _partition_of_keyed_send(broker: str, records: list[Interaction]) -> dict[uuid.UUID, int]:
    """Where the producer's own ``send`` puts each user's records (sent to the topic too,
    as a view, so the test reads them back with the rest)."""
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        out: dict[uuid.UUID, int] = {}
        for r in records:
            view = Interaction(user_id=r.user_id, clip_id=r.clip_id, kind="view", watch_ms=1000)
            meta = await producer.send_and_wait(INTERACTIONS.name, view.to_bytes(), key=record_key(INTERACTIONS, view))
            out[r.user_id] = meta.partition
        return out
    finally:
        await producer.stop()


async def test_pages_go_as_batches_on_the_keyed_partition_in_order(broker: str) -> None:
    publisher = InteractionPublisher(broker, None, None)  # type: ignore[arg-type]  # no outbox: the broker is up
    users = [uuid.uuid4() for _ in range(24)]  # enough users to land on every partition
    # Twenty records a key, one a clip (as a page was sent before it became one record).
    pages = {u: impressions_for(u, [uuid.uuid4() for _ in range(20)])[0].per_clip() for u in users}
    mixed = [r for page in zip(*pages.values(), strict=True) for r in page]  # users interleaved in one call
    try:
        for u in users[:12]:
            assert await publisher.publish_many(pages[u]) == "broker"
        assert await publisher.publish_many([r for r in mixed if r.user_id in set(users[12:])]) == "broker"
    finally:
        await publisher.close()
    assert publisher.direct == 24 * 20 and publisher.via_outbox == 0
    expected = await _partition_of_keyed_send(broker, [pages[u][0] for u in users])
    assert len(set(expected.values())) > 1

    wanted = {r.event_id for page in pages.values() for r in page}
    got: dict[uuid.UUID, list[tuple[int, int, Interaction]]] = {}
    for m in await asyncio.to_thread(read_topic, broker, INTERACTIONS.name):
        rec = decode(INTERACTIONS, m.value)
        if isinstance(rec, Interaction) and rec.event_id in wanted:
            assert m.key == str(rec.user_id).encode()
            got.setdefault(rec.user_id, []).append((m.partition, m.offset, rec))
    assert sum(len(v) for v in got.values()) == len(wanted)  # each once
    for u in users:
        on_topic = sorted(got[u], key=lambda t: t[1])
        assert {p for p, _, _ in on_topic} == {expected[u]}
        assert [r.attributes["position"] for _, _, r in on_topic] == list(range(20))
