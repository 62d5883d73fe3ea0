"""Error policy for agents: decode, retry a bounded number of times, dead-letter.

Faust acknowledges a message whose agent raised, which would silently lose it. So no
agent body raises: a message that cannot be decoded goes to ``<topic>.dlq`` at once
(retrying cannot fix it), a handler failure is retried with backoff, and after the
last attempt the raw bytes go to the DLQ with headers saying where they came from and
why. Sending to the DLQ itself is retried until the broker takes it.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import faust

from core import metrics
from core.aio import stop_if_cancelling
from core.errors import RecordError
from core.logging import log_context, record_ids
from core.records import Record
from core.settings import Settings
from core.topics import TopicSpec, decode
from streams.app import RecordSender, raw_topic

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Record)

# Kafka's default max message size is 1 MB; a larger poison message is kept as a
# prefix with its original size recorded, rather than failing the DLQ send forever.
MAX_DLQ_VALUE_BYTES = 900_000


def _headers_dict(headers: Any) -> dict[str, bytes]:
    if not headers:
        return {}
    items = headers.items() if hasattr(headers, "items") else headers
    return {str(k): (v if isinstance(v, bytes) else str(v).encode()) for k, v in items}


def dlq_headers(message: Any, exc: BaseException, attempts: int, consumer: str) -> dict[str, bytes]:
    headers = {k: v for k, v in _headers_dict(getattr(message, "headers", None)).items() if not k.startswith("x-dlq-")}
    headers.update(
        {
            "x-dlq-source-topic": str(getattr(message, "topic", "")).encode(),
            "x-dlq-source-partition": str(getattr(message, "partition", "")).encode(),
            "x-dlq-source-offset": str(getattr(message, "offset", "")).encode(),
            "x-dlq-consumer": consumer.encode(),
            "x-dlq-exception": type(exc).__name__.encode(),
            "x-dlq-error": str(exc)[:2000].encode(),
            "x-dlq-attempts": str(attempts).encode(),
            "x-dlq-failed-at": datetime.now(UTC).isoformat().encode(),
        }
    )
    return headers


class ErrorPolicy(Generic[R]):
    """Wraps one handler for one source topic."""

    def __init__(
        self,
        spec: TopicSpec,
        sender: RecordSender,
        handler: Callable[[R, Any], Awaitable[None]],
        *,
        consumer: str,
        max_attempts: int = 3,
        backoff_s: float = 0.2,
        on_give_up: Callable[[R, BaseException], Awaitable[None]] | None = None,
        dlq_retry_s: float = 0.5,
    ) -> None:
        self.spec = spec
        self.sender = sender
        self.handler = handler
        self.consumer = consumer
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.on_give_up = on_give_up
        self.dlq_retry_s = dlq_retry_s
        self.dead_lettered = 0
        self.processed = 0

    async def __call__(self, message: Any) -> str:
        """Process one message; returns "processed" or "dead-lettered". Everything
        logged meanwhile carries the record's ids and position (core.logging)."""
        where = {
            "topic": self.spec.name,
            "partition": getattr(message, "partition", None),
            "offset": getattr(message, "offset", None),
        }
        with log_context(**where):
            return await self._handle(message)

    async def _handle(self, message: Any) -> str:
        try:
            record: R = decode(self.spec, message.value)  # type: ignore[assignment]
        except RecordError as e:
            log.warning("dead-lettering undecodable message from %s: %s", self.spec.name, e)
            await self.dead_letter(message, e, attempts=0)
            return "dead-lettered"
        with log_context(**record_ids(record)):
            return await self._attempts(record, message)

    async def _attempts(self, record: R, message: Any) -> str:
        started = metrics.record_consumed(self.consumer, self.spec.name, record.occurred_at)
        last: BaseException | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                await self.handler(record, message)
                self.handled(started)
                return "processed"
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 — every failure is retried, then dead-lettered
                last = e
                log.warning(
                    "%s failed on %s (attempt %d/%d): %s\n%s",
                    self.consumer,
                    self.spec.name,
                    attempt,
                    self.max_attempts,
                    e,
                    traceback.format_exc(limit=5),
                )
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        assert last is not None
        if self.on_give_up is not None:
            try:
                await self.on_give_up(record, last)
            except Exception:
                log.exception("on_give_up hook failed for %s", self.spec.name)
        await self.dead_letter(message, last, attempts=self.max_attempts)
        return "dead-lettered"

    def handled(self, started: float | None = None) -> None:
        """Count one record processed (``started``: when it was taken up, for its timing)."""
        self.processed += 1
        metrics.record_handled(self.consumer, self.spec.name, "processed", started)

    async def dead_letter(self, message: Any, exc: BaseException, attempts: int) -> None:
        send = self.sender.send_raw
        await send_dead_letter(send, self.spec.dlq, message, exc, attempts, self.consumer, self.dlq_retry_s)
        self.dead_lettered += 1
        metrics.record_handled(self.consumer, self.spec.name, "dead_lettered")


async def send_dead_letter(
    send: Callable[[str, bytes | None, bytes | None, dict[str, bytes]], Awaitable[Any]],
    dlq: str,
    message: Any,
    exc: BaseException,
    attempts: int,
    consumer: str,
    retry_s: float = 0.5,
) -> None:
    """Send ``message`` (its key and bytes, cut to MAX_DLQ_VALUE_BYTES with its original
    size recorded) to ``dlq`` with the ``x-dlq-*`` headers, retrying with backoff until
    the broker takes it: a dead letter is never dropped."""
    value = message.value
    headers = dlq_headers(message, exc, attempts, consumer)
    if value is not None and len(value) > MAX_DLQ_VALUE_BYTES:
        headers["x-dlq-original-size"] = str(len(value)).encode()
        headers["x-dlq-truncated"] = b"true"
        value = value[:MAX_DLQ_VALUE_BYTES]
    delay = retry_s
    while True:
        try:
            await send(dlq, message.key, value, headers)
            metrics.DEAD_LETTERS.labels(dlq, consumer).inc()
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 — never drop: keep trying until the broker takes it
            stop_if_cancelling(e)
            log.error("could not dead-letter to %s (%s); retrying in %.1fs", dlq, e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def policy_for(
    app: faust.App,
    spec: TopicSpec,
    settings: Settings,
    handler: Callable[[Any, Any], Awaitable[None]],
    sender: RecordSender,
    on_give_up: Callable[[Any, BaseException], Awaitable[None]] | None = None,
) -> ErrorPolicy[Any]:
    """The error policy every agent on ``spec`` uses, with the worker settings' retry budget."""
    return ErrorPolicy(
        spec,
        sender,
        handler,
        consumer=app.conf.id,
        max_attempts=settings.workers.max_attempts,
        backoff_s=settings.workers.retry_backoff_s,
        on_give_up=on_give_up,
    )


def register_agent(
    app: faust.App,
    spec: TopicSpec,
    settings: Settings,
    handler: Callable[[Any, Any], Awaitable[None]],
    *,
    name: str,
    sender: RecordSender,
    on_give_up: Callable[[Any, BaseException], Awaitable[None]] | None = None,
) -> ErrorPolicy[Any]:
    """One agent (concurrency 1: faust-streaming issue 606) on ``spec``'s topic whose
    every message goes through an ErrorPolicy around ``handler``."""
    policy = policy_for(app, spec, settings, handler, sender, on_give_up)

    async def agent(stream: Any) -> AsyncIterator[str]:
        async for outcome in consume(stream, policy):
            yield outcome

    app.agent(raw_topic(app, spec.name), name=name, concurrency=1)(agent)
    return policy


async def consume(stream: Any, policy: ErrorPolicy[Any]) -> AsyncIterator[str]:
    """The body of every agent: one message at a time through the policy.

    Yielding the outcome makes the agent report each processed message (Faust's
    test_context() waits on it); nothing downstream consumes these values.
    """
    async for event in stream.events():
        yield await policy(event.message)
