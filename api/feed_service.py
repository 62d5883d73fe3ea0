"""The personalised feed as the API serves it.

Each API process holds its own :class:`~ranking.state.RankingState`, fed from the log
by a :class:`~ranking.replica.LogTail` (published, flagged and decided clips, and
interactions). A request reads the viewer's graph and steering from the SQL store,
their taste, seen set, likes and "see less" list from the state, runs the staged
ranking of :mod:`ranking.feed`, then hydrates the page from the SQL store — which is
also the last word on what may be shown: a clip taken down a moment ago, or by an
author the viewer just blocked, is dropped there even if this replica has not heard.

Until the tail has caught up with the log (a fresh process, or no broker at all in a
test), the feed is newest-first from the SQL store and says so (``ranking.mode``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Uuid, bindparam, literal, select, union_all
from sqlalchemy.orm import Session, aliased, defer

from core import graph
from core.db.models import Block, Clip, ClipStats, FeedSteering, Follow, Like, Mute, User
from core.records import Interaction
from core.settings import Settings
from ranking.chronological import ChronologicalFeed
from ranking.cursor import FeedCursor, KeysetCursor, ServedSet, is_feed_cursor
from ranking.feed import DEFAULT_WEIGHTS_FILE, Candidate, FeedWeights, Steering, build_feed
from ranking.replica import LogTail
from ranking.snapshot import load_snapshot, save_snapshot
from ranking.state import RankingState
from ranking.steering import steering_for
from ranking.taste_table import read_taste_table

log = logging.getLogger(__name__)

FOLLOWING_MAX = 1000  # followed authors a request looks at (the most recently followed)


def _graph_query() -> Any:
    """Followed (the most recent FOLLOWING_MAX), friends (mutual follows), and hidden
    authors (blocked either way, or muted) of ``:uid``, as (kind, user id) rows."""
    uid = bindparam("uid", type_=Uuid)
    back = aliased(Follow)
    following = (
        select(literal("following").label("kind"), Follow.followee_id.label("other"))
        .where(Follow.follower_id == uid)
        .order_by(Follow.created_at.desc())
        .limit(FOLLOWING_MAX)
        .subquery()
    )
    return union_all(
        select(following.c.kind, following.c.other),
        select(literal("friend"), Follow.followee_id)
        .join(back, (back.follower_id == Follow.followee_id) & (back.followee_id == Follow.follower_id))
        .where(Follow.follower_id == uid),
        select(literal("hidden"), Block.blocked_id).where(Block.blocker_id == uid),
        select(literal("hidden"), Block.blocker_id).where(Block.blocked_id == uid),
        select(literal("hidden"), Mute.muted_id).where(Mute.muter_id == uid),
    )


_GRAPH = _graph_query()


@dataclass
class FeedOutcome:
    clips: list[Clip]
    stats: dict[uuid.UUID, ClipStats]
    liked: set[uuid.UUID]
    next_cursor: str | None
    mode: str  # personalised | newest
    reason: str | None
    explain: dict[str, Any] | None = None


class FeedService:
    def __init__(self, settings: Settings) -> None:
        r = settings.ranking
        self.settings = settings
        self.weights = FeedWeights.load(r.weights or DEFAULT_WEIGHTS_FILE)
        self.state = RankingState(dim=r.embedding_dim)
        positions: dict[str, int] | None = None
        self._restored = False
        if r.snapshot_dir is not None:
            restored = load_snapshot(r.snapshot_dir, r.embedding_dim)
            if restored is not None:
                self.state, positions = restored
                self._restored = True
                log.info("ranking state restored from %s (%d clips)", r.snapshot_dir, len(self.state.catalog))
        self.tail: LogTail | None = None
        if r.replica:
            self.tail = LogTail(
                self.state, settings.kafka.servers, positions=positions, fetch_max_wait_ms=r.fetch_max_wait_ms
            )
        self._tasks: list[asyncio.Task[None]] = []
        self._chronological = ChronologicalFeed()
        self._embed: Callable[[Sequence[str]], np.ndarray] | None = None
        self._embed_model = ""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.tail is not None:
            self._tasks.append(asyncio.create_task(self._follow_log(self.tail), name="ranking-log-tail"))
            if self.settings.ranking.snapshot_dir is not None:
                self._tasks.append(asyncio.create_task(self._snapshots(), name="ranking-snapshots"))

    async def _follow_log(self, tail: LogTail) -> None:
        """Seed from the taste table (in the background: an unreachable broker must not
        hold the API's start-up; the feed is newest-first until the tail is ready), then
        follow the log."""
        if not self._restored:
            await self._seed_from_taste_table()
        await tail.run()

    async def _seed_from_taste_table(self) -> None:
        """A replica without a snapshot starts its users from the ranking worker's
        ``user_taste`` table: the log's retention may no longer hold every interaction
        that shaped a taste, the compacted table does."""
        try:
            entries = await read_taste_table(self.settings.kafka.servers, timeout_s=10.0)
        except Exception as e:  # noqa: BLE001 — no table yet (or no broker): tastes come from the log alone
            log.warning("user_taste table not read (%s: %s); tastes are rebuilt from the log", type(e).__name__, e)
            return
        self.state.seed_tastes(entries)
        log.info("ranking replica seeded %d users from the user_taste table", len(entries))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.ready:
            await asyncio.to_thread(self.snapshot)

    async def _snapshots(self) -> None:
        while True:
            await asyncio.sleep(self.settings.ranking.snapshot_every_s)
            if self.ready:
                try:
                    await asyncio.to_thread(self.snapshot)
                except Exception:  # a failed snapshot only costs a longer catch-up
                    log.exception("ranking snapshot failed")

    def snapshot(self) -> None:
        folder = self.settings.ranking.snapshot_dir
        if folder is None or self.tail is None:
            return
        with self.state.lock:
            save_snapshot(self.state, dict(self.tail.positions), folder)

    @property
    def ready(self) -> bool:
        return self.tail is not None and self.tail.ready.is_set()

    def status(self) -> dict[str, Any]:
        if self.tail is None:
            return {"mode": "newest", "reason": "the ranking replica is off (RANKING__REPLICA=false)"}
        s = self.tail.status()
        return {
            "mode": "personalised" if s.ready else "newest",
            "applied": s.applied,
            "skipped": s.skipped,
            "lag": s.lag,
            "clips": len(self.state.catalog),
            "users": len(self.state.users),
            "last_error": s.last_error,
            "caught_up_s": s.caught_up_s,
        }

    # ------------------------------------------------------------------ steering
    def embedder(self) -> tuple[Callable[[Sequence[str]], np.ndarray], str]:
        """The CLIP text tower of the frame model (loaded on first use)."""
        if self._embed is None:
            from moderation.frame_filter import frame_filter_for

            f = frame_filter_for(self.settings.moderation.frame_filter)
            self._embed, self._embed_model = f.embed_texts, f.clip.name[-80:]
        return self._embed, self._embed_model

    def steering_row(self, user: User, text: str) -> FeedSteering:
        embed, model = self.embedder()
        steering = steering_for(text, embed)
        return FeedSteering(
            user_id=user.id,
            text=text,
            more=list(steering.more_phrases),
            less=list(steering.less_phrases),
            more_vector=None if steering.more is None else [round(float(x), 6) for x in steering.more],
            less_vector=None if steering.less is None else [round(float(x), 6) for x in steering.less],
            model=model,
        )

    # ------------------------------------------------------------------ the request
    @staticmethod
    def viewer_graph(session: Session, user_id: uuid.UUID) -> tuple[set[str], set[str], set[uuid.UUID]]:
        """(following, friends, hidden authors) of the viewer, from the SQL store in one
        round trip."""
        following: set[str] = set()
        friends: set[str] = set()
        hidden: set[uuid.UUID] = set()
        for kind, other in session.execute(_GRAPH, {"uid": user_id}):
            if kind == "following":
                following.add(str(other))
            elif kind == "friend":
                friends.add(str(other))
            else:
                hidden.add(other if isinstance(other, uuid.UUID) else uuid.UUID(str(other)))
        return following, friends, hidden

    @staticmethod
    def steering_of(session: Session, user_id: uuid.UUID) -> Steering | None:
        row = session.get(FeedSteering, user_id)
        if row is None:
            return None

        def vec(v: list[float] | None) -> np.ndarray | None:
            return None if v is None else np.asarray(v, np.float32)

        return Steering(text=row.text, more=vec(row.more_vector), less=vec(row.less_vector))

    def page(
        self,
        session: Session,
        user: User | None,
        limit: int,
        cursor: str | None,
        *,
        explain: bool = False,
        newest: bool = False,
    ) -> FeedOutcome:
        if newest or not self.ready:
            hidden = graph.hidden_authors(session, user.id) if user is not None else set()
            reason = "asked for newest first" if newest else self._not_ready_reason()
            return self._newest(session, user, limit, cursor, hidden, reason)
        hidden = set()
        feed_cursor = self._feed_cursor(cursor)
        served = feed_cursor.served if feed_cursor else ServedSet()
        page_no = feed_cursor.page if feed_cursor else 1
        following: set[str] = set()
        friends: set[str] = set()
        steering = None
        if user is not None:
            following, friends, hidden = self.viewer_graph(session, user.id)
            steering = self.steering_of(session, user.id)
        now = time.time()
        uid = str(user.id) if user is not None else None
        with self.state.lock:
            us = self.state.user(uid)
            viewer = self.state.viewer(
                uid,
                following=frozenset(following),
                friends=frozenset(friends),
                hidden=frozenset(str(h) for h in hidden),
                steering=steering,
            )
            trending = self.state.trending(now)
            catalog, engagement = self.state.catalog, self.state.engagement
            result = build_feed(catalog, viewer, engagement, trending, now, limit, self.weights, served)
            page: list[Candidate] = list(result.page)
            if len(page) < limit and us is not None and us.seen:
                # Everything new has been shown: fill up with the best clips seen before
                # (never twice in one session: the cursor's served set still applies).
                again = build_feed(
                    catalog, dataclasses.replace(viewer, seen=frozenset()), engagement, trending, now,
                    limit - len(page), self.weights, served.plus(c.clip.clip_id for c in page),
                )  # fmt: skip
                for c in again.page:
                    c.sources.add("seen_before")
                page += again.page
            state_info = {
                "taste_version": us.version if us is not None else 0,
                "liked": list(us.liked)[:5] if us is not None else [],
                "cold_start": viewer.vector is None,
            }
        ids = [c.clip.clip_id for c in page]
        clips, stats, liked = self._hydrate(session, user, ids, hidden)
        nxt = FeedCursor(page_no + 1, served.plus(ids)).encode() if len(page) >= limit else None
        info = None
        if explain:
            removed: dict[str, int] = {}
            for r in result.removed:
                removed[r.filter] = removed.get(r.filter, 0) + 1
            info = {
                **state_info,
                "candidates": result.candidates,
                "by_source": result.by_source,
                "removed": removed,
                "steering": steering.text if steering is not None else None,
                "items": [explain_item(c) for c in page],
            }
        return FeedOutcome(clips, stats, liked, nxt, "personalised", None, info)

    def _not_ready_reason(self) -> str:
        if self.tail is None:
            return "the ranking replica is off"
        lag = self.tail.lag()
        return "the ranking replica is catching up with the log" + (f" ({lag} records behind)" if lag else "")

    @staticmethod
    def _feed_cursor(cursor: str | None) -> FeedCursor | None:
        if not cursor:
            return None
        if not is_feed_cursor(cursor):
            KeysetCursor.decode(cursor)  # not ours at all: a 400
            return None  # a newest-first cursor from before the replica was ready: start afresh
        return FeedCursor.decode(cursor)

    def _newest(
        self,
        session: Session,
        user: User | None,
        limit: int,
        cursor: str | None,
        hidden: set[uuid.UUID],
        reason: str,
    ) -> FeedOutcome:
        served = ServedSet()
        after: KeysetCursor | None = None
        if cursor:
            if is_feed_cursor(cursor):
                served = FeedCursor.decode(cursor).served  # ranked session, replica gone: skip what it served
            else:
                after = KeysetCursor.decode(cursor)
        clips, nxt = self._chronological.page(session, limit, after, hidden)
        clips = [c for c in clips if str(c.id) not in served]
        ids = [str(c.id) for c in clips]
        clips, stats, liked = self._hydrate(session, user, ids, hidden)
        return FeedOutcome(clips, stats, liked, nxt.encode() if nxt else None, "newest", reason)

    @staticmethod
    def _hydrate(
        session: Session, user: User | None, ids: list[str], hidden: set[uuid.UUID]
    ) -> tuple[list[Clip], dict[uuid.UUID, ClipStats], set[uuid.UUID]]:
        """Rows for ``ids`` in order; the SQL store has the last word on what is live."""
        if not ids:
            return [], {}, set()
        uuids = [uuid.UUID(i) for i in ids]
        # One round trip: the clip (without its embedding, which the page does not show),
        # its counts and whether the viewer liked it. By primary key only: with a status
        # condition SQLite may walk the feed index instead.
        liked_by = (
            select(Like.clip_id).where(Like.user_id == user.id, Like.clip_id == Clip.id).exists()
            if user is not None
            else literal(False)
        )
        stmt = (
            select(Clip, ClipStats, liked_by)
            .outerjoin(ClipStats, ClipStats.clip_id == Clip.id)
            .where(Clip.id.in_(uuids))
            .options(defer(Clip.embedding))
        )
        rows = {clip.id: (clip, counts, bool(like)) for clip, counts, like in session.execute(stmt)}
        clips: list[Clip] = []
        stats: dict[uuid.UUID, ClipStats] = {}
        liked: set[uuid.UUID] = set()
        for u in uuids:
            row = rows.get(u)
            if row is None or row[0].status != "published" or row[0].user_id in hidden:
                continue
            clips.append(row[0])
            if row[1] is not None:
                stats[u] = row[1]
            if row[2]:
                liked.add(u)
        return clips, stats, liked


def explain_item(c: Candidate) -> dict[str, Any]:
    features = {k: round(v, 4) for k, v in c.features.items()}
    return {"clip_id": c.clip.clip_id, "score": round(c.score, 4), "sources": sorted(c.sources), **features}


def impressions_for(user_id: uuid.UUID, clip_ids: Sequence[uuid.UUID]) -> list[Interaction]:
    """One impression per clip served: the seen filter and offline evaluation read them."""
    return [Interaction(user_id=user_id, clip_id=c, kind="impression") for c in clip_ids]
