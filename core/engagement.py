"""Counts from the event streams: likes, views, watch time, shares, comments, reports
per clip; followers, following and likes received per user.

Each applier runs inside core.materialize.apply_event (one transaction with the event
id recorded), so redelivery changes nothing. Likes are state, not a counter: a like
for a clip already liked, or an unlike of one that is not, changes no count — which
makes like/unlike idempotent however often a client retries.
"""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.db.models import Clip, ClipStats, Like, UserStats
from core.records import Interaction, SocialEvent, utcnow


def _clip_stats(session: Session, clip_id: uuid.UUID) -> ClipStats:
    stats = session.get(ClipStats, clip_id, with_for_update=True)
    if stats is None:
        stats = ClipStats(clip_id=clip_id, likes=0, views=0, watch_ms=0, shares=0, comments=0, reports=0)
        session.add(stats)
    stats.updated_at = utcnow()
    return stats


def _user_stats(session: Session, user_id: uuid.UUID) -> UserStats:
    stats = session.get(UserStats, user_id, with_for_update=True)
    if stats is None:
        stats = UserStats(user_id=user_id, followers=0, following=0, likes_received=0)
        session.add(stats)
    stats.updated_at = utcnow()
    return stats


def _author(session: Session, clip_id: uuid.UUID) -> uuid.UUID | None:
    return session.scalar(select(Clip.user_id).where(Clip.id == clip_id))


def apply_interaction(session: Session, rec: Interaction) -> None:
    if rec.clip_id is None:
        return
    if rec.kind == "like":
        if session.get(Like, (rec.user_id, rec.clip_id)) is not None:
            return
        session.add(Like(user_id=rec.user_id, clip_id=rec.clip_id, created_at=rec.occurred_at))
        _clip_stats(session, rec.clip_id).likes += 1
        author = _author(session, rec.clip_id)
        if author is not None:
            _user_stats(session, author).likes_received += 1
    elif rec.kind == "unlike":
        gone = session.execute(delete(Like).where(Like.user_id == rec.user_id, Like.clip_id == rec.clip_id))
        if gone.rowcount:  # type: ignore[attr-defined]
            stats = _clip_stats(session, rec.clip_id)
            stats.likes = max(0, stats.likes - 1)
            author = _author(session, rec.clip_id)
            if author is not None:
                user = _user_stats(session, author)
                user.likes_received = max(0, user.likes_received - 1)
    elif rec.kind == "view":
        stats = _clip_stats(session, rec.clip_id)
        stats.views += 1
        stats.watch_ms += rec.watch_ms or 0
    elif rec.kind == "share":
        _clip_stats(session, rec.clip_id).shares += 1
    elif rec.kind == "comment":
        _clip_stats(session, rec.clip_id).comments += 1
    elif rec.kind == "uncomment":
        stats = _clip_stats(session, rec.clip_id)
        stats.comments = max(0, stats.comments - 1)
    elif rec.kind == "report":
        _clip_stats(session, rec.clip_id).reports += 1
    # impressions, skips and "see less" feed ranking, not counts.


def apply_social(session: Session, rec: SocialEvent) -> None:
    """Follow counts; the graph service emits follow/unfollow only on real changes."""
    if rec.target_user_id is None or rec.kind not in ("follow", "unfollow"):
        return
    step = 1 if rec.kind == "follow" else -1
    actor, target = _user_stats(session, rec.user_id), _user_stats(session, rec.target_user_id)
    actor.following = max(0, actor.following + step)
    target.followers = max(0, target.followers + step)
