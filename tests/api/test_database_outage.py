"""PostgreSQL drops the connection in the middle of a request: a clear 503 and no
partial write, and the next request is served on a fresh connection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from sqlalchemy import event

from api.app import create_app
from core.db import migrate
from core.settings import ApiSettings, MediaSettings, RankingSettings, Settings
from tests.support.factories import signup


def counts(url: str) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn:
        prompts = conn.execute("SELECT count(*) FROM prompts").fetchone()
        events = conn.execute("SELECT count(*) FROM prompt_events").fetchone()
        outbox = conn.execute("SELECT count(*) FROM outbox WHERE topic = 'prompts'").fetchone()
    assert prompts and events and outbox
    return prompts[0], events[0], outbox[0]


def pg_settings(pg_url: str, tmp_path: Path) -> Settings:
    migrate(pg_url)
    return Settings(
        environment="test",
        database_url=pg_url,
        media=MediaSettings(root=tmp_path / "media"),
        api=ApiSettings(run_outbox_relay=False, gc_settle_every_s=0),
        ranking=RankingSettings(replica=False),
    )


@contextmanager
def dropping_the_connection(
    client: TestClient, admin: psycopg.Connection[Any], when: str, matches: Callable[[str], bool]
) -> Iterator[list[int]]:
    """Terminate the request's PostgreSQL backend ``when`` ("before" or "after") the
    first statement that ``matches`` runs; yields the terminated backend's pid, once cut."""
    cut: list[int] = []

    def drop(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not cut and matches(statement):
            cut.append(cursor.connection.info.backend_pid)
            admin.execute("SELECT pg_terminate_backend(%s)", (cut[0],))

    engine = client.app.state.engine  # type: ignore[attr-defined]
    event.listen(engine, f"{when}_cursor_execute", drop)
    try:
        yield cut
    finally:
        event.remove(engine, f"{when}_cursor_execute", drop)


def test_a_connection_dropped_mid_request_is_a_503_and_writes_nothing(pg_url: str, tmp_path: Path) -> None:
    with (
        TestClient(create_app(pg_settings(pg_url, tmp_path))) as client,
        psycopg.connect(pg_url, autocommit=True) as admin,
    ):
        auth = signup(client, "maya_makes")
        # The prompt row is written; its status event and outbox row are not yet.
        insert = "INSERT INTO PROMPTS"
        with dropping_the_connection(
            client, admin, "after", lambda sql: sql.lstrip().upper().startswith(insert)
        ) as cut:
            resp = client.post("/v1/prompts", json={"text": "a cat surfing at sunset"}, headers=auth)

        assert cut, "the request reached the prompt insert"
        assert resp.status_code == 503, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.headers["retry-after"] == "2"
        assert "nothing was written" in resp.json()["detail"]
        assert counts(pg_url) == (0, 0, 0), "no prompt, status event or outbox row of the failed request"

        again = client.post("/v1/prompts", json={"text": "a cat surfing at sunset"}, headers=auth)
        assert again.status_code == 202, again.text
        assert counts(pg_url) == (1, 1, 1)


def test_a_connection_dropped_under_the_feed_is_a_503(pg_url: str, tmp_path: Path) -> None:
    """The feed reads on the driver (core.db.driver_query): a dropped connection is still
    SQLAlchemy's error, so the same 503, and the next request gets a fresh connection."""
    with (
        TestClient(create_app(pg_settings(pg_url, tmp_path))) as client,
        psycopg.connect(pg_url, autocommit=True) as admin,
    ):
        auth = signup(client, "maya_makes")
        with dropping_the_connection(client, admin, "before", lambda sql: "FROM api_tokens" in sql) as cut:
            resp = client.get("/v1/feed", headers=auth)

        assert cut, "the request reached the token lookup"
        assert resp.status_code == 503, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        again = client.get("/v1/feed", headers=auth)
        assert again.status_code == 200, again.text
