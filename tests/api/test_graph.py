"""Follow, block, mute, friends, lists, and what blocks and mutes hide."""

import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select

from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import OutboxMessage
from core.settings import Settings
from core.topics import BY_NAME, decode
from tests.support.factories import published_clip, signup
from tests.support.materialize import drain_outbox


def _user(client: TestClient, handle: str) -> dict[str, str]:
    return signup(client, handle)


def _social_kinds(settings: Settings) -> list[str]:
    with session_scope(make_sessionmaker(make_engine(settings.database_url))) as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.topic == "social.events").order_by(OutboxMessage.id))
        return [decode(BY_NAME["social.events"], r.value).kind for r in rows]  # type: ignore[attr-defined]


def _clip_by(settings: Settings, handle: str) -> uuid.UUID:
    return published_clip(settings.database_url, handle)


def test_follow_is_idempotent_and_mutual_follows_are_friends(client: TestClient, settings: Settings) -> None:
    maya, theo = _user(client, "maya_makes"), _user(client, "theo_films")
    first = client.put("/v1/users/theo_films/follow", headers=maya)
    assert first.status_code == 200 and first.json()["relationship"]["following"] is True
    client.put("/v1/users/theo_films/follow", headers=maya)
    drain_outbox(settings.database_url)
    profile = client.get("/v1/users/theo_films").json()
    assert profile["counts"]["followers"] == 1 and profile["relationship"] is None
    assert client.get("/v1/users/maya_makes").json()["counts"]["following"] == 1
    back = client.put("/v1/users/maya_makes/follow", headers=theo).json()
    assert back["relationship"]["friends"] is True
    assert client.get("/v1/users/maya_makes/followers").json()["data"][0]["handle"] == "theo_films"
    assert client.get("/v1/users/maya_makes/following").json()["data"][0]["handle"] == "theo_films"
    client.delete("/v1/users/theo_films/follow", headers=maya)
    client.delete("/v1/users/theo_films/follow", headers=maya)
    drain_outbox(settings.database_url)
    assert client.get("/v1/users/theo_films").json()["counts"]["followers"] == 0
    assert _social_kinds(settings) == ["user_created", "user_created", "follow", "follow", "unfollow"]


def test_follow_rules(client: TestClient) -> None:
    maya = _user(client, "maya_makes")
    assert client.put("/v1/users/maya_makes/follow", headers=maya).status_code == 409
    assert client.put("/v1/users/nobody_here/follow", headers=maya).status_code == 404
    assert client.put("/v1/users/maya_makes/follow").status_code == 401


def test_block_ends_follows_and_hides_clips_both_ways(client: TestClient, settings: Settings) -> None:
    maya, theo = _user(client, "maya_makes"), _user(client, "theo_films")
    client.put("/v1/users/theo_films/follow", headers=maya)
    client.put("/v1/users/maya_makes/follow", headers=theo)
    theo_clip = _clip_by(settings, "theo_films")
    maya_clip = _clip_by(settings, "maya_makes")

    blocked = client.put("/v1/users/theo_films/block", headers=maya).json()
    assert blocked["relationship"]["blocking"] and not blocked["relationship"]["following"]
    drain_outbox(settings.database_url)
    counts = client.get("/v1/users/theo_films").json()["counts"]
    assert counts == {"followers": 0, "following": 0, "clips": 1, "likes_received": 0}
    resp = client.put("/v1/users/maya_makes/follow", headers=theo)
    assert resp.status_code == 403, "the blocked user cannot follow the blocker"
    assert client.put("/v1/users/theo_films/follow", headers=maya).status_code == 403

    assert [c["id"] for c in client.get("/v1/feed", headers=maya).json()["data"]] == [str(maya_clip)]
    assert [c["id"] for c in client.get("/v1/feed", headers=theo).json()["data"]] == [str(theo_clip)]
    assert len(client.get("/v1/feed").json()["data"]) == 2, "anonymous readers see both"
    assert client.get(f"/v1/clips/{theo_clip}", headers=maya).status_code == 404
    assert client.get("/v1/users/theo_films/clips", headers=maya).json()["data"] == []

    client.delete("/v1/users/theo_films/block", headers=maya)
    assert client.get(f"/v1/clips/{theo_clip}", headers=maya).status_code == 200
    kinds = _social_kinds(settings)
    assert kinds[-4:] == ["unfollow", "unfollow", "block", "unblock"]


def test_mute_hides_from_the_feed_only(client: TestClient, settings: Settings) -> None:
    maya, _ = _user(client, "maya_makes"), _user(client, "theo_films")
    theo_clip = _clip_by(settings, "theo_films")
    muted = client.put("/v1/users/theo_films/mute", headers=maya).json()
    assert muted["relationship"]["muting"]
    assert client.get("/v1/feed", headers=maya).json()["data"] == []
    assert client.get(f"/v1/clips/{theo_clip}", headers=maya).status_code == 200
    client.delete("/v1/users/theo_films/mute", headers=maya)
    assert len(client.get("/v1/feed", headers=maya).json()["data"]) == 1


def test_follower_lists_paginate_without_duplicates(client: TestClient) -> None:
    _user(client, "star_user")
    fans = [_user(client, f"fan_{i:02d}") for i in range(7)]
    for fan in fans:
        client.put("/v1/users/star_user/follow", headers=fan)
    seen, cursor = [], None
    while True:
        page = client.get(
            "/v1/users/star_user/followers", params={"limit": 3, **({"cursor": cursor} if cursor else {})}
        )
        seen += [u["handle"] for u in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == [f"fan_{i:02d}" for i in range(7)]
    assert client.get("/v1/users/star_user/followers", params={"cursor": "junk"}).status_code == 400
