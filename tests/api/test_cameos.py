"""Cameos through the API: registration, the four consent modes, restrictions, the
checks at acceptance and before publishing, the owner's view, and takedowns."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import Clip, OutboxMessage, Prompt
from core.records import ModerationDecision
from core.settings import Settings
from core.topics import MODERATION_DECISIONS, PROMPTS, decode
from tests.support.factories import run_through_pipeline, signup, submitted_prompt


def face_png(side: int = 256, colour: tuple[int, int, int] = (230, 190, 160)) -> bytes:
    img = Image.new("RGB", (side, side), (90, 120, 200))
    img.paste(Image.new("RGB", (side // 2, side // 2), colour), (side // 4, side // 4))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def register(
    client: TestClient,
    auth: dict[str, str],
    consent: str = "everyone",
    restrictions: str = "",
    image: bytes | None = None,
) -> Any:
    return client.put(
        "/v1/me/cameo",
        files={"image": ("me.png", image or face_png(), "image/png")},
        data={"consent": consent, "restrictions": restrictions},
        headers=auth,
    )


def prompt(client: TestClient, auth: dict[str, str], text: str) -> Any:
    return client.post("/v1/prompts", json={"text": text}, headers=auth)


def _decisions(settings: Settings) -> list[ModerationDecision]:
    factory = make_sessionmaker(make_engine(settings.database_url))
    with session_scope(factory) as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.topic == MODERATION_DECISIONS.name))
        return [decode(MODERATION_DECISIONS, r.value) for r in rows]  # type: ignore[misc]


def _clip(settings: Settings, clip_id: uuid.UUID) -> Clip:
    factory = make_sessionmaker(make_engine(settings.database_url))
    with session_scope(factory) as s:
        clip = s.get(Clip, clip_id)
        assert clip is not None
        s.expunge(clip)
        return clip


@pytest.fixture
def people(client: TestClient) -> dict[str, dict[str, str]]:
    return {h: signup(client, h) for h in ("maya", "leo", "zoe")}


def test_register_validates_the_image_and_reads_the_restrictions(
    client: TestClient, people: dict[str, dict[str, str]]
) -> None:
    maya = people["maya"]
    assert client.get("/v1/me/cameo", headers=maya).status_code == 404
    small = register(client, maya, image=face_png(64))
    assert small.status_code == 422 and "at least 128" in small.json()["detail"], small.text
    junk = register(client, maya, image=b"GIF89a not really")
    assert junk.status_code == 422 and junk.json()["type"].endswith("invalid-image")
    bad_mode = register(client, maya, consent="friends_of_friends")
    assert bad_mode.status_code == 422
    too_long = register(client, maya, restrictions="x" * 501)
    assert too_long.status_code == 422

    ok = register(client, maya, consent="mutuals", restrictions="No political content, nothing scary; no clowns")
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["active"] and body["consent"] == "mutuals"
    assert body["restriction_rules"] == ["topic: politics", "topic: scary", "word: clowns"]
    image = client.get("/v1/me/cameo/image", headers=maya)
    assert image.status_code == 200 and image.headers["content-type"] == "image/webp"
    assert client.get("/v1/me/cameo/image", headers=people["leo"]).status_code == 404


def test_consent_modes_decide_who_may_cast(client: TestClient, people: dict[str, dict[str, str]]) -> None:
    maya, leo = people["maya"], people["leo"]
    unregistered = prompt(client, leo, "@maya dancing on the beach")
    assert unregistered.status_code == 403 and "has not registered a cameo" in unregistered.json()["detail"]

    register(client, maya, consent="only_me")
    refused = prompt(client, leo, "@maya dancing on the beach")
    assert refused.status_code == 403
    assert refused.json()["detail"] == "@maya lets only themselves appear in their cameo"
    assert prompt(client, maya, "@maya dancing on the beach").status_code == 202  # always yourself

    client.patch("/v1/me/cameo", json={"consent": "approved"}, headers=maya)
    assert "not approved you" in prompt(client, leo, "@maya surfing").json()["detail"]
    assert client.put("/v1/me/cameo/approvals/leo", headers=maya).status_code == 204
    assert client.get("/v1/users/maya/cameo", headers=leo).json()["can_cast"] is True
    assert prompt(client, leo, "@maya surfing").status_code == 202
    assert [u["handle"] for u in client.get("/v1/me/cameo/approvals", headers=maya).json()["data"]] == ["leo"]

    client.patch("/v1/me/cameo", json={"consent": "mutuals"}, headers=maya)
    assert "mutual follows" in prompt(client, leo, "@maya surfing").json()["detail"]
    client.put("/v1/users/maya/follow", headers=leo)
    assert prompt(client, leo, "@maya surfing").status_code == 403  # one way is not mutual
    client.put("/v1/users/leo/follow", headers=maya)
    assert prompt(client, leo, "@maya surfing").status_code == 202

    client.patch("/v1/me/cameo", json={"consent": "everyone"}, headers=maya)
    assert prompt(client, people["zoe"], "@maya surfing").status_code == 202
    client.put("/v1/users/zoe/block", headers=maya)
    blocked = prompt(client, people["zoe"], "@maya surfing")
    assert blocked.status_code == 403 and "does not allow you" in blocked.json()["detail"]
    availability = client.get("/v1/users/maya/cameo", headers=people["zoe"]).json()
    assert availability["can_cast"] is False and availability["reason"]


def test_restrictions_are_enforced_on_the_prompt_text(client: TestClient, people: dict[str, dict[str, str]]) -> None:
    register(client, people["maya"], restrictions="no political content, no clowns")
    leo = people["leo"]
    political = prompt(client, leo, "@maya giving a speech at an election rally")
    assert political.status_code == 403
    assert "restrictions" in political.json()["detail"] and "politics" in political.json()["detail"]
    # Normalisation is the prompt policy's: leetspeak and spacing do not slip past.
    assert prompt(client, leo, "@maya juggling with a c l 0 w n").status_code == 403
    assert prompt(client, leo, "@maya dancing on the beach").status_code == 202
    # The owner's own prompts are theirs to make.
    assert prompt(client, people["maya"], "@maya at an election rally").status_code == 202


def test_cast_handles_are_resolved_strictly(client: TestClient, people: dict[str, dict[str, str]]) -> None:
    for handle in ("maya", "leo", "zoe"):
        register(client, people[handle])
    leo = people["leo"]
    too_many = prompt(client, leo, "@maya @zoe and @leo in a band")
    assert too_many.status_code == 403 and "at most 2" in too_many.json()["detail"]
    assert prompt(client, leo, "@nobody_here dancing").status_code == 404
    # Cyrillic "а" in @mаya: refused, not silently treated as text.
    lookalike = prompt(client, leo, "@m\u0430ya dancing")
    assert lookalike.status_code == 403 and "looks like @maya" in lookalike.json()["detail"]
    assert prompt(client, leo, "write to me@maya.example").status_code == 202  # an e-mail is not a cast

    ok = prompt(client, leo, "@Maya's dance with @zoe!")
    assert ok.status_code == 202, ok.text
    assert ok.json()["cast"] == ["maya", "zoe"]
    assert client.get(f"/v1/prompts/{ok.json()['id']}", headers=leo).json()["cast"] == ["maya", "zoe"]


def test_refused_cast_stores_nothing_and_accepted_cast_travels_with_the_prompt(
    client: TestClient, people: dict[str, dict[str, str]], settings: Settings
) -> None:
    register(client, people["maya"], consent="only_me")
    factory = make_sessionmaker(make_engine(settings.database_url))
    with session_scope(factory) as s:
        before = len(list(s.scalars(select(Prompt))))
    assert prompt(client, people["leo"], "@maya dancing").status_code == 403
    with session_scope(factory) as s:
        assert len(list(s.scalars(select(Prompt)))) == before
        assert not [r for r in s.scalars(select(OutboxMessage)) if r.topic == PROMPTS.name]

    client.patch("/v1/me/cameo", json={"consent": "everyone"}, headers=people["maya"])
    pid = prompt(client, people["leo"], "@maya dancing").json()["id"]
    rec = submitted_prompt(settings.database_url, pid)
    assert [c.handle for c in rec.cameos] == ["maya"]
    settings_body = client.get("/v1/me/cameo", headers=people["maya"]).json()
    assert rec.cameos[0].likeness_key.startswith("likenesses/")
    assert settings_body["active"]


def test_owner_sees_drafts_and_can_remove_a_clip_before_it_is_published(
    client: TestClient, people: dict[str, dict[str, str]], settings: Settings
) -> None:
    maya, leo = people["maya"], people["leo"]
    register(client, maya)
    pid = prompt(client, leo, "@maya riding a bike").json()["id"]
    listed = client.get("/v1/me/cameo/appearances", headers=maya).json()["data"]
    assert [(a["prompt_id"], a["status"], a["creator"]["handle"]) for a in listed] == [(pid, "queued", "leo")]
    assert client.get("/v1/me/cameo/appearances", headers=leo).json()["data"] == []

    run_through_pipeline(settings.database_url, pid, publish=False)
    assert client.delete(f"/v1/me/cameo/appearances/{pid}", headers=maya).status_code == 204
    # The clip was on its way to moderation: publishing it now is refused.
    clip_id = run_through_pipeline(settings.database_url, pid)
    assert _clip(settings, clip_id).status == "removed"
    status = client.get(f"/v1/prompts/{pid}", headers=leo).json()
    assert status["status"] == "rejected" and "@maya removed themselves" in status["reason"]
    entry = client.get("/v1/me/cameo/appearances", headers=maya).json()["data"][0]
    assert entry["vetoed"] and entry["status"] == "removed" and entry["public_url"] is None


def test_revoking_takes_down_published_clips_at_once(
    client: TestClient, people: dict[str, dict[str, str]], settings: Settings
) -> None:
    maya, leo = people["maya"], people["leo"]
    register(client, maya)
    by_leo = run_through_pipeline(settings.database_url, prompt(client, leo, "@maya surfing").json()["id"])
    by_maya = run_through_pipeline(settings.database_url, prompt(client, maya, "@maya surfing").json()["id"])
    in_flight = prompt(client, leo, "@maya skating").json()["id"]
    assert client.get(f"/v1/clips/{by_leo}").status_code == 200

    revoked = client.delete("/v1/me/cameo", headers=maya)
    assert revoked.json() == {"active": False, "clips_taken_down": 1}
    assert client.get(f"/v1/clips/{by_leo}").status_code == 404
    assert by_leo not in {c["id"] for c in client.get("/v1/feed").json()["data"]}
    assert client.get(f"/v1/clips/{by_maya}").status_code == 200  # the owner's own clip stays
    decisions = [d for d in _decisions(settings) if d.clip_id == by_leo]
    assert [(d.decision, d.decided_by) for d in decisions] == [("takedown", "automatic")]
    assert "turned off their cameo" in decisions[0].reasons[0]

    # A prompt accepted before the revocation is stopped before publishing.
    assert _clip(settings, run_through_pipeline(settings.database_url, in_flight)).status == "removed"
    assert prompt(client, leo, "@maya surfing").status_code == 403
    assert client.delete("/v1/me/cameo", headers=maya).json()["clips_taken_down"] == 0  # idempotent
    assert client.patch("/v1/me/cameo", json={"consent": "everyone"}, headers=maya).status_code == 409
    assert register(client, maya).json()["active"] is True  # registering again turns it back on


@pytest.mark.parametrize(
    ("change", "survives"),
    [
        ("narrow", False),
        ("unfollow", False),
        ("restrict", False),
        ("unrelated_restriction", True),
    ],
)
def test_narrowing_consent_takes_down_what_it_no_longer_allows(
    client: TestClient, people: dict[str, dict[str, str]], settings: Settings, change: str, survives: bool
) -> None:
    maya, leo = people["maya"], people["leo"]
    client.put("/v1/users/leo/follow", headers=maya)
    client.put("/v1/users/maya/follow", headers=leo)
    register(client, maya, consent="mutuals")
    clip_id = run_through_pipeline(settings.database_url, prompt(client, leo, "@maya eating pizza").json()["id"])
    if change == "narrow":
        client.patch("/v1/me/cameo", json={"consent": "only_me"}, headers=maya)
    elif change == "unfollow":
        client.delete("/v1/users/leo/follow", headers=maya)
    elif change == "restrict":
        client.patch("/v1/me/cameo", json={"restrictions": "no food"}, headers=maya)
        client.patch("/v1/me/cameo", json={"restrictions": "nothing with pizza"}, headers=maya)
    else:
        client.patch("/v1/me/cameo", json={"restrictions": "no political content"}, headers=maya)
    assert (_clip(settings, clip_id).status == "published") is survives


def test_replacing_the_image_retires_clips_made_with_the_old_one(
    client: TestClient, people: dict[str, dict[str, str]], settings: Settings
) -> None:
    maya, leo = people["maya"], people["leo"]
    register(client, maya)
    pid = prompt(client, leo, "@maya flying a kite").json()["id"]
    register(client, maya, image=face_png(colour=(120, 80, 60)))  # new picture before the clip is published
    clip_id = run_through_pipeline(settings.database_url, pid)
    assert _clip(settings, clip_id).status == "removed"
    assert "replaced their cameo image" in client.get(f"/v1/prompts/{pid}", headers=leo).json()["reason"]


def test_cameos_are_refused_up_front_on_a_text_only_gpu_backend(
    client: TestClient, people: dict[str, dict[str, str]], settings: Settings
) -> None:
    register(client, people["maya"])
    settings.generation.backend = "diffusers"
    settings.generation.diffusers.pipeline = "WanPipeline"
    resp = prompt(client, people["leo"], "@maya dancing")
    assert resp.status_code == 422 and resp.json()["type"].endswith("cameos-unavailable")
    settings.generation.diffusers.pipeline = "WanImageToVideoPipeline"
    assert prompt(client, people["leo"], "@maya dancing").status_code == 202
