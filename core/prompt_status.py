"""A prompt's status, which only moves forward (the materializer and reviewers move it)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from core.db.models import Prompt
from core.records import STATUS_RANK, utcnow

log = logging.getLogger(__name__)

TERMINAL = {"published", "rejected", "failed"}


def advance_prompt(
    session: Session, prompt_id: Any, status: str, *, reason: str | None = None, clip_id: Any = None
) -> bool:
    """Move a prompt forward to ``status``; never backwards, never out of a terminal state."""
    prompt = session.get(Prompt, prompt_id, with_for_update=True)
    if prompt is None:
        log.warning("status %s for unknown prompt %s ignored", status, prompt_id)
        return False
    if clip_id is not None and prompt.clip_id is None:
        prompt.clip_id = clip_id
    if prompt.status in TERMINAL or STATUS_RANK[status] <= STATUS_RANK[prompt.status]:
        return False
    prompt.status = status
    if reason is not None:
        prompt.reason = reason
    prompt.updated_at = utcnow()
    return True
