"""The ranking worker's ``user_taste`` table: its value format, how one interaction
advances an entry, and a reader for anyone outside the worker (the API).

Each entry is keyed by the user id (UTF-8, no quoting) and holds
:meth:`UserState.to_json` plus where in the log it stands::

    {"schema_version": 2, "vector": "<base64>" | null, "liked": [...], "avoid": ["<base64>", ...],
     "affinity": {author: score}, "version": n, "partition": p, "offset": o,
     "recent_events": "<base64>"}

Vectors are the float32 values, little-endian, in base64: exact, and a third of the
size of a list of decimals (an entry with a full see-less list was about 25 KB as
schema 1, with vectors as lists of floats, and encoding it was a large share of the
worker's time per record). Schema 1 entries are still read.

``partition``/``offset`` name the last ``interactions`` message applied to that user.
The worker skips a redelivered message at or below that offset, so at-least-once
delivery applies each interaction once; a reader that keeps applying the log to the
states it read starts each user after that offset. ``recent_events`` holds the event
ids of the user's last :data:`RECENT_EVENTS` interactions (16 bytes each, in base64):
a copy the API's outbox sent again comes at a later offset with the same event id, and
the entry, unlike the worker's memory, survives restarts and rebalances.

The table lives in Faust (memory store) and its compacted changelog topic
(:data:`core.topics.USER_TASTE`) is the durable copy: :func:`read_taste_table` reads
that topic up to the end offsets it finds at start, keeping the latest value per key
and dropping keys whose latest value is a tombstone.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from core.broker import read_to_end
from core.errors import RecordError
from core.records import Interaction
from core.topics import USER_TASTE
from ranking.signals import SignalWeights
from ranking.state import UserState, interact

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: vectors as lists of floats
#: Event ids an entry remembers (its user's latest interactions): 512 bytes of ids.
RECENT_EVENTS = 32


class TasteEntry(NamedTuple):
    state: UserState
    partition: int  # of the last interactions message applied to this user
    offset: int


@dataclass(frozen=True)
class ClipFacts:
    """What the taste update needs to know about a clip (the worker reads it from the
    SQL store). ``vector`` is the normalised embedding while the clip is live."""

    vector: np.ndarray | None
    duration_ms: int | None
    author_id: str | None


def pack_vector(v: np.ndarray) -> str:
    return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode("ascii")


def unpack_vector(text: Any) -> np.ndarray:
    if not isinstance(text, str):
        raise ValueError(f"a vector must be a base64 string, not {type(text).__name__}")
    raw = base64.b64decode(text, validate=True)
    if len(raw) % 4:
        raise ValueError(f"a vector of {len(raw)} bytes is not float32")
    v = np.frombuffer(raw, "<f4").astype(np.float32)
    if not np.isfinite(v).all():
        raise ValueError("a vector holds NaN or infinity")
    return v


def encode_entry(user: UserState, partition: int, offset: int, recent_events: str = "") -> dict[str, Any]:
    entry = {"schema_version": SCHEMA_VERSION, **user.to_json(pack_vector), "partition": partition, "offset": offset}
    if recent_events:
        entry["recent_events"] = recent_events
    return entry


def recent_events(value: Mapping[str, Any] | None) -> bytes:
    """The entry's ``recent_events`` as bytes (16 an id); none when absent or unreadable."""
    text = None if value is None else value.get("recent_events")
    if not isinstance(text, str):
        return b""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error: unreadable, so nothing is remembered
        return b""
    return raw[: len(raw) - len(raw) % 16]


def applied_lately(recent: bytes, event_id: uuid.UUID) -> bool:
    """Whether ``event_id`` is among an entry's :func:`recent_events`, the ids of the last
    :data:`RECENT_EVENTS` interactions it applied: a copy the API's outbox sent again
    arrives at a later offset, which the offset check does not catch, and the entry
    carries these ids through restarts and rebalances (a worker's own memory of them
    does not)."""
    wanted = event_id.bytes
    return any(recent[at : at + 16] == wanted for at in range(0, len(recent), 16))


def remember_event(recent: bytes, event_id: uuid.UUID) -> str:
    """The entry's ``recent_events`` once ``event_id`` is applied: the last
    :data:`RECENT_EVENTS` ids, 16 bytes each, oldest first, in base64."""
    return base64.b64encode((recent + event_id.bytes)[-16 * RECENT_EVENTS :]).decode("ascii")


def decode_entry(value: Mapping[str, Any]) -> TasteEntry:
    """A table value → TasteEntry, or RecordError saying what is wrong with it."""
    version = value.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise RecordError(f"user_taste: unknown schema_version {version!r}")
    try:
        if version == 2:
            vector = value.get("vector")
            value = {
                **value,
                "vector": None if vector is None else unpack_vector(vector),
                "avoid": [unpack_vector(v) for v in value.get("avoid", [])],
            }
        return TasteEntry(UserState.from_json(value), int(value["partition"]), int(value["offset"]))
    except (KeyError, TypeError, ValueError) as e:  # binascii.Error is a ValueError
        raise RecordError(f"user_taste: invalid entry: {e!r}") from e


def already_applied(value: Mapping[str, Any] | None, partition: int, offset: int) -> bool:
    """Whether the message at partition/offset is already in this entry.

    Offsets are only comparable within one partition; a user whose messages moved to
    another partition (the topic was repartitioned) starts a new sequence there.
    """
    if value is None or value.get("partition") != partition:
        return False
    try:
        return offset <= int(value["offset"])
    except (KeyError, TypeError, ValueError):  # unreadable: advance() starts the entry afresh
        return False


def advance(
    value: Mapping[str, Any] | None,
    rec: Interaction,
    clip: ClipFacts | None,
    partition: int,
    offset: int,
    weights: SignalWeights | None = None,
) -> dict[str, Any] | None:
    """The entry after applying ``rec`` (read at ``partition``/``offset``) to ``value``,
    or None when nothing changes: a redelivered message, an event the entry applied
    lately (sent again), or an interaction without a clip. A clip the store does not
    know (``clip`` None) still counts: the user's version and position move on, the
    taste vector does not."""
    recent = recent_events(value)
    if rec.clip_id is None or already_applied(value, partition, offset) or applied_lately(recent, rec.event_id):
        return None
    user = state_of(value, rec.user_id)
    apply_to(user, rec, clip, weights)
    return encode_entry(user, partition, offset, remember_event(recent, rec.event_id))


def state_of(value: Mapping[str, Any] | None, user_id: Any) -> UserState:
    """The UserState an entry holds; a fresh one for no entry or an unreadable one."""
    if value is None:
        return UserState()
    try:
        return decode_entry(value).state
    except RecordError as e:  # ranking fails open: a fresh start beats a user stuck in the DLQ
        log.warning("user %s: stored taste is unreadable, starting afresh: %s", user_id, e)
        return UserState()


def apply_to(user: UserState, rec: Interaction, clip: ClipFacts | None, weights: SignalWeights | None = None) -> None:
    """Apply one interaction to ``user`` in place (as :func:`advance` does)."""
    vector = None if clip is None else clip.vector
    if vector is not None and user.vector is not None and user.vector.shape != vector.shape:
        # The embedding model changed: the old taste lives in another space.
        user.vector, user.avoid = None, deque(maxlen=user.avoid.maxlen)
    interact(
        user,
        rec,
        vector,
        duration_ms=None if clip is None else clip.duration_ms,
        author=None if clip is None else clip.author_id,
        weights=weights or SignalWeights(),
    )


async def read_taste_table(
    bootstrap_servers: str, *, topic: str = USER_TASTE.name, timeout_s: float = 30.0
) -> dict[str, TasteEntry]:
    """Every user's latest entry in the changelog, up to the end offsets at the call.

    Raises BrokerError when the topic does not exist or cannot be read to those
    offsets within ``timeout_s``. A value that does not decode is logged and skipped
    (the previous value of that user, if any, is kept).
    """
    out: dict[str, TasteEntry] = {}
    async for m in read_to_end(bootstrap_servers, topic, timeout_s):
        _take(out, topic, m.key, m.value)
    return out


def _take(out: dict[str, TasteEntry], topic: str, key: bytes | None, value: bytes | None) -> None:
    if key is None:
        return
    user_id = key.decode("utf-8", "replace")
    if value is None:  # tombstone: the user's entry was deleted
        out.pop(user_id, None)
        return
    try:
        data = json.loads(value)
        if not isinstance(data, dict):
            raise RecordError(f"user_taste: value is a JSON {type(data).__name__}")
        out[user_id] = decode_entry(data)
    except (ValueError, RecordError) as e:
        log.warning("skipping an undecodable entry for user %s in %s: %s", user_id, topic, e)
