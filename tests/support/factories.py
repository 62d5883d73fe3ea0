"""Small builders shared by API and integration tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import Clip, OutboxMessage, User
from core.materialize import apply_event
from core.records import (
    ClipFlagged,
    ClipGenerated,
    ClipMedia,
    ClipPublished,
    GeneratorInfo,
    PromptSubmitted,
    clip_id_for_prompt,
)
from core.topics import CLIPS_FLAGGED, CLIPS_GENERATED, CLIPS_PUBLISHED, PROMPTS, decode

PASSWORD = "correct horse battery"


def signup(client: TestClient, handle: str) -> dict[str, str]:
    """A new account; returns its Authorization header."""
    resp = client.post("/v1/auth/signup", json={"handle": handle, "display_name": handle, "password": PASSWORD})
    assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


def published_clip(
    db: str | sessionmaker[Session], handle: str, text: str = "a fox", prompt_id: uuid.UUID | None = None
) -> uuid.UUID:
    """A published clip by @handle, written straight into the store (no rendering)."""
    factory = make_sessionmaker(make_engine(db)) if isinstance(db, str) else db
    with session_scope(factory) as s:
        user = s.scalar(select(User).where(User.handle_key == handle))
        assert user is not None, f"no user @{handle}"
        cid = clip_id_for_prompt(prompt_id) if prompt_id is not None else uuid.uuid4()
        now = datetime.now(UTC)
        s.add(
            Clip(
                id=cid,
                prompt_id=prompt_id or uuid.uuid4(),
                user_id=user.id,
                creator_handle=handle,
                text=text,
                status="published",
                video_key=f"clips/{cid}/clip.mp4",
                poster_key=f"clips/{cid}/poster.jpg",
                mime_type="video/mp4",
                width=288,
                height=512,
                fps=12,
                frame_count=36,
                duration_s=3.0,
                sha256="0" * 64,
                generator={},
                checks=[],
                block_reasons=[],
                generated_at=now,
                published_at=now,
            )
        )
    return cid


def fake_media(prefix: str) -> ClipMedia:
    """Media fields of a 288x512, 3 s clip under ``prefix`` (no files are written)."""
    return ClipMedia(
        video_key=f"{prefix}/clip.mp4",
        poster_key=f"{prefix}/poster.jpg",
        frame_keys=[],
        frame_indices=[],
        mime_type="video/mp4",
        width=288,
        height=512,
        fps=12,
        frame_count=36,
        duration_s=3.0,
        sha256="0" * 64,
    )


def submitted_prompt(db: str, prompt_id: uuid.UUID | str) -> PromptSubmitted:
    """The PromptSubmitted record the API put in the outbox for ``prompt_id``."""
    factory = make_sessionmaker(make_engine(db))
    with session_scope(factory) as s:
        for row in s.scalars(select(OutboxMessage).where(OutboxMessage.topic == PROMPTS.name)):
            rec = decode(PROMPTS, row.value)
            assert isinstance(rec, PromptSubmitted)
            if str(rec.prompt_id) == str(prompt_id):
                return rec
    raise AssertionError(f"no PromptSubmitted for {prompt_id} in the outbox")


def run_through_pipeline(
    db: str, prompt_id: uuid.UUID | str, *, publish: bool = True, flag: list[str] | None = None
) -> uuid.UUID:
    """Apply the ClipGenerated (and ClipPublished, or ClipFlagged with ``flag`` as its
    reasons) events the workers would send for an accepted prompt, through the
    materializer's real appliers; no media is rendered."""
    rec = submitted_prompt(db, prompt_id)
    clip_id = clip_id_for_prompt(rec.prompt_id)
    prefix = f"clips/{clip_id}"
    fields = dict(
        clip_id=clip_id,
        prompt_id=rec.prompt_id,
        user_id=rec.user_id,
        creator_handle=rec.creator_handle,
        text=rec.text,
        parent_clip_id=rec.parent_clip_id,
        cameos=rec.cameos,
        media=fake_media(prefix),
        generator=GeneratorInfo(name="test", version="test", seed=rec.seed, render_ms=1),
    )
    factory = make_sessionmaker(make_engine(db))
    apply_event(factory, CLIPS_GENERATED.name, ClipGenerated(**fields))
    if flag is not None:
        apply_event(factory, CLIPS_FLAGGED.name, ClipFlagged(**fields, reasons=flag, checks=[]))
    elif publish:
        apply_event(factory, CLIPS_PUBLISHED.name, ClipPublished(**fields, checks=[]))
    return clip_id
