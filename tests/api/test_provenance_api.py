"""POST /v1/provenance/verify on real signed clips."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from core.settings import Settings
from generation import ProceduralRenderer, RenderRequest
from generation.provenance import ClipClaim, credentials_from, sign_video
from tests.support.factories import published_clip, signup


def _signed_clip(settings: Settings, tmp_path: Path, clip_id: str) -> bytes:
    clip = ProceduralRenderer().generate([RenderRequest("p", clip_id, "a fox", 4, "maya")], [tmp_path / "r"])[0]
    claim = ClipClaim(
        clip_id=clip_id,
        prompt_id="p",
        creator_id="u",
        creator_handle="maya",
        generator=clip.generator,
        generator_version=clip.generator_version,
        prompt_sha256=ClipClaim.hash_prompt("a fox"),
    )
    sign_video(clip.video_path, claim, credentials_from(settings))
    return clip.video_path.read_bytes()


def test_verify_names_the_creator_and_the_clip(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    signup(client, "maya")
    clip_id = published_clip(settings.database_url, "maya")
    data = _signed_clip(settings, tmp_path, str(clip_id))
    body = client.post("/v1/provenance/verify", files={"file": ("clip.mp4", data, "video/mp4")}).json()
    assert body["verdict"] == "made_here" and body["detail"].startswith("made here by @maya at ")
    assert body["clip_id"] == str(clip_id) and body["clip_status"] == "published"
    assert body["generator"] == "procedural procedural-2"

    changed = bytearray(data)
    changed[len(changed) // 3] ^= 0x40
    body = client.post("/v1/provenance/verify", files={"file": ("clip.mp4", bytes(changed), "video/mp4")}).json()
    assert body == {
        "verdict": "unknown",
        "detail": "unknown: the file was changed after it was signed",
        "clip_id": None,
        "creator_handle": None,
        "created_at": None,
        "generator": None,
        "clip_status": None,
        "problems": body["problems"],
    }
    assert any("mismatch" in p for p in body["problems"])


def test_verify_answers_unknown_for_anything_else(client: TestClient) -> None:
    resp = client.post("/v1/provenance/verify", files={"file": ("x.mp4", b"\x00" * 100, "video/mp4")})
    assert resp.status_code == 200 and resp.json()["verdict"] == "unknown"
    assert client.post("/v1/provenance/verify").status_code == 422
