"""Snapshots of a replica's ranking state, so a restart catches up from where it was.

A snapshot is a folder: the FAISS index with its vectors (``ClipIndex.save``) and one
gzipped JSON file with everything else — the catalogue (embeddings come back from the
index), clips held for review, windowed engagement, users (taste, seen, likes, "see
less", affinity), the event ids applied lately (an interaction sent twice, one copy on
each side of the snapshot's positions, still counts once) — plus the log position of
every partition the tail reads. It is written to a temporary folder and renamed into
place, so a crash mid-write leaves the previous snapshot whole. A snapshot that cannot
be read is ignored with a warning: the replica then replays the log from the
beginning, which is slower but loses nothing.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ranking.catalog import ClipInfo
from ranking.engagement import ClipCounts
from ranking.index import ClipIndex, ClipIndexError, swap_into_place
from ranking.state import RankingState, RecentIds, UserState

log = logging.getLogger(__name__)

VERSION = 1


def _info(info: ClipInfo, with_embedding: bool) -> dict[str, Any]:
    # Field by field: dataclasses.asdict deep-copies the embedding, and a snapshot of
    # 100k clips spent seconds there with the state locked.
    return {
        "clip_id": info.clip_id,
        "author_id": info.author_id,
        "published_at": info.published_at,
        "duration_ms": info.duration_ms,
        "cast": list(info.cast),
        "parent_clip_id": info.parent_clip_id,
        "embedding": info.embedding.tolist() if with_embedding and info.embedding is not None else None,
    }


def _from_info(d: dict[str, Any]) -> ClipInfo:
    emb = d.get("embedding")
    return ClipInfo(
        clip_id=d["clip_id"],
        author_id=d["author_id"],
        published_at=float(d["published_at"]),
        duration_ms=int(d["duration_ms"]),
        cast=tuple(d.get("cast", ())),
        parent_clip_id=d.get("parent_clip_id"),
        embedding=None if emb is None else np.asarray(emb, np.float32),
    )


def save_snapshot(
    state: RankingState, positions: Mapping[str, int] | Callable[[], Mapping[str, int]], folder: Path
) -> None:
    """Write ``state`` and the log ``positions`` it reflects (a mapping, or a function
    read under the state's lock, so both agree). The lock is held only while the index
    is written and the state copied into plain values; the JSON is encoded and
    compressed after it (feed requests wait for the lock)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ranking-", dir=folder.parent))
    try:
        with state.lock:
            positions = dict(positions() if callable(positions) else positions)
            state.catalog.index.position = dict(positions)
            state.catalog.index.save(tmp / "index")
            body = {
                "version": VERSION,
                "positions": positions,
                "applied": state.applied,
                "catalog": [_info(c, False) for c in state.catalog.infos()],
                "held": [_info(c, True) for c in state.held()],
                "durations": dict(state.durations),
                "authors": dict(state.authors),
                "engagement": {cid: c.to_json() for cid, c in state.engagement.items()},
                "users": {uid: {**u.to_json(), "seen": list(u.seen)} for uid, u in state.users.items()},
                "seeded": {uid: list(at) for uid, at in state.seeded.items()},
            }
            recent = state.recent_events.copy()
        body["recent_events"] = base64.b64encode(recent.to_bytes()).decode("ascii")
        with gzip.open(tmp / "state.json.gz", "wt", compresslevel=3) as f:
            json.dump(body, f, separators=(",", ":"))
        swap_into_place(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_snapshot(folder: Path, dim: int) -> tuple[RankingState, dict[str, int]] | None:
    """The state and positions of the snapshot in ``folder``; None when there is none
    or it cannot be used (then the caller replays the log from the beginning)."""
    folder = Path(folder)
    if not (folder / "state.json.gz").exists():
        return None
    try:
        index = ClipIndex.load(folder / "index")
        if index.dim != dim:
            raise ClipIndexError(f"snapshot index has dimension {index.dim}, settings say {dim}")
        with gzip.open(folder / "state.json.gz", "rt") as f:
            body = json.load(f)
        if body.get("version") != VERSION:
            raise ValueError(f"snapshot version {body.get('version')} is not {VERSION}")
        state = RankingState(dim=dim, index=index)
        infos = sorted((_from_info(d) for d in body["catalog"]), key=lambda c: (c.published_at, c.clip_id))
        for info in infos:
            state.catalog.add(info, index=False)  # the index holds the vector
        state.restore_held(_from_info(d) for d in body["held"])
        state.durations.update({k: int(v) for k, v in body["durations"].items()})
        state.authors.update({k: str(v) for k, v in body["authors"].items()})
        state.engagement.update({k: ClipCounts.from_json(v) for k, v in body["engagement"].items()})
        state.forget_activity()
        for uid, data in body["users"].items():
            user = UserState.from_json(data)
            for cid in data.get("seen", []):
                user.mark_seen(cid)
            state.users[uid] = user
        state.seeded.update({uid: (int(p), int(o)) for uid, (p, o) in body.get("seeded", {}).items()})
        state.applied = int(body.get("applied", 0))
        # Absent from snapshots written before they were kept: nothing to remember then.
        raw = base64.b64decode(body.get("recent_events", ""), validate=True)
        state.recent_events = RecentIds.from_bytes(raw, state.recent_events.size)
        return state, {str(k): int(v) for k, v in body["positions"].items()}
    except (OSError, KeyError, TypeError, ValueError, ClipIndexError) as e:
        log.warning("ranking snapshot %s not used (%s); replaying the log from the beginning", folder, e)
        return None
