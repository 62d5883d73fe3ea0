"""Every endpoint × anonymous / other user / owner / reviewer / admin.

RULES names the access rule of every route the app serves; a route without a rule
fails the test, so a new endpoint cannot ship without deciding who may call it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.auth import issue_token
from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import User
from core.settings import Settings
from tests.support.factories import published_clip, run_through_pipeline

PERSONAS = ("anonymous", "other", "owner", "reviewer", "admin")
PUBLIC = {p: "ok" for p in PERSONAS}
SIGNED_IN = {"anonymous": 401, "other": "ok", "owner": "ok", "reviewer": "ok", "admin": "ok"}
OWNER_PRIVATE = {"anonymous": 401, "other": 404, "owner": "ok", "reviewer": 404, "admin": 404}
OWNER_ACTION = {"anonymous": 401, "other": 403, "owner": "ok", "reviewer": 403, "admin": 403}
REVIEWER = {"anonymous": 401, "other": 403, "owner": 403, "reviewer": "ok", "admin": "ok"}
ADMIN_ONLY = {"anonymous": 401, "other": 403, "owner": 403, "reviewer": 403, "admin": "ok"}

# (method, path) → (rule, request builder from the world dict)
Call = Callable[[dict[str, Any]], dict[str, Any]]
RULES: dict[tuple[str, str], tuple[dict[str, Any], Call]] = {
    ("GET", "/healthz"): (PUBLIC, lambda w: {}),
    ("GET", "/readyz"): (PUBLIC, lambda w: {}),
    ("GET", "/metrics"): (PUBLIC, lambda w: {}),
    ("POST", "/v1/auth/signup"): (
        PUBLIC,
        lambda w: {"json": {"handle": f"new_{uuid.uuid4().hex[:8]}", "display_name": "New", "password": "x" * 12}},
    ),
    ("POST", "/v1/auth/login"): (
        PUBLIC,
        lambda w: {"json": {"handle": "owner_1", "password": "correct horse battery"}},
    ),
    ("POST", "/v1/auth/logout"): (SIGNED_IN, lambda w: {}),
    ("GET", "/v1/me"): (SIGNED_IN, lambda w: {}),
    ("PATCH", "/v1/me"): (SIGNED_IN, lambda w: {"json": {"bio": "hello"}}),
    ("PUT", "/v1/me/avatar"): (SIGNED_IN, lambda w: {"files": {"file": ("a.png", w["png"], "image/png")}}),
    ("GET", "/v1/users/{handle}"): (PUBLIC, lambda w: {"path": {"handle": "owner_1"}}),
    ("GET", "/v1/users/{handle}/avatar"): (PUBLIC, lambda w: {"path": {"handle": "owner_1"}, "allow": {404}}),
    ("GET", "/v1/users/{handle}/clips"): (PUBLIC, lambda w: {"path": {"handle": "owner_1"}}),
    ("GET", "/v1/users/{handle}/followers"): (PUBLIC, lambda w: {"path": {"handle": "owner_1"}}),
    ("GET", "/v1/users/{handle}/following"): (PUBLIC, lambda w: {"path": {"handle": "owner_1"}}),
    **{
        (m, f"/v1/users/{{handle}}/{a}"): (SIGNED_IN, lambda w: {"path": {"handle": "target_1"}})
        for m in ("PUT", "DELETE")
        for a in ("follow", "block", "mute")
    },
    ("PUT", "/v1/admin/users/{handle}/role"): (
        ADMIN_ONLY,
        lambda w: {"path": {"handle": "target_1"}, "json": {"role": "user"}},
    ),
    ("POST", "/v1/prompts"): (SIGNED_IN, lambda w: {"json": {"text": "a cat"}}),
    ("GET", "/v1/prompts/{prompt_id}"): (OWNER_PRIVATE, lambda w: {"path": {"prompt_id": w["prompt_id"]}}),
    ("GET", "/v1/prompts/{prompt_id}/events"): (
        OWNER_PRIVATE,
        lambda w: {"path": {"prompt_id": w["prompt_id"]}, "params": {"timeout_s": 0.5}},
    ),
    ("GET", "/v1/feed"): (PUBLIC, lambda w: {}),
    ("GET", "/v1/me/feed/steering"): (SIGNED_IN, lambda w: {"allow": {404}}),
    ("PUT", "/v1/me/feed/steering"): (SIGNED_IN, lambda w: {"json": {"text": "more cats, less horror"}}),
    ("DELETE", "/v1/me/feed/steering"): (SIGNED_IN, lambda w: {}),
    ("POST", "/v1/clips/{clip_id}/see-less"): (SIGNED_IN, lambda w: {"path": {"clip_id": w["clip_id"]}}),
    ("GET", "/v1/clips/{clip_id}"): (PUBLIC, lambda w: {"path": {"clip_id": w["clip_id"]}}),
    ("GET", "/v1/clips/{clip_id}/remixes"): (PUBLIC, lambda w: {"path": {"clip_id": w["clip_id"]}}),
    ("GET", "/v1/clips/{clip_id}/video"): (PUBLIC, lambda w: {"path": {"clip_id": w["clip_id"]}}),
    ("GET", "/v1/clips/{clip_id}/poster"): (PUBLIC, lambda w: {"path": {"clip_id": w["clip_id"]}, "allow": {404}}),
    ("PUT", "/v1/clips/{clip_id}/like"): (SIGNED_IN, lambda w: {"path": {"clip_id": w["clip_id"]}}),
    ("DELETE", "/v1/clips/{clip_id}/like"): (SIGNED_IN, lambda w: {"path": {"clip_id": w["clip_id"]}}),
    ("POST", "/v1/clips/{clip_id}/views"): (
        SIGNED_IN,
        lambda w: {"path": {"clip_id": w["clip_id"]}, "json": {"watch_ms": 100}},
    ),
    ("POST", "/v1/clips/{clip_id}/shares"): (SIGNED_IN, lambda w: {"path": {"clip_id": w["clip_id"]}}),
    ("POST", "/v1/clips/{clip_id}/comments"): (
        SIGNED_IN,
        lambda w: {"path": {"clip_id": w["clip_id"]}, "json": {"text": "nice"}},
    ),
    ("GET", "/v1/clips/{clip_id}/comments"): (PUBLIC, lambda w: {"path": {"clip_id": w["clip_id"]}}),
    ("DELETE", "/v1/comments/{comment_id}"): (OWNER_ACTION, lambda w: {"path": {"comment_id": w["new_comment"]()}}),
    ("POST", "/v1/clips/{clip_id}/reports"): (
        SIGNED_IN,
        lambda w: {"path": {"clip_id": w["clip_id"]}, "json": {"reason": "spam"}},
    ),
    # Cameos: /v1/me/cameo acts on the caller's own likeness (404 for callers without one).
    ("PUT", "/v1/me/cameo"): (SIGNED_IN, lambda w: {"files": {"image": ("me.png", w["face"], "image/png")}}),
    ("GET", "/v1/me/cameo"): (SIGNED_IN, lambda w: {"allow": {404}}),
    ("PATCH", "/v1/me/cameo"): (SIGNED_IN, lambda w: {"json": {"consent": "everyone"}, "allow": {404}}),
    ("GET", "/v1/me/cameo/image"): (SIGNED_IN, lambda w: {"allow": {404}}),
    ("GET", "/v1/me/cameo/approvals"): (SIGNED_IN, lambda w: {}),
    ("PUT", "/v1/me/cameo/approvals/{handle}"): (SIGNED_IN, lambda w: {"path": {"handle": "target_1"}}),
    ("DELETE", "/v1/me/cameo/approvals/{handle}"): (SIGNED_IN, lambda w: {"path": {"handle": "target_1"}}),
    ("GET", "/v1/users/{handle}/cameo"): (SIGNED_IN, lambda w: {"path": {"handle": "owner_1"}}),
    ("GET", "/v1/me/cameo/appearances"): (SIGNED_IN, lambda w: {}),
    # Only the person cast may see a clip's drafts or remove it: 404 for everyone else.
    ("GET", "/v1/me/cameo/appearances/{prompt_id}/video"): (
        OWNER_PRIVATE,
        lambda w: {"path": {"prompt_id": w["cast_prompt_id"]}},
    ),
    ("GET", "/v1/me/cameo/appearances/{prompt_id}/poster"): (
        OWNER_PRIVATE,
        lambda w: {"path": {"prompt_id": w["cast_prompt_id"]}},
    ),
    ("DELETE", "/v1/me/cameo/appearances/{prompt_id}"): (
        OWNER_PRIVATE,
        lambda w: {"path": {"prompt_id": w["cast_prompt_id"]}},
    ),
    ("DELETE", "/v1/me/cameo"): (SIGNED_IN, lambda w: {"allow": {404}}),
    # Trust and safety: reviewers and admins. A claim held by another reviewer, or a decision
    # without a claim, is a 409: past the authorization check.
    ("GET", "/v1/review/queue"): (REVIEWER, lambda w: {}),
    ("GET", "/v1/review/stats"): (REVIEWER, lambda w: {}),
    ("GET", "/v1/review/audit"): (REVIEWER, lambda w: {"params": {"clip_id": w["clip_id"]}}),
    ("GET", "/v1/review/items/{item_id}"): (REVIEWER, lambda w: {"path": {"item_id": w["review_item"]}}),
    ("GET", "/v1/review/items/{item_id}/video"): (REVIEWER, lambda w: {"path": {"item_id": w["review_item"]}}),
    ("GET", "/v1/review/items/{item_id}/poster"): (
        REVIEWER,
        lambda w: {"path": {"item_id": w["review_item"]}, "allow": {404}},
    ),
    ("POST", "/v1/review/items/{item_id}/claim"): (
        REVIEWER,
        lambda w: {"path": {"item_id": w["review_item"]}, "allow": {409}},
    ),
    ("POST", "/v1/review/items/{item_id}/decision"): (
        REVIEWER,
        lambda w: {
            "path": {"item_id": w["review_item"]},
            "json": {"decision": "approve", "policy_reason": "no violation"},
            "allow": {409},
        },
    ),
    # Only the clip's creator may appeal (the clip is not removed: 409 past the check).
    ("POST", "/v1/clips/{clip_id}/appeal"): (
        {**OWNER_PRIVATE, "owner": "ok"},
        lambda w: {"path": {"clip_id": w["clip_id"]}, "json": {"statement": "please"}, "allow": {409}},
    ),
    ("POST", "/v1/provenance/verify"): (PUBLIC, lambda w: {"files": {"file": ("x.mp4", b"not a video", "video/mp4")}}),
}


def _png(side: int = 80) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 100, 50)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def world(client: TestClient, settings: Settings) -> dict[str, Any]:
    tokens = {}
    for persona, handle in (
        ("owner", "owner_1"),
        ("other", "other_1"),
        ("reviewer", "reviewer_1"),
        ("admin", "admin_1"),
        ("target", "target_1"),
    ):
        resp = client.post(
            "/v1/auth/signup", json={"handle": handle, "display_name": handle, "password": "correct horse battery"}
        )
        tokens[persona] = resp.json()["token"]
    factory = make_sessionmaker(make_engine(settings.database_url))
    with session_scope(factory) as s:
        for handle, role in (("reviewer_1", "reviewer"), ("admin_1", "admin")):
            s.scalar(select(User).where(User.handle_key == handle)).role = role
    cid = published_clip(factory, "owner_1")
    video = settings.media.root / "clips" / str(cid) / "clip.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    owner_auth = {"Authorization": f"Bearer {tokens['owner']}"}
    prompt_id = client.post("/v1/prompts", json={"text": "a dog"}, headers=owner_auth).json()["id"]
    # A clip by @target_1 that casts @owner_1, rendered (media on disk), not yet published.
    face = _png(160)
    resp = client.put(
        "/v1/me/cameo", files={"image": ("me.png", face, "image/png")}, data={"consent": "everyone"}, headers=owner_auth
    )
    assert resp.status_code == 200, resp.text
    target_auth = {"Authorization": f"Bearer {tokens['target']}"}
    resp = client.post("/v1/prompts", json={"text": "@owner_1 dancing"}, headers=target_auth)
    assert resp.status_code == 202, resp.text
    cast_prompt_id = resp.json()["id"]
    cast_clip = run_through_pipeline(settings.database_url, cast_prompt_id, publish=False)
    for name in ("clip.mp4", "poster.jpg"):
        path = settings.media.root / "clips" / str(cast_clip) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00" * 16)

    other_auth = {"Authorization": f"Bearer {tokens['other']}"}
    report = client.post(f"/v1/clips/{cid}/reports", json={"reason": "spam"}, headers=other_auth)
    assert report.status_code == 201, report.text
    admin_auth = {"Authorization": f"Bearer {tokens['admin']}"}
    (item,) = client.get("/v1/review/queue", headers=admin_auth).json()["data"]

    def new_comment() -> str:
        return str(client.post(f"/v1/clips/{cid}/comments", json={"text": "mine"}, headers=owner_auth).json()["id"])

    def fresh_token(persona: str) -> str:
        # Straight from the token store: logging in ~150 times would hit the login rate limit.
        with session_scope(factory) as s:
            user = s.scalar(select(User).where(User.handle_key == f"{persona}_1"))
            token, _ = issue_token(s, user.id, settings.secret_key.get_secret_value(), 3600)
        return token

    return {
        "tokens": tokens,
        "clip_id": str(cid),
        "prompt_id": prompt_id,
        "cast_prompt_id": cast_prompt_id,
        "review_item": item["id"],
        "png": _png(),
        "face": face,
        "new_comment": new_comment,
        "fresh_token": fresh_token,
    }


def test_every_route_has_a_rule(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    served = {(method.upper(), path) for path, ops in paths.items() for method in ops}
    assert served == set(RULES), f"routes without a rule: {served - set(RULES)}; stale rules: {set(RULES) - served}"


def test_authorization_matrix(client: TestClient, world: dict[str, Any], settings: Settings) -> None:
    failures = []
    for (method, path), (rule, build) in RULES.items():
        for persona in PERSONAS:
            # Each call gets a fresh token, since logout revokes the one it is made with.
            req = build(world)
            url = path.format(**req.get("path", {}))
            headers = {}
            if persona != "anonymous":
                headers["Authorization"] = f"Bearer {world['fresh_token'](persona)}"
            resp = client.request(
                method, url, headers=headers, json=req.get("json"), files=req.get("files"), params=req.get("params")
            )
            want = rule[persona]
            ok = (
                (resp.status_code < 400 or resp.status_code in req.get("allow", set()))
                if want == "ok"
                else resp.status_code == want
            )
            if not ok:
                failures.append(f"{method} {path} as {persona}: {resp.status_code} (want {want}) {resp.text[:120]}")
    assert not failures, "\n".join(failures)
