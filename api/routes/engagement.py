"""Likes, views, shares, comments and reports on clips."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response, status
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentUserDep, InteractionsDep, OptionalUserDep, PolicyDep, RelayDep, SessionDep, user_rate_limit
from api.pagination import CursorQ, LimitQ, decode_cursor, keyset_page
from api.problems import RATE_LIMITED, ApiError, Problem
from api.routes.clips import published_clip
from api.routes.users import summary
from api.schemas import (
    Accepted,
    CommentCreate,
    CommentPage,
    CommentPublic,
    ReportCreate,
    ReportCreated,
    ShareCreated,
    ViewCreate,
)
from core import graph, review
from core.db.models import Comment, Report, User
from core.errors import NotFoundError, PermissionDeniedError
from core.outbox import enqueue
from core.records import Interaction
from core.topics import INTERACTIONS

router = APIRouter(tags=["engagement"])
WRITE = [Depends(user_rate_limit("writes"))]
_RESPONSES: dict[int | str, dict[str, object]] = {401: {"model": Problem}, 404: {"model": Problem}, 429: RATE_LIMITED}


async def _interaction(
    session: SessionDep,
    interactions: InteractionsDep,
    user: User,
    clip_id: uuid.UUID,
    kind: str,
    watch_ms: int | None = None,
) -> Accepted:
    # One primary-key read (the clip exists and is visible to the caller), off the
    # event loop; the event itself is not written to the database.
    await run_in_threadpool(published_clip, session, clip_id, user)
    await run_in_threadpool(session.close)
    record = Interaction(user_id=user.id, clip_id=clip_id, kind=kind, watch_ms=watch_ms)  # type: ignore[arg-type]
    await interactions.publish(record)
    return Accepted()


@router.put(
    "/v1/clips/{clip_id}/like", status_code=202, response_model=Accepted, responses=_RESPONSES, dependencies=WRITE
)
async def like(
    clip_id: uuid.UUID, user: CurrentUserDep, session: SessionDep, interactions: InteractionsDep
) -> Accepted:
    """Like a clip (idempotent; needs a bearer token). Counts update within about a second."""
    return await _interaction(session, interactions, user, clip_id, "like")


@router.delete(
    "/v1/clips/{clip_id}/like", status_code=202, response_model=Accepted, responses=_RESPONSES, dependencies=WRITE
)
async def unlike(
    clip_id: uuid.UUID, user: CurrentUserDep, session: SessionDep, interactions: InteractionsDep
) -> Accepted:
    """Take a like back (idempotent; needs a bearer token)."""
    return await _interaction(session, interactions, user, clip_id, "unlike")


@router.post(
    "/v1/clips/{clip_id}/views", status_code=202, response_model=Accepted, responses=_RESPONSES, dependencies=WRITE
)
async def view(
    clip_id: uuid.UUID, body: ViewCreate, user: CurrentUserDep, session: SessionDep, interactions: InteractionsDep
) -> Accepted:
    """Record that the caller watched the clip for ``watch_ms`` (needs a bearer token)."""
    return await _interaction(session, interactions, user, clip_id, "view", body.watch_ms)


@router.post(
    "/v1/clips/{clip_id}/see-less", status_code=202, response_model=Accepted, responses=_RESPONSES, dependencies=WRITE
)
async def see_less(
    clip_id: uuid.UUID, user: CurrentUserDep, session: SessionDep, interactions: InteractionsDep
) -> Accepted:
    """ "See less like this" (needs a bearer token): your feed drops the clip and ranks
    clips like it down from the next page on."""
    return await _interaction(session, interactions, user, clip_id, "see_less")


@router.post(
    "/v1/clips/{clip_id}/shares", status_code=201, response_model=ShareCreated, responses=_RESPONSES, dependencies=WRITE
)
async def share(
    clip_id: uuid.UUID, request: Request, user: CurrentUserDep, session: SessionDep, interactions: InteractionsDep
) -> ShareCreated:
    """Record a share and get the link to share (needs a bearer token)."""
    await _interaction(session, interactions, user, clip_id, "share")
    return ShareCreated(share_url=str(request.url_for("get_clip", clip_id=clip_id)))


def comment_public(comment: Comment, author: User) -> CommentPublic:
    return CommentPublic(
        id=comment.id, clip_id=comment.clip_id, author=summary(author), text=comment.text, created_at=comment.created_at
    )


@router.post(
    "/v1/clips/{clip_id}/comments",
    status_code=201,
    response_model=CommentPublic,
    responses={**_RESPONSES, 403: {"model": Problem}, 422: {"model": Problem}},
    dependencies=WRITE,
)
def add_comment(
    clip_id: uuid.UUID,
    body: CommentCreate,
    user: CurrentUserDep,
    session: SessionDep,
    policy: PolicyDep,
    relay: RelayDep,
) -> CommentPublic:
    """Comment on a clip (needs a bearer token). The text goes through the same policy
    as prompts; a comment the policy does not allow is refused and not stored."""
    clip = published_clip(session, clip_id, user)
    if graph.blocked_between(session, user.id, clip.user_id):
        raise PermissionDeniedError("you cannot comment on this clip")
    decision = policy.check(body.text)
    if decision.action != "allow":
        raise ApiError(
            422,
            "comment-rejected",
            "Comment not allowed",
            "the comment breaks the content policy: " + "; ".join(r.as_text() for r in decision.reasons)[:400],
        )
    comment = Comment(
        clip_id=clip_id,
        user_id=user.id,
        text=body.text,
        moderation={"action": decision.action, "policy_version": decision.policy_version},
    )
    session.add(comment)
    session.flush()
    enqueue(
        session,
        INTERACTIONS,
        Interaction(user_id=user.id, clip_id=clip_id, kind="comment", attributes={"comment_id": str(comment.id)}),
    )
    session.commit()
    if relay is not None:
        relay.notify()
    return comment_public(comment, user)


@router.get(
    "/v1/clips/{clip_id}/comments",
    response_model=CommentPage,
    responses={400: {"model": Problem}, 404: {"model": Problem}},
)
def list_comments(
    clip_id: uuid.UUID,
    session: SessionDep,
    viewer: OptionalUserDep,
    limit: LimitQ = 20,
    cursor: CursorQ = None,
) -> CommentPage:
    """Comments on a clip, newest first (anyone may call this); comments by people the
    caller blocked, was blocked by or muted are left out."""
    published_clip(session, clip_id, viewer)
    after = decode_cursor(cursor)
    stmt = (
        select(Comment, User)
        .join(User, User.id == Comment.user_id)
        .where(Comment.clip_id == clip_id, Comment.deleted_at.is_(None))
    )
    if viewer is not None and (hidden := graph.hidden_authors(session, viewer.id)):
        stmt = stmt.where(Comment.user_id.not_in(hidden))
    rows, nxt = keyset_page(session, stmt, Comment.created_at, Comment.id, after, limit)
    return CommentPage(data=[comment_public(c, u) for c, u in rows], next_cursor=nxt)


@router.delete(
    "/v1/comments/{comment_id}",
    status_code=204,
    responses={401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}},
)
def delete_comment(comment_id: uuid.UUID, user: CurrentUserDep, session: SessionDep, relay: RelayDep) -> Response:
    """Delete your own comment (owner only)."""
    comment = session.get(Comment, comment_id)
    if comment is None or comment.deleted_at is not None:
        raise NotFoundError(f"no comment {comment_id}")
    if comment.user_id != user.id:
        raise PermissionDeniedError("only its author may delete a comment")
    comment.deleted_at = datetime.now(UTC)
    enqueue(
        session,
        INTERACTIONS,
        Interaction(
            user_id=user.id, clip_id=comment.clip_id, kind="uncomment", attributes={"comment_id": str(comment.id)}
        ),
    )
    session.commit()
    if relay is not None:
        relay.notify()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/v1/clips/{clip_id}/reports",
    status_code=201,
    response_model=ReportCreated,
    responses={**_RESPONSES, 422: {"model": Problem}},
    dependencies=WRITE,
)
def report(
    clip_id: uuid.UUID, body: ReportCreate, user: CurrentUserDep, session: SessionDep, relay: RelayDep
) -> ReportCreated:
    """Report a clip to trust and safety (needs a bearer token). Stored, never lost, and
    queued for a reviewer (reports on the same clip share one review item)."""
    published_clip(session, clip_id, user)
    row = Report(clip_id=clip_id, reporter_id=user.id, reason=body.reason, details=body.details)
    session.add(row)
    review.enqueue_report(session, clip_id, body.reason, body.details)
    session.flush()
    enqueue(
        session,
        INTERACTIONS,
        Interaction(
            user_id=user.id,
            clip_id=clip_id,
            kind="report",
            attributes={"report_id": str(row.id), "reason": body.reason},
        ),
    )
    session.commit()
    if relay is not None:
        relay.notify()
    return ReportCreated(id=row.id, status="open")
