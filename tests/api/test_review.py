"""Trust-and-safety review: the queue, claims, decisions, appeals, the audit log."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import AuditEntry, ClipStats, OutboxMessage, ReviewItem, User, UserStats
from core.materialize import apply_event
from core.records import ModerationDecision, utcnow
from core.settings import Settings
from core.topics import MODERATION_DECISIONS, decode
from tests.support.factories import published_clip, run_through_pipeline, signup

Headers = dict[str, str]


@pytest.fixture
def factory(settings: Settings) -> Any:
    return make_sessionmaker(make_engine(settings.database_url))


@pytest.fixture
def people(client: TestClient, factory: Any) -> dict[str, Headers]:
    heads = {h: signup(client, h) for h in ("creator", "fan", "rev_a", "rev_b", "boss")}
    with session_scope(factory) as s:
        for handle, role in (("rev_a", "reviewer"), ("rev_b", "reviewer"), ("boss", "admin")):
            s.scalar(select(User).where(User.handle_key == handle)).role = role  # type: ignore[union-attr]
    return heads


def _report(client: TestClient, who: Headers, clip_id: uuid.UUID, reason: str) -> None:
    assert client.post(f"/v1/clips/{clip_id}/reports", json={"reason": reason}, headers=who).status_code == 201


def _queue(client: TestClient, who: Headers) -> list[dict[str, Any]]:
    resp = client.get("/v1/review/queue", headers=who)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


def _decide(client: TestClient, who: Headers, item: str, decision: str, reason: str) -> Any:
    return client.post(
        f"/v1/review/items/{item}/decision", json={"decision": decision, "policy_reason": reason}, headers=who
    )


def _decisions(factory: Any) -> list[ModerationDecision]:
    with session_scope(factory) as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.topic == MODERATION_DECISIONS.name))
        return [decode(MODERATION_DECISIONS, r.value) for r in rows]  # type: ignore[misc]


def test_reports_queue_by_severity_then_reach_then_age(
    client: TestClient, people: dict[str, Headers], settings: Settings, factory: Any
) -> None:
    spam = published_clip(settings.database_url, "creator", "a cat")
    gore = published_clip(settings.database_url, "creator", "a fox")
    popular = published_clip(settings.database_url, "creator", "a dog")
    _report(client, people["fan"], spam, "spam")
    _report(client, people["fan"], gore, "violence")
    _report(client, people["fan"], popular, "spam")
    _report(client, people["rev_b"], spam, "harassment")  # a second report joins the same item, raising it
    with session_scope(factory) as s:
        s.add(ClipStats(clip_id=popular, likes=0, views=500, watch_ms=0, shares=0, comments=0, reports=0))
    queue = _queue(client, people["rev_a"])
    assert [q["clip_id"] for q in queue] == [str(gore), str(spam), str(popular)]
    assert [q["severity"] for q in queue] == [3, 2, 1]
    assert len(queue[1]["reasons"]) == 2 and queue[2]["reach"] == 500
    assert client.get("/v1/review/queue", headers=people["fan"]).status_code == 403


def test_claims_are_exclusive_until_they_expire(
    client: TestClient, people: dict[str, Headers], settings: Settings, factory: Any
) -> None:
    clip = published_clip(settings.database_url, "creator")
    _report(client, people["fan"], clip, "hate")
    (item,) = _queue(client, people["rev_a"])
    claimed = client.post(f"/v1/review/items/{item['id']}/claim", headers=people["rev_a"])
    assert claimed.status_code == 200 and claimed.json()["status"] == "claimed"
    assert claimed.json()["prompt"] == "a fox" and claimed.json()["creator"]["handle"] == "creator"
    taken = client.post(f"/v1/review/items/{item['id']}/claim", headers=people["rev_b"])
    assert taken.status_code == 409 and "another reviewer" in taken.json()["detail"]
    assert _decide(client, people["rev_b"], item["id"], "remove", "hate").status_code == 409
    with session_scope(factory) as s:
        s.execute(update(ReviewItem).values(claim_expires_at=utcnow() - timedelta(seconds=1)))
    assert client.post(f"/v1/review/items/{item['id']}/claim", headers=people["rev_b"]).status_code == 200
    assert _decide(client, people["rev_a"], item["id"], "remove", "hate").status_code == 409  # lost the claim


def test_a_removal_takes_the_clip_down_announces_and_audits_it(
    client: TestClient, people: dict[str, Headers], settings: Settings, factory: Any
) -> None:
    clip = published_clip(settings.database_url, "creator")
    _report(client, people["fan"], clip, "violence")
    (item,) = _queue(client, people["rev_a"])
    client.post(f"/v1/review/items/{item['id']}/claim", headers=people["rev_a"])
    assert _decide(client, people["rev_a"], item["id"], "remove", "not a reason").status_code == 422
    done = _decide(client, people["rev_a"], item["id"], "remove", "violence or gore")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "decided" and done.json()["clip_status"] == "removed"
    assert client.get(f"/v1/clips/{clip}").status_code == 404
    assert str(clip) not in {c["id"] for c in client.get("/v1/feed").json()["data"]}
    (decision,) = [d for d in _decisions(factory) if d.clip_id == clip]
    assert (decision.decision, decision.decided_by, decision.reasons) == ("takedown", "reviewer", ["violence or gore"])
    audit = client.get("/v1/review/audit", params={"clip_id": str(clip)}, headers=people["rev_b"]).json()["data"]
    assert [(a["action"], a["previous_state"], a["new_state"], a["actor_kind"]) for a in audit] == [
        ("report:remove", "published", "removed", "reviewer")
    ]
    # The materializer later sees the same decision: nothing changes, nothing is audited twice.
    apply_event(factory, MODERATION_DECISIONS.name, decision)
    assert (
        len(client.get("/v1/review/audit", params={"clip_id": str(clip)}, headers=people["rev_b"]).json()["data"]) == 1
    )
    assert _queue(client, people["rev_a"]) == []
    stats = client.get("/v1/review/stats", headers=people["rev_a"]).json()
    assert stats["depth"] == 0 and stats["decided_last_24h"] == 1


def test_an_appeal_goes_to_another_reviewer_once(
    client: TestClient, people: dict[str, Headers], settings: Settings, factory: Any
) -> None:
    clip = published_clip(settings.database_url, "creator")
    assert (
        client.post(f"/v1/clips/{clip}/appeal", json={"statement": "why"}, headers=people["creator"]).status_code == 409
    )
    _report(client, people["fan"], clip, "sexual")
    (item,) = _queue(client, people["rev_a"])
    client.post(f"/v1/review/items/{item['id']}/claim", headers=people["rev_a"])
    _decide(client, people["rev_a"], item["id"], "remove", "sexual content")

    assert client.post(f"/v1/clips/{clip}/appeal", json={"statement": "x"}, headers=people["fan"]).status_code == 404
    resp = client.post(f"/v1/clips/{clip}/appeal", json={"statement": "it is a painting"}, headers=people["creator"])
    assert resp.status_code == 201 and resp.json()["kind"] == "appeal"
    appeal_id = resp.json()["id"]
    again = client.post(f"/v1/clips/{clip}/appeal", json={"statement": "please"}, headers=people["creator"])
    assert again.status_code == 409 and "appealed already" in again.json()["detail"]
    refused = client.post(f"/v1/review/items/{appeal_id}/claim", headers=people["rev_a"])
    assert refused.status_code == 403 and "other than the one who removed" in refused.json()["detail"]
    assert client.post(f"/v1/review/items/{appeal_id}/claim", headers=people["rev_b"]).status_code == 200
    restored = _decide(client, people["rev_b"], appeal_id, "approve", "no violation")
    assert restored.json()["clip_status"] == "published"
    assert client.get(f"/v1/clips/{clip}").status_code == 200
    assert [d.decision for d in _decisions(factory) if d.clip_id == clip] == ["takedown", "restore"]
    actions = [a["action"] for a in restored.json()["audit"]]
    assert actions == ["report:remove", "appeal", "appeal:approve"]


def test_escalated_items_go_to_admins(client: TestClient, people: dict[str, Headers], settings: Settings) -> None:
    clip = published_clip(settings.database_url, "creator")
    _report(client, people["fan"], clip, "minors")
    (item,) = _queue(client, people["rev_a"])
    client.post(f"/v1/review/items/{item['id']}/claim", headers=people["rev_a"])
    escalated = _decide(client, people["rev_a"], item["id"], "escalate", "minor safety")
    assert escalated.json()["escalated"] and escalated.json()["severity"] == 4 and escalated.json()["status"] == "open"
    assert _queue(client, people["rev_b"]) == []
    assert client.post(f"/v1/review/items/{item['id']}/claim", headers=people["rev_b"]).status_code == 403
    assert [q["id"] for q in _queue(client, people["boss"])] == [item["id"]]
    assert client.post(f"/v1/review/items/{item['id']}/claim", headers=people["boss"]).status_code == 200
    assert _decide(client, people["boss"], item["id"], "remove", "minor safety").json()["clip_status"] == "removed"


def _flagged(client: TestClient, settings: Settings, who: Headers, text: str) -> tuple[str, uuid.UUID]:
    resp = client.post("/v1/prompts", json={"text": text}, headers=who)
    assert resp.status_code == 202, resp.text
    pid = resp.json()["id"]
    return pid, run_through_pipeline(settings.database_url, pid, flag=["gun (weapon) 0.412 ≥ flag 0.380 at frame 1"])


def test_a_flagged_clip_is_held_back_until_a_reviewer_approves_it(
    client: TestClient, people: dict[str, Headers], settings: Settings, factory: Any
) -> None:
    pid, clip = _flagged(client, settings, people["creator"], "a cowboy with a revolver in the desert")
    prompt = client.get(f"/v1/prompts/{pid}", headers=people["creator"]).json()
    assert prompt["status"] == "in_review" and prompt["clip_id"] is None, "no clip to show yet"
    assert client.get(f"/v1/clips/{clip}", headers=people["fan"]).status_code == 404, "held back: nobody sees it"
    assert str(clip) not in {c["id"] for c in client.get("/v1/feed").json()["data"]}
    (item,) = _queue(client, people["rev_a"])
    assert (item["kind"], item["reasons"]) == ("flag", ["gun (weapon) 0.412 ≥ flag 0.380 at frame 1"])

    assert client.post(f"/v1/review/items/{item['id']}/claim", headers=people["rev_a"]).status_code == 200
    approved = _decide(client, people["rev_a"], item["id"], "approve", "no violation")
    assert approved.status_code == 200 and approved.json()["clip_status"] == "published"
    assert client.get(f"/v1/prompts/{pid}", headers=people["creator"]).json()["status"] == "published"
    assert client.get(f"/v1/clips/{clip}", headers=people["fan"]).status_code == 200
    assert [(d.decision, d.decided_by) for d in _decisions(factory)] == [("publish", "reviewer")]
    audit = client.get("/v1/review/audit", params={"clip_id": str(clip)}, headers=people["rev_a"]).json()["data"]
    assert [(a["action"], a["actor_kind"], a["new_state"]) for a in audit] == [  # newest first
        ("flag:approve", "reviewer", "published"),
        ("flag", "automatic", "in_review"),
    ]


def test_a_flagged_clip_a_reviewer_removes_rejects_its_prompt(
    client: TestClient, people: dict[str, Headers], settings: Settings, factory: Any
) -> None:
    pid, clip = _flagged(client, settings, people["creator"], "a cowboy with a revolver in the desert")
    (item,) = _queue(client, people["rev_a"])
    client.post(f"/v1/review/items/{item['id']}/claim", headers=people["rev_a"])
    assert _decide(client, people["rev_a"], item["id"], "remove", "violence or gore").json()["clip_status"] == "removed"
    prompt = client.get(f"/v1/prompts/{pid}", headers=people["creator"]).json()
    assert prompt["status"] == "rejected" and "removed by review" in prompt["reason"]
    # A late redelivery of the flag changes nothing: the decision stands.
    run_through_pipeline(settings.database_url, pid, flag=["again"])
    assert _queue(client, people["rev_a"]) == []
    takedown = ModerationDecision(clip_id=clip, decision="takedown", decided_by="automatic", reasons=["cameo consent"])
    apply_event(factory, MODERATION_DECISIONS.name, takedown)
    audit = client.get("/v1/review/audit", params={"clip_id": str(clip)}, headers=people["rev_a"]).json()["data"]
    assert {a["action"] for a in audit} == {"flag", "flag:remove"}, "nothing changed, nothing more audited"


def test_the_audit_log_is_append_only(settings: Settings, factory: Any) -> None:
    with session_scope(factory) as s:
        s.add(
            AuditEntry(clip_id=uuid.uuid4(), actor_kind="automatic", action="publish", reason="", created_at=utcnow())
        )
    for statement in ("UPDATE audit_log SET reason = 'rewritten'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), session_scope(factory) as s:
            s.execute(text(statement))
    with session_scope(factory) as s:
        assert s.scalar(select(AuditEntry.reason)) == ""


def test_reach_counts_the_creators_followers(
    client: TestClient, people: dict[str, Headers], settings: Settings, factory: Any
) -> None:
    quiet = published_clip(settings.database_url, "fan")
    famous = published_clip(settings.database_url, "creator")
    with session_scope(factory) as s:
        creator = s.scalar(select(User).where(User.handle_key == "creator"))
        assert creator is not None
        s.add(UserStats(user_id=creator.id, followers=10_000, following=0, likes_received=0))
    _report(client, people["rev_a"], quiet, "spam")
    _report(client, people["rev_a"], famous, "spam")
    assert [q["clip_id"] for q in _queue(client, people["rev_b"])] == [str(famous), str(quiet)]


def test_metrics_show_the_review_queue_and_requests_by_route(
    client: TestClient, people: dict[str, Headers], settings: Settings
) -> None:
    clip = published_clip(settings.database_url, "creator", "a shark")
    _report(client, people["fan"], clip, "violence")
    _report(client, people["fan"], published_clip(settings.database_url, "creator", "a cat"), "spam")
    client.get(f"/v1/clips/{clip}", headers=people["fan"])
    page = client.get("/metrics")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    lines = page.text.splitlines()
    depth = {ln.split('"')[1]: float(ln.split()[-1]) for ln in lines if ln.startswith("clipstream_review_queue_depth{")}
    assert sum(depth.values()) == 2 and len(depth) == 2, depth
    (oldest,) = [ln for ln in lines if ln.startswith("clipstream_review_queue_oldest_seconds ")]
    assert float(oldest.split()[-1]) >= 0
    assert any(ln.startswith("clipstream_outbox_pending ") for ln in lines)
    # Requests are counted by route template: one series for every clip, no raw ids.
    route = 'method="GET",route="/v1/clips/{clip_id}",status="200"'
    assert any(ln.startswith(f"clipstream_http_requests_total{{{route}}}") for ln in lines), page.text[-2000:]
    assert str(clip) not in page.text


def test_an_audit_cursor_past_any_id_is_a_422_not_a_500(client: TestClient, people: dict[str, Headers]) -> None:
    """Found by schemathesis: an integer too large for the database raised OverflowError."""
    resp = client.get("/v1/review/audit", params={"before": 2**70}, headers=people["rev_a"])
    assert resp.status_code == 422 and resp.headers["content-type"] == "application/problem+json", resp.text
    assert client.get("/v1/review/audit", params={"before": 2**63 - 1}, headers=people["rev_a"]).status_code == 200
