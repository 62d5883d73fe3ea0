"""Profiles, follower lists and the graph actions (follow, block, mute)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import AdminDep, CurrentUserDep, MediaDep, OptionalUserDep, RelayDep, SessionDep, user_rate_limit
from api.handles import validate_handle
from api.pagination import CursorQ, LimitQ, decode_cursor, keyset_page
from api.problems import Problem
from api.routes.auth import avatar_url, user_private
from api.routes.clips import clip_public
from api.schemas import (
    FeedPage,
    ProfileCounts,
    ProfilePublic,
    RelationshipPublic,
    RoleUpdate,
    UserPage,
    UserPrivate,
    UserSummary,
)
from core import graph
from core.db.models import Clip, Follow, User, UserStats
from core.errors import NotFoundError

router = APIRouter(prefix="/v1/users", tags=["users"])
admin_router = APIRouter(prefix="/v1/admin", tags=["admin"])


def find_user(session: Session, handle: str) -> User:
    try:
        key = validate_handle(handle).lower()
    except ValueError as e:
        raise NotFoundError(f"no user @{handle.removeprefix('@')[:40]}") from e
    user = session.scalar(select(User).where(User.handle_key == key))
    if user is None:
        raise NotFoundError(f"no user @{handle.removeprefix('@')}")
    return user


def summary(user: User) -> UserSummary:
    return UserSummary(id=user.id, handle=user.handle, display_name=user.display_name, avatar_url=avatar_url(user))


def profile(session: Session, user: User, viewer: User | None) -> ProfilePublic:
    def count(stmt: Select[Any]) -> int:
        return int(session.scalar(stmt) or 0)

    stats = session.get(UserStats, user.id)
    counts = ProfileCounts(
        followers=stats.followers if stats else 0,
        following=stats.following if stats else 0,
        likes_received=stats.likes_received if stats else 0,
        clips=count(select(func.count()).select_from(Clip).where(Clip.user_id == user.id, Clip.status == "published")),
    )
    rel = None
    if viewer is not None and viewer.id != user.id:
        r = graph.relationship(session, viewer.id, user.id)
        rel = RelationshipPublic(
            following=r.following,
            followed_by=r.followed_by,
            friends=r.friends,
            blocking=r.blocking,
            blocked_by=r.blocked_by,
            muting=r.muting,
        )
    return ProfilePublic(
        **summary(user).model_dump(), bio=user.bio, created_at=user.created_at, counts=counts, relationship=rel
    )


@router.get("/{handle}", response_model=ProfilePublic, responses={404: {"model": Problem}})
def get_profile(handle: str, session: SessionDep, viewer: OptionalUserDep) -> ProfilePublic:
    """A public profile with counts; with a token, also how the caller relates to it."""
    return profile(session, find_user(session, handle), viewer)


@router.get(
    "/{handle}/avatar",
    response_class=FileResponse,
    responses={200: {"content": {"image/webp": {}}}, 404: {"model": Problem}},
)
def get_avatar(handle: str, session: SessionDep, media: MediaDep) -> FileResponse:
    """The user's avatar image (anyone may call this)."""
    user = find_user(session, handle)
    if not user.avatar_key or not media.exists(user.avatar_key):
        raise NotFoundError(f"@{user.handle} has no avatar")
    return FileResponse(
        media.path(user.avatar_key), media_type="image/webp", headers={"Cache-Control": "public, max-age=300"}
    )


@router.get("/{handle}/clips", response_model=FeedPage, responses={400: {"model": Problem}, 404: {"model": Problem}})
def user_clips(
    handle: str, session: SessionDep, viewer: OptionalUserDep, limit: LimitQ = 20, cursor: CursorQ = None
) -> FeedPage:
    """The user's published clips, newest first (the profile grid). Hidden from users
    the author blocked or who blocked the author."""
    user = find_user(session, handle)
    after = decode_cursor(cursor)
    if viewer is not None and graph.blocked_between(session, viewer.id, user.id):
        return FeedPage(data=[], next_cursor=None)
    stmt = select(Clip).where(Clip.user_id == user.id, Clip.status == "published")
    rows, nxt = keyset_page(session, stmt, Clip.published_at, Clip.id, after, limit, scalars=True)
    return FeedPage(data=[clip_public(c) for c in rows], next_cursor=nxt)


def _follow_page(session: Session, user: User, *, followers: bool, limit: int, cursor: str | None) -> UserPage:
    after = decode_cursor(cursor)
    mine, other = (Follow.followee_id, Follow.follower_id) if followers else (Follow.follower_id, Follow.followee_id)
    stmt = select(User).join(Follow, other == User.id).where(mine == user.id)
    users, nxt = keyset_page(session, stmt, Follow.created_at, User.id, after, limit, scalars=True)
    return UserPage(data=[summary(u) for u in users], next_cursor=nxt)


@router.get(
    "/{handle}/followers", response_model=UserPage, responses={400: {"model": Problem}, 404: {"model": Problem}}
)
def followers(handle: str, session: SessionDep, limit: LimitQ = 20, cursor: CursorQ = None) -> UserPage:
    """Who follows this user, most recent first (anyone may call this)."""
    return _follow_page(session, find_user(session, handle), followers=True, limit=limit, cursor=cursor)


@router.get(
    "/{handle}/following", response_model=UserPage, responses={400: {"model": Problem}, 404: {"model": Problem}}
)
def following(handle: str, session: SessionDep, limit: LimitQ = 20, cursor: CursorQ = None) -> UserPage:
    """Whom this user follows, most recent first (anyone may call this)."""
    return _follow_page(session, find_user(session, handle), followers=False, limit=limit, cursor=cursor)


def _graph_action(action: Callable[[Session, User, User], bool]) -> Callable[..., ProfilePublic]:
    def endpoint(handle: str, user: CurrentUserDep, session: SessionDep, relay: RelayDep) -> ProfilePublic:
        target = find_user(session, handle)
        try:
            changed = action(session, user, target)
            session.commit()
        except IntegrityError:  # the same action raced in from a parallel request: already done
            session.rollback()
            changed = False
        if changed and relay is not None:
            relay.notify()
        return profile(session, target, user)

    return endpoint


_ACTION_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},
    409: {"model": Problem, "description": "Acting on yourself"},
}
for _path, _method, _fn, _doc in (
    ("follow", "put", graph.follow, "Follow the user (idempotent). Refused when either blocked the other."),
    ("follow", "delete", graph.unfollow, "Stop following the user (idempotent)."),
    ("block", "put", graph.block, "Block the user: follows both ways end; neither sees the other's clips."),
    ("block", "delete", graph.unblock, "Unblock the user (idempotent)."),
    ("mute", "put", graph.mute, "Mute the user: their clips leave your feed; they are not told."),
    ("mute", "delete", graph.unmute, "Unmute the user (idempotent)."),
):
    router.add_api_route(
        f"/{{handle}}/{_path}",
        _graph_action(_fn),
        methods=[_method.upper()],
        response_model=ProfilePublic,
        responses=_ACTION_RESPONSES,
        summary=f"{_method.upper()} {_path}",
        description=_doc + " Needs a bearer token.",
        name=f"{_method}_{_path}",
        dependencies=[Depends(user_rate_limit("writes"))],
    )


@admin_router.put(
    "/users/{handle}/role",
    response_model=UserPrivate,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}},
)
def set_role(handle: str, body: RoleUpdate, admin: AdminDep, session: SessionDep) -> UserPrivate:
    """Give a user the user, reviewer or admin role (admins only)."""
    user = find_user(session, handle)
    user.role = body.role
    session.commit()
    return user_private(user)
