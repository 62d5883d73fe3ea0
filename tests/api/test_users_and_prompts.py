"""API behaviour on SQLite and PostgreSQL (no broker: the outbox holds the events)."""

import json
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import OutboxMessage
from core.settings import Settings
from core.topics import GENERATION_STATUS, PROMPTS, decode


def _outbox(settings: Settings) -> list[OutboxMessage]:
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            # Sign-up's social event is not what these tests are about.
            query = select(OutboxMessage).where(OutboxMessage.topic != "social.events").order_by(OutboxMessage.id)
            return list(s.scalars(query))
    finally:
        engine.dispose()


def test_handles_are_unique_case_insensitively(client: TestClient, token: str) -> None:
    resp = client.post(
        "/v1/auth/signup",
        json={"handle": "Maya_Makes", "display_name": "Imposter", "password": "correct horse battery"},
    )
    assert resp.status_code == 409
    assert resp.headers["content-type"] == "application/problem+json"
    assert "taken" in resp.json()["detail"]
    assert client.get("/v1/users/@MAYA_MAKES").json()["handle"] == "maya_makes"


@pytest.mark.parametrize(
    "handle, message",
    [
        ("ab", "3–30 characters"),
        ("has space", "3–30 characters"),
        ("12345", "only digits"),
        ("Admin", "reserved"),
        ("x" * 31, "3–30 characters"),
    ],
)
def test_bad_handles_get_a_readable_422(client: TestClient, handle: str, message: str) -> None:
    resp = client.post(
        "/v1/auth/signup", json={"handle": handle, "display_name": "X", "password": "correct horse battery"}
    )
    assert resp.status_code == 422
    body = resp.json()
    assert body["type"].endswith("validation-error") and message in body["detail"]
    assert body["errors"][0]["loc"] == "body.handle"


def test_prompt_is_accepted_queued_and_enqueued_atomically(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    resp = client.post("/v1/prompts", json={"text": "a cat dancing on the beach at sunset", "seed": 5}, headers=auth)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "queued" and body["seed"] == 5 and body["moderation"]["action"] == "allow"
    assert resp.headers["location"] == f"/v1/prompts/{body['id']}"
    rows = _outbox(settings)
    assert [r.topic for r in rows] == ["prompts", "generation.status"]
    submitted = decode(PROMPTS, rows[0].value)
    assert str(submitted.prompt_id) == body["id"] and submitted.creator_handle == "maya_makes"  # type: ignore[attr-defined]
    assert decode(GENERATION_STATUS, rows[1].value).status == "queued"  # type: ignore[attr-defined]
    got = client.get(f"/v1/prompts/{body['id']}", headers=auth).json()
    assert got["status"] == "queued" and [e["status"] for e in got["timeline"]] == ["queued"]


def test_a_blocked_prompt_is_rejected_with_reasons_and_never_sent_to_render(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    resp = client.post("/v1/prompts", json={"text": "a man beheaded, blood and gore everywhere"}, headers=auth)
    assert resp.status_code == 202
    body = resp.json()
    assert body["status"] == "rejected" and body["reason"].startswith("prompt policy:")
    assert body["moderation"]["action"] == "block" and body["moderation"]["reasons"]
    assert [r.topic for r in _outbox(settings)] == ["generation.status"], "nothing may reach the prompts topic"


def test_idempotency_key_returns_the_first_prompt(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    headers = {**auth, "Idempotency-Key": "retry-1"}
    first = client.post("/v1/prompts", json={"text": "a dog jumping"}, headers=headers).json()
    second = client.post("/v1/prompts", json={"text": "a dog jumping"}, headers=headers).json()
    assert first["id"] == second["id"]
    assert [r.topic for r in _outbox(settings)].count("prompts") == 1


def test_an_empty_idempotency_key_is_no_key(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    """Found by schemathesis: an empty key was stored, and the next empty one failed with a 500."""
    headers = {**auth, "Idempotency-Key": ""}
    first = client.post("/v1/prompts", json={"text": "a dog jumping"}, headers=headers)
    second = client.post("/v1/prompts", json={"text": "a dog jumping"}, headers=headers)
    assert first.status_code == second.status_code == 202, second.text
    assert first.json()["id"] != second.json()["id"], "two prompts, as without a key"
    assert [r.topic for r in _outbox(settings)].count("prompts") == 2


@pytest.mark.parametrize(
    "payload, loc",
    [
        ({"text": ""}, "body.text"),
        ({"text": "   "}, "body.text"),
        ({"text": "x" * 1001}, "body.text"),
        ({"text": "ok", "seed": -1}, "body.seed"),
        ({"text": "bad\x00byte"}, "body.text"),
        ({}, "body.text"),
        ({"text": "ok", "parent_clip_id": "not-a-uuid"}, "body.parent_clip_id"),
    ],
)
def test_invalid_prompts_get_422_and_write_nothing(
    client: TestClient, auth: dict[str, str], settings: Settings, payload: dict[str, object], loc: str
) -> None:
    resp = client.post("/v1/prompts", json=payload, headers=auth)
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["loc"] == loc
    assert _outbox(settings) == []


def test_malformed_json_body_is_a_422_problem(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post("/v1/prompts", content=b"{not json", headers={**auth, "content-type": "application/json"})
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json"


def test_auth_is_required_and_prompts_are_private(client: TestClient, auth: dict[str, str]) -> None:
    assert client.post("/v1/prompts", json={"text": "a cat"}).status_code == 401
    bad = client.post("/v1/prompts", json={"text": "a cat"}, headers={"Authorization": "Bearer cs_nope"})
    assert bad.status_code == 401 and "unknown" in bad.json()["detail"]
    pid = client.post("/v1/prompts", json={"text": "a cat"}, headers=auth).json()["id"]
    other = client.post(
        "/v1/auth/signup", json={"handle": "theo_films", "display_name": "Theo", "password": "correct horse battery"}
    ).json()["token"]
    assert client.get(f"/v1/prompts/{pid}", headers={"Authorization": f"Bearer {other}"}).status_code == 404
    assert client.get(f"/v1/prompts/{uuid.uuid4()}", headers=auth).status_code == 404


def test_remix_of_a_missing_clip_is_404(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post("/v1/prompts", json={"text": "a cat", "parent_clip_id": str(uuid.uuid4())}, headers=auth)
    assert resp.status_code == 404 and "remix" in resp.json()["detail"]


def test_openapi_documents_examples_and_problems(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {
        "/v1/prompts",
        "/v1/prompts/{prompt_id}",
        "/v1/feed",
        "/v1/clips/{clip_id}",
        "/v1/clips/{clip_id}/video",
        "/v1/auth/signup",
        "/v1/users/{handle}",
    } <= set(spec["paths"])
    text = json.dumps(spec)
    assert "a cat dancing on the beach at sunset" in text and "Problem" in spec["components"]["schemas"]


def test_prompt_status_streams_as_server_sent_events(client: TestClient, auth: dict[str, str]) -> None:
    queued = client.post("/v1/prompts", json={"text": "a cat"}, headers=auth).json()
    with client.stream("GET", f"/v1/prompts/{queued['id']}/events", params={"timeout_s": 0.6}, headers=auth) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        body = "".join(resp.iter_text())
    assert body.count("event: status") == 1 and '"status":"queued"' in body
    rejected = client.post("/v1/prompts", json={"text": "a man beheaded, gore"}, headers=auth).json()
    with client.stream("GET", f"/v1/prompts/{rejected['id']}/events", headers=auth) as resp:
        body = "".join(resp.iter_text())  # a final status ends the stream at once
    assert '"status":"rejected"' in body


def test_daily_generation_quota(settings: Settings) -> None:
    from api.app import create_app
    from core.settings import GenerationSettings
    from tests.support.factories import signup

    quota = settings.model_copy(update={"generation": GenerationSettings(daily_quota=3)})
    with TestClient(create_app(quota)) as client:
        auth = signup(client, "prolific")
        blocked = client.post("/v1/prompts", json={"text": "a man beheaded, gore"}, headers=auth)
        assert blocked.json()["status"] == "rejected"
        for i in range(3):
            assert client.post("/v1/prompts", json={"text": f"a cat {i}"}, headers=auth).status_code == 202
        over = client.post("/v1/prompts", json={"text": "a cat again"}, headers=auth)
        assert over.status_code == 429 and over.json()["type"].endswith("generation-quota")
        assert 86000 < int(over.headers["retry-after"]) <= 86400
        retry = client.post("/v1/prompts", json={"text": "a cat 0"}, headers={**auth, "Idempotency-Key": "k"})
        assert retry.status_code == 429
        other = signup(client, "newcomer")
        assert client.post("/v1/prompts", json={"text": "a dog"}, headers=other).status_code == 202


def test_the_learned_classifier_rejects_what_the_term_lists_miss(client: TestClient, auth: dict[str, str]) -> None:
    resp = client.post(
        "/v1/prompts", json={"text": "a man's head being cut off with blood spraying everywhere"}, headers=auth
    )
    body = resp.json()
    assert resp.status_code == 202 and body["status"] == "rejected"
    assert "learned classifier" in body["reason"]
    assert [r["category"] for r in body["moderation"]["reasons"]] == ["violence"]
    assert "+harm-clf-" in body["moderation"]["policy_version"]
