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
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import String, Uuid, bindparam, cast, literal, select, union_all
from sqlalchemy.orm import Session, aliased, defer

from api.routes.clips import clip_public
from core import graph
from core.aio import stop_if_cancelling
from core.db.driver_query import DriverQuery, list_params
from core.db.models import Block, Clip, ClipStats, FeedSteering, Follow, Like, Mute, User
from core.records import Interaction
from core.settings import Settings
from ranking.chronological import ChronologicalFeed
from ranking.cursor import FeedCursor, KeysetCursor, ServedSet, is_feed_cursor
from ranking.feed import DEFAULT_WEIGHTS_FILE, Candidate, FeedWeights, Steering, Viewer, build_feed
from ranking.plans import Plan, PlanCache, hit_counts, make_plan, page_from_plan, removed_counts
from ranking.replica import LogTail
from ranking.snapshot import load_snapshot, save_snapshot
from ranking.state import RankingState
from ranking.steering import steering_for
from ranking.taste_table import read_taste_table

log = logging.getLogger(__name__)

FOLLOWING_MAX = 1000  # followed authors a request looks at (the most recently followed)


def _graph_query() -> Any:
    """Followed (the most recent FOLLOWING_MAX), friends (mutual follows), hidden authors
    (blocked either way, or muted) of ``:uid``, as (kind, user id, None) rows, and when
    they last set their steering as ("steering", None, time): one round trip for
    everything a feed plan is keyed on."""
    uid = bindparam("uid", type_=Uuid)
    back = aliased(Follow)
    none = literal(None, String)
    following = (
        select(literal("following").label("kind"), Follow.followee_id.label("other"))
        .where(Follow.follower_id == uid)
        .order_by(Follow.created_at.desc())
        .limit(FOLLOWING_MAX)
        .subquery()
    )
    return union_all(
        select(following.c.kind, following.c.other, none.label("stamp")),
        select(literal("friend"), Follow.followee_id, none)
        .join(back, (back.follower_id == Follow.followee_id) & (back.followee_id == Follow.follower_id))
        .where(Follow.follower_id == uid),
        select(literal("hidden"), Block.blocked_id, none).where(Block.blocker_id == uid),
        select(literal("hidden"), Block.blocker_id, none).where(Block.blocked_id == uid),
        select(literal("hidden"), Mute.muted_id, none).where(Mute.muter_id == uid),
        select(literal("steering"), literal(None, Uuid), cast(FeedSteering.updated_at, String)).where(
            FeedSteering.user_id == uid
        ),
    )


_GRAPH = DriverQuery(lambda _: _graph_query())


def _hydrate_query(for_user: bool) -> DriverQuery:
    """What may have changed about the page's clips (``:ids``) since publication:
    status, author, counts and, for a viewer (``:uid``), whether they liked each. Run
    on the driver (see core.db.driver_query); clip id, author and "liked" come back as
    the driver has them, compared with driver values instead of converting each row."""

    def build(n: int) -> Any:
        liked_by = (
            select(Like.clip_id).where(Like.user_id == bindparam("uid", type_=Uuid), Like.clip_id == Clip.id).exists()
            if for_user
            else literal(False)
        )
        # By primary key only: with a status condition SQLite may walk the feed index.
        return (
            select(Clip.id, Clip.status, Clip.user_id, ClipStats.likes, ClipStats.views, ClipStats.shares,
                   ClipStats.comments, liked_by)
            .outerjoin(ClipStats, ClipStats.clip_id == Clip.id)
            .where(Clip.id.in_(list_params("ids", n, Uuid)))
        )  # fmt: skip

    return DriverQuery(build, listed="ids", raw=(0, 2, 7))


_HYDRATE_FOR_USER = _hydrate_query(for_user=True)
_HYDRATE_ANONYMOUS = _hydrate_query(for_user=False)


@dataclass(frozen=True)
class PlanInputs:
    user_id: uuid.UUID | None
    plan_user: str  # the user id, or "anonymous" (one plan for every anonymous caller)
    following: frozenset[str]
    friends: frozenset[str]
    hidden_ids: frozenset[str]
    stamp: Any  # when steering was last set (None: never)
    key: tuple[Any, ...]
    hidden: set[uuid.UUID] = dataclasses.field(default_factory=set)

    @property
    def uid(self) -> str | None:
        return None if self.user_id is None else str(self.user_id)


@dataclass
class FeedOutcome:
    data: list[dict[str, Any]]  # the page's clips as ClipPublic JSON
    clip_ids: list[uuid.UUID]
    next_cursor: str | None
    mode: str  # personalised | newest
    reason: str | None
    explain: dict[str, Any] | None = None


class FeedService:
    def __init__(self, settings: Settings, sessionmaker: Callable[[], Session] | None = None) -> None:
        r = settings.ranking
        self.settings = settings
        self._sessionmaker = sessionmaker
        self.plans = PlanCache(max_users=r.plan_max_users, ttl_s=r.plan_ttl_s)
        self._public = PublicClips()
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
        self._warmed = False  # the plans made ahead at start are made
        self._chronological = ChronologicalFeed()
        self._embed: Callable[[Sequence[str]], np.ndarray] | None = None
        self._embed_model = ""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.tail is not None:
            self._tasks.append(asyncio.create_task(self._follow_log(self.tail), name="ranking-log-tail"))
            if self.settings.ranking.snapshot_dir is not None and self.settings.ranking.save_snapshots:
                self._tasks.append(asyncio.create_task(self._snapshots(), name="ranking-snapshots"))
            if self._sessionmaker is not None:
                self._tasks.append(asyncio.create_task(self._warm(self.tail), name="feed-plans"))

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
        if folder is None or self.tail is None or not self.settings.ranking.save_snapshots:
            return
        tail = self.tail
        save_snapshot(self.state, lambda: tail.positions, folder)

    @property
    def ready(self) -> bool:
        return self.tail is not None and self.tail.ready.is_set()

    def started(self) -> bool:
        """Has this process built what it holds from the start (the replica caught up,
        the first feed plans made)? True at once when it runs no replica."""
        return self.tail is None or (self.ready and (self._sessionmaker is None or self._warmed))

    def status(self) -> dict[str, Any]:
        if self.tail is None:
            return {"mode": "newest", "reason": "the ranking replica is off (RANKING__REPLICA=false)"}
        s = self.tail.status()
        return {
            "mode": "personalised" if s.ready else "newest",
            "applied": s.applied,
            "skipped": s.skipped,
            "repeats": self.state.repeats,
            "lag": s.lag,
            "clips": len(self.state.catalog),
            "users": len(self.state.users),
            "last_error": s.last_error,
            "caught_up_s": s.caught_up_s,
            "plans": self.plans.stats(),
            "clip_cache": self._public.stats(),
        }

    # ------------------------------------------------------------------ steering
    def embedder(self) -> tuple[Callable[[Sequence[str]], np.ndarray], str]:
        """The CLIP text tower of the frame model (loaded on first use)."""
        if self._embed is None:
            from moderation.frame_filter import clip_model_for

            clip = clip_model_for(self.settings.moderation.frame_filter)
            self._embed, self._embed_model = clip.embed_texts, clip.name[-80:]
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
    def viewer_graph(session: Session, user_id: uuid.UUID) -> tuple[set[str], set[str], set[uuid.UUID], str | None]:
        """(following, friends, hidden authors, steering stamp) of the viewer, from the
        SQL store in one round trip."""
        following: set[str] = set()
        friends: set[str] = set()
        hidden: set[uuid.UUID] = set()
        stamp: str | None = None
        for kind, other, at in _GRAPH.rows(session.connection(), {"uid": user_id}):
            if kind == "following":
                following.add(str(other))
            elif kind == "friend":
                friends.add(str(other))
            elif kind == "steering":
                stamp = at
            else:
                hidden.add(other if isinstance(other, uuid.UUID) else uuid.UUID(str(other)))
        return following, friends, hidden, stamp

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
        viewer_id: uuid.UUID | None,
        limit: int,
        cursor: str | None,
        *,
        explain: bool = False,
        newest: bool = False,
    ) -> FeedOutcome:
        if newest or not self.ready:
            hidden = graph.hidden_authors(session, viewer_id) if viewer_id is not None else set()
            reason = "asked for newest first" if newest else self._not_ready_reason()
            return self._newest(session, viewer_id, limit, cursor, hidden, reason)
        feed_cursor = self._feed_cursor(cursor)
        served = feed_cursor.served if feed_cursor else ServedSet()
        page_no = feed_cursor.page if feed_cursor else 1
        inputs = self._inputs(session, viewer_id)
        now = time.time()
        plan = self.plans.get(inputs.plan_user, inputs.key, now)
        planned = plan is not None
        if plan is None:
            plan = self._make_plan(session, inputs, now)
        elif self._missing_news(plan, inputs):
            self.plans.want([inputs.plan_user])
        prior = self.state.prior_for(now, self.weights)  # before the lock (a refit takes a while); None when off
        with self.state.lock:
            us = self.state.user(inputs.uid)
            viewer = self._viewer(inputs, None)
            page, removed = page_from_plan(plan, viewer, self.state.catalog, served, limit, self.weights)
            if len(page) < limit and planned:
                # This session has scrolled past the plan: a new one, without what it served.
                self.plans.outrun += 1
                plan = self._make_plan(session, inputs, now, served)
                planned = False
                page, removed = page_from_plan(plan, viewer, self.state.catalog, served, limit, self.weights)
            elif planned and inputs.user_id is not None and len(plan.items) - len(removed) - len(page) < limit:
                # Less than a page left once this one is shown: the next plan is made in the
                # background now, not while the viewer's next request waits (12 ms or more,
                # under the state's lock). Its seen set, not a cursor, keeps it from repeating
                # this page, so signed-in viewers only (one shared plan serves the anonymous).
                self.plans.running_low += 1
                self.plans.want([inputs.plan_user])
            if len(page) < limit and us is not None and us.seen:
                # Everything new has been shown: fill up with the best clips seen before
                # (never twice in one session: the cursor's served set still applies).
                steering = self._steering(session, inputs)
                again = build_feed(
                    self.state.catalog, dataclasses.replace(viewer, seen=frozenset(), steering=steering),
                    self.state.engagement,
                    self.state.trending(now), now, limit - len(page), self.weights,
                    served.plus(c.clip.clip_id for c in page), prior,
                )  # fmt: skip
                for c in again.page:
                    c.sources.add("seen_before")
                page = page + again.page
        ids = [c.clip.clip_id for c in page]
        data, shown = self._hydrate(session, viewer_id, ids, inputs.hidden)
        nxt = FeedCursor(page_no + 1, served.plus(ids)).encode() if len(page) >= limit else None
        info = None
        if explain:
            counts = removed_counts(removed, plan.removed)
            info = {
                **plan.info,
                "plan": {"from_cache": planned, "age_s": round(now - plan.made_at, 3), "size": len(plan.items)},
                "candidates": plan.candidates,
                "by_source": plan.by_source,
                "removed": counts,
                "items": [explain_item(c) for c in page],
            }
        return FeedOutcome(data, shown, nxt, "personalised", None, info)

    # ------------------------------------------------------------------ plans
    def _inputs(self, session: Session, viewer_id: uuid.UUID | None) -> PlanInputs:
        """What a plan is keyed on, read per request: graph and steering stamp from SQL,
        the viewer's ranked_version from the state."""
        if viewer_id is None:
            return PlanInputs(None, "anonymous", frozenset(), frozenset(), frozenset(), None, (0,))
        following, friends, hidden, stamp = self.viewer_graph(session, viewer_id)
        uid = str(viewer_id)
        us = self.state.user(uid)
        hidden_ids = frozenset(str(h) for h in hidden)
        f, fr = frozenset(following), frozenset(friends)
        key = (us.ranked_version if us is not None else 0, f, fr, hidden_ids, stamp)
        return PlanInputs(viewer_id, uid, f, fr, hidden_ids, stamp, key, hidden)

    def _missing_news(self, plan: Plan, inputs: PlanInputs) -> bool:
        """Has a clip by someone the viewer follows, or casting them, arrived since? For
        anonymous callers (one shared plan, no graph), has any clip arrived since?"""
        catalog = self.state.catalog
        if inputs.uid is None:
            return catalog.last_arrival > plan.made_at
        arrived = catalog.arrived
        return any(arrived.get(u, 0.0) > plan.made_at for u in (*inputs.following, inputs.uid))

    def _steering(self, session: Session, inputs: PlanInputs) -> Steering | None:
        """The viewer's steering with its vectors (read only when a feed is ranked)."""
        if inputs.user_id is None or inputs.stamp is None:
            return None
        return self.steering_of(session, inputs.user_id)

    def _viewer(self, inputs: PlanInputs, steering: Steering | None) -> Viewer:
        return self.state.viewer(
            inputs.uid, following=inputs.following, friends=inputs.friends, hidden=inputs.hidden_ids, steering=steering
        )

    def _make_plan(self, session: Session, inputs: PlanInputs, now: float, served: Container[str] = ()) -> Plan:
        """Rank the viewer's feed now and keep it as their plan."""
        steering = self._steering(session, inputs)
        prior = self.state.prior_for(now, self.weights)  # before the lock: a refit takes a while
        with self.state.lock:
            us = self.state.user(inputs.uid)
            viewer = self._viewer(inputs, steering)
            trending = self.state.trending(now)
            plan = make_plan(
                inputs.key, self.state.catalog, viewer, self.state.engagement, trending, now, self.weights, served,
                prior=prior,
            )  # fmt: skip
            plan.info = {
                "taste_version": us.version if us is not None else 0,
                "liked": list(us.liked)[:5] if us is not None else [],
                "cold_start": viewer.vector is None,
                "steering": steering.text if steering is not None else None,
            }
        self.plans.put(inputs.plan_user, plan)
        return plan

    def remake_plans(self, user_ids: Sequence[str]) -> int:
        """New plans for these users (their taste moved, or their plan aged), made in the
        background so their next request is served from one."""
        made = 0
        heads: list[str] = []
        assert self._sessionmaker is not None
        with self._sessionmaker() as session:
            for uid in user_ids:
                if uid == "anonymous":
                    inputs = self._inputs(session, None)
                else:
                    viewer_id = uuid.UUID(uid)
                    if session.get(User, viewer_id) is None:
                        self.plans.drop(uid)
                        continue
                    inputs = self._inputs(session, viewer_id)
                plan = self._make_plan(session, inputs, time.time())
                heads += [c.clip.clip_id for c in plan.items[:PLAN_HEAD]]
                made += 1
            self._public.prefetch(session, heads)
        self.plans.made_ahead += made
        return made

    async def _warm(self, tail: LogTail) -> None:
        """Keep plans fresh off the request path: at start, for the most recently active
        users; then for users whose taste moved (the log said so) or whose plan aged."""
        await tail.ready.wait()
        warm = self.state.recent_users(self.settings.ranking.warm_users)
        self.plans.warming = len(warm)
        log.info("making feed plans for %d recently active users", len(warm))
        while True:
            self._warmed = self._warmed or not warm  # the last batch made ahead is made
            self.plans.want(self.state.take_touched())
            batch = self.plans.take_wanted(16)
            if not batch and warm:
                batch, warm = [u for u in warm[:16] if u not in self.plans], warm[16:]
                self.plans.warming = len(warm)
            if not batch:
                await asyncio.sleep(0.02)
                continue
            try:
                await asyncio.to_thread(self.remake_plans, batch)
            except Exception as e:  # a plan not made ahead is made by the request
                stop_if_cancelling(e)
                log.exception("feed plans for %d users failed", len(batch))
                await asyncio.sleep(1.0)
            await asyncio.sleep(0)  # let requests in between batches

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
        viewer_id: uuid.UUID | None,
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
        self._public.fill(clips)  # the rows are loaded already: hydration need not read them again
        ids = [str(c.id) for c in clips]
        data, shown = self._hydrate(session, viewer_id, ids, hidden)
        return FeedOutcome(data, shown, nxt.encode() if nxt else None, "newest", reason)

    def _hydrate(
        self, session: Session, viewer_id: uuid.UUID | None, ids: list[str], hidden: set[uuid.UUID]
    ) -> tuple[list[dict[str, Any]], list[uuid.UUID]]:
        """The page's clips in order, as ClipPublic JSON. One light query says what may
        change (status: the SQL store has the last word on what is live, so a clip taken
        down a moment ago is dropped even if this replica has not heard; counts; whether
        the viewer liked it); what never changes after publication (prompt, creator,
        media, generator, checks) comes from a cache filled from the clips' rows."""
        if not ids:
            return [], []
        uuids = [uuid.UUID(i) for i in ids]
        query = _HYDRATE_ANONYMOUS if viewer_id is None else _HYDRATE_FOR_USER
        params: dict[str, Any] = {"ids": uuids} if viewer_id is None else {"ids": uuids, "uid": viewer_id}
        conn = session.connection()
        rows = {r[0]: r for r in query.rows(conn, params)}
        # Clip and author ids as the driver returns them (both columns are Uuid).
        hidden_keys = set(query.driver_values(conn, "ids", hidden))
        keys = query.driver_values(conn, "ids", uuids)
        found = {u: r for u, k in zip(uuids, keys, strict=True) if (r := rows.get(k)) is not None}
        live = [u for u, r in found.items() if r[1] == "published" and r[2] not in hidden_keys]
        fixed = self._public.many(live)
        missing = [u for u in live if u not in fixed]
        if missing:
            fixed.update(self._public.load(session, missing))
        data = []
        for u in live:
            _, _, _, likes, views, shares, comments, liked = found[u]
            item = dict(fixed[u])
            item["stats"] = {"likes": likes or 0, "views": views or 0, "shares": shares or 0, "comments": comments or 0}
            item["viewer_liked"] = bool(liked) if viewer_id is not None else None
            data.append(item)
        return data, live


#: Clips at the head of each plan made ahead whose JSON is cached with it: the first two
#: pages it will serve.
PLAN_HEAD = 40


class PublicClips:
    """ClipPublic JSON of clips by id, the parts fixed at publication (LRU, thread-safe)."""

    def __init__(self, max_clips: int = 20_000) -> None:
        self.max_clips = max_clips
        self._items: OrderedDict[uuid.UUID, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def many(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        with self._lock:
            out = {}
            for i in ids:
                item = self._items.get(i)
                if item is not None:
                    self._items.move_to_end(i)
                    out[i] = item
            self.hits += len(out)
            self.misses += len(ids) - len(out)
            return out

    def stats(self) -> dict[str, Any]:
        return {"clips": len(self._items), "max_clips": self.max_clips, **hit_counts(self.hits, self.misses)}

    def load(self, session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        """Read these clips from the SQL store into the cache; returns their JSON."""
        return self.fill(session.scalars(select(Clip).where(Clip.id.in_(ids)).options(defer(Clip.embedding))))

    def prefetch(self, session: Session, clip_ids: Iterable[str]) -> int:
        """Cache the clips among ``clip_ids`` not cached yet (the heads of plans just
        made, so the requests they serve find them) while the cache has room: it fills
        an empty cache, never pushes out what requests use. Returns how many were read."""
        with self._lock:
            room = self.max_clips - len(self._items)
            if room <= 0:  # the usual case once warm: nothing to convert or read
                return 0
            wanted = list({u: None for i in clip_ids if (u := uuid.UUID(i)) not in self._items})[:room]
        for i in range(0, len(wanted), 500):
            self.load(session, wanted[i : i + 500])
        return len(wanted)

    def fill(self, clips: Iterable[Clip]) -> dict[uuid.UUID, dict[str, Any]]:
        """Cache the fixed JSON of those ``clips`` not cached yet; returns it for all of them."""
        out: dict[uuid.UUID, dict[str, Any]] = {}
        for clip in clips:
            with self._lock:
                item = self._items.get(clip.id)
            if item is None:
                item = clip_public(clip).model_dump(mode="json", exclude={"stats", "viewer_liked"})
                with self._lock:
                    self._items[clip.id] = item
                    while len(self._items) > self.max_clips:
                        self._items.popitem(last=False)
            out[clip.id] = item
        return out


def explain_item(c: Candidate) -> dict[str, Any]:
    features = {k: round(v, 4) for k, v in c.features.items()}
    return {"clip_id": c.clip.clip_id, "score": round(c.score, 4), "sources": sorted(c.sources), **features}


def impressions_for(user_id: uuid.UUID, clip_ids: Sequence[uuid.UUID]) -> list[Interaction]:
    """The page's impression: one record naming every clip served, in order, and the
    page (its id is the record's event id). The seen filter and offline evaluation
    read it, and ``analytics.feed_quality`` scores each page against what the viewer
    did next. One record a page, not one a clip: twenty records built, sent and read
    back by every replica cost a fifth more of the API's CPU a feed request."""
    if not clip_ids:
        return []
    page = uuid.uuid4()
    return [
        Interaction(
            event_id=page, user_id=user_id, kind="impression", clip_ids=list(clip_ids), attributes={"page": str(page)}
        )
    ]
