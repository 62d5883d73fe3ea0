"""Feed pagination and clip media, with clips materialized straight into the store."""

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import Clip
from core.settings import Settings


def _add_clips(settings: Settings, n: int, status: str = "published", same_time: bool = False) -> list[uuid.UUID]:
    engine = make_engine(settings.database_url)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    ids = []
    with session_scope(make_sessionmaker(engine)) as s:
        for i in range(n):
            cid = uuid.uuid4()
            ids.append(cid)
            at = base if same_time else base + timedelta(minutes=i)
            s.add(
                Clip(
                    id=cid,
                    prompt_id=uuid.uuid4(),
                    user_id=uuid.uuid4(),
                    creator_handle="maya",
                    text=f"clip {i}",
                    status=status,
                    video_key=f"clips/{cid}/clip.mp4",
                    poster_key=f"clips/{cid}/poster.jpg",
                    mime_type="video/mp4",
                    width=288,
                    height=512,
                    fps=12,
                    frame_count=36,
                    duration_s=3.0,
                    sha256="0" * 64,
                    generator={"name": "procedural", "version": "1", "concepts": []},
                    checks=[],
                    block_reasons=[],
                    generated_at=at,
                    published_at=at if status == "published" else None,
                )
            )
    engine.dispose()
    return ids


def test_feed_pages_newest_first_without_duplicates(client: TestClient, settings: Settings) -> None:
    _add_clips(settings, 7)
    _add_clips(settings, 5, same_time=True)  # ties on published_at are broken by id
    _add_clips(settings, 3, status="blocked")
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/feed", params=params).json()
        seen += page["data"]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 12 and len({c["id"] for c in seen}) == 12 and pages == 3
    stamps = [c["published_at"] for c in seen]
    assert stamps == sorted(stamps, reverse=True)
    assert all("blocked" not in c["prompt"] for c in seen)


def test_bad_cursor_and_limit_are_clear_errors(client: TestClient) -> None:
    resp = client.get("/v1/feed", params={"cursor": "garbage"})
    assert resp.status_code == 400 and resp.json()["type"].endswith("invalid-cursor")
    assert client.get("/v1/feed", params={"limit": 0}).status_code == 422
    assert client.get("/v1/feed", params={"limit": 101}).status_code == 422


def test_only_published_clips_and_their_media_are_served(client: TestClient, settings: Settings) -> None:
    (published,) = _add_clips(settings, 1)
    (blocked,) = _add_clips(settings, 1, status="blocked")
    video = Path(settings.media.root) / "clips" / str(published) / "clip.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    assert client.get(f"/v1/clips/{published}").json()["video_url"] == f"/v1/clips/{published}/video"
    resp = client.get(f"/v1/clips/{published}/video")
    assert resp.status_code == 200 and resp.headers["content-type"] == "video/mp4"
    ranged = client.get(f"/v1/clips/{published}/video", headers={"Range": "bytes=0-9"})
    assert ranged.status_code == 206 and len(ranged.content) == 10
    assert client.get(f"/v1/clips/{published}/poster").status_code == 404  # file missing → clear 404
    assert client.get(f"/v1/clips/{blocked}").status_code == 404
    assert client.get(f"/v1/clips/{blocked}/video").status_code == 404
    assert client.get("/v1/clips/not-a-uuid").status_code == 422


def test_health_endpoints(client: TestClient) -> None:
    alive = client.get("/healthz").json()
    assert alive["status"] == "ok" and alive["process"] == os.getpid()  # which process answered
    ready = client.get("/readyz").json()
    assert ready["database"] == "ok" and ready["process"] == os.getpid()
