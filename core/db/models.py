"""Storage models. API request/response models live in ``api/schemas.py``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime written to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("handle_skeleton", name="uq_users_handle_skeleton"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    handle: Mapped[str] = mapped_column(String(30))
    # Case-insensitive uniqueness: @Alice and @alice are the same person.
    handle_key: Mapped[str] = mapped_column(String(30), unique=True)
    # Look-alike uniqueness: @maya_rnakes may not squat @maya_makes (see api/handles.py).
    handle_skeleton: Mapped[str | None] = mapped_column(String(30), default=None)
    display_name: Mapped[str] = mapped_column(String(60))
    bio: Mapped[str] = mapped_column(String(160), default="")
    avatar_key: Mapped[str | None] = mapped_column(String(300), default=None)
    # argon2id; None for accounts made before passwords existed (they cannot log in).
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    role: Mapped[str] = mapped_column(String(16), default="user")  # user | reviewer | admin
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime | None] = mapped_column(default=None)


class Follow(Base):
    __tablename__ = "follows"
    __table_args__ = (Index("ix_follows_followee", "followee_id", "created_at"),)
    follower_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    followee_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Block(Base):
    __tablename__ = "blocks"
    __table_args__ = (Index("ix_blocks_blocked", "blocked_id"),)
    blocker_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    blocked_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Mute(Base):
    __tablename__ = "mutes"
    muter_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    muted_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    # Only a hash is stored; the token itself is shown once at creation.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Prompt(Base):
    __tablename__ = "prompts"
    __table_args__ = (UniqueConstraint("user_id", "idempotency_key", name="uq_prompts_user_idempotency"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    clip_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    parent_clip_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    moderation: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class PromptEvent(Base):
    """Timeline of a prompt's statuses, one row per status event (deduped by event id)."""

    __tablename__ = "prompt_events"
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    prompt_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    occurred_at: Mapped[datetime] = mapped_column()


class Clip(Base):
    __tablename__ = "clips"
    __table_args__ = (Index("ix_clips_feed", "status", "published_at", "id"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    # One clip per prompt: a redelivered prompt cannot make a second clip.
    prompt_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    creator_handle: Mapped[str] = mapped_column(String(30))
    text: Mapped[str] = mapped_column(Text)
    parent_clip_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    status: Mapped[str] = mapped_column(String(16))  # generated | in_review | published | blocked | removed
    video_key: Mapped[str] = mapped_column(String(300))
    poster_key: Mapped[str] = mapped_column(String(300))
    mime_type: Mapped[str] = mapped_column(String(40))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    fps: Mapped[int] = mapped_column(Integer)
    frame_count: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float] = mapped_column(Float)
    sha256: Mapped[str] = mapped_column(String(64))
    generator: Mapped[dict[str, Any]] = mapped_column(JSON)
    checks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    block_reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # The frame filter's CLIP embedding of the clip (normalised mean over its frames) and
    # the model that made it; ranking indexes it, re-scans compare against it.
    embedding: Mapped[list[float] | None] = mapped_column(JSON, default=None)
    embedding_model: Mapped[str | None] = mapped_column(String(80), default=None)
    generated_at: Mapped[datetime] = mapped_column()
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class OutboxMessage(Base):
    """Events written in the same transaction as the state they describe.

    The relay publishes rows in id order and stamps ``published_at``; a broker outage
    delays events but loses none. Consumers dedupe on the record's event_id, since a
    crash between send and stamp re-sends a row.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "published_at", "id"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


class ProcessedEvent(Base):
    """Ledger of consumed event ids, written in the same transaction as their effect."""

    __tablename__ = "processed_events"
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    topic: Mapped[str] = mapped_column(String(200))
    processed_at: Mapped[datetime] = mapped_column(default=_now)


class Like(Base):
    """Like state, kept by the materializer from `interactions` (so like/unlike are idempotent)."""

    __tablename__ = "likes"
    __table_args__ = (Index("ix_likes_clip", "clip_id"),)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    clip_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class ClipStats(Base):
    """Engagement counts per clip, materialized from `interactions`."""

    __tablename__ = "clip_stats"
    clip_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    likes: Mapped[int] = mapped_column(Integer, default=0)
    views: Mapped[int] = mapped_column(Integer, default=0)
    watch_ms: Mapped[int] = mapped_column(BigInteger, default=0)
    shares: Mapped[int] = mapped_column(Integer, default=0)
    comments: Mapped[int] = mapped_column(Integer, default=0)
    reports: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class UserStats(Base):
    """Counts per user, materialized from `social.events` and `interactions`."""

    __tablename__ = "user_stats"
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    followers: Mapped[int] = mapped_column(Integer, default=0)
    following: Mapped[int] = mapped_column(Integer, default=0)
    likes_received: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=_now)


class Comment(Base):
    __tablename__ = "comments"
    __table_args__ = (Index("ix_comments_clip", "clip_id", "created_at"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    clip_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(String(500))
    moderation: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class Report(Base):
    """A user's report of a clip; the trust-and-safety queue reads these."""

    __tablename__ = "reports"
    __table_args__ = (Index("ix_reports_clip", "clip_id"), Index("ix_reports_status", "status", "created_at"))
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    clip_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    reporter_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(40))
    details: Mapped[str] = mapped_column(String(1000), default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=_now)


class Likeness(Base):
    """A user's registered cameo likeness and who may cast it.

    ``consent`` is only_me | approved | mutuals | everyone. Revoking sets ``revoked_at``
    (the row is kept for audit and so that in-flight prompts fail their re-check)."""

    __tablename__ = "likenesses"
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    image_key: Mapped[str] = mapped_column(String(300))
    image_sha256: Mapped[str] = mapped_column(String(64))
    consent: Mapped[str] = mapped_column(String(16))
    restrictions: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class CameoApproval(Base):
    """People a likeness owner approved to cast them (consent mode ``approved``)."""

    __tablename__ = "cameo_approvals"
    owner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    grantee_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class PromptCameo(Base):
    """Who a prompt casts. The owner sees every prompt casting them and can veto it."""

    __tablename__ = "prompt_cameos"
    __table_args__ = (Index("ix_prompt_cameos_user", "user_id", "created_at"),)
    prompt_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    creator_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    position: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    vetoed_at: Mapped[datetime | None] = mapped_column(default=None)


class ReviewItem(Base):
    """One clip waiting for (or given) a trust-and-safety decision.

    ``kind`` is report (user reports, merged per clip while open), flag (the frame
    filter) or appeal (a creator contesting a removal, once per clip). A reviewer claims
    an item for ``claim_expires_at``; an expired claim is free for anyone else."""

    __tablename__ = "review_items"
    __table_args__ = (
        Index("ix_review_items_queue", "status", "severity", "created_at"),
        Index("ix_review_items_clip", "clip_id", "kind"),
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    clip_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(16))  # report | flag | appeal
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | claimed | decided
    severity: Mapped[int] = mapped_column(Integer, default=1)  # 1 low .. 4 escalated
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    escalated: Mapped[bool] = mapped_column(default=False)
    claimed_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    claim_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    # Appeals go to someone other than the reviewer who removed the clip.
    excluded_reviewer: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    decision: Mapped[str | None] = mapped_column(String(16), default=None)  # approve | remove | escalate
    policy_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    decided_by: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditEntry(Base):
    """Append-only record of every decision about a clip, automatic or human.

    Nothing updates or deletes these rows (on PostgreSQL a trigger refuses it)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_clip", "clip_id", "id"), Index("ix_audit_actor", "actor_id", "id"))
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    clip_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    actor_kind: Mapped[str] = mapped_column(String(16))  # automatic | reviewer | owner | creator
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, default=None)
    action: Mapped[str] = mapped_column(String(32))  # publish | block | takedown | restore | approve | escalate | …
    reason: Mapped[str] = mapped_column(Text, default="")
    previous_state: Mapped[str | None] = mapped_column(String(16), default=None)
    new_state: Mapped[str | None] = mapped_column(String(16), default=None)
    created_at: Mapped[datetime] = mapped_column(default=_now)


class FeedSteering(Base):
    """What a user asked their feed for in words, with the phrases' CLIP text
    embeddings (ranking/steering.py); it steers retrieval and scoring until changed."""

    __tablename__ = "feed_steering"
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    text: Mapped[str] = mapped_column(String(300))
    more: Mapped[list[str]] = mapped_column(JSON, default=list)  # parsed phrases
    less: Mapped[list[str]] = mapped_column(JSON, default=list)
    more_vector: Mapped[list[float] | None] = mapped_column(JSON, default=None)
    less_vector: Mapped[list[float] | None] = mapped_column(JSON, default=None)
    model: Mapped[str] = mapped_column(String(80))  # text tower that embedded them
    updated_at: Mapped[datetime] = mapped_column(default=_now)
