"""Sign-up, login, logout and the caller's own account."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, Response, UploadFile, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import hash_password, issue_token, verify_password
from api.deps import CurrentUserDep, MediaDep, RelayDep, SessionDep, SettingsDep, ip_rate_limit, user_rate_limit
from api.handles import handle_skeleton
from api.images import MAX_IMAGE_BYTES, ImageRejected, NormalizedImage, normalize_image
from api.problems import RATE_LIMITED, ApiError, Problem
from api.schemas import LoginRequest, ProfileUpdate, SessionToken, SignupRequest, UserPrivate
from core.db.models import ApiToken, User
from core.errors import ConflictError
from core.graph import SOCIAL_EVENTS
from core.media import LocalMediaStore
from core.outbox import enqueue
from core.records import SocialEvent

router = APIRouter(tags=["accounts"])


def avatar_url(user: User) -> str | None:
    return f"/v1/users/{user.handle}/avatar" if user.avatar_key else None


def user_private(user: User) -> UserPrivate:
    return UserPrivate(
        id=user.id,
        handle=user.handle,
        display_name=user.display_name,
        avatar_url=avatar_url(user),
        bio=user.bio,
        role=user.role,  # type: ignore[arg-type]
        created_at=user.created_at,
    )


@router.post(
    "/v1/auth/signup",
    status_code=status.HTTP_201_CREATED,
    response_model=SessionToken,
    responses={409: {"model": Problem, "description": "Handle taken"}, 422: {"model": Problem}, 429: RATE_LIMITED},
    dependencies=[Depends(ip_rate_limit("signup"))],
)
def signup(body: SignupRequest, session: SessionDep, settings: SettingsDep, relay: RelayDep) -> SessionToken:
    """Create an account and get a bearer token (anyone may call this).

    Handles are unique ignoring case and look-alike spellings (@maya_rnakes is taken
    when @maya_makes exists)."""
    if len(body.password) < settings.auth.min_password_length:
        raise ApiError(
            422,
            "weak-password",
            "Password too short",
            f"the password needs at least {settings.auth.min_password_length} characters",
        )
    user = User(
        handle=body.handle,
        handle_key=body.handle.lower(),
        handle_skeleton=handle_skeleton(body.handle),
        display_name=body.display_name,
        password_hash=hash_password(body.password),
    )
    session.add(user)
    try:
        session.flush()
        token, expires = issue_token(
            session, user.id, settings.secret_key.get_secret_value(), settings.auth.token_ttl_s
        )
        enqueue(
            session,
            SOCIAL_EVENTS,
            SocialEvent(user_id=user.id, kind="user_created", attributes={"handle": user.handle}),
        )
        session.commit()
    except IntegrityError as e:
        session.rollback()
        raise ConflictError(f"the handle @{body.handle} (or one that looks like it) is taken") from e
    if relay is not None:
        relay.notify()
    return SessionToken(user=user_private(user), token=token, expires_at=expires)


@router.post(
    "/v1/auth/login",
    response_model=SessionToken,
    responses={401: {"model": Problem}, 429: RATE_LIMITED},
    dependencies=[Depends(ip_rate_limit("login"))],
)
def login(body: LoginRequest, session: SessionDep, settings: SettingsDep) -> SessionToken:
    """Exchange handle and password for a new bearer token (anyone may call this)."""
    key = body.handle.strip().removeprefix("@").lower()
    user = session.scalar(select(User).where(User.handle_key == key))
    if not verify_password(user, body.password):
        raise ApiError(401, "bad-credentials", "Unauthorized", "the handle or the password is wrong")
    assert user is not None
    token, expires = issue_token(session, user.id, settings.secret_key.get_secret_value(), settings.auth.token_ttl_s)
    session.commit()
    return SessionToken(user=user_private(user), token=token, expires_at=expires)


@router.post("/v1/auth/logout", status_code=status.HTTP_204_NO_CONTENT, responses={401: {"model": Problem}})
def logout(request: Request, user: CurrentUserDep, session: SessionDep) -> Response:
    """Revoke the token this request was made with (needs a bearer token)."""
    row = session.get(ApiToken, request.state.token_hash)
    if row is not None and row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
        session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/me", response_model=UserPrivate, responses={401: {"model": Problem}})
def me(user: CurrentUserDep) -> UserPrivate:
    """The caller's own account (needs a bearer token)."""
    return user_private(user)


@router.patch(
    "/v1/me",
    response_model=UserPrivate,
    responses={401: {"model": Problem}, 422: {"model": Problem}, 429: RATE_LIMITED},
    dependencies=[Depends(user_rate_limit("writes"))],
)
def update_me(body: ProfileUpdate, user: CurrentUserDep, session: SessionDep) -> UserPrivate:
    """Change the caller's display name or bio (owner only)."""
    if body.display_name is not None:
        user.display_name = body.display_name
    if body.bio is not None:
        user.bio = body.bio
    user.updated_at = datetime.now(UTC)
    session.commit()
    return user_private(user)


@router.put(
    "/v1/me/avatar",
    response_model=UserPrivate,
    responses={401: {"model": Problem}, 413: {"model": Problem}, 422: {"model": Problem}, 429: RATE_LIMITED},
    dependencies=[Depends(user_rate_limit("writes"))],
)
async def upload_avatar(
    user: CurrentUserDep,
    session: SessionDep,
    media: MediaDep,
    file: Annotated[UploadFile, File(description="JPEG, PNG or WebP, at most 5 MB; checked by decoding")],
) -> UserPrivate:
    """Set the caller's avatar (owner only). The image is decoded, cropped square,
    resized to at most 1024 px, stripped of metadata and stored as WebP."""
    raw = await file.read(MAX_IMAGE_BYTES + 1)
    if len(raw) > MAX_IMAGE_BYTES:
        raise ApiError(413, "image-too-large", "Image too large", "the image is larger than the 5 MB limit")
    try:
        # Decoding up to 24 megapixels is CPU work: keep it off the event loop.
        image = await run_in_threadpool(normalize_image, raw, square=True)
    except ImageRejected as e:
        raise ApiError(422, "invalid-image", "Invalid image", str(e)) from e
    return await run_in_threadpool(_store_avatar, user, session, media, image)


def _store_avatar(user: User, session: Session, media: LocalMediaStore, image: NormalizedImage) -> UserPrivate:
    key = f"avatars/{user.id}/{image.sha256[:16]}.webp"
    path = media.path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image.data)
    user.avatar_key = key
    user.updated_at = datetime.now(UTC)
    session.commit()
    return user_private(user)
