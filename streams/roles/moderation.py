"""Moderation role: clips.generated → checks → clips.published, clips.flagged or clips.blocked.

The checks (moderation.clip_checks): the prompt against the current policy, the file's
hash against the generator's record, a full decode, and the format; then every clip
must carry a valid provenance manifest signed here for that clip, and a clip that
casts people (cameos) is published only if each of them still consents, read from the
SQL store just before publishing.

Then the CLIP frame filter (moderation.frame_filter) looks at what the clip shows:
a concept past its ``block`` threshold blocks it, past ``flag`` holds it back for
human review (clips.flagged), otherwise it is published with its CLIP embedding on
clips.published for ranking.

Moderation fails closed: a check that cannot run blocks the clip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from sqlalchemy.orm import Session, sessionmaker

from core.cameos import recheck
from core.db import make_engine, make_sessionmaker
from core.errors import NotFoundError
from core.media import LocalMediaStore
from core.records import (
    ClipBlocked,
    ClipFlagged,
    ClipGenerated,
    ClipPublished,
    ConceptScore,
    PromptStatusValue,
    Record,
    SafetyCheck,
)
from core.settings import Settings
from core.topics import CLIPS_BLOCKED, CLIPS_FLAGGED, CLIPS_GENERATED, CLIPS_PUBLISHED
from generation.provenance import credentials_from, verify_video
from moderation.clip_checks import CheckResult, ClipExpectations, ClipVerdict, check_generated_clip
from moderation.frame_filter import FrameFilter, FrameFilterError, FrameVerdict, frame_filter_for
from moderation.prompt_policy import PromptPolicy, load_prompt_policy
from streams.app import RecordSender, derived_event_id
from streams.errors import ErrorPolicy, register_agent

log = logging.getLogger(__name__)


def verdict_for(
    rec: ClipGenerated, store: LocalMediaStore, policy: PromptPolicy, keep: list[Any] | None = None
) -> ClipVerdict:
    expected = ClipExpectations(
        width=rec.media.width,
        height=rec.media.height,
        frame_count=rec.media.frame_count,
        fps=rec.media.fps,
        video_sha256=rec.media.sha256,
    )
    try:
        path = store.path(rec.media.video_key)
    except NotFoundError as e:
        return ClipVerdict(action="block", checks=(CheckResult("media_integrity", False, str(e)),))
    return check_generated_clip(rec.text, path, expected, policy, keep)


def cameo_verdict(factory: sessionmaker[Session], rec: ClipGenerated) -> CheckResult:
    """Consent of everyone the clip casts, checked again against the SQL store."""
    with factory() as session:
        problems = recheck(session, rec.prompt_id, rec.user_id, rec.text, rec.cameos)
    if problems:
        return CheckResult("cameo_consent", False, "; ".join(problems))
    handles = ", ".join("@" + c.handle for c in rec.cameos)
    return CheckResult("cameo_consent", True, f"{handles} still consent")


class ModerationHandler:
    def __init__(self, settings: Settings, sender: RecordSender) -> None:
        self.settings = settings
        self.sender = sender
        self.store = LocalMediaStore(settings.media.root)
        self.policy = load_prompt_policy()
        self._factory: sessionmaker[Session] | None = None
        self.trust_anchors = credentials_from(settings).trust_anchors_pem
        self.frame_filter: FrameFilter | None = None
        options = settings.moderation.frame_filter
        if options.enabled:
            import torch

            torch.set_num_threads(options.threads)
            # Loaded at start-up: a model that cannot load stops the worker loudly
            # instead of blocking (or passing) every clip.
            self.frame_filter = frame_filter_for(options)

    def _verdict(self, rec: ClipGenerated) -> tuple[ClipVerdict, FrameVerdict | None]:
        decoded: list[Any] = []  # the clip checks' decoded frames, for the frame filter
        verdict = self._media_verdict(rec, decoded)
        provenance = self._provenance(rec)
        checks = (*verdict.checks, provenance)
        if verdict.action != "publish" or not provenance.passed:
            return ClipVerdict(action="block", checks=checks), None
        if self.frame_filter is None:
            return ClipVerdict(action="publish", checks=checks), None
        try:
            # The checks passed, so they decoded every frame at the declared rate.
            frames = self.frame_filter.scan_frames(self.frame_filter.sample(decoded, rec.media.fps))
        except (FrameFilterError, OSError, NotFoundError, ValueError) as e:  # fail closed
            failed = CheckResult("frame_safety", False, f"frame filter could not run: {e}")
            return ClipVerdict(action="block", checks=(*checks, failed)), None
        check = CheckResult("frame_safety", frames.action == "publish", frames.detail, tuple(frames.scores.items()))
        return ClipVerdict(action=frames.action, checks=(*checks, check)), frames

    def _provenance(self, rec: ClipGenerated) -> CheckResult:
        """The file carries a manifest signed here, for this clip (fails closed)."""
        try:
            result = verify_video(self.store.path(rec.media.video_key), self.trust_anchors)
        except (OSError, NotFoundError) as e:
            return CheckResult("provenance", False, f"provenance could not be checked: {e}")
        if result.verdict != "made_here" or result.claim is None:
            return CheckResult("provenance", False, f"provenance: {result.detail}")
        if result.claim.clip_id != str(rec.clip_id):
            return CheckResult("provenance", False, f"provenance manifest names clip {result.claim.clip_id}")
        return CheckResult("provenance", True, f"signed C2PA manifest: {result.detail}")

    def _media_verdict(self, rec: ClipGenerated, keep: list[Any] | None = None) -> ClipVerdict:
        if rec.cameos:
            if self._factory is None:
                self._factory = make_sessionmaker(make_engine(self.settings.database_url))
            consent = cameo_verdict(self._factory, rec)
            if not consent.passed:  # no point decoding a clip that may not be published
                return ClipVerdict(action="block", checks=(consent,))
            verdict = verdict_for(rec, self.store, self.policy, keep)
            return ClipVerdict(action=verdict.action, checks=(*verdict.checks, consent))
        return verdict_for(rec, self.store, self.policy, keep)

    async def __call__(self, rec: ClipGenerated, message: Any) -> None:
        await self.sender.send_status(rec.event_id, rec.prompt_id, "moderating", clip_id=rec.clip_id)
        started = time.perf_counter()
        # PyAV decoding releases the GIL for most of its work; a thread is enough here.
        verdict, frames = await asyncio.wait_for(
            asyncio.to_thread(self._verdict, rec), self.settings.workers.moderation_timeout_s
        )
        stage_ms = int((time.perf_counter() - started) * 1000)
        checks = [
            SafetyCheck(
                name=c.name,
                passed=c.passed,
                detail=c.detail,
                scores=[ConceptScore(concept=k, score=v) for k, v in c.scores],
            )
            for c in verdict.checks
        ]
        clip: dict[str, Any] = rec.model_dump(exclude={"event_id", "occurred_at", "schema_version"})
        clip["embedding"] = list(frames.embedding) if frames else None
        clip["embedding_model"] = frames.model if frames else None
        record: Record
        status: PromptStatusValue
        reason: str | None = None
        if verdict.action == "publish":
            topic, status = CLIPS_PUBLISHED, "published"
            record = ClipPublished(**clip, event_id=derived_event_id(rec.event_id, topic.name), checks=checks)
        elif verdict.action == "flag":
            reasons = list(frames.reasons) if frames else ["held for review"]
            topic, status, reason = CLIPS_FLAGGED, "in_review", "; ".join(reasons)
            record = ClipFlagged(
                **clip, event_id=derived_event_id(rec.event_id, topic.name), reasons=reasons, checks=checks
            )
        else:
            reasons = list(verdict.reasons) or ["blocked by moderation"]
            topic, status, reason = CLIPS_BLOCKED, "rejected", "; ".join(reasons)
            record = ClipBlocked(
                event_id=derived_event_id(rec.event_id, topic.name),
                clip_id=rec.clip_id,
                prompt_id=rec.prompt_id,
                user_id=rec.user_id,
                reasons=reasons,
                checks=checks,
            )
        await self.sender.send(topic, record)
        await self.sender.send_status(
            rec.event_id, rec.prompt_id, status, clip_id=rec.clip_id, reason=reason, stage_ms=stage_ms
        )
        log.info("%s in %d ms%s", verdict.action, stage_ms, f": {reason}" if reason else "")

    async def give_up(self, rec: ClipGenerated, exc: BaseException) -> None:
        await self.sender.send_status(
            rec.event_id, rec.prompt_id, "failed", clip_id=rec.clip_id, reason=f"moderation could not run: {exc}"
        )


def register(app: faust.App, settings: Settings) -> ErrorPolicy[Any]:
    sender = RecordSender(app)
    handler = ModerationHandler(settings, sender)
    return register_agent(
        app, CLIPS_GENERATED, settings, handler, name="moderate", sender=sender, on_give_up=handler.give_up
    )
