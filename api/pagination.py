"""Query parameters and cursor decoding shared by every paginated list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from sqlalchemy import and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from api.problems import ApiError
from ranking.cursor import InvalidCursor, KeysetCursor

LimitQ = Annotated[int, Query(ge=1, le=100, description="Items per page")]
CursorQ = Annotated[str | None, Query(max_length=500, description="next_cursor from the previous page")]


def decode_cursor(cursor: str | None) -> KeysetCursor | None:
    """The cursor a client sent back, or a 400 problem saying it is not one of ours."""
    try:
        return KeysetCursor.decode(cursor) if cursor else None
    except InvalidCursor as e:
        raise ApiError(400, "invalid-cursor", "Invalid cursor", str(e)) from e


def keyset_page(
    session: Session,
    stmt: Any,  # a Select of any columns
    at: InstrumentedAttribute[Any],
    id_: InstrumentedAttribute[Any],
    after: KeysetCursor | None,
    limit: int,
    *,
    scalars: bool = False,
) -> tuple[list[Any], str | None]:
    """One page of ``stmt`` newest first by (``at``, ``id_``), both selected by the
    statement: the rows after ``after`` (a decoded cursor) and the next page's cursor
    (None on the last page). Rows are Row tuples, or the first column's objects with ``scalars``.

    The cursor holds the last row's (``at``, ``id_``) values, read back from the rows
    by the columns' keys, so the page never skips or repeats rows that share a time."""
    if after is not None:
        stmt = stmt.where(or_(at < after.at, and_(at == after.at, id_ < after.id)))
    stmt = stmt.add_columns(at.label("_keyset_at"), id_.label("_keyset_id"))
    rows = list(session.execute(stmt.order_by(at.desc(), id_.desc()).limit(limit + 1)))
    more, rows = len(rows) > limit, rows[:limit]
    nxt = None
    if more and rows[-1]._keyset_at is not None:
        nxt = KeysetCursor(rows[-1]._keyset_at, rows[-1]._keyset_id).encode()
    page = [r[0] if scalars else tuple(r)[:-2] for r in rows]
    return page, nxt
