"""The broker goes away while people keep using the API, then comes back.

The API keeps accepting writes (graph changes, comments, reports, prompts, and likes,
which fall back to the outbox); when a broker returns, the relay delivers every one of
those events, and applying what is on the topics yields each effect exactly once.
Tansu in this build keeps topics in memory only, so the restarted broker is empty:
what matters is that nothing written during the outage is lost or doubled.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from core.broker import EmbeddedBroker, ensure_topics, free_port
from core.db import make_engine, make_sessionmaker, migrate, session_scope
from core.db.models import OutboxMessage
from core.settings import ApiSettings, KafkaSettings, MediaSettings, Settings
from core.topics import BY_NAME, INTERACTIONS, SOCIAL_EVENTS, decode
from tests.support.factories import published_clip, signup
from tests.support.stack import read_topic, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _signup(client: TestClient, handle: str) -> dict[str, str]:
    return signup(client, handle)


def _published_clip(factory, handle: str) -> uuid.UUID:  # type: ignore[no-untyped-def]
    return published_clip(factory, handle)


def test_writes_during_an_outage_reach_the_restarted_broker_once_each(db_url: str, tmp_path: Path) -> None:
    migrate(db_url)
    port = free_port()
    broker = EmbeddedBroker("127.0.0.1", port, tmp_path / "tansu.log")
    broker.start()
    ensure_topics(broker.bootstrap_servers)
    settings = Settings(
        environment="test",
        database_url=db_url,
        media=MediaSettings(root=tmp_path / "media"),
        kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers),
        api=ApiSettings(outbox_poll_interval_s=0.1, gc_settle_every_s=0),
    )
    factory = make_sessionmaker(make_engine(db_url))

    def pending() -> int:
        with session_scope(factory) as s:
            return len(list(s.scalars(select(OutboxMessage.id).where(OutboxMessage.published_at.is_(None)))))

    try:
        with TestClient(create_app(settings)) as client:
            maya, theo = _signup(client, "maya_makes"), _signup(client, "theo_films")
            clip_id = _published_clip(factory, "maya_makes")
            wait_for(lambda: pending() == 0, 30, "sign-up events on the broker")
            broker.stop()
            outage_started = datetime.now(UTC)
            assert client.put("/v1/users/theo_films/follow", headers=maya).status_code == 200
            assert client.put("/v1/users/maya_makes/follow", headers=theo).status_code == 200
            assert client.delete("/v1/users/maya_makes/follow", headers=theo).status_code == 200
            assert client.put("/v1/users/theo_films/mute", headers=maya).status_code == 200
            assert client.post("/v1/prompts", json={"text": "a fox in the snow"}, headers=maya).status_code == 202
            like = client.put(f"/v1/clips/{clip_id}/like", headers=theo)
            assert like.status_code == 202, "likes fall back to the outbox while the broker is away"
            comment = client.post(f"/v1/clips/{clip_id}/comments", json={"text": "so good"}, headers=theo)
            assert comment.status_code == 201
            ready = wait_for(
                lambda: (r := client.get("/readyz").json())["status"] == "degraded" and r,
                30,
                "readiness to report the relay's trouble",
            )
            assert ready["outbox_pending"] >= 8 and ready["outbox_error"]
            with session_scope(factory) as s:
                expected = {
                    (row.topic, str(decode(BY_NAME[row.topic], row.value).event_id))
                    for row in s.scalars(select(OutboxMessage).where(OutboxMessage.created_at >= outage_started))
                }
            assert len(expected) == 8  # 3 follow changes, a mute, prompt + queued status, like, comment
            broker.start()  # back, empty (memory storage)
            ensure_topics(broker.bootstrap_servers)
            wait_for(lambda: pending() == 0, 60, "the outbox to drain after the broker returned")

            arrived: Counter[tuple[str, str]] = Counter()
            for topic in {t for t, _ in expected}:
                for m in read_topic(broker.bootstrap_servers, topic):
                    arrived[(topic, str(decode(BY_NAME[topic], m.value).event_id))] += 1
            assert set(arrived) == expected, "every event written during the outage arrived"
            assert all(n == 1 for n in arrived.values()), f"duplicates: {[k for k, n in arrived.items() if n > 1]}"
            social = [decode(SOCIAL_EVENTS, m.value) for m in read_topic(broker.bootstrap_servers, SOCIAL_EVENTS.name)]
            assert [e.kind for e in social].count("follow") == 2  # type: ignore[attr-defined]
            kinds = sorted(
                decode(INTERACTIONS, m.value).kind  # type: ignore[attr-defined]
                for m in read_topic(broker.bootstrap_servers, INTERACTIONS.name)
            )
            assert kinds == ["comment", "like"]
    finally:
        broker.stop()
