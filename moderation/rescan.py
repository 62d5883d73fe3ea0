"""Re-scan published clips with the current frame filter (``clipstream rescan``).

When concepts, thresholds or the CLIP model change, clips published under the old
ones are judged again:

* ``flag`` → a review item (the clip stays up until a reviewer removes it);
* ``block`` → taken down at once (``takedown`` on moderation.decisions, so feeds and
  the index drop it) and queued for review, where an approval restores it;
* every clip scanned gets the current model's embedding, so ranking sees one model.

Each clip is its own transaction and the job is idempotent: running it again opens no
second review item and takes nothing down twice. It walks clips in id order, so
``--after`` resumes an interrupted run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.cameos import take_down
from core.db.engine import session_scope
from core.db.models import Clip
from core.errors import NotFoundError
from core.media import LocalMediaStore
from core.records import utcnow
from core.review import audit, enqueue_flag, open_item
from moderation.frame_filter import FrameFilter, FrameFilterError

log = logging.getLogger(__name__)


@dataclass
class RescanReport:
    scanned: int = 0
    flagged: list[uuid.UUID] = field(default_factory=list)
    removed: list[uuid.UUID] = field(default_factory=list)
    errors: dict[uuid.UUID, str] = field(default_factory=dict)
    last_id: uuid.UUID | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"scanned {self.scanned} published clips in {self.seconds:.1f}s: "
            f"{len(self.flagged)} flagged for review, {len(self.removed)} taken down, {len(self.errors)} errors"
        )


def _ids(factory: sessionmaker[Session], after: uuid.UUID | None, page: int = 200) -> Iterator[uuid.UUID]:
    last = after
    while True:
        with factory() as session:
            stmt = select(Clip.id).where(Clip.status == "published").order_by(Clip.id).limit(page)
            if last is not None:
                stmt = stmt.where(Clip.id > last)
            ids = list(session.scalars(stmt))
        if not ids:
            return
        yield from ids
        last = ids[-1]


def count_published(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(Clip).where(Clip.status == "published")) or 0)


def rescan(
    factory: sessionmaker[Session],
    media: LocalMediaStore,
    frame_filter: FrameFilter,
    *,
    after: uuid.UUID | None = None,
    limit: int | None = None,
    dry_run: bool = False,
    progress: bool = False,
) -> RescanReport:
    report = RescanReport()
    started = time.perf_counter()
    total = count_published(factory)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=min(total, limit) if limit else total, desc="rescan", unit="clip")
    for clip_id in _ids(factory, after):
        if limit is not None and report.scanned >= limit:
            break
        report.scanned += 1
        report.last_id = clip_id
        if bar is not None:
            bar.update(1)
        with factory() as session:
            clip = session.get(Clip, clip_id)
            if clip is None or clip.status != "published":
                continue
            key = clip.video_key
        try:
            verdict = frame_filter.scan_video(media.path(key))
        except (FrameFilterError, NotFoundError, OSError, ValueError) as e:
            report.errors[clip_id] = str(e)
            log.warning("rescan: clip %s could not be scanned: %s", clip_id, e)
            continue
        if dry_run:
            if verdict.action == "flag":
                report.flagged.append(clip_id)
            elif verdict.action == "block":
                report.removed.append(clip_id)
            continue
        with session_scope(factory) as session:
            clip = session.get(Clip, clip_id, with_for_update=True)
            if clip is None or clip.status != "published":
                continue  # taken down meanwhile
            clip.embedding, clip.embedding_model = list(verdict.embedding), verdict.model
            clip.updated_at = utcnow()
            reasons = [f"re-scan: {r}" for r in verdict.reasons]
            if verdict.action == "block":
                take_down(session, clip, reasons)
                enqueue_flag(session, clip.id, reasons, severity=3)
                report.removed.append(clip_id)
            elif verdict.action == "flag":
                fresh = open_item(session, clip.id, "flag") is None
                enqueue_flag(session, clip.id, reasons)
                if fresh:
                    audit(session, clip.id, "automatic", "flag", reason="; ".join(reasons), previous_state="published")
                report.flagged.append(clip_id)
    if bar is not None:
        bar.close()
    report.seconds = time.perf_counter() - started
    return report
