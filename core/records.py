"""Versioned records, one per topic, JSON on the wire.

Every record carries ``event_id`` (dedupe key for at-least-once delivery),
``occurred_at`` (UTC) and ``schema_version``. A change to a record adds an optional
field or moves to a new ``.vN`` topic; consumers dead-letter versions they do not
know rather than guessing. ``schemas/`` holds the exported JSON Schema of each.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# Deterministic ids derived from other ids use this namespace, so a redelivered
# prompt maps to the same clip id and cannot create a second clip.
CLIPSTREAM_NAMESPACE = uuid.UUID("5b7d6a1e-8f0c-4d2e-9a3b-6c1f0e2d4a58")

#: The most clips one feed page's impression record may name (the feed's largest page).
MAX_PAGE_CLIPS = 100


def utcnow() -> datetime:
    return datetime.now(UTC)


def clip_id_for_prompt(prompt_id: uuid.UUID) -> uuid.UUID:
    """The one clip a prompt can produce (remixes and retries reuse it)."""
    return uuid.uuid5(CLIPSTREAM_NAMESPACE, f"clip:{prompt_id}")


def _require_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("occurred_at must carry a timezone (UTC)")
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_require_utc)]


class Record(BaseModel):
    """Common envelope of every topic value."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4, description="Unique per event; consumers dedupe on it.")
    occurred_at: UtcDatetime = Field(default_factory=utcnow, description="When the event happened, UTC.")
    schema_version: Literal[1] = Field(default=1, description="Version of this record's schema.")

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class ModerationReason(BaseModel):
    model_config = ConfigDict(frozen=True)
    category: str
    term: str
    action: Literal["allow", "review", "block"]


class PromptModeration(BaseModel):
    """What the API's prompt check decided, kept with the prompt for audit."""

    model_config = ConfigDict(frozen=True)
    action: Literal["allow", "review", "block"]
    reasons: list[ModerationReason] = Field(default_factory=list)
    policy_version: str


class CameoCast(BaseModel):
    """A person a prompt casts, with the likeness image they registered (consent was
    checked when the prompt was accepted; it is checked again before publishing)."""

    model_config = ConfigDict(frozen=True)
    user_id: uuid.UUID
    handle: str
    likeness_key: str = Field(description="Media store key of the likeness image.")
    likeness_sha256: str = Field(description="sha256 of the likeness image, so a replaced image is noticed.")


class PromptSubmitted(Record):
    """A prompt accepted by the API (after prompt moderation), to be rendered."""

    prompt_id: uuid.UUID
    user_id: uuid.UUID
    creator_handle: str
    text: str = Field(min_length=1, max_length=4000)
    seed: int = Field(ge=0, le=2**31 - 1)
    parent_clip_id: uuid.UUID | None = None
    moderation: PromptModeration
    cameos: list[CameoCast] = Field(default_factory=list, max_length=2, description="People cast, at most two.")


PromptStatusValue = Literal["queued", "generating", "moderating", "in_review", "published", "rejected", "failed"]

# Status only moves forward: a redelivered "generating" never overwrites "published".
STATUS_RANK: dict[str, int] = {
    "queued": 0,
    "generating": 1,
    "moderating": 2,
    "in_review": 3,
    "published": 4,
    "rejected": 4,
    "failed": 4,
}


class GenerationStatus(Record):
    """One step of a prompt's life; the funnel data scientists read."""

    prompt_id: uuid.UUID
    status: PromptStatusValue
    clip_id: uuid.UUID | None = None
    reason: str | None = None
    stage_ms: int | None = Field(default=None, description="Time the finished stage took, when known.")


class ClipMedia(BaseModel):
    """Where a clip's files are, as keys relative to the media store root."""

    model_config = ConfigDict(frozen=True)
    video_key: str
    poster_key: str
    frame_keys: list[str]
    frame_indices: list[int]
    mime_type: str
    width: int
    height: int
    fps: int
    frame_count: int
    duration_s: float
    sha256: str


class GeneratorInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    version: str
    seed: int
    concepts: list[str] = Field(default_factory=list)
    render_ms: int


class _RenderedClipRecord(Record):
    """Fields every record about a rendered clip carries."""

    clip_id: uuid.UUID
    prompt_id: uuid.UUID
    user_id: uuid.UUID
    creator_handle: str
    text: str
    parent_clip_id: uuid.UUID | None = None
    media: ClipMedia
    generator: GeneratorInfo
    cameos: list[CameoCast] = Field(default_factory=list, max_length=2)


class ClipGenerated(_RenderedClipRecord):
    """Moderation verifies the file at ``media.video_key`` against ``media.sha256``."""


class ConceptScore(BaseModel):
    model_config = ConfigDict(frozen=True)
    concept: str
    score: float


class SafetyCheck(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    passed: bool
    detail: str
    scores: list[ConceptScore] = Field(
        default_factory=list,
        description="frame_safety: every concept's highest score over the frames (what its thresholds apply to).",
    )


class ClipPublished(_RenderedClipRecord):
    """A clip that passed moderation, with the frame filter's CLIP embedding for ranking
    (None only when the filter is switched off)."""

    checks: list[SafetyCheck]
    embedding: list[float] | None = None
    embedding_model: str | None = None


class ClipBlocked(Record):
    clip_id: uuid.UUID
    prompt_id: uuid.UUID
    user_id: uuid.UUID
    reasons: list[str]
    checks: list[SafetyCheck]


class ClipFlagged(_RenderedClipRecord):
    """A clip the frame filter could neither clear nor block: held back for human review."""

    reasons: list[str]
    checks: list[SafetyCheck]
    embedding: list[float] | None = None
    embedding_model: str | None = None


class ModerationDecision(Record):
    clip_id: uuid.UUID
    decision: Literal["publish", "block", "takedown", "restore"]
    decided_by: Literal["automatic", "reviewer"]
    reviewer_id: uuid.UUID | None = None
    reasons: list[str] = Field(default_factory=list)


class Interaction(Record):
    """Something a person did with a clip. Likes, views and shares come straight from
    the API (falling back to the outbox when the broker is unreachable); comments and
    reports are stored first and come through the outbox."""

    user_id: uuid.UUID
    clip_id: uuid.UUID | None = None
    kind: Literal["impression", "view", "like", "unlike", "skip", "share", "comment", "uncomment", "report", "see_less"]
    watch_ms: int | None = Field(default=None, ge=0, le=24 * 3600 * 1000)
    attributes: dict[str, Any] = Field(default_factory=dict, description="comment_id, report reason, …")
    clip_ids: list[uuid.UUID] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PAGE_CLIPS,
        description="An impression of a whole feed page: the clips it showed, in the order shown, in place of "
        "clip_id. One record a page instead of one a clip (twenty records a page cost a fifth more of the API's "
        "CPU a feed request); consumers that want a row a clip read per_clip().",
    )

    @model_validator(mode="after")
    def _one_page(self) -> Interaction:
        if self.clip_ids is not None and (self.kind != "impression" or self.clip_id is not None):
            raise ValueError("clip_ids is for the impression of a feed page only, in place of clip_id")
        return self

    def per_clip(self) -> list[Interaction]:
        """This event as one record a clip: a page's impression becomes an impression of
        each clip it showed, with its ``position`` on the page (the event id derived
        from the page's, so a redelivered page yields the same ids); anything else is
        itself."""
        if self.clip_ids is None:
            return [self]
        return [
            Interaction.model_construct(
                event_id=uuid.uuid5(self.event_id, str(i)),
                occurred_at=self.occurred_at,
                schema_version=self.schema_version,
                user_id=self.user_id,
                clip_id=clip_id,
                kind="impression",
                watch_ms=None,
                attributes={**self.attributes, "position": i},
                clip_ids=None,
            )
            for i, clip_id in enumerate(self.clip_ids)
        ]


class SocialEvent(Record):
    user_id: uuid.UUID
    kind: Literal[
        "user_created", "follow", "unfollow", "block", "unblock", "mute", "unmute", "cameo_grant", "cameo_revoke"
    ]
    target_user_id: uuid.UUID | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
