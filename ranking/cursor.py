"""Opaque, tamper-evident-enough cursors for keyset pagination.

A cursor is the (timestamp, id) of the last item served (published_at and clip id
for the feed, follow time and user id for follower lists), base64url-encoded
JSON. Keyset pagination never skips or repeats an item when new clips arrive
between pages, which offset pagination would.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.errors import ClipstreamError


class InvalidCursor(ClipstreamError):
    """The cursor was not produced by this API (or was damaged)."""


@dataclass(frozen=True)
class KeysetCursor:
    at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        return _pack({"t": self.at.isoformat(), "id": str(self.id)})

    @classmethod
    def decode(cls, value: str) -> KeysetCursor:
        try:
            data = _unpack(value)
            published_at = datetime.fromisoformat(data["t"])
            if published_at.tzinfo is None:
                raise ValueError("naive timestamp")
            return cls(at=published_at, id=uuid.UUID(data["id"]))
        except (ValueError, KeyError, TypeError) as e:
            raise _invalid(value) from e


def _pack(data: dict[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _unpack(value: str) -> dict[str, Any]:
    padded = value + "=" * (-len(value) % 4)
    data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    if not isinstance(data, dict):
        raise ValueError("not an object")
    return data


def _invalid(value: str) -> InvalidCursor:
    return InvalidCursor(f"cursor {value[:40]!r} is not valid; start again without a cursor")


SERVED_MAX = 200  # clips a feed cursor remembers (10 pages of 20)


def _probe(clip_id: str) -> str | None:
    """What membership is tested on: 48 random bits of the id (its first 12 hex digits;
    clip ids are uuid4 or uuid5, both random there), sliced, not hashed, because the
    feed asks this for every candidate. None for an id that is not a uuid."""
    return clip_id[:8] + clip_id[9:13] if len(clip_id) == 36 and clip_id[8] == "-" else None


def served_key(clip_id: str) -> str:
    """A short, stable stand-in for a clip id inside a cursor (8 characters)."""
    probe = _probe(clip_id)
    raw = bytes.fromhex(probe) if probe is not None else hashlib.sha256(clip_id.encode()).digest()[:6]
    return base64.urlsafe_b64encode(raw).decode()


def _unkey(key: str) -> str:
    raw = base64.urlsafe_b64decode(key)
    return raw.hex()


class ServedSet:
    """The clips served earlier in this feed session, as a cursor carries them;
    ``clip_id in served`` is what the feed's seen filter asks."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.keys: list[str] = list(keys)[-SERVED_MAX:]
        self._set = {_unkey(k) for k in self.keys}
        self._hashed = set(self.keys)  # for ids that are not uuids (tests, imports)

    def __contains__(self, clip_id: object) -> bool:
        if not isinstance(clip_id, str):
            return False
        probe = _probe(clip_id)
        return probe in self._set if probe is not None else served_key(clip_id) in self._hashed

    def __len__(self) -> int:
        return len(self.keys)

    def plus(self, clip_ids: Iterable[str]) -> ServedSet:
        return ServedSet([*self.keys, *(served_key(c) for c in clip_ids)])


@dataclass(frozen=True)
class FeedCursor:
    """Where a personalised feed session stands: the page number and the clips it has
    served. A ranked feed has no stable order to take a keyset from, so the next page
    is "the best clips not served yet", which never repeats a clip within a session."""

    page: int
    served: ServedSet

    def encode(self) -> str:
        return _pack({"p": self.page, "s": "".join(self.served.keys)})

    @classmethod
    def decode(cls, value: str) -> FeedCursor:
        try:
            data = _unpack(value)
            page, packed = int(data["p"]), str(data["s"])
            if page < 1 or len(packed) % 8 or len(packed) > 8 * SERVED_MAX:
                raise ValueError("bad page or served list")
            return cls(page=page, served=ServedSet(packed[i : i + 8] for i in range(0, len(packed), 8)))
        except (ValueError, KeyError, TypeError) as e:
            raise _invalid(value) from e


def is_feed_cursor(value: str) -> bool:
    """Whether ``value`` is a :class:`FeedCursor` (as opposed to a keyset cursor)."""
    try:
        return "p" in _unpack(value)
    except (ValueError, TypeError):
        return False


def keyset_rows(
    session: Session,
    stmt: Any,  # a Select of any columns
    at: InstrumentedAttribute[Any],
    id_: InstrumentedAttribute[Any],
    after: KeysetCursor | None,
    limit: int,
    *,
    scalars: bool = False,
) -> tuple[list[Any], KeysetCursor | None]:
    """One page of ``stmt``, newest first by (``at``, ``id_``): the rows after ``after``
    and the cursor of the next page (None on the last one). Rows are the statement's
    Row tuples, or its first column's objects with ``scalars``.

    Ordering by the id after the time means rows that share a time are neither
    skipped nor repeated across pages; a last row without a time ends the list."""
    if after is not None:
        stmt = stmt.where(or_(at < after.at, and_(at == after.at, id_ < after.id)))
    stmt = stmt.add_columns(at.label("_keyset_at"), id_.label("_keyset_id"))
    rows = list(session.execute(stmt.order_by(at.desc(), id_.desc()).limit(limit + 1)))
    more, rows = len(rows) > limit, rows[:limit]
    nxt = None
    if more and rows[-1]._keyset_at is not None:
        nxt = KeysetCursor(rows[-1]._keyset_at, rows[-1]._keyset_id)
    return [r[0] if scalars else tuple(r)[:-2] for r in rows], nxt
