"""Materializer role: status, clip, interaction and social topics → the SQL store the
API reads (prompt status and timeline, clips, likes, counts).

One agent per topic, each applying events through core.materialize in a thread
(SQL drivers block), one transaction per event with its event id recorded.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from core.db import make_engine, make_sessionmaker
from core.materialize import apply_event
from core.records import Record
from core.settings import Settings
from core.topics import (
    CLIPS_BLOCKED,
    CLIPS_FLAGGED,
    CLIPS_GENERATED,
    CLIPS_PUBLISHED,
    GENERATION_STATUS,
    INTERACTIONS,
    MODERATION_DECISIONS,
    SOCIAL_EVENTS,
    TopicSpec,
)
from streams.app import RecordSender
from streams.errors import ErrorPolicy, register_agent

TOPICS: tuple[TopicSpec, ...] = (
    GENERATION_STATUS,
    CLIPS_GENERATED,
    CLIPS_PUBLISHED,
    CLIPS_BLOCKED,
    CLIPS_FLAGGED,
    MODERATION_DECISIONS,
    INTERACTIONS,
    SOCIAL_EVENTS,
)


def register(app: faust.App, settings: Settings) -> dict[str, ErrorPolicy[Any]]:
    engine = make_engine(settings.database_url)
    factory = make_sessionmaker(engine)
    sender = RecordSender(app)
    policies: dict[str, ErrorPolicy[Any]] = {}
    for spec in TOPICS:

        async def handle(rec: Record, message: Any, _spec: TopicSpec = spec) -> None:
            await asyncio.to_thread(apply_event, factory, _spec.name, rec)

        name = f"materialize_{spec.name.replace('.', '_')}"
        policies[spec.name] = register_agent(app, spec, settings, handle, name=name, sender=sender)
    return policies
