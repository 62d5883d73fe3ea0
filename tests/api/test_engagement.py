"""Likes, views, shares, comments, reports; counts through the materializer's appliers.

No broker runs in these tests, so interactions take the outbox fallback: that path is
what keeps them when the broker is down (the direct path is covered end to end)."""

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import Comment, OutboxMessage, Report
from core.settings import Settings
from tests.support.factories import published_clip, signup
from tests.support.materialize import drain_outbox


def _user(client: TestClient, handle: str) -> dict[str, str]:
    return signup(client, handle)


def _clip(settings: Settings, handle: str) -> str:
    return str(published_clip(settings.database_url, handle))


def _count(settings: Settings, model: type, **where: object) -> int:
    with session_scope(make_sessionmaker(make_engine(settings.database_url))) as s:
        stmt = select(func.count()).select_from(model)
        for k, v in where.items():
            stmt = stmt.where(getattr(model, k) == v)
        return int(s.scalar(stmt) or 0)


def test_likes_are_idempotent_and_counted(client: TestClient, settings: Settings) -> None:
    maya, theo = _user(client, "maya_makes"), _user(client, "theo_films")
    cid = _clip(settings, "maya_makes")
    for _ in range(3):
        assert client.put(f"/v1/clips/{cid}/like", headers=theo).status_code == 202
    assert _count(settings, OutboxMessage, topic="interactions") == 3, "kept in the outbox while no broker answers"
    drain_outbox(settings.database_url)
    clip = client.get(f"/v1/clips/{cid}", headers=theo).json()
    assert clip["stats"]["likes"] == 1 and clip["viewer_liked"] is True
    assert client.get(f"/v1/clips/{cid}").json()["viewer_liked"] is None
    assert client.get("/v1/users/maya_makes").json()["counts"]["likes_received"] == 1
    client.delete(f"/v1/clips/{cid}/like", headers=theo)
    client.delete(f"/v1/clips/{cid}/like", headers=theo)
    drain_outbox(settings.database_url)
    assert client.get(f"/v1/clips/{cid}", headers=theo).json()["stats"]["likes"] == 0
    assert client.get("/v1/users/maya_makes", headers=maya).json()["counts"]["likes_received"] == 0


def test_views_and_shares(client: TestClient, settings: Settings) -> None:
    theo = _user(client, "theo_films")
    _user(client, "maya_makes")
    cid = _clip(settings, "maya_makes")
    assert client.post(f"/v1/clips/{cid}/views", json={"watch_ms": 2500}, headers=theo).status_code == 202
    assert client.post(f"/v1/clips/{cid}/views", json={"watch_ms": -5}, headers=theo).status_code == 422
    shared = client.post(f"/v1/clips/{cid}/shares", headers=theo)
    assert shared.status_code == 201 and shared.json()["share_url"].endswith(f"/v1/clips/{cid}")
    drain_outbox(settings.database_url)
    stats = client.get(f"/v1/clips/{cid}").json()["stats"]
    assert stats["views"] == 1 and stats["shares"] == 1
    assert client.put(f"/v1/clips/{uuid.uuid4()}/like", headers=theo).status_code == 404
    assert client.put(f"/v1/clips/{cid}/like").status_code == 401


def test_comments_are_moderated_owned_and_counted(client: TestClient, settings: Settings) -> None:
    maya, theo = _user(client, "maya_makes"), _user(client, "theo_films")
    cid = _clip(settings, "maya_makes")
    made = client.post(f"/v1/clips/{cid}/comments", json={"text": " lovely little hop "}, headers=theo)
    assert made.status_code == 201 and made.json()["text"] == "lovely little hop"
    harmful = client.post(f"/v1/clips/{cid}/comments", json={"text": "go kill yourself"}, headers=theo)
    assert harmful.status_code == 422 and harmful.json()["type"].endswith("comment-rejected")
    assert client.post(f"/v1/clips/{cid}/comments", json={"text": "x" * 501}, headers=theo).status_code == 422
    assert _count(settings, Comment) == 1, "a refused comment is not stored"
    listed = client.get(f"/v1/clips/{cid}/comments").json()["data"]
    assert [c["author"]["handle"] for c in listed] == ["theo_films"]
    drain_outbox(settings.database_url)
    assert client.get(f"/v1/clips/{cid}").json()["stats"]["comments"] == 1
    comment_id = made.json()["id"]
    assert client.delete(f"/v1/comments/{comment_id}", headers=maya).status_code == 403
    assert client.delete(f"/v1/comments/{comment_id}", headers=theo).status_code == 204
    assert client.delete(f"/v1/comments/{comment_id}", headers=theo).status_code == 404
    drain_outbox(settings.database_url)
    assert client.get(f"/v1/clips/{cid}/comments").json()["data"] == []
    assert client.get(f"/v1/clips/{cid}").json()["stats"]["comments"] == 0


def test_a_blocked_user_cannot_comment(client: TestClient, settings: Settings) -> None:
    maya, theo = _user(client, "maya_makes"), _user(client, "theo_films")
    cid = _clip(settings, "maya_makes")
    client.put("/v1/users/theo_films/block", headers=maya)
    resp = client.post(f"/v1/clips/{cid}/comments", json={"text": "hi"}, headers=theo)
    assert resp.status_code == 404, "the clip is hidden from the blocked user, so it is not found"


def test_reports_are_stored_with_a_fixed_reason(client: TestClient, settings: Settings) -> None:
    theo = _user(client, "theo_films")
    _user(client, "maya_makes")
    cid = _clip(settings, "maya_makes")
    assert client.post(f"/v1/clips/{cid}/reports", json={"reason": "because"}, headers=theo).status_code == 422
    made = client.post(
        f"/v1/clips/{cid}/reports", json={"reason": "impersonation", "details": "that is me"}, headers=theo
    )
    assert made.status_code == 201 and made.json()["status"] == "open"
    assert _count(settings, Report, reason="impersonation") == 1
    drain_outbox(settings.database_url)
    with session_scope(make_sessionmaker(make_engine(settings.database_url))) as s:
        assert s.scalar(select(func.count()).select_from(Report)) == 1


def test_feed_pages_say_what_each_viewer_liked(client: TestClient, settings: Settings) -> None:
    maya, theo = _user(client, "maya_makes"), _user(client, "theo_films")
    liked, other = _clip(settings, "maya_makes"), _clip(settings, "maya_makes")
    assert client.put(f"/v1/clips/{liked}/like", headers=theo).status_code == 202
    drain_outbox(settings.database_url)

    def page(headers: dict[str, str] | None) -> dict[str, dict]:
        return {c["id"]: c for c in client.get("/v1/feed", headers=headers).json()["data"]}

    as_theo, as_maya, anonymous = page(theo), page(maya), page(None)
    assert as_theo[str(liked)]["viewer_liked"] is True and as_theo[str(other)]["viewer_liked"] is False
    assert as_maya[str(liked)]["viewer_liked"] is False
    assert anonymous[str(liked)]["viewer_liked"] is None
    assert as_theo[str(liked)]["stats"]["likes"] == 1 and as_theo[str(other)]["stats"]["likes"] == 0
