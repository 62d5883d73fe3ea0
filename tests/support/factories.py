"""Small builders shared by API and integration tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_sessionmaker, session_scope
from core.db.models import Clip, User

PASSWORD = "correct horse battery"


def signup(client: TestClient, handle: str) -> dict[str, str]:
    """A new account; returns its Authorization header."""
    resp = client.post("/v1/auth/signup", json={"handle": handle, "display_name": handle, "password": PASSWORD})
    assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


def published_clip(db: str | sessionmaker[Session], handle: str, text: str = "a fox") -> uuid.UUID:
    """A published clip by @handle, written straight into the store (no rendering)."""
    factory = make_sessionmaker(make_engine(db)) if isinstance(db, str) else db
    with session_scope(factory) as s:
        user = s.scalar(select(User).where(User.handle_key == handle))
        assert user is not None, f"no user @{handle}"
        cid, now = uuid.uuid4(), datetime.now(UTC)
        s.add(
            Clip(
                id=cid,
                prompt_id=uuid.uuid4(),
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
