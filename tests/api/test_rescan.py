"""The re-scan job: published clips judged again by the current frame filter."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import AuditEntry, Clip, OutboxMessage, ReviewItem
from core.media import LocalMediaStore
from core.settings import Settings
from core.topics import MODERATION_DECISIONS
from generation.base import RenderRequest
from generation.encoding import encode_mp4
from generation.procedural import ProceduralRenderer
from moderation.frame_filter import load_frame_filter
from moderation.rescan import rescan
from tests.support.factories import published_clip, signup


def _clip_with_video(settings: Settings, handle: str, prompt: str) -> uuid.UUID:
    clip = published_clip(settings.database_url, handle, prompt)
    renderer = ProceduralRenderer()
    frames = renderer.render_frames(RenderRequest("p", str(clip), prompt, 11, handle))
    path = LocalMediaStore(settings.media.root).path(f"clips/{clip}/clip.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    encode_mp4(frames, path, renderer.fps)
    return clip


def _state(factory: Any) -> dict[str, Any]:
    with factory() as s:
        return {
            "statuses": dict(s.execute(select(Clip.id, Clip.status)).all()),
            "embedded": s.scalar(select(func.count()).select_from(Clip).where(Clip.embedding_model.is_not(None))),
            "items": s.scalar(select(func.count()).select_from(ReviewItem)),
            "audit": s.scalar(select(func.count()).select_from(AuditEntry)),
            "takedowns": s.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.topic == MODERATION_DECISIONS.name)
            ),
        }


def test_a_rescan_catches_what_slipped_through_and_is_idempotent(client: TestClient, settings: Settings) -> None:
    signup(client, "creator")
    safe = _clip_with_video(settings, "creator", "a penguin surfing at the beach")
    bad = _clip_with_video(settings, "creator", "a cowboy with a revolver in the desert")
    missing = published_clip(settings.database_url, "creator", "a clip whose file is gone")
    factory = make_sessionmaker(make_engine(settings.database_url))
    media = LocalMediaStore(settings.media.root)
    frame_filter = load_frame_filter()

    dry = rescan(factory, media, frame_filter, dry_run=True)
    assert dry.scanned == 3 and set(dry.flagged + dry.removed) == {bad} and set(dry.errors) == {missing}
    before = _state(factory)
    assert before["items"] == 0 and before["embedded"] == 0, "a dry run changes nothing"

    report = rescan(factory, media, frame_filter)
    assert set(report.flagged + report.removed) == {bad} and set(report.errors) == {missing}
    after = _state(factory)
    assert after["statuses"][safe] == "published" and after["embedded"] == 2
    assert after["items"] == 1
    if report.removed:
        assert after["statuses"][bad] == "removed" and after["takedowns"] == 1
    else:
        assert after["statuses"][bad] == "published" and after["takedowns"] == 0
    with session_scope(factory) as s:
        item = s.scalar(select(ReviewItem))
        assert item is not None and item.kind == "flag" and item.reasons[0].startswith("re-scan: gun (weapon)")

    again = rescan(factory, media, frame_filter)
    final = _state(factory)
    assert (final["items"], final["takedowns"], final["audit"]) == (1, after["takedowns"], after["audit"])
    assert again.scanned == (2 if report.removed else 3), "a removed clip is no longer published"
