"""Transactional outbox: enqueue in the writer's transaction, relay to Kafka later.

A broker outage delays events but loses none. The relay claims pending rows in id
order (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so API replicas share the work),
sends them with acks=all, and stamps ``published_at`` in the same transaction. A crash
between the send and the stamp re-sends the row: consumers dedupe on event_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.aio import in_thread, stop_if_cancelling
from core.db.engine import session_scope
from core.db.models import OutboxMessage
from core.records import Record
from core.topics import TopicSpec, record_key

log = logging.getLogger(__name__)


async def stop_quietly(producer: AIOKafkaProducer | None, timeout_s: float = 10.0) -> None:
    """Stop a producer whose broker may be gone; a failing stop changes nothing.

    Bounded: aiokafka's stop waits for every pending batch, which against a broker that
    went away (or came back empty) can be forever, and a process shutting down must
    not hang on it. Nothing is lost by cutting it short: the relay marks an outbox row
    published only once the broker acknowledged it, and a direct publish that was not
    acknowledged in time has already fallen back to the outbox.
    """
    if producer is not None:
        try:
            await asyncio.wait_for(producer.stop(), timeout_s)
        except TimeoutError:
            log.warning("a Kafka producer did not stop within %.0fs; leaving it", timeout_s)
        except Exception:  # noqa: BLE001
            pass


def pending(session: Session) -> int:
    """Outbox events not yet acknowledged by the broker."""
    from sqlalchemy import func

    count = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
    return int(session.scalar(count) or 0)


def enqueue(session: Session, spec: TopicSpec, record: Record) -> OutboxMessage:
    row = OutboxMessage(topic=spec.name, key=record_key(spec, record), value=record.to_bytes())
    session.add(row)
    return row


class OutboxRelay:
    def __init__(
        self,
        factory: sessionmaker[Session],
        bootstrap_servers: str,
        *,
        batch_size: int = 200,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.factory = factory
        self.bootstrap_servers = bootstrap_servers
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0
        self.last_error: str | None = None

    def notify(self) -> None:
        """Wake the relay now; safe to call from request threads after a commit."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers, acks="all", request_timeout_ms=10_000, linger_ms=2
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer

    def _claim(self, session: Session) -> list[OutboxMessage]:
        stmt = (
            select(OutboxMessage)
            .where(OutboxMessage.published_at.is_(None))
            .order_by(OutboxMessage.id)
            .limit(self.batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        return list(session.scalars(stmt))

    async def publish_pending(self) -> int:
        """Send one batch of pending rows; returns how many were published."""
        producer = await self._ensure_producer()
        session = self.factory()
        try:
            rows = await in_thread(self._claim, session)
            if not rows:
                await in_thread(session.rollback)
                return 0
            futures = [await producer.send(row.topic, value=row.value, key=row.key) for row in rows]
            await asyncio.gather(*futures)
            now = datetime.now(UTC)
            for row in rows:
                row.published_at = now
                row.attempts += 1
            await in_thread(session.commit)
            self.published += len(rows)
            return len(rows)
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                await in_thread(session.rollback)
            raise
        finally:
            with contextlib.suppress(Exception):
                await in_thread(session.close)

    def pending(self) -> int:
        with session_scope(self.factory) as session:
            return pending(session)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        backoff = self.poll_interval_s
        while True:
            try:
                while await self.publish_pending():
                    pass
                self.last_error = None
                backoff = self.poll_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 — broker down: keep rows, retry with backoff
                stop_if_cancelling(e)
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("outbox relay could not publish (%s); retrying in %.1fs", self.last_error, backoff)
                await self._reset_producer()
                backoff = min(backoff * 2, 10.0)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), backoff)
            except TimeoutError:
                pass

    async def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        await stop_quietly(producer)

    async def close(self) -> None:
        await self._reset_producer()
