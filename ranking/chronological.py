"""ChronologicalFeed: published clips, newest first (the feed before personalisation)."""

from __future__ import annotations

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from core.db.models import Clip
from ranking.cursor import FeedCursor


class ChronologicalFeed:
    """Every published clip, newest first, by keyset pagination on (published_at, id).

    Blocked and not-yet-moderated clips never appear: only status ``published`` is read.
    """

    def page(
        self, session: Session, limit: int, cursor: FeedCursor | None = None
    ) -> tuple[list[Clip], FeedCursor | None]:
        stmt = select(Clip).where(Clip.status == "published")
        if cursor is not None:
            stmt = stmt.where(
                or_(
                    Clip.published_at < cursor.published_at,
                    and_(Clip.published_at == cursor.published_at, Clip.id < cursor.clip_id),
                )
            )
        stmt = stmt.order_by(Clip.published_at.desc(), Clip.id.desc()).limit(limit + 1)
        rows = list(session.scalars(stmt))
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        next_cursor = FeedCursor(last.published_at, last.id) if more and last and last.published_at else None
        return rows, next_cursor
