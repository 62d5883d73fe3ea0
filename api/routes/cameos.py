"""Cameos: register a likeness, choose who may cast it, see and remove every clip
that casts you, revoke at any time (published clips casting you come down at once)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile, status
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentUserDep, MediaDep, RelayDep, SessionDep, user_rate_limit
from api.images import MAX_IMAGE_BYTES, ImageRejected, NormalizedImage, normalize_image
from api.media import clip_file
from api.pagination import CursorQ, LimitQ, decode_cursor, keyset_page
from api.problems import RATE_LIMITED, ApiError, Problem
from api.routes.users import find_user, summary
from api.schemas import (
    CameoAppearance,
    CameoAppearancePage,
    CameoAvailability,
    CameoRevoked,
    CameoSettings,
    CameoUpdate,
    ConsentMode,
    UserPage,
)
from core import cameos
from core.db.models import CameoApproval, Clip, Likeness, Prompt, PromptCameo, User
from core.errors import ConflictError, NotFoundError
from core.media import LocalMediaStore
from core.records import clip_id_for_prompt, utcnow
from moderation.restrictions import MAX_RESTRICTIONS_CHARS, compile_restrictions

router = APIRouter(prefix="/v1", tags=["cameos"])
_WRITES = [Depends(user_rate_limit("writes"))]
_OWNER: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    404: {"model": Problem, "description": "No cameo registered"},
}
#: A likeness must show a face clearly: no thumbnails.
MIN_LIKENESS_SIDE = 128


def _settings(likeness: Likeness) -> CameoSettings:
    return CameoSettings(
        active=likeness.revoked_at is None,
        consent=likeness.consent,  # type: ignore[arg-type]
        restrictions=likeness.restrictions,
        restriction_rules=compile_restrictions(likeness.restrictions).describe(),
        image_url="/v1/me/cameo/image",
        created_at=likeness.created_at,
        updated_at=likeness.updated_at,
        revoked_at=likeness.revoked_at,
    )


def _own_likeness(session: Session, user: User) -> Likeness:
    likeness = session.get(Likeness, user.id, with_for_update=True)
    if likeness is None:
        raise NotFoundError("you have not registered a cameo")
    return likeness


def _check_restrictions(text: str) -> str:
    text = " ".join(text.split())
    try:
        compile_restrictions(text)
    except ValueError as e:
        raise ApiError(422, "invalid-restrictions", "Invalid restrictions", str(e)) from e
    return text


def _commit(session: Session, relay: RelayDep) -> None:
    session.commit()
    if relay is not None:
        relay.notify()


@router.put(
    "/me/cameo",
    response_model=CameoSettings,
    responses={401: {"model": Problem}, 413: {"model": Problem}, 422: {"model": Problem}, 429: RATE_LIMITED},
    dependencies=_WRITES,
)
async def register_cameo(
    user: CurrentUserDep,
    session: SessionDep,
    media: MediaDep,
    relay: RelayDep,
    image: Annotated[UploadFile, File(description="A clear picture of you: JPEG, PNG or WebP, ≤ 5 MB, ≥ 128 px")],
    consent: Annotated[ConsentMode, Form(description="Who may cast you")] = "only_me",
    restrictions: Annotated[
        str, Form(max_length=MAX_RESTRICTIONS_CHARS, description="Free text, e.g. 'no political content'")
    ] = "",
) -> CameoSettings:
    """Register (or replace) your likeness and say who may cast it (needs a bearer token).

    The image is decoded, checked (size, dimensions), cropped square and stored without
    metadata. Registering again replaces the image and settings and turns a revoked
    cameo back on; published clips made with the old image are taken down, since the
    consent they were made under no longer describes you."""
    raw = await image.read(MAX_IMAGE_BYTES + 1)
    if len(raw) > MAX_IMAGE_BYTES:
        raise ApiError(413, "image-too-large", "Image too large", "the image is larger than the 5 MB limit")
    restrictions = _check_restrictions(restrictions)
    try:
        normalized = await run_in_threadpool(normalize_image, raw, square=True, min_side=MIN_LIKENESS_SIDE)
    except ImageRejected as e:
        raise ApiError(422, "invalid-image", "Invalid image", str(e)) from e
    return await run_in_threadpool(_store_likeness, user, session, media, relay, normalized, consent, restrictions)


def _store_likeness(
    user: User,
    session: Session,
    media: LocalMediaStore,
    relay: RelayDep,
    image: NormalizedImage,
    consent: str,
    restrictions: str,
) -> CameoSettings:
    key = f"likenesses/{user.id}/{image.sha256[:16]}.webp"
    path = media.path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image.data)
    now = utcnow()
    likeness = session.get(Likeness, user.id, with_for_update=True)
    if likeness is None:
        likeness = Likeness(user_id=user.id, created_at=now)
        session.add(likeness)
    likeness.image_key = key
    likeness.image_sha256 = image.sha256
    likeness.consent = consent
    likeness.restrictions = restrictions
    likeness.updated_at = now
    likeness.revoked_at = None
    session.flush()
    cameos.enforce_consent(session, user.id)
    cameos.announce(session, user.id, "cameo_grant", consent=consent, restrictions=restrictions)
    _commit(session, relay)
    return _settings(likeness)


@router.get("/me/cameo", response_model=CameoSettings, responses=_OWNER)
def get_cameo(user: CurrentUserDep, session: SessionDep) -> CameoSettings:
    """Your cameo settings (owner only)."""
    likeness = session.get(Likeness, user.id)
    if likeness is None:
        raise NotFoundError("you have not registered a cameo")
    return _settings(likeness)


@router.patch(
    "/me/cameo", response_model=CameoSettings, responses={**_OWNER, 422: {"model": Problem}}, dependencies=_WRITES
)
def update_cameo(body: CameoUpdate, user: CurrentUserDep, session: SessionDep, relay: RelayDep) -> CameoSettings:
    """Change who may cast you or your restrictions (owner only). Published clips that
    the new settings no longer allow are taken down at once."""
    likeness = _own_likeness(session, user)
    if likeness.revoked_at is not None:
        raise ConflictError("your cameo is revoked; register an image again to turn it back on")
    if body.consent is not None:
        likeness.consent = body.consent
    if body.restrictions is not None:
        likeness.restrictions = _check_restrictions(body.restrictions)
    likeness.updated_at = utcnow()
    session.flush()
    cameos.enforce_consent(session, user.id)
    cameos.announce(session, user.id, "cameo_grant", consent=likeness.consent, restrictions=likeness.restrictions)
    _commit(session, relay)
    return _settings(likeness)


@router.delete("/me/cameo", response_model=CameoRevoked, responses=_OWNER, dependencies=_WRITES)
def revoke_cameo(user: CurrentUserDep, session: SessionDep, relay: RelayDep) -> CameoRevoked:
    """Revoke your cameo (owner only): nobody can cast you any more, prompts in flight
    that cast you are refused before publishing, and published clips by others that
    cast you are taken down now (a `takedown` on `moderation.decisions`)."""
    likeness = _own_likeness(session, user)
    if likeness.revoked_at is None:
        likeness.revoked_at = utcnow()
        likeness.updated_at = likeness.revoked_at
        cameos.announce(session, user.id, "cameo_revoke")
    session.flush()
    removed = cameos.enforce_consent(session, user.id)
    _commit(session, relay)
    return CameoRevoked(active=False, clips_taken_down=removed)


@router.get(
    "/me/cameo/image",
    response_class=FileResponse,
    responses={200: {"content": {"image/webp": {}}}, **_OWNER},
)
def get_cameo_image(user: CurrentUserDep, session: SessionDep, media: MediaDep) -> FileResponse:
    """Your likeness image (owner only)."""
    likeness = session.get(Likeness, user.id)
    if likeness is None or not media.exists(likeness.image_key):
        raise NotFoundError("you have not registered a cameo")
    return FileResponse(media.path(likeness.image_key), media_type="image/webp", headers={"Cache-Control": "private"})


# --- approvals ------------------------------------------------------------------------------------------------


@router.get("/me/cameo/approvals", response_model=UserPage, responses={401: {"model": Problem}})
def list_approvals(user: CurrentUserDep, session: SessionDep, limit: LimitQ = 20, cursor: CursorQ = None) -> UserPage:
    """People you approved to cast you (used when consent is `approved`), newest first."""
    after = decode_cursor(cursor)
    stmt = (
        select(User).join(CameoApproval, CameoApproval.grantee_id == User.id).where(CameoApproval.owner_id == user.id)
    )
    users, nxt = keyset_page(session, stmt, CameoApproval.created_at, User.id, after, limit, scalars=True)
    return UserPage(data=[summary(u) for u in users], next_cursor=nxt)


@router.put(
    "/me/cameo/approvals/{handle}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**_OWNER, 409: {"model": Problem}},
    dependencies=_WRITES,
)
def approve(handle: str, user: CurrentUserDep, session: SessionDep, relay: RelayDep) -> Response:
    """Approve someone to cast you (idempotent; owner only)."""
    target = find_user(session, handle)
    if target.id == user.id:
        raise ConflictError("you can always cast yourself")
    if session.get(CameoApproval, (user.id, target.id)) is None:
        session.add(CameoApproval(owner_id=user.id, grantee_id=target.id))
        cameos.announce(session, user.id, "cameo_grant", target.id)
        _commit(session, relay)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete(
    "/me/cameo/approvals/{handle}", status_code=status.HTTP_204_NO_CONTENT, responses=_OWNER, dependencies=_WRITES
)
def unapprove(handle: str, user: CurrentUserDep, session: SessionDep, relay: RelayDep) -> Response:
    """Withdraw someone's approval (idempotent). Their published clips casting you come
    down when your consent mode is `approved`."""
    target = find_user(session, handle)
    approval = session.get(CameoApproval, (user.id, target.id))
    if approval is not None:
        session.delete(approval)
        session.flush()
        cameos.enforce_consent(session, user.id)
        cameos.announce(session, user.id, "cameo_revoke", target.id)
        _commit(session, relay)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/users/{handle}/cameo", response_model=CameoAvailability, responses={401: {"model": Problem}, 404: {}})
def cameo_availability(handle: str, user: CurrentUserDep, session: SessionDep) -> CameoAvailability:
    """Whether you may cast this user now, and if not why (needs a bearer token)."""
    target = find_user(session, handle)
    likeness = session.get(Likeness, target.id)
    reason = cameos.consent_problem(session, target, user.id, "", likeness=likeness)
    active = likeness is not None and likeness.revoked_at is None
    return CameoAvailability(
        handle=target.handle,
        can_cast=reason is None,
        consent=likeness.consent if active else None,  # type: ignore[arg-type, union-attr]
        restrictions=likeness.restrictions if active else None,  # type: ignore[union-attr]
        reason=reason,
    )


# --- appearances: every prompt that casts me ------------------------------------------------------------------


def _appearance(row: PromptCameo, prompt: Prompt, creator: User, clip: Clip | None) -> CameoAppearance:
    base = f"/v1/me/cameo/appearances/{prompt.id}"
    state = prompt.status
    if clip is not None and clip.status == "removed":
        state = "removed"
    return CameoAppearance(
        prompt_id=prompt.id,
        creator=summary(creator),
        text=prompt.text,
        status=state,
        clip_id=clip.id if clip else None,
        poster_url=f"{base}/poster" if clip else None,
        video_url=f"{base}/video" if clip else None,
        public_url=f"/v1/clips/{clip.id}" if clip is not None and clip.status == "published" else None,
        vetoed=row.vetoed_at is not None,
        created_at=row.created_at,
    )


@router.get("/me/cameo/appearances", response_model=CameoAppearancePage, responses={401: {"model": Problem}})
def appearances(
    user: CurrentUserDep, session: SessionDep, limit: LimitQ = 20, cursor: CursorQ = None
) -> CameoAppearancePage:
    """Every prompt that casts you, newest first, at any stage: queued, rendering,
    rejected, published or removed (owner only). Drafts can be watched here before
    anyone else sees them."""
    after = decode_cursor(cursor)
    stmt = (
        select(PromptCameo, Prompt, User, Clip)
        .join(Prompt, Prompt.id == PromptCameo.prompt_id)
        .join(User, User.id == PromptCameo.creator_id)
        .outerjoin(Clip, Clip.prompt_id == Prompt.id)
        .where(PromptCameo.user_id == user.id)
    )
    rows, nxt = keyset_page(session, stmt, PromptCameo.created_at, PromptCameo.prompt_id, after, limit)
    return CameoAppearancePage(data=[_appearance(*r) for r in rows], next_cursor=nxt)


def _my_appearance(session: Session, user: User, prompt_id: uuid.UUID) -> tuple[PromptCameo, Clip | None]:
    row = session.get(PromptCameo, (prompt_id, user.id))
    if row is None:
        raise NotFoundError(f"no prompt {prompt_id} casts you")
    return row, session.get(Clip, clip_id_for_prompt(prompt_id))


def _appearance_media(
    session: Session, media: LocalMediaStore, user: User, prompt_id: uuid.UUID, which: Literal["video", "poster"]
) -> FileResponse:
    _, clip = _my_appearance(session, user, prompt_id)
    if clip is None:
        raise NotFoundError("this clip has not been rendered yet")
    return clip_file(media, clip, which)


@router.get(
    "/me/cameo/appearances/{prompt_id}/video",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}}, 401: {"model": Problem}, 404: {"model": Problem}},
)
def appearance_video(prompt_id: uuid.UUID, user: CurrentUserDep, session: SessionDep, media: MediaDep) -> FileResponse:
    """The video of a clip casting you, whatever its status (owner of the likeness only)."""
    return _appearance_media(session, media, user, prompt_id, "video")


@router.get(
    "/me/cameo/appearances/{prompt_id}/poster",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}, 401: {"model": Problem}, 404: {"model": Problem}},
)
def appearance_poster(prompt_id: uuid.UUID, user: CurrentUserDep, session: SessionDep, media: MediaDep) -> FileResponse:
    """The poster of a clip casting you, whatever its status (owner of the likeness only)."""
    return _appearance_media(session, media, user, prompt_id, "poster")


@router.delete(
    "/me/cameo/appearances/{prompt_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={401: {"model": Problem}, 404: {"model": Problem}},
    dependencies=_WRITES,
)
def remove_appearance(prompt_id: uuid.UUID, user: CurrentUserDep, session: SessionDep, relay: RelayDep) -> Response:
    """Remove a clip that casts you (idempotent): a published clip is taken down now,
    one still in the pipeline is refused before it is published."""
    row, clip = _my_appearance(session, user, prompt_id)
    if row.vetoed_at is None:
        row.vetoed_at = utcnow()
    if clip is not None:
        locked = session.get(Clip, clip.id, with_for_update=True)
        if locked is not None:
            cameos.take_down(session, locked, [f"cameo consent: @{user.handle} removed themselves"])
    _commit(session, relay)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
