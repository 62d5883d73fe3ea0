"""The outbox relay against a real broker: publishes in order, exactly the pending rows,
and keeps everything while the broker is unreachable."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.broker import EmbeddedBroker, ensure_topics, free_port
from core.db import make_engine, make_sessionmaker, migrate, session_scope
from core.db.models import OutboxMessage
from core.outbox import OutboxRelay, enqueue, stop_quietly
from core.records import GenerationStatus
from core.topics import GENERATION_STATUS, decode
from tests.support.stack import read_topic

pytestmark = pytest.mark.integration


def _enqueue(factory, n: int) -> list[GenerationStatus]:  # type: ignore[no-untyped-def]
    records = [GenerationStatus(prompt_id=uuid.uuid4(), status="queued") for _ in range(n)]
    with session_scope(factory) as s:
        for r in records:
            enqueue(s, GENERATION_STATUS, r)
    return records


def _pending(factory) -> int:  # type: ignore[no-untyped-def]
    with session_scope(factory) as s:
        return int(
            s.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None)))
        )


async def test_relay_publishes_every_pending_row_once(broker: str, db_url: str) -> None:
    migrate(db_url)
    factory = make_sessionmaker(make_engine(db_url))
    records = _enqueue(factory, 250)  # more than one batch
    relay = OutboxRelay(factory, broker, batch_size=100)
    try:
        assert await relay.publish_pending() == 100
        while await relay.publish_pending():
            pass
        assert await relay.publish_pending() == 0
    finally:
        await relay.close()
    assert _pending(factory) == 0 and relay.published == 250
    wanted = {r.event_id for r in records}
    on_topic = [
        decode(GENERATION_STATUS, m.value) for m in await asyncio.to_thread(read_topic, broker, GENERATION_STATUS.name)
    ]
    mine = [r for r in on_topic if r.event_id in wanted]
    assert len(mine) == 250 and {r.event_id for r in mine} == wanted


async def test_relay_keeps_rows_while_the_broker_is_down_and_catches_up(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(db_url)
    factory = make_sessionmaker(make_engine(db_url))
    port = free_port()
    relay = OutboxRelay(factory, f"127.0.0.1:{port}", poll_interval_s=0.1)
    task = asyncio.create_task(relay.run())
    try:
        records = _enqueue(factory, 5)
        relay.notify()
        await asyncio.sleep(2.0)
        assert _pending(factory) == 5, "nothing is lost or marked sent while the broker is down"
        assert relay.last_error is not None

        broker = EmbeddedBroker("127.0.0.1", port, tmp_path / "tansu.log")
        broker.start()
        try:
            await asyncio.to_thread(ensure_topics, broker.bootstrap_servers)
            for _ in range(150):
                if _pending(factory) == 0:
                    break
                await asyncio.sleep(0.2)
            assert _pending(factory) == 0, f"relay did not catch up: {relay.last_error}"
            assert relay.last_error is None
            got = await asyncio.to_thread(read_topic, broker.bootstrap_servers, GENERATION_STATUS.name)
            assert sorted(str(decode(GENERATION_STATUS, m.value).event_id) for m in got) == sorted(
                str(r.event_id) for r in records
            )
        finally:
            broker.stop()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await relay.close()


def test_a_producer_that_never_stops_does_not_hold_up_shutdown(caplog: pytest.LogCaptureFixture) -> None:
    """aiokafka's stop waits for pending batches, which against a broker that went
    away can be forever: stop_quietly gives up after its timeout and says so."""

    class Stuck:
        async def stop(self) -> None:
            await asyncio.Event().wait()

    started = time.monotonic()
    asyncio.run(stop_quietly(Stuck(), timeout_s=0.2))  # type: ignore[arg-type]
    assert time.monotonic() - started < 5
    assert "did not stop within" in caplog.text


async def test_a_relay_cancelled_while_claiming_stops(broker: str, tmp_path: Path) -> None:
    """Shutdown cancels the relay whenever it happens to be; here, while its session is
    still getting a database connection on a worker thread. Rolling that session back
    from another thread at once made SQLAlchemy refuse ("concurrent operations are not
    permitted"); the relay took that for a broker fault, retried, and the API's shutdown
    hung for good (seen in CI). The relay must wait for the thread, then stop."""
    import threading

    from sqlalchemy import event

    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(db_url)
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    _enqueue(factory, 3)
    checking_out, release = threading.Event(), threading.Event()

    @event.listens_for(engine, "checkout")
    def _slow_checkout(*_: object) -> None:
        if not release.is_set():
            checking_out.set()
            release.wait(10)

    relay = OutboxRelay(factory, broker, poll_interval_s=0.1)
    task = asyncio.create_task(relay.run())
    try:
        assert await asyncio.to_thread(checking_out.wait, 10), "the relay never reached the database"
        task.cancel()
        await asyncio.sleep(0.3)  # the cancellation is delivered while the checkout still blocks
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        assert relay.last_error is None, relay.last_error
    finally:
        release.set()
        task.cancel()
        await relay.close()
