from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, cast

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentUserDep, PolicyDep, RelayDep, SessionDep, SettingsDep, user_rate_limit
from api.problems import RATE_LIMITED, ApiError, Problem
from api.schemas import PromptCreate, PromptModerationPublic, PromptPublic, PromptStatusEvent
from core import cameos
from core.db.models import Clip, Prompt, PromptEvent, User
from core.errors import NotFoundError
from core.logging import log_context
from core.outbox import enqueue
from core.records import (
    GenerationStatus,
    ModerationReason,
    PromptModeration,
    PromptStatusValue,
    PromptSubmitted,
    utcnow,
)
from core.topics import GENERATION_STATUS, PROMPTS
from generation.capabilities import supports_cameos

router = APIRouter(prefix="/v1/prompts", tags=["prompts"])

log = logging.getLogger(__name__)


def cast_handles(session: Session, prompt_id: uuid.UUID) -> list[str]:
    return [c.handle for c in cameos.cameo_casts(session, prompt_id)]


def prompt_public(
    prompt: Prompt, timeline: list[PromptEvent] | None = None, handles: list[str] | None = None
) -> PromptPublic:
    return PromptPublic(
        id=prompt.id,
        status=cast(PromptStatusValue, prompt.status),
        reason=prompt.reason,
        text=prompt.text,
        seed=prompt.seed,
        clip_id=prompt.clip_id if prompt.status == "published" else None,
        parent_clip_id=prompt.parent_clip_id,
        moderation=PromptModerationPublic.model_validate(prompt.moderation),
        cast=handles or [],
        created_at=prompt.created_at,
        updated_at=prompt.updated_at,
        timeline=[
            PromptStatusEvent(status=e.status, reason=e.reason, occurred_at=e.occurred_at) for e in timeline or []
        ],
    )


def enforce_daily_quota(session: Session, user_id: uuid.UUID, quota: int) -> None:
    """429 once a user has had ``quota`` prompts accepted in the last 24 hours;
    Retry-After says when the oldest of them leaves the window."""
    since = utcnow() - timedelta(days=1)
    recent = list(
        session.scalars(
            select(Prompt.created_at)
            .where(Prompt.user_id == user_id, Prompt.created_at > since, Prompt.status != "rejected")
            .order_by(Prompt.created_at)
            .limit(quota)
        )
    )
    if len(recent) >= quota:
        wait = max(1, math.ceil((recent[0] + timedelta(days=1) - utcnow()).total_seconds()))
        raise ApiError(
            429,
            "generation-quota",
            "Daily generation quota reached",
            f"you have generated {quota} clips in the last 24 hours; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )


def default_seed(prompt_id: uuid.UUID) -> int:
    return prompt_id.int % (2**31 - 1)


def _first_with_key(
    session: Session, user: User, key: str | None, response: Response, error: IntegrityError
) -> PromptPublic:
    """After a unique-key failure: the prompt the same Idempotency-Key stored first."""
    session.rollback()
    existing = None
    if key is not None:
        existing = session.scalar(select(Prompt).where(Prompt.user_id == user.id, Prompt.idempotency_key == key))
    if existing is None:
        raise ApiError(409, "conflict", "Conflict", "the prompt could not be stored; retry") from error
    response.headers["Location"] = f"/v1/prompts/{existing.id}"
    return prompt_public(existing, handles=cast_handles(session, existing.id))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PromptPublic,
    dependencies=[Depends(user_rate_limit("prompts"))],
    responses={
        429: RATE_LIMITED,
        401: {"model": Problem},
        403: {"model": Problem, "description": "The prompt casts someone who does not consent (cameos)"},
        404: {"model": Problem, "description": "Remix parent or a cast @handle not found"},
        422: {"model": Problem, "description": "Invalid prompt"},
    },
)
def submit_prompt(
    body: PromptCreate,
    user: CurrentUserDep,
    session: SessionDep,
    settings: SettingsDep,
    policy: PolicyDep,
    relay: RelayDep,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(max_length=200, description="Retries with the same key return the first prompt")
    ] = None,
) -> PromptPublic:
    """Submit a prompt to be rendered (needs a bearer token).

    The prompt is checked against the prompt policy first: a prompt that the policy
    blocks is stored as ``rejected`` with its reasons and never reaches a GPU. An
    accepted prompt is ``queued``; follow it at ``GET /v1/prompts/{id}``. The prompt
    row and its events are written in one transaction (outbox), so an accepted prompt
    is never lost, even while the broker is down.

    Writing someone's @handle casts them (at most two people). Each must have
    registered a cameo and allow you to cast them, and the prompt must respect their
    restrictions; otherwise the request is refused with 403 and the reason, and nothing
    is stored or rendered. Consent is checked again just before the clip is published.
    """
    idempotency_key = idempotency_key or None  # an empty header is no key
    if idempotency_key:
        existing = session.scalar(
            select(Prompt).where(Prompt.user_id == user.id, Prompt.idempotency_key == idempotency_key)
        )
        if existing is not None:
            response.headers["Location"] = f"/v1/prompts/{existing.id}"
            return prompt_public(existing, handles=cast_handles(session, existing.id))
    if body.parent_clip_id is not None:
        parent = session.get(Clip, body.parent_clip_id)
        if parent is None or parent.status != "published":
            raise NotFoundError(f"no published clip {body.parent_clip_id} to remix")

    members = cameos.resolve_cast(session, user, body.text)
    if members and not supports_cameos(settings.generation):
        raise ApiError(
            422,
            "cameos-unavailable",
            "Cameos unavailable",
            f"the {settings.generation.backend!r} generation backend cannot render cameos on this deployment",
        )
    enforce_daily_quota(session, user.id, settings.generation.daily_quota)
    decision = policy.check(body.text)
    moderation = PromptModeration(
        action=decision.action,
        policy_version=decision.policy_version,
        reasons=[ModerationReason(category=r.category, term=r.term, action=r.action) for r in decision.reasons],
    )
    prompt_id = uuid.uuid4()
    seed = body.seed if body.seed is not None else default_seed(prompt_id)
    accepted = decision.action == "allow"
    now = utcnow()
    reason = None if accepted else "prompt policy: " + "; ".join(r.as_text() for r in decision.reasons)
    prompt = Prompt(
        id=prompt_id,
        user_id=user.id,
        text=body.text,
        seed=seed,
        status="queued" if accepted else "rejected",
        reason=reason,
        parent_clip_id=body.parent_clip_id,
        moderation=moderation.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        created_at=now,
        updated_at=now,
    )
    session.add(prompt)
    try:
        session.flush()
    except IntegrityError as e:  # the same Idempotency-Key raced in from a parallel retry
        return _first_with_key(session, user, idempotency_key, response, e)
    cameos.record_cast(session, prompt_id, user.id, members)
    status_event = GenerationStatus(prompt_id=prompt_id, status=prompt.status, reason=reason, occurred_at=now)  # type: ignore[arg-type]
    session.add(
        PromptEvent(
            event_id=status_event.event_id, prompt_id=prompt_id, status=prompt.status, reason=reason, occurred_at=now
        )
    )
    if accepted:
        enqueue(
            session,
            PROMPTS,
            PromptSubmitted(
                prompt_id=prompt_id,
                user_id=user.id,
                creator_handle=user.handle,
                text=body.text,
                seed=seed,
                parent_clip_id=body.parent_clip_id,
                moderation=moderation,
                cameos=[member.record() for member in members],
                occurred_at=now,
            ),
        )
    enqueue(session, GENERATION_STATUS, status_event)
    try:
        session.commit()
    except IntegrityError as e:  # the same Idempotency-Key raced in from a parallel retry
        return _first_with_key(session, user, idempotency_key, response, e)
    if relay is not None:
        relay.notify()
    with log_context(prompt_id=prompt.id):
        log.info("prompt accepted")
    response.headers["Location"] = f"/v1/prompts/{prompt.id}"
    return prompt_public(prompt, handles=cast_handles(session, prompt.id))


@router.get("/{prompt_id}", response_model=PromptPublic, responses={401: {"model": Problem}, 404: {"model": Problem}})
def get_prompt(prompt_id: uuid.UUID, user: CurrentUserDep, session: SessionDep) -> PromptPublic:
    """A prompt's status and timeline. Only its author may read it."""
    prompt = session.get(Prompt, prompt_id)
    if prompt is None or prompt.user_id != user.id:  # 404, not 403: do not reveal others' prompts
        raise NotFoundError(f"no prompt {prompt_id}")
    timeline = list(
        session.scalars(select(PromptEvent).where(PromptEvent.prompt_id == prompt_id).order_by(PromptEvent.occurred_at))
    )
    return prompt_public(prompt, timeline, cast_handles(session, prompt_id))


TERMINAL_STATUSES = {"published", "rejected", "failed"}


@router.get(
    "/{prompt_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "`status` events with the prompt as JSON"},
        401: {"model": Problem},
        404: {"model": Problem},
    },
)
async def prompt_events(
    prompt_id: uuid.UUID,
    request: Request,
    user: CurrentUserDep,
    session: SessionDep,
    timeout_s: Annotated[float, Query(gt=0, le=300, description="Close the stream after this long")] = 300,
) -> StreamingResponse:
    """Live status of a prompt as server-sent events (only its author may read it).

    Sends a `status` event with the prompt (as `GET /v1/prompts/{id}` returns it)
    now and on every change, and ends after a final status (published, rejected,
    failed) or after `timeout_s`."""
    factory = request.app.state.sessionmaker

    def snapshot() -> PromptPublic | None:
        with factory() as s:
            prompt = s.get(Prompt, prompt_id)
            if prompt is None or prompt.user_id != user.id:
                return None
            timeline = list(
                s.scalars(
                    select(PromptEvent).where(PromptEvent.prompt_id == prompt_id).order_by(PromptEvent.occurred_at)
                )
            )
            return prompt_public(prompt, timeline, cast_handles(s, prompt_id))

    first = await run_in_threadpool(snapshot)
    await run_in_threadpool(session.close)
    if first is None:
        raise NotFoundError(f"no prompt {prompt_id}")

    async def stream() -> AsyncIterator[str]:
        deadline = time.monotonic() + timeout_s
        current: PromptPublic | None = first
        last = ""
        while current is not None:
            body = current.model_dump_json()
            if body != last:
                yield f"event: status\ndata: {body}\n\n"
                last = body
            if current.status in TERMINAL_STATUSES or time.monotonic() >= deadline or await request.is_disconnected():
                return
            await asyncio.sleep(0.25)
            current = await run_in_threadpool(snapshot)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
