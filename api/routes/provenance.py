"""Provenance: was this video made here, by whom, and is it unchanged?"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import SessionDep, ip_rate_limit
from api.problems import RATE_LIMITED, ApiError, Problem
from api.schemas import ProvenanceReport
from core.db.models import Clip
from generation.provenance import verify_video

router = APIRouter(prefix="/v1/provenance", tags=["provenance"])
#: Clips are a few MB; a verifier should not be a way to upload anything larger.
MAX_VERIFY_BYTES = 100 * 1024 * 1024


@router.post(
    "/verify",
    response_model=ProvenanceReport,
    responses={413: {"model": Problem}, 429: RATE_LIMITED},
    dependencies=[Depends(ip_rate_limit("verify"))],
)
async def verify(
    request: Request,
    session: SessionDep,
    file: Annotated[UploadFile, File(description="An MP4 to check (≤ 100 MB)")],
) -> ProvenanceReport:
    """Check a video's signed C2PA manifest (anyone may call this).

    `made_here` means the file carries a manifest signed with Clipstream's key for a
    clip made here, and not one byte has changed since: the answer names the creator
    and the time. Anything else — an unsigned file, one signed by someone else, one
    changed after signing — is `unknown`, with the reason."""
    raw = await file.read(MAX_VERIFY_BYTES + 1)
    if len(raw) > MAX_VERIFY_BYTES:
        raise ApiError(413, "file-too-large", "File too large", "the file is larger than the 100 MB limit")
    trust = request.app.state.provenance_trust
    result = await run_in_threadpool(verify_video, raw, trust)
    report = ProvenanceReport(verdict=result.verdict, detail=result.detail, problems=list(result.problems))
    if result.claim is not None:
        claim = result.claim
        report.clip_id = uuid.UUID(claim.clip_id)
        report.creator_handle = claim.creator_handle
        report.created_at = claim.created_at
        report.generator = f"{claim.generator} {claim.generator_version}"
        clip = await run_in_threadpool(session.get, Clip, report.clip_id)
        report.clip_status = clip.status if clip is not None else None
    return report
