"""Trust-and-safety review: the queue, claims, decisions, appeals, and the audit log.

User reports (and, with the frame filter, flagged clips) become review items. The
queue is ordered by severity, then predicted reach (the creator's followers plus the
clip's views so far), then age. A reviewer claims an item for a few minutes, so two
reviewers never work on the same one; an expired claim is free again. A decision
(approve / remove / escalate, with a policy reason) changes the clip in the same
transaction — a removal takes it out of every feed at once — and is announced as a
``ModerationDecision`` on ``moderation.decisions`` (through the outbox) for every other
consumer. A creator may appeal a removal once; the appeal goes to a different
reviewer. Every decision, automatic or human, is appended to the audit log.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, get_args

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from core.db.models import AuditEntry, Clip, ClipStats, ReviewItem, User, UserStats
from core.errors import ConflictError, NotFoundError, PermissionDeniedError
from core.outbox import enqueue
from core.prompt_status import advance_prompt
from core.records import ModerationDecision, utcnow
from core.topics import MODERATION_DECISIONS

CLAIM_TTL = timedelta(minutes=5)
Decision = Literal["approve", "remove", "escalate"]
#: Report reasons → severity (1 low .. 3 high); escalation adds one.
REPORT_SEVERITY = {
    "minors": 3,
    "sexual": 3,
    "self_harm": 3,
    "violence": 3,
    "hate": 2,
    "harassment": 2,
    "illegal": 2,
    "impersonation": 2,
    "spam": 1,
    "other": 1,
}
PolicyReason = Literal[
    "sexual content",
    "violence or gore",
    "self-harm",
    "hate",
    "harassment or bullying",
    "illegal activity",
    "minor safety",
    "impersonation or non-consensual likeness",
    "spam",
    "no violation",
]
POLICY_REASONS: tuple[str, ...] = get_args(PolicyReason)


def audit(
    session: Session,
    clip_id: uuid.UUID,
    actor_kind: str,
    action: str,
    *,
    actor_id: uuid.UUID | None = None,
    reason: str = "",
    previous_state: str | None = None,
    new_state: str | None = None,
) -> None:
    session.add(
        AuditEntry(
            clip_id=clip_id,
            actor_kind=actor_kind,
            actor_id=actor_id,
            action=action,
            reason=reason[:4000],
            previous_state=previous_state,
            new_state=new_state,
            created_at=utcnow(),
        )
    )


def open_item(session: Session, clip_id: uuid.UUID, kind: str) -> ReviewItem | None:
    return session.scalar(
        select(ReviewItem).where(
            ReviewItem.clip_id == clip_id, ReviewItem.kind == kind, ReviewItem.status.in_(("open", "claimed"))
        )
    )


def enqueue_report(session: Session, clip_id: uuid.UUID, reason: str, details: str = "") -> ReviewItem:
    """Add a user report to the clip's open report item (one per clip while undecided)."""
    item = open_item(session, clip_id, "report")
    text = f"report: {reason}" + (f" — {details[:200]}" if details else "")
    if item is None:
        item = ReviewItem(clip_id=clip_id, kind="report", severity=REPORT_SEVERITY.get(reason, 1), reasons=[text])
        session.add(item)
    else:
        item.severity = max(item.severity, REPORT_SEVERITY.get(reason, 1))
        item.reasons = [*item.reasons, text][-50:]
    return item


def enqueue_flag(session: Session, clip_id: uuid.UUID, reasons: list[str], severity: int = 2) -> ReviewItem:
    """A clip the automatic filter sent to human review."""
    item = open_item(session, clip_id, "flag")
    if item is None:
        item = ReviewItem(clip_id=clip_id, kind="flag", severity=severity, reasons=list(reasons))
        session.add(item)
    return item


@dataclass(frozen=True)
class QueueEntry:
    item: ReviewItem
    clip: Clip
    reach: int


def queue(session: Session, reviewer: User, limit: int = 50) -> list[QueueEntry]:
    """Open items (and expired claims) in priority order; escalated ones only for admins."""
    now = utcnow()
    reach = func.coalesce(UserStats.followers, 0) + func.coalesce(ClipStats.views, 0)
    stmt = (
        select(ReviewItem, Clip, reach.label("reach"))
        .join(Clip, Clip.id == ReviewItem.clip_id)
        .outerjoin(UserStats, UserStats.user_id == Clip.user_id)
        .outerjoin(ClipStats, ClipStats.clip_id == Clip.id)
        .where(
            or_(
                ReviewItem.status == "open",
                and_(ReviewItem.status == "claimed", ReviewItem.claim_expires_at < now),
                and_(ReviewItem.status == "claimed", ReviewItem.claimed_by == reviewer.id),
            )
        )
        .order_by(ReviewItem.severity.desc(), reach.desc(), ReviewItem.created_at, ReviewItem.id)
        .limit(limit)
    )
    if reviewer.role != "admin":
        stmt = stmt.where(ReviewItem.escalated.is_(False))
    return [QueueEntry(item, clip, int(r)) for item, clip, r in session.execute(stmt).all()]


def get_item(session: Session, item_id: uuid.UUID, *, lock: bool = False) -> ReviewItem:
    item = session.get(ReviewItem, item_id, with_for_update=lock)
    if item is None:
        raise NotFoundError(f"no review item {item_id}")
    return item


def claim(session: Session, item_id: uuid.UUID, reviewer: User) -> ReviewItem:
    """Lock an item for ``CLAIM_TTL``; refused while someone else holds an unexpired claim."""
    item = get_item(session, item_id, lock=True)
    now = utcnow()
    if item.status == "decided":
        raise ConflictError("this item has been decided already")
    if item.escalated and reviewer.role != "admin":
        raise PermissionDeniedError("escalated items are for admins")
    if item.excluded_reviewer == reviewer.id:
        raise PermissionDeniedError("an appeal goes to a reviewer other than the one who removed the clip")
    held = item.status == "claimed" and item.claim_expires_at is not None and item.claim_expires_at > now
    if held and item.claimed_by != reviewer.id:
        raise ConflictError("another reviewer is working on this item")
    item.status = "claimed"
    item.claimed_by = reviewer.id
    item.claim_expires_at = now + CLAIM_TTL
    return item


def _announce(session: Session, clip: Clip, decision: str, reviewer: User, reasons: list[str]) -> None:
    enqueue(
        session,
        MODERATION_DECISIONS,
        ModerationDecision(
            clip_id=clip.id,
            decision=decision,  # type: ignore[arg-type]
            decided_by="reviewer",
            reviewer_id=reviewer.id,
            reasons=reasons,
        ),
    )


def decide(
    session: Session, item_id: uuid.UUID, reviewer: User, decision: Decision, policy_reason: str, note: str = ""
) -> ReviewItem:
    """Apply a reviewer's decision; the reviewer must hold the item's claim."""
    item = get_item(session, item_id, lock=True)
    now = utcnow()
    if item.status != "claimed" or item.claimed_by != reviewer.id:
        raise ConflictError("claim the item before deciding it")
    if item.claim_expires_at is not None and item.claim_expires_at < now:
        raise ConflictError("your claim expired; claim the item again")
    if policy_reason not in POLICY_REASONS:
        raise ConflictError(f"policy reason must be one of: {', '.join(POLICY_REASONS)}")
    clip = session.get(Clip, item.clip_id, with_for_update=True)
    if clip is None:
        raise NotFoundError(f"clip {item.clip_id} no longer exists")
    reason = policy_reason + (f": {note}" if note else "")
    before = clip.status
    if decision == "escalate":
        item.status, item.escalated, item.severity = "open", True, min(4, item.severity + 1)
        item.claimed_by = item.claim_expires_at = None
        audit(session, clip.id, "reviewer", "escalate", actor_id=reviewer.id, reason=reason, previous_state=before)
        return item
    if decision == "remove" and clip.status != "removed":
        held = clip.status == "in_review"
        clip.status = "removed"
        clip.block_reasons = [f"removed by review: {reason}"]
        clip.updated_at = now
        _announce(session, clip, "takedown", reviewer, [reason])
        if held:
            advance_prompt(session, clip.prompt_id, "rejected", reason=f"removed by review: {reason}")
    elif decision == "approve" and clip.status == "in_review":
        # A clip the frame filter held back: the reviewer's approval publishes it.
        clip.status = "published"
        clip.published_at = now
        clip.updated_at = now
        _announce(session, clip, "publish", reviewer, [reason])
        advance_prompt(session, clip.prompt_id, "published", clip_id=clip.id)
    elif decision == "approve" and item.kind in ("appeal", "flag") and clip.status == "removed":
        # An appeal upheld, or a clip the re-scan took down that a reviewer clears.
        clip.status = "published"
        clip.block_reasons = []
        clip.published_at = clip.published_at or now
        clip.updated_at = now
        _announce(session, clip, "restore", reviewer, [reason])
    item.status, item.decision, item.policy_reason = "decided", decision, reason[:200]
    item.decided_by, item.decided_at = reviewer.id, now
    audit(
        session,
        clip.id,
        "reviewer",
        f"{item.kind}:{decision}",
        actor_id=reviewer.id,
        reason=reason,
        previous_state=before,
        new_state=clip.status,
    )
    return item


def appeal(session: Session, clip_id: uuid.UUID, creator: User, statement: str) -> ReviewItem:
    """A creator contests a removal, once per clip; a different reviewer decides."""
    clip = session.get(Clip, clip_id)
    if clip is None or clip.user_id != creator.id:
        raise NotFoundError(f"no clip {clip_id} of yours")
    if clip.status != "removed":
        raise ConflictError("only a removed clip can be appealed")
    if session.scalar(select(ReviewItem.id).where(ReviewItem.clip_id == clip_id, ReviewItem.kind == "appeal")):
        raise ConflictError("this clip has been appealed already; an appeal is decided once")
    remover = session.scalar(
        select(ReviewItem.decided_by)
        .where(ReviewItem.clip_id == clip_id, ReviewItem.decision == "remove")
        .order_by(ReviewItem.decided_at.desc())
    )
    item = ReviewItem(
        clip_id=clip_id,
        kind="appeal",
        severity=2,
        reasons=[f"appeal: {statement[:500]}", *clip.block_reasons],
        excluded_reviewer=remover,
    )
    session.add(item)
    audit(session, clip_id, "creator", "appeal", actor_id=creator.id, reason=statement[:500], previous_state="removed")
    return item


@dataclass(frozen=True)
class QueueHealth:
    depth_by_severity: dict[int, int]
    oldest_open_age_s: float | None
    decided_last_24h: int
    median_time_to_decision_s: float | None


def health(session: Session) -> QueueHealth:
    now = utcnow()
    depth = dict(
        session.execute(
            select(ReviewItem.severity, func.count())
            .where(ReviewItem.status.in_(("open", "claimed")))
            .group_by(ReviewItem.severity)
        ).all()
    )
    oldest = session.scalar(select(func.min(ReviewItem.created_at)).where(ReviewItem.status.in_(("open", "claimed"))))
    rows = session.execute(
        select(ReviewItem.created_at, ReviewItem.decided_at).where(
            ReviewItem.status == "decided", ReviewItem.decided_at > now - timedelta(days=1)
        )
    ).all()
    waits = sorted((d - c).total_seconds() for c, d in rows if d is not None)
    return QueueHealth(
        depth_by_severity={int(k): int(v) for k, v in depth.items()},
        oldest_open_age_s=(now - oldest).total_seconds() if oldest else None,
        decided_last_24h=len(waits),
        median_time_to_decision_s=waits[len(waits) // 2] if waits else None,
    )
