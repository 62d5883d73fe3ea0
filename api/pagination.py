"""Query parameters and cursor decoding shared by every paginated list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from sqlalchemy.orm import InstrumentedAttribute, Session

from api.problems import ApiError
from ranking.cursor import InvalidCursor, KeysetCursor, keyset_rows

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
    stmt: Any,
    at: InstrumentedAttribute[Any],
    id_: InstrumentedAttribute[Any],
    after: KeysetCursor | None,
    limit: int,
    *,
    scalars: bool = False,
) -> tuple[list[Any], str | None]:
    """:func:`ranking.cursor.keyset_rows` with the next cursor encoded for the client."""
    rows, nxt = keyset_rows(session, stmt, at, id_, after, limit, scalars=scalars)
    return rows, nxt.encode() if nxt is not None else None
