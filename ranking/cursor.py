"""Opaque, tamper-evident-enough cursors for keyset pagination.

A cursor is the (published_at, clip id) of the last item served, base64url-encoded
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
class FeedCursor:
    published_at: datetime
    clip_id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps({"t": self.published_at.isoformat(), "id": str(self.clip_id)}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> FeedCursor:
        try:
            padded = value + "=" * (-len(value) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode()))
            published_at = datetime.fromisoformat(data["t"])
            if published_at.tzinfo is None:
                raise ValueError("naive timestamp")
            return cls(published_at=published_at, clip_id=uuid.UUID(data["id"]))
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidCursor(f"cursor {value[:40]!r} is not valid; start again without a cursor") from e
