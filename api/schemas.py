"""Request and response models of the HTTP API (separate from storage models)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.handles import validate_handle
from core.review import PolicyReason

CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean_line(v: str, what: str) -> str:
    v = v.strip()
    if CONTROL_RE.search(v):
        raise ValueError(f"{what} contains control characters")
    return v


class SignupRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"handle": "maya_makes", "display_name": "Maya", "password": "correct horse battery"}]
        }
    )
    handle: str = Field(description="Unique @handle, case-insensitive, without the @")
    display_name: str = Field(min_length=1, max_length=60)
    password: str = Field(min_length=10, max_length=200, description="At least 10 characters")

    @field_validator("handle")
    @classmethod
    def _valid_handle(cls, v: str) -> str:
        return validate_handle(v)

    @field_validator("display_name")
    @classmethod
    def _clean_name(cls, v: str) -> str:
        v = _clean_line(v, "display name")
        if not v:
            raise ValueError("display name is empty")
        return v


class LoginRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"handle": "maya_makes", "password": "correct horse battery"}]}
    )
    handle: str = Field(min_length=1, max_length=31)
    password: str = Field(min_length=1, max_length=200)


class UserSummary(BaseModel):
    id: uuid.UUID
    handle: str
    display_name: str
    avatar_url: str | None


class UserPrivate(UserSummary):
    bio: str
    role: Literal["user", "reviewer", "admin"]
    created_at: datetime


class SessionToken(BaseModel):
    user: UserPrivate
    token: str = Field(description="Bearer token; shown once, store it.")
    expires_at: datetime


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"bio": "I make tiny films about foxes."}]})
    display_name: str | None = Field(default=None, min_length=1, max_length=60)
    bio: str | None = Field(default=None, max_length=160)

    @field_validator("display_name", "bio")
    @classmethod
    def _clean(cls, v: str | None) -> str | None:
        return None if v is None else _clean_line(v, "text")


class ProfileCounts(BaseModel):
    """followers, following and likes_received are materialized from the event
    streams and lag the actions that change them by about a second."""

    followers: int
    following: int
    clips: int
    likes_received: int


class RelationshipPublic(BaseModel):
    following: bool
    followed_by: bool
    friends: bool = Field(description="Mutual follows")
    blocking: bool
    blocked_by: bool
    muting: bool


class ProfilePublic(UserSummary):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "9a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d",
                    "handle": "maya_makes",
                    "display_name": "Maya",
                    "avatar_url": "/v1/users/maya_makes/avatar",
                    "bio": "I make tiny films about foxes.",
                    "created_at": "2026-11-26T12:00:00Z",
                    "counts": {"followers": 12, "following": 3, "clips": 7, "likes_received": 40},
                    "relationship": {
                        "following": True,
                        "followed_by": True,
                        "friends": True,
                        "blocking": False,
                        "blocked_by": False,
                        "muting": False,
                    },
                }
            ]
        }
    )
    bio: str
    created_at: datetime
    counts: ProfileCounts
    relationship: RelationshipPublic | None = Field(
        description="How the caller relates to this user; null when anonymous or self"
    )


class UserPage(BaseModel):
    data: list[UserSummary]
    next_cursor: str | None


class RoleUpdate(BaseModel):
    role: Literal["user", "reviewer", "admin"]


class PromptCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"text": "a cat dancing on the beach at sunset"},
                {"text": "a red rocket flying through space at night", "seed": 42},
                {"text": "@maya_makes and @leo riding bikes through a city at night"},
            ]
        }
    )
    text: str = Field(
        min_length=1,
        max_length=1000,
        description="What the clip should show (≤ 1,000 characters). Writing someone's @handle casts them "
        "(a cameo, at most two people): they must have registered a likeness and consent to you casting them.",
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1, description="Same prompt + seed → same clip.")
    parent_clip_id: uuid.UUID | None = Field(default=None, description="Remix: the clip this one builds on.")

    @field_validator("text")
    @classmethod
    def _clean_text(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("prompt text is empty")
        if CONTROL_RE.search(v):
            raise ValueError("prompt text contains control characters")
        return v


class ModerationReasonPublic(BaseModel):
    category: str
    term: str
    action: Literal["allow", "review", "block"]


class PromptModerationPublic(BaseModel):
    action: Literal["allow", "review", "block"]
    reasons: list[ModerationReasonPublic]
    policy_version: str


class PromptStatusEvent(BaseModel):
    status: str
    reason: str | None
    occurred_at: datetime


class PromptPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0b9f2d8e-5c1a-4a57-9f37-0f6e1f2a3b4c",
                    "status": "published",
                    "reason": None,
                    "text": "a cat dancing on the beach at sunset",
                    "seed": 1234,
                    "clip_id": "5e1f0c2a-7d3b-5b8e-9a61-2c4d6e8f0a1b",
                    "parent_clip_id": None,
                    "moderation": {"action": "allow", "reasons": [], "policy_version": "2026-11-26.1"},
                    "created_at": "2026-11-26T12:00:00Z",
                    "updated_at": "2026-11-26T12:00:04Z",
                    "timeline": [{"status": "queued", "reason": None, "occurred_at": "2026-11-26T12:00:00Z"}],
                }
            ]
        }
    )
    id: uuid.UUID
    status: Literal["queued", "generating", "moderating", "in_review", "published", "rejected", "failed"]
    reason: str | None = Field(description="Why the prompt was rejected or failed.")
    text: str
    seed: int
    clip_id: uuid.UUID | None
    parent_clip_id: uuid.UUID | None
    moderation: PromptModerationPublic
    cast: list[str] = Field(default_factory=list, description="@handles the prompt casts (cameos), at most two")
    created_at: datetime
    updated_at: datetime
    timeline: list[PromptStatusEvent] = Field(default_factory=list)


class ClipStatsPublic(BaseModel):
    likes: int = 0
    views: int = 0
    shares: int = 0
    comments: int = 0


class ClipCreator(BaseModel):
    id: uuid.UUID
    handle: str


class ClipPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5e1f0c2a-7d3b-5b8e-9a61-2c4d6e8f0a1b",
                    "prompt": "a cat dancing on the beach at sunset",
                    "creator": {"id": "9a0b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d", "handle": "alice"},
                    "video_url": "/v1/clips/5e1f0c2a-7d3b-5b8e-9a61-2c4d6e8f0a1b/video",
                    "poster_url": "/v1/clips/5e1f0c2a-7d3b-5b8e-9a61-2c4d6e8f0a1b/poster",
                    "mime_type": "video/mp4",
                    "width": 288,
                    "height": 512,
                    "fps": 12,
                    "duration_s": 3.0,
                    "parent_clip_id": None,
                    "published_at": "2026-11-26T12:00:04Z",
                    "generator": {
                        "name": "procedural",
                        "version": "procedural-2",
                        "concepts": ["cat", "dancing", "beach"],
                    },
                    "safety_checks": [
                        {"name": "prompt_policy", "passed": True, "detail": "allow under policy 2026-11-26.1"}
                    ],
                }
            ]
        }
    )
    id: uuid.UUID
    prompt: str
    creator: ClipCreator
    video_url: str
    poster_url: str
    mime_type: str
    width: int
    height: int
    fps: int
    duration_s: float
    parent_clip_id: uuid.UUID | None
    published_at: datetime
    generator: dict[str, object]
    safety_checks: list[dict[str, object]]
    stats: ClipStatsPublic = Field(default_factory=ClipStatsPublic, description="Materialized; lags events briefly")
    viewer_liked: bool | None = Field(default=None, description="Whether the caller liked it; null when anonymous")


class Accepted(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "accepted"}]})
    status: Literal["accepted"] = "accepted"


class ViewCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"watch_ms": 2800}]})
    watch_ms: int = Field(ge=0, le=3_600_000, description="How long the clip played, in milliseconds")


class ShareCreated(BaseModel):
    share_url: str


class CommentCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "the fox's little hop at the end!"}]})
    text: str = Field(min_length=1, max_length=500)

    @field_validator("text")
    @classmethod
    def _clean(cls, v: str) -> str:
        v = _clean_line(v, "comment")
        if not v:
            raise ValueError("comment is empty")
        return v


class CommentPublic(BaseModel):
    id: uuid.UUID
    clip_id: uuid.UUID
    author: UserSummary
    text: str
    created_at: datetime


class CommentPage(BaseModel):
    data: list[CommentPublic]
    next_cursor: str | None


REPORT_REASONS = (
    "sexual",
    "violence",
    "self_harm",
    "hate",
    "harassment",
    "illegal",
    "minors",
    "impersonation",
    "spam",
    "other",
)


class ReportCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "impersonation", "details": "that's me"}]})
    reason: Literal[
        "sexual", "violence", "self_harm", "hate", "harassment", "illegal", "minors", "impersonation", "spam", "other"
    ]
    details: str = Field(default="", max_length=1000)

    @field_validator("details")
    @classmethod
    def _clean(cls, v: str) -> str:
        return _clean_line(v, "details")


class ReportCreated(BaseModel):
    id: uuid.UUID
    status: Literal["open"]


class FeedRanking(BaseModel):
    mode: Literal["personalised", "newest"] = Field(
        description="personalised: ranked for the caller; newest: newest first (asked for with order=newest, "
        "or while this API process's ranking state is catching up with the log)"
    )
    reason: str | None = Field(default=None, description="Why the feed is newest-first, when it is.")


class FeedPage(BaseModel):
    data: list[ClipPublic]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at the end.")
    ranking: FeedRanking | None = Field(default=None, description="How this page was ordered (the main feed only).")
    explain: dict[str, Any] | None = Field(
        default=None,
        description="With explain=true: candidates per source, what each filter removed, and every clip's "
        "score and features (similarity, engagement, freshness, social, ...).",
    )


class SteeringSet(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"text": "more cats and beaches, less horror"}]})
    text: str = Field(min_length=1, max_length=300, description="What you want more or less of, in plain words.")

    @field_validator("text")
    @classmethod
    def _clean(cls, v: str) -> str:
        return _clean_line(v, "text")


class SteeringPublic(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "text": "more cats and beaches, less horror",
                    "more": ["cats", "beaches"],
                    "less": ["horror"],
                    "updated_at": "2026-11-27T10:00:00Z",
                }
            ]
        }
    )
    text: str
    more: list[str] = Field(description="Phrases the feed looks for and ranks up.")
    less: list[str] = Field(description="Phrases the feed ranks down.")
    updated_at: datetime


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    database: str
    outbox_pending: int | None = None
    outbox_error: str | None = None
    ranking: dict[str, Any] | None = Field(
        default=None, description="The feed's ranking replica: mode, records applied and skipped, lag behind the log."
    )
    process: int | None = Field(
        default=None, description="Process id of the API process that answered (several may share the port)."
    )


ConsentMode = Literal["only_me", "approved", "mutuals", "everyone"]


class CameoSettings(BaseModel):
    """The caller's registered likeness and who may cast it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "active": True,
                    "consent": "mutuals",
                    "restrictions": "no political content, nothing scary",
                    "restriction_rules": ["topic: politics", "topic: scary"],
                    "image_url": "/v1/me/cameo/image",
                    "created_at": "2026-11-26T12:00:00Z",
                    "updated_at": "2026-11-26T12:00:00Z",
                    "revoked_at": None,
                }
            ]
        }
    )
    active: bool = Field(description="False once revoked; register again to turn cameos back on")
    consent: ConsentMode = Field(
        description="Who may cast you: only_me, approved (people you approve), mutuals (mutual follows), everyone"
    )
    restrictions: str = Field(description="Your free-text restrictions, as written")
    restriction_rules: list[str] = Field(
        description="How the restrictions were read: topics whose term lists apply, and literal words"
    )
    image_url: str
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None


class CameoUpdate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"consent": "approved", "restrictions": "no political content"}]}
    )
    consent: ConsentMode | None = None
    restrictions: str | None = Field(default=None, max_length=500)


class CameoRevoked(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"active": False, "clips_taken_down": 2}]})
    active: bool
    clips_taken_down: int = Field(description="Published clips casting you that were taken down")


class CameoAvailability(BaseModel):
    """Whether the caller may cast this user now (prompt restrictions are checked on submission)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"handle": "maya_makes", "can_cast": False, "reason": "..."}]}
    )
    handle: str
    can_cast: bool
    consent: ConsentMode | None
    restrictions: str | None
    reason: str | None


class CameoAppearance(BaseModel):
    """A prompt that casts the caller, at any stage (drafts included)."""

    prompt_id: uuid.UUID
    creator: UserSummary
    text: str
    status: str = Field(description="The prompt's status, or 'removed' once its clip was taken down")
    clip_id: uuid.UUID | None
    poster_url: str | None = Field(description="Owner-only poster, once rendered")
    video_url: str | None = Field(description="Owner-only video, once rendered")
    public_url: str | None = Field(description="The public clip, while it is published")
    vetoed: bool
    created_at: datetime


class CameoAppearancePage(BaseModel):
    data: list[CameoAppearance]
    next_cursor: str | None = None


class ProvenanceReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "verdict": "made_here",
                    "detail": "made here by @maya_makes at 2026-11-26T12:00:04+00:00",
                    "clip_id": "5e1f0c2a-7d3b-5b8e-9a61-2c4d6e8f0a1b",
                    "creator_handle": "maya_makes",
                    "created_at": "2026-11-26T12:00:04+00:00",
                    "generator": "procedural procedural-2",
                    "clip_status": "published",
                    "problems": [],
                },
                {"verdict": "unknown", "detail": "unknown: the file was changed after it was signed", "problems": []},
            ]
        }
    )
    verdict: Literal["made_here", "unknown"]
    detail: str = Field(description="One line a person can read")
    clip_id: uuid.UUID | None = None
    creator_handle: str | None = None
    created_at: str | None = None
    generator: str | None = None
    clip_status: str | None = Field(default=None, description="The clip's status here (published, removed, …)")
    problems: list[str] = Field(default_factory=list, description="C2PA validation codes, when there were any")


class ReviewItemPublic(BaseModel):
    id: uuid.UUID
    clip_id: uuid.UUID
    kind: Literal["report", "flag", "appeal"]
    status: Literal["open", "claimed", "decided"]
    severity: int = Field(description="1 low .. 3 high; 4 after escalation")
    reasons: list[str]
    escalated: bool
    reach: int | None = Field(default=None, description="Creator's followers plus the clip's views")
    claimed_by: uuid.UUID | None
    claim_expires_at: datetime | None
    decision: str | None
    policy_reason: str | None
    created_at: datetime
    decided_at: datetime | None


class ReviewQueue(BaseModel):
    data: list[ReviewItemPublic]


class CreatorHistory(BaseModel):
    handle: str
    followers: int
    clips_published: int
    clips_removed: int
    clips_blocked: int
    reports_received: int


class ReviewItemDetail(ReviewItemPublic):
    """Everything a reviewer needs to decide. The media URLs need the reviewer's token;
    consoles show the clip blurred until the reviewer chooses to reveal it."""

    prompt: str
    clip_status: str
    creator: CreatorHistory
    safety_checks: list[dict[str, Any]]
    block_reasons: list[str]
    video_url: str
    poster_url: str
    audit: list[AuditEntryPublic]


class ReviewDecisionCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"decision": "remove", "policy_reason": "violence or gore", "note": "gore"}]}
    )
    decision: Literal["approve", "remove", "escalate"]
    policy_reason: PolicyReason
    note: str = Field(default="", max_length=500)


class AppealCreate(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"statement": "It is a cooking video, not violence."}]})
    statement: str = Field(min_length=1, max_length=500)


class AuditEntryPublic(BaseModel):
    id: int
    clip_id: uuid.UUID
    actor_kind: str
    actor_id: uuid.UUID | None
    action: str
    reason: str
    previous_state: str | None
    new_state: str | None
    created_at: datetime


class AuditPage(BaseModel):
    data: list[AuditEntryPublic]
    next_cursor: str | None = None


class QueueHealthPublic(BaseModel):
    depth_by_severity: dict[int, int]
    depth: int
    oldest_open_age_s: float | None
    decided_last_24h: int
    median_time_to_decision_s: float | None
