"""Opaque, tamper-evident-enough cursors for keyset pagination.

A cursor is the (timestamp, id) of the last item served (published_at and clip id
for the feed, follow time and user id for follower lists), base64url-encoded
JSON. Keyset pagination never skips or repeats an item when new clips arrive
between pages, which offset pagination would.
"""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from core.errors import ClipstreamError


class InvalidCursor(ClipstreamError):
    """The cursor was not produced by this API (or was damaged)."""


@dataclass(frozen=True)
class KeysetCursor:
    at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps({"t": self.at.isoformat(), "id": str(self.id)}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> KeysetCursor:
        try:
            padded = value + "=" * (-len(value) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode()))
            published_at = datetime.fromisoformat(data["t"])
            if published_at.tzinfo is None:
                raise ValueError("naive timestamp")
            return cls(at=published_at, id=uuid.UUID(data["id"]))
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidCursor(f"cursor {value[:40]!r} is not valid; start again without a cursor") from e
