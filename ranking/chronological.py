"""ChronologicalFeed: published clips, newest first (the feed before personalisation)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Clip
from ranking.cursor import KeysetCursor, keyset_rows


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
        return keyset_rows(session, stmt, Clip.published_at, Clip.id, cursor, limit, scalars=True)
