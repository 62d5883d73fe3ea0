"""ChronologicalFeed: published clips, newest first (the feed before personalisation)."""

from __future__ import annotations

import uuid

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from core.db.models import Clip
from ranking.cursor import KeysetCursor


class ChronologicalFeed:
    """Every published clip, newest first, by keyset pagination on (published_at, id).

    Blocked and not-yet-moderated clips never appear: only status ``published`` is read.
    Authors the viewer blocked, was blocked by, or muted are left out.
    """

    def page(
        self,
        session: Session,
        limit: int,
        cursor: KeysetCursor | None = None,
        hidden_authors: set[uuid.UUID] | frozenset[uuid.UUID] = frozenset(),
        parent_clip_id: uuid.UUID | None = None,
    ) -> tuple[list[Clip], KeysetCursor | None]:
        stmt = select(Clip).where(Clip.status == "published")
        if parent_clip_id is not None:
            stmt = stmt.where(Clip.parent_clip_id == parent_clip_id)
        if hidden_authors:
            stmt = stmt.where(Clip.user_id.not_in(hidden_authors))
        if cursor is not None:
            stmt = stmt.where(
                or_(
                    Clip.published_at < cursor.at,
                    and_(Clip.published_at == cursor.at, Clip.id < cursor.id),
                )
            )
        stmt = stmt.order_by(Clip.published_at.desc(), Clip.id.desc()).limit(limit + 1)
        rows = list(session.scalars(stmt))
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        next_cursor = KeysetCursor(last.published_at, last.id) if more and last and last.published_at else None
        return rows, next_cursor
