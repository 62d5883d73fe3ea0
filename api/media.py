"""Serving a clip's files from the media store."""

from __future__ import annotations

from typing import Literal

from fastapi.responses import FileResponse

from core.db.models import Clip
from core.errors import NotFoundError
from core.media import LocalMediaStore

PUBLIC_CACHE = "public, max-age=31536000, immutable"  # published clips' files never change
PRIVATE_CACHE = "private, no-store"  # drafts and clips under review


def clip_file(
    media: LocalMediaStore, clip: Clip, which: Literal["video", "poster"], cache: str = PRIVATE_CACHE
) -> FileResponse:
    key, mime = (clip.video_key, clip.mime_type) if which == "video" else (clip.poster_key, "image/jpeg")
    if not media.exists(key):
        raise NotFoundError("the media file is missing")
    return FileResponse(media.path(key), media_type=mime, headers={"Cache-Control": cache})
