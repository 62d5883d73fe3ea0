"""Run pending outbox rows through the materializer's real appliers, as the
materializer worker would after the relay published them (API tests have no broker)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import OutboxMessage
from core.materialize import APPLIERS, apply_event
from core.topics import BY_NAME, decode


def drain_outbox(database_url: str) -> int:
    engine = make_engine(database_url)
    factory = make_sessionmaker(engine)
    applied = 0
    try:
        with session_scope(factory) as s:
            rows = list(
                s.scalars(select(OutboxMessage).where(OutboxMessage.published_at.is_(None)).order_by(OutboxMessage.id))
            )
            for row in rows:
                row.published_at = datetime.now(UTC)
            pending = [(row.topic, row.value) for row in rows]
        for topic, value in pending:
            record = decode(BY_NAME[topic], value)
            if type(record) in APPLIERS:
                apply_event(factory, topic, record)
                applied += 1
    finally:
        engine.dispose()
    return applied
