"""Keyset pagination of the list endpoints (api.pagination.keyset_page): every item
once, newest first, across pages, including items that share a timestamp."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import Clip, Comment
from core.settings import Settings
from tests.support.factories import published_clip, signup


def _all_pages(client: TestClient, path: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):
        resp = client.get(path, params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=headers)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert len(page["data"]) <= 2
        items += page["data"]
        cursor = page["next_cursor"]
        if not cursor:
            return items
    raise AssertionError(f"{path}: more pages than items")


def test_profile_grid_and_comments_page_through_ties(client: TestClient, settings: Settings) -> None:
    signup(client, "maya")
    theo = signup(client, "theo")
    engine = make_engine(settings.database_url)
    try:
        factory = make_sessionmaker(engine)
        clips = [published_clip(factory, "maya", text=f"clip {n}") for n in range(5)]
        for n in range(5):
            made = client.post(f"/v1/clips/{clips[0]}/comments", json={"text": f"comment {n}"}, headers=theo)
            assert made.status_code == 201, made.text
        tie = datetime(2026, 11, 1, tzinfo=UTC)  # three of each at the same instant
        with session_scope(factory) as s:
            s.execute(update(Clip).where(Clip.id.in_(clips[1:4])).values(published_at=tie))
            s.execute(
                update(Comment).where(Comment.text.in_(["comment 1", "comment 2", "comment 3"])).values(created_at=tie)
            )
    finally:
        engine.dispose()

    grid = _all_pages(client, "/v1/users/maya/clips")
    assert sorted(c["id"] for c in grid) == sorted(str(c) for c in clips)
    assert [c["id"] for c in grid] == [c["id"] for c in client.get("/v1/users/maya/clips?limit=10").json()["data"]]

    comments = _all_pages(client, f"/v1/clips/{clips[0]}/comments")
    assert sorted(c["text"] for c in comments) == [f"comment {n}" for n in range(5)]
    whole = client.get(f"/v1/clips/{clips[0]}/comments?limit=10").json()["data"]
    assert [c["id"] for c in comments] == [c["id"] for c in whole]
    assert {c["text"] for c in comments[-3:]} == {"comment 1", "comment 2", "comment 3"}, "the tied ones are oldest"


def test_cameo_approvals_page_through(client: TestClient) -> None:
    maya = signup(client, "maya")
    for handle in ("ann", "ben", "cal"):
        signup(client, handle)
        assert client.put(f"/v1/me/cameo/approvals/{handle}", headers=maya).status_code == 204
    approved = _all_pages(client, "/v1/me/cameo/approvals", maya)
    assert [u["handle"] for u in approved] == ["cal", "ben", "ann"]
