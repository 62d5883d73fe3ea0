"""Applies events to the SQL store that the API reads (the materializer's logic).

Each function runs inside one transaction together with a ProcessedEvent row, so a
redelivered event is recognised by its event_id and changes nothing; on top of that,
every write is itself idempotent (clip ids are primary keys, statuses only move
forward), so even a replay with fresh event ids cannot create a second clip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.cameos import recheck, take_down
from core.db.engine import session_scope
from core.db.models import Clip, ProcessedEvent, PromptEvent
from core.engagement import apply_interaction, apply_social
from core.prompt_status import advance_prompt
from core.records import (
    ClipBlocked,
    ClipFlagged,
    ClipGenerated,
    ClipPublished,
    GenerationStatus,
    Interaction,
    ModerationDecision,
    Record,
    SocialEvent,
    utcnow,
)
from core.review import audit, enqueue_flag

log = logging.getLogger(__name__)

#: Statuses that moderation reports alongside a clip event; the clip event applies them.
CLIP_OUTCOMES = {"published", "rejected", "in_review"}


def apply_status(session: Session, rec: GenerationStatus) -> None:
    # The API writes the "queued" row itself (same transaction as the prompt), so the
    # timeline may already hold this event.
    if session.get(PromptEvent, rec.event_id) is None:
        session.add(
            PromptEvent(
                event_id=rec.event_id,
                prompt_id=rec.prompt_id,
                status=rec.status,
                reason=rec.reason,
                occurred_at=rec.occurred_at,
            )
        )
    if rec.status in CLIP_OUTCOMES:
        # The clip's own event (clips.published / clips.blocked, another topic) moves the
        # prompt to its outcome, in the transaction that makes the clip visible or not:
        # otherwise a client could see "published" while the clip is still a 404, or a
        # publication refused at the last consent check.
        return
    advance_prompt(session, rec.prompt_id, rec.status, reason=rec.reason, clip_id=rec.clip_id)


def _clip_from(rec: ClipGenerated | ClipPublished | ClipFlagged) -> Clip:
    m = rec.media
    return Clip(
        id=rec.clip_id,
        prompt_id=rec.prompt_id,
        user_id=rec.user_id,
        creator_handle=rec.creator_handle,
        text=rec.text,
        parent_clip_id=rec.parent_clip_id,
        status="generated",
        video_key=m.video_key,
        poster_key=m.poster_key,
        mime_type=m.mime_type,
        width=m.width,
        height=m.height,
        fps=m.fps,
        frame_count=m.frame_count,
        duration_s=m.duration_s,
        sha256=m.sha256,
        generator=rec.generator.model_dump(mode="json"),
        checks=[],
        block_reasons=[],
        generated_at=rec.occurred_at,
    )


def apply_generated(session: Session, rec: ClipGenerated) -> None:
    if session.get(Clip, rec.clip_id) is None:
        session.add(_clip_from(rec))


def apply_published(session: Session, rec: ClipPublished) -> None:
    clip = session.get(Clip, rec.clip_id, with_for_update=True)
    if clip is None:
        clip = _clip_from(rec)
        session.add(clip)
    if clip.status in ("blocked", "removed"):  # final until a reviewer restores it
        reason = "; ".join(clip.block_reasons) or f"clip {clip.status}"
        advance_prompt(session, rec.prompt_id, "rejected", reason=reason, clip_id=rec.clip_id)
        return
    if rec.cameos and clip.status != "published":
        # The last consent check, under a lock on each likeness row: a revocation that
        # committed first is seen here; one that commits later finds this clip published
        # and takes it down itself (core.cameos.enforce_consent).
        problems = recheck(session, rec.prompt_id, rec.user_id, rec.text, rec.cameos, lock=True)
        if problems:
            take_down(session, clip, ["cameo consent: " + p for p in problems])
            advance_prompt(session, rec.prompt_id, "rejected", reason="; ".join(problems), clip_id=rec.clip_id)
            return
    if clip.status == "in_review":  # a redelivered publication cannot skip the reviewer
        return
    if clip.status != "published":
        before = clip.status
        clip.status = "published"
        clip.published_at = rec.occurred_at
        clip.checks = [c.model_dump(mode="json") for c in rec.checks]
        clip.embedding, clip.embedding_model = rec.embedding, rec.embedding_model
        clip.updated_at = utcnow()
        passed = ", ".join(c.name for c in rec.checks if c.passed)
        audit(
            session,
            clip.id,
            "automatic",
            "publish",
            reason=f"passed: {passed}",
            previous_state=before,
            new_state="published",
        )
    advance_prompt(session, rec.prompt_id, "published", clip_id=rec.clip_id)


def apply_blocked(session: Session, rec: ClipBlocked) -> None:
    clip = session.get(Clip, rec.clip_id, with_for_update=True)
    if clip is not None and clip.status != "blocked":
        before = clip.status
        clip.status = "blocked"
        clip.published_at = None
        clip.block_reasons = list(rec.reasons)
        clip.checks = [c.model_dump(mode="json") for c in rec.checks]
        clip.updated_at = utcnow()
        audit(
            session,
            clip.id,
            "automatic",
            "block",
            reason="; ".join(rec.reasons),
            previous_state=before,
            new_state="blocked",
        )
    advance_prompt(session, rec.prompt_id, "rejected", reason="; ".join(rec.reasons), clip_id=rec.clip_id)


def apply_decision(session: Session, rec: ModerationDecision) -> None:
    """Takedowns and blocks hide a clip; a reviewer's restore shows it again."""
    clip = session.get(Clip, rec.clip_id, with_for_update=True)
    if clip is None:
        log.warning("moderation decision %s for unknown clip %s ignored", rec.decision, rec.clip_id)
        return
    before = clip.status
    if rec.decision in ("takedown", "block"):
        target = "removed" if rec.decision == "takedown" else "blocked"
        if clip.status != target:
            clip.status = target
            clip.block_reasons = list(rec.reasons)
            clip.updated_at = utcnow()
    elif (
        rec.decision in ("restore", "publish")
        and rec.decided_by == "reviewer"
        and clip.status in ("removed", "blocked", "in_review")
    ):
        clip.status = "published"
        clip.published_at = clip.published_at or rec.occurred_at
        clip.block_reasons = []
        clip.updated_at = utcnow()
    if clip.status != before:  # the API records the decisions it applies itself
        kind = "reviewer" if rec.decided_by == "reviewer" else "automatic"
        audit(
            session,
            clip.id,
            kind,
            rec.decision,
            actor_id=rec.reviewer_id,
            reason="; ".join(rec.reasons),
            previous_state=before,
            new_state=clip.status,
        )


def apply_flagged(session: Session, rec: ClipFlagged) -> None:
    """A clip the frame filter could not clear is held back (``in_review``, in no feed)
    and queued for a human; the reviewer's approval publishes it (core.review.decide)."""
    clip = session.get(Clip, rec.clip_id, with_for_update=True)
    if clip is None:
        clip = _clip_from(rec)
        session.add(clip)
    if clip.status in ("blocked", "removed", "published"):
        # Already decided (a takedown, or a reviewer who got there first): nothing to hold.
        return
    if clip.status != "in_review":
        before = clip.status
        clip.status = "in_review"
        clip.checks = [c.model_dump(mode="json") for c in rec.checks]
        clip.embedding, clip.embedding_model = rec.embedding, rec.embedding_model
        clip.updated_at = utcnow()
        session.flush()
        enqueue_flag(session, clip.id, list(rec.reasons))
        audit(
            session,
            clip.id,
            "automatic",
            "flag",
            reason="; ".join(rec.reasons),
            previous_state=before,
            new_state="in_review",
        )
    advance_prompt(session, rec.prompt_id, "in_review", reason="; ".join(rec.reasons), clip_id=rec.clip_id)


APPLIERS: dict[type[Record], Callable[[Session, Any], None]] = {
    GenerationStatus: apply_status,
    ClipGenerated: apply_generated,
    ClipPublished: apply_published,
    ClipBlocked: apply_blocked,
    ModerationDecision: apply_decision,
    ClipFlagged: apply_flagged,
    Interaction: apply_interaction,
    SocialEvent: apply_social,
}


#: Interactions the SQL store keeps nothing of (the ranking state reads them from the
#: log): no transaction and no processed-event row, for the most frequent events.
RANKING_ONLY_KINDS = frozenset({"impression", "skip", "see_less"})


def apply_event(factory: sessionmaker[Session], topic: str, rec: Record) -> bool:
    """Apply one event exactly once; returns False when it was already applied."""
    if isinstance(rec, Interaction) and rec.kind in RANKING_ONLY_KINDS:
        return True
    applier = APPLIERS[type(rec)]
    try:
        with session_scope(factory) as session:
            if session.scalar(select(ProcessedEvent.event_id).where(ProcessedEvent.event_id == rec.event_id)):
                return False
            session.add(ProcessedEvent(event_id=rec.event_id, topic=topic))
            applier(session, rec)
            session.flush()
        return True
    except IntegrityError:
        # A concurrent or earlier delivery of the same event won the insert race.
        with session_scope(factory) as session:
            if session.get(ProcessedEvent, rec.event_id) is not None:
                return False
        raise
