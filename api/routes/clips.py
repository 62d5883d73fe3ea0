from __future__ import annotations

import uuid

from fastapi import APIRouter
from fastapi.responses import FileResponse

from api.deps import MediaDep, OptionalUserDep, SessionDep
from api.media import PUBLIC_CACHE, clip_file
from api.pagination import CursorQ, LimitQ, decode_cursor
from api.problems import Problem
from api.schemas import ClipCreator, ClipPublic, ClipStatsPublic, FeedPage
from core import graph
from core.db.models import Clip, ClipStats, Like, User
from core.errors import NotFoundError
from ranking.chronological import ChronologicalFeed

router = APIRouter(tags=["feed"])
_feed = ChronologicalFeed()


def clip_public(clip: Clip, stats: ClipStats | None = None, viewer_liked: bool | None = None) -> ClipPublic:
    assert clip.published_at is not None
    return ClipPublic(
        id=clip.id,
        prompt=clip.text,
        creator=ClipCreator(id=clip.user_id, handle=clip.creator_handle),
        video_url=f"/v1/clips/{clip.id}/video",
        poster_url=f"/v1/clips/{clip.id}/poster",
        mime_type=clip.mime_type,
        width=clip.width,
        height=clip.height,
        fps=clip.fps,
        duration_s=clip.duration_s,
        parent_clip_id=clip.parent_clip_id,
        published_at=clip.published_at,
        generator={k: clip.generator.get(k) for k in ("name", "version", "concepts")},
        safety_checks=list(clip.checks),
        stats=ClipStatsPublic(likes=stats.likes, views=stats.views, shares=stats.shares, comments=stats.comments)
        if stats is not None
        else ClipStatsPublic(),
        viewer_liked=viewer_liked,
    )


def published_clip(session: SessionDep, clip_id: uuid.UUID, viewer: User | None = None) -> Clip:
    clip = session.get(Clip, clip_id)
    if clip is None or clip.status != "published":
        raise NotFoundError(f"no published clip {clip_id}")
    if viewer is not None and graph.blocked_between(session, viewer.id, clip.user_id):
        raise NotFoundError(f"no published clip {clip_id}")
    return clip


@router.get("/v1/clips/{clip_id}", response_model=ClipPublic, responses={404: {"model": Problem}})
def get_clip(clip_id: uuid.UUID, session: SessionDep, viewer: OptionalUserDep) -> ClipPublic:
    """One published clip (anyone may call this); blocked or unmoderated clips are 404,
    and so are clips by someone the caller blocked or was blocked by."""
    clip = published_clip(session, clip_id, viewer)
    liked = session.get(Like, (viewer.id, clip.id)) is not None if viewer is not None else None
    return clip_public(clip, session.get(ClipStats, clip.id), liked)


@router.get(
    "/v1/clips/{clip_id}/remixes", response_model=FeedPage, responses={400: {"model": Problem}, 404: {"model": Problem}}
)
def get_remixes(
    clip_id: uuid.UUID,
    session: SessionDep,
    viewer: OptionalUserDep,
    limit: LimitQ = 20,
    cursor: CursorQ = None,
) -> FeedPage:
    """Published remixes of a clip, newest first (anyone may call this)."""
    published_clip(session, clip_id, viewer)
    after = decode_cursor(cursor)
    hidden = graph.hidden_authors(session, viewer.id) if viewer is not None else set()
    clips, nxt = _feed.page(session, limit, after, hidden, parent_clip_id=clip_id)
    return FeedPage(data=[clip_public(c) for c in clips], next_cursor=nxt.encode() if nxt else None)


@router.get(
    "/v1/clips/{clip_id}/video",
    response_class=FileResponse,
    responses={
        200: {"content": {"video/mp4": {}}, "description": "The clip (supports Range requests)"},
        404: {"model": Problem},
    },
)
def get_clip_video(clip_id: uuid.UUID, session: SessionDep, media: MediaDep) -> FileResponse:
    """Download or stream the clip's video (anyone may call this)."""
    clip = published_clip(session, clip_id)
    return clip_file(media, clip, "video", PUBLIC_CACHE)


@router.get(
    "/v1/clips/{clip_id}/poster",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}, "description": "Poster frame"}, 404: {"model": Problem}},
)
def get_clip_poster(clip_id: uuid.UUID, session: SessionDep, media: MediaDep) -> FileResponse:
    """The clip's poster image (anyone may call this)."""
    clip = published_clip(session, clip_id)
    return clip_file(media, clip, "poster", PUBLIC_CACHE)
