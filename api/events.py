"""Publishing interactions without waiting on the database.

Likes, views and shares are high volume: the API sends them straight to the
`interactions` topic. When the broker does not take an event within a short timeout,
the event is written to the outbox instead (and the relay sends it later), so a broker
outage slows these requests down a little but loses nothing. After a failure the
direct path is skipped for a few seconds, so an outage does not make every request
wait for the timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from core.db.engine import session_scope
from core.outbox import OutboxRelay, enqueue, stop_quietly
from core.records import Interaction
from core.topics import INTERACTIONS, record_key

log = logging.getLogger(__name__)


class InteractionPublisher:
    def __init__(
        self,
        bootstrap_servers: str,
        factory: sessionmaker[Session],
        relay: OutboxRelay | None,
        *,
        timeout_s: float = 2.0,
        backoff_s: float = 5.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.factory = factory
        self.relay = relay
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._producer: AIOKafkaProducer | None = None
        self._skip_until = 0.0
        self._lock = asyncio.Lock()
        self.direct = 0
        self.via_outbox = 0

    async def _ensure(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    acks="all",
                    request_timeout_ms=int(self.timeout_s * 1000),
                    linger_ms=2,
                )
                try:
                    await asyncio.wait_for(producer.start(), self.timeout_s)
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, record: Interaction) -> str:
        """Send ``record``; returns "broker" or "outbox" (where it went)."""
        if time.monotonic() >= self._skip_until:
            try:
                producer = await self._ensure()
                await asyncio.wait_for(
                    producer.send_and_wait(
                        INTERACTIONS.name, value=record.to_bytes(), key=record_key(INTERACTIONS, record)
                    ),
                    self.timeout_s,
                )
                self.direct += 1
                return "broker"
            except Exception as e:  # noqa: BLE001 — any broker trouble: fall back to the outbox
                log.warning("interactions topic unreachable (%s: %s); using the outbox", type(e).__name__, e)
                self._skip_until = time.monotonic() + self.backoff_s
                await self._reset()
        await run_in_threadpool(self._to_outbox, record)
        self.via_outbox += 1
        if self.relay is not None:
            self.relay.notify()
        return "outbox"

    def _to_outbox(self, record: Interaction) -> None:
        with session_scope(self.factory) as session:
            enqueue(session, INTERACTIONS, record)

    async def _reset(self) -> None:
        producer, self._producer = self._producer, None
        await stop_quietly(producer)

    async def close(self) -> None:
        await self._reset()
