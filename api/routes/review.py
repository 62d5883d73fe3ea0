"""Trust-and-safety review (reviewer or admin role), and creators' appeals."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, status
from fastapi.responses import FileResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.deps import CurrentUserDep, MediaDep, RelayDep, SessionDep, require_role, user_rate_limit
from api.media import clip_file
from api.problems import Problem
from api.schemas import (
    AppealCreate,
    AuditEntryPublic,
    AuditPage,
    CreatorHistory,
    QueueHealthPublic,
    ReviewDecisionCreate,
    ReviewItemDetail,
    ReviewItemPublic,
    ReviewQueue,
)
from core import review
from core.db.models import AuditEntry, Clip, Report, ReviewItem, User, UserStats
from core.errors import NotFoundError

router = APIRouter(tags=["review"])
ReviewerDep = Annotated[User, Depends(require_role("reviewer", "admin"))]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},
    409: {"model": Problem, "description": "Claimed by someone else, or already decided"},
}


def _public(item: ReviewItem, reach: int | None = None) -> ReviewItemPublic:
    return ReviewItemPublic(
        id=item.id,
        clip_id=item.clip_id,
        kind=item.kind,  # type: ignore[arg-type]
        status=item.status,  # type: ignore[arg-type]
        severity=item.severity,
        reasons=list(item.reasons),
        escalated=item.escalated,
        reach=reach,
        claimed_by=item.claimed_by,
        claim_expires_at=item.claim_expires_at,
        decision=item.decision,
        policy_reason=item.policy_reason,
        created_at=item.created_at,
        decided_at=item.decided_at,
    )


def _audit_public(e: AuditEntry) -> AuditEntryPublic:
    return AuditEntryPublic(
        id=e.id,
        clip_id=e.clip_id,
        actor_kind=e.actor_kind,
        actor_id=e.actor_id,
        action=e.action,
        reason=e.reason,
        previous_state=e.previous_state,
        new_state=e.new_state,
        created_at=e.created_at,
    )


def _history(session: Session, user_id: uuid.UUID, handle: str) -> CreatorHistory:
    counts = dict(
        session.execute(select(Clip.status, func.count()).where(Clip.user_id == user_id).group_by(Clip.status)).all()
    )
    reports = session.scalar(
        select(func.count()).select_from(Report).join(Clip, Clip.id == Report.clip_id).where(Clip.user_id == user_id)
    )
    stats = session.get(UserStats, user_id)
    return CreatorHistory(
        handle=handle,
        followers=stats.followers if stats else 0,
        clips_published=int(counts.get("published", 0)),
        clips_removed=int(counts.get("removed", 0)),
        clips_blocked=int(counts.get("blocked", 0)),
        reports_received=int(reports or 0),
    )


def _detail(session: Session, item: ReviewItem) -> ReviewItemDetail:
    clip = session.get(Clip, item.clip_id)
    if clip is None:
        raise NotFoundError(f"clip {item.clip_id} no longer exists")
    entries = session.scalars(select(AuditEntry).where(AuditEntry.clip_id == clip.id).order_by(AuditEntry.id))
    return ReviewItemDetail(
        **_public(item).model_dump(),
        prompt=clip.text,
        clip_status=clip.status,
        creator=_history(session, clip.user_id, clip.creator_handle),
        safety_checks=list(clip.checks),
        block_reasons=list(clip.block_reasons),
        video_url=f"/v1/review/items/{item.id}/video",
        poster_url=f"/v1/review/items/{item.id}/poster",
        audit=[_audit_public(e) for e in entries],
    )


@router.get("/v1/review/queue", response_model=ReviewQueue, responses=_ERRORS)
def get_queue(
    reviewer: ReviewerDep, session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> ReviewQueue:
    """Undecided items by severity, then predicted reach, then age (reviewers and admins).
    Escalated items are listed for admins only; your own claims are included."""
    return ReviewQueue(data=[_public(e.item, e.reach) for e in review.queue(session, reviewer, limit)])


@router.get("/v1/review/stats", response_model=QueueHealthPublic, responses=_ERRORS)
def get_stats(reviewer: ReviewerDep, session: SessionDep) -> QueueHealthPublic:
    """Queue health: depth by severity, the oldest undecided item's age, time to decision."""
    h = review.health(session)
    return QueueHealthPublic(
        depth_by_severity=h.depth_by_severity,
        depth=sum(h.depth_by_severity.values()),
        oldest_open_age_s=h.oldest_open_age_s,
        decided_last_24h=h.decided_last_24h,
        median_time_to_decision_s=h.median_time_to_decision_s,
    )


@router.get("/v1/review/items/{item_id}", response_model=ReviewItemDetail, responses=_ERRORS)
def get_item(item_id: uuid.UUID, reviewer: ReviewerDep, session: SessionDep) -> ReviewItemDetail:
    """An item with its clip, prompt, checks, reasons, the creator's history and the clip's audit trail."""
    return _detail(session, review.get_item(session, item_id))


@router.post("/v1/review/items/{item_id}/claim", response_model=ReviewItemDetail, responses=_ERRORS)
def claim_item(item_id: uuid.UUID, reviewer: ReviewerDep, session: SessionDep) -> ReviewItemDetail:
    """Claim an item for five minutes (claiming again extends it); 409 while another
    reviewer holds it. Appeals cannot be claimed by the reviewer who removed the clip."""
    item = review.claim(session, item_id, reviewer)
    session.commit()
    return _detail(session, item)


@router.post("/v1/review/items/{item_id}/decision", response_model=ReviewItemDetail, responses=_ERRORS)
def decide_item(
    item_id: uuid.UUID, body: ReviewDecisionCreate, reviewer: ReviewerDep, session: SessionDep, relay: RelayDep
) -> ReviewItemDetail:
    """Decide a claimed item: `remove` takes the clip out of every feed at once (and puts a
    `takedown` on `moderation.decisions`), `approve` leaves it up (on an appeal, restores
    it), `escalate` sends it to an admin. Recorded in the audit log."""
    item = review.decide(session, item_id, reviewer, body.decision, body.policy_reason, body.note)
    session.commit()
    if relay is not None:
        relay.notify()
    return _detail(session, item)


def _item_media(
    session: Session, media: MediaDep, item_id: uuid.UUID, which: Literal["video", "poster"]
) -> FileResponse:
    clip = session.get(Clip, review.get_item(session, item_id).clip_id)
    if clip is None:
        raise NotFoundError("the clip no longer exists")
    return clip_file(media, clip, which)


@router.get(
    "/v1/review/items/{item_id}/video",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}}, **_ERRORS},
)
def item_video(item_id: uuid.UUID, reviewer: ReviewerDep, session: SessionDep, media: MediaDep) -> FileResponse:
    """The clip under review, whatever its status (reviewers only)."""
    return _item_media(session, media, item_id, "video")


@router.get(
    "/v1/review/items/{item_id}/poster",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}}}, **_ERRORS},
)
def item_poster(item_id: uuid.UUID, reviewer: ReviewerDep, session: SessionDep, media: MediaDep) -> FileResponse:
    """The poster of the clip under review (reviewers only)."""
    return _item_media(session, media, item_id, "poster")


@router.get("/v1/review/audit", response_model=AuditPage, responses=_ERRORS)
def get_audit(
    reviewer: ReviewerDep,
    session: SessionDep,
    clip_id: uuid.UUID | None = None,
    actor_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Entries with a smaller id (the next page)")
    ] = None,
) -> AuditPage:
    """The append-only audit log, newest first, by clip and/or by reviewer."""
    stmt = select(AuditEntry)
    if clip_id is not None:
        stmt = stmt.where(AuditEntry.clip_id == clip_id)
    if actor_id is not None:
        stmt = stmt.where(AuditEntry.actor_id == actor_id)
    if before is not None:
        stmt = stmt.where(AuditEntry.id < before)
    rows = list(session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(limit + 1)))
    nxt = str(rows[limit - 1].id) if len(rows) > limit else None
    return AuditPage(data=[_audit_public(e) for e in rows[:limit]], next_cursor=nxt)


@router.post(
    "/v1/clips/{clip_id}/appeal",
    status_code=status.HTTP_201_CREATED,
    response_model=ReviewItemPublic,
    responses={**_ERRORS, 409: {"model": Problem, "description": "Not removed, or appealed already"}},
    dependencies=[Depends(user_rate_limit("writes"))],
)
def appeal(clip_id: uuid.UUID, body: AppealCreate, user: CurrentUserDep, session: SessionDep) -> ReviewItemPublic:
    """Appeal the removal of your clip (once per clip); a different reviewer decides."""
    item = review.appeal(session, clip_id, user, body.statement)
    session.commit()
    return _public(item)
