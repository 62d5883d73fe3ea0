"""The social graph: follows, blocks, mutes, friends (mutual follows).

Every change is written with a SocialEvent in the outbox in the same transaction, so a
broker outage delays the event but never loses it. Operations are idempotent: following
twice changes nothing and emits nothing the second time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, exists, or_, select
from sqlalchemy.orm import Session

from core.db.models import Block, Follow, Mute, User
from core.errors import ConflictError, PermissionDeniedError
from core.outbox import enqueue
from core.records import SocialEvent
from core.topics import SOCIAL_EVENTS


@dataclass(frozen=True)
class Relationship:
    following: bool
    followed_by: bool
    blocking: bool
    blocked_by: bool
    muting: bool

    @property
    def friends(self) -> bool:
        return self.following and self.followed_by


def _has(session: Session, model: type, **keys: uuid.UUID) -> bool:
    cond = [getattr(model, k) == v for k, v in keys.items()]
    return bool(session.scalar(select(exists().where(*cond))))


def relationship(session: Session, viewer: uuid.UUID, other: uuid.UUID) -> Relationship:
    return Relationship(
        following=_has(session, Follow, follower_id=viewer, followee_id=other),
        followed_by=_has(session, Follow, follower_id=other, followee_id=viewer),
        blocking=_has(session, Block, blocker_id=viewer, blocked_id=other),
        blocked_by=_has(session, Block, blocker_id=other, blocked_id=viewer),
        muting=_has(session, Mute, muter_id=viewer, muted_id=other),
    )


def blocked_between(session: Session, a: uuid.UUID, b: uuid.UUID) -> bool:
    return bool(
        session.scalar(
            select(
                exists().where(
                    or_(
                        (Block.blocker_id == a) & (Block.blocked_id == b),
                        (Block.blocker_id == b) & (Block.blocked_id == a),
                    )
                )
            )
        )
    )


def hidden_authors(session: Session, viewer: uuid.UUID) -> set[uuid.UUID]:
    """Authors whose clips the viewer never sees: blocked either way, or muted."""
    blocked = session.scalars(select(Block.blocked_id).where(Block.blocker_id == viewer))
    blockers = session.scalars(select(Block.blocker_id).where(Block.blocked_id == viewer))
    muted = session.scalars(select(Mute.muted_id).where(Mute.muter_id == viewer))
    return set(blocked) | set(blockers) | set(muted)


def _emit(session: Session, actor: uuid.UUID, kind: str, target: uuid.UUID) -> None:
    enqueue(session, SOCIAL_EVENTS, SocialEvent(user_id=actor, kind=kind, target_user_id=target))  # type: ignore[arg-type]


def _not_self(actor: User, target: User, verb: str) -> None:
    if actor.id == target.id:
        raise ConflictError(f"you cannot {verb} yourself")


def follow(session: Session, actor: User, target: User) -> bool:
    _not_self(actor, target, "follow")
    if blocked_between(session, actor.id, target.id):
        raise PermissionDeniedError(f"you cannot follow @{target.handle}")
    if _has(session, Follow, follower_id=actor.id, followee_id=target.id):
        return False
    session.add(Follow(follower_id=actor.id, followee_id=target.id))
    _emit(session, actor.id, "follow", target.id)
    return True


def _remove(
    session: Session, model: type, actor_col: str, target_col: str, kind: str, actor: User, target: User
) -> bool:
    """Delete the edge actor → target if it exists, announcing ``kind``; idempotent."""
    done = session.execute(
        delete(model).where(getattr(model, actor_col) == actor.id, getattr(model, target_col) == target.id)
    )
    if done.rowcount:  # type: ignore[attr-defined]
        _emit(session, actor.id, kind, target.id)
        return True
    return False


def _recheck_cameos(session: Session, *users: User) -> None:
    """A graph change can withdraw cameo consent (mutuals-only, blocks): re-check now."""
    from core.cameos import enforce_consent  # cameos builds on the graph

    session.flush()
    for user in users:
        enforce_consent(session, user.id)


def unfollow(session: Session, actor: User, target: User) -> bool:
    if _remove(session, Follow, "follower_id", "followee_id", "unfollow", actor, target):
        _recheck_cameos(session, actor, target)
        return True
    return False


def block(session: Session, actor: User, target: User) -> bool:
    """Block; follows in both directions end (and are announced as unfollows)."""
    _not_self(actor, target, "block")
    if _has(session, Block, blocker_id=actor.id, blocked_id=target.id):
        return False
    unfollow(session, actor, target)
    unfollow(session, target, actor)
    session.add(Block(blocker_id=actor.id, blocked_id=target.id))
    _emit(session, actor.id, "block", target.id)
    _recheck_cameos(session, actor, target)
    return True


def unblock(session: Session, actor: User, target: User) -> bool:
    return _remove(session, Block, "blocker_id", "blocked_id", "unblock", actor, target)


def mute(session: Session, actor: User, target: User) -> bool:
    _not_self(actor, target, "mute")
    if _has(session, Mute, muter_id=actor.id, muted_id=target.id):
        return False
    session.add(Mute(muter_id=actor.id, muted_id=target.id))
    _emit(session, actor.id, "mute", target.id)
    return True


def unmute(session: Session, actor: User, target: User) -> bool:
    return _remove(session, Mute, "muter_id", "muted_id", "unmute", actor, target)
