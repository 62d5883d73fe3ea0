"""Materializer role: status and clip topics → the SQL store the API reads.

One agent per topic, each applying events through core.materialize in a thread
(SQL drivers block), one transaction per event with its event id recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust

from core.db import make_engine, make_sessionmaker
from core.materialize import apply_event
from core.records import Record
from core.settings import Settings
from core.topics import CLIPS_BLOCKED, CLIPS_GENERATED, CLIPS_PUBLISHED, GENERATION_STATUS, TopicSpec
from streams.app import RecordSender, raw_topic
from streams.errors import ErrorPolicy, consume

TOPICS: tuple[TopicSpec, ...] = (GENERATION_STATUS, CLIPS_GENERATED, CLIPS_PUBLISHED, CLIPS_BLOCKED)


def register(app: faust.App, settings: Settings) -> dict[str, ErrorPolicy[Any]]:
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine)
    sender = RecordSender(app)
    policies: dict[str, ErrorPolicy[Any]] = {}

    for spec in TOPICS:

        async def handle(rec: Record, message: Any, _spec: TopicSpec = spec) -> None:
            await asyncio.to_thread(apply_event, factory, _spec.name, rec)

        policy: ErrorPolicy[Any] = ErrorPolicy(
            spec,
            sender,
            handle,
            consumer=app.conf.id,
            max_attempts=settings.workers.max_attempts,
            backoff_s=settings.workers.retry_backoff_s,
        )
        policies[spec.name] = policy

        async def agent_body(stream: Any, _policy: ErrorPolicy[Any] = policy) -> AsyncIterator[str]:
            async for outcome in consume(stream, _policy):
                yield outcome

        app.agent(raw_topic(app, spec.name), name=f"materialize_{spec.name.replace('.', '_')}", concurrency=1)(
            agent_body
        )
    return policies
