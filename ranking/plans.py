"""Feed plans: a viewer's ranked candidates, computed ahead and sliced per page.

Ranking a feed (sources, filters, scorer, diversity re-rank: :func:`ranking.feed.build_feed`)
costs tens of milliseconds at 100k clips; serving a page from a list ranked before costs
well under one. So a replica keeps, per active viewer, a *plan*: the first
``pages × page size`` clips of their feed in MMR order, with what ranked them (sources,
features, scores), made by the same stages the offline evaluator replays.

A page is then: the plan's items through the live filters (seen — impressions of the
pages before, taken down, blocked, "see less", already on an earlier page of this
session), then the diversity re-rank over what is left for that one page (author cap,
exploration share). The ranking inputs that change more slowly are the plan's *key*:

* the viewer's ``ranked_version`` (every like, view, skip, "see less", report; not
  impressions, which only feed the seen filter, applied live);
* their graph (following, friends, hidden authors) and steering, read per request;

a plan whose key differs is never served. One made before a clip by someone the
viewer follows (or casting them) arrived, or older than ``ttl_s`` (trending and fresh
clips moving on), is still served once while a new one is made in the background
(:class:`PlanCache` says which users want one); one older than ``max_age_s`` is not
served at all.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Container, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ranking.catalog import Catalog
from ranking.engagement import ClipCounts, ContentPrior
from ranking.feed import Candidate, FeedWeights, Removed, Viewer, apply_filters, build_feed, filters_for, rerank

PAGES = 5  # pages of the usual size a plan holds
PAGE_SIZE = 20


@dataclass
class Plan:
    key: Hashable
    made_at: float
    items: list[Candidate]  # MMR order; their vectors are not kept (see ``vectors``)
    candidates: int  # how many candidates the sources gave
    by_source: dict[str, int]
    removed: dict[str, int]  # filter → clips it removed when the plan was made
    info: dict[str, Any] = field(default_factory=dict)  # what the plan was ranked with (explain)
    #: the items' embeddings, one row each, in float16: a plan holds only its own rows
    #: and features (about 40 KB), not the matrices of every candidate it was made from.
    vectors: np.ndarray | None = field(default=None, repr=False)
    rows: dict[str, int] = field(default_factory=dict, repr=False)  # clip id → row


def make_plan(
    key: Hashable,
    catalog: Catalog,
    viewer: Viewer,
    engagement: Mapping[str, ClipCounts],
    trending: Sequence[str],
    now: float,
    weights: FeedWeights,
    served: Container[str] = frozenset(),
    size: int = PAGES * PAGE_SIZE,
    prior: ContentPrior | None = None,
) -> Plan:
    """``size`` clips of the viewer's feed in order. The author cap and the exploration
    share are those of a page times the pages a plan holds, so the plan keeps enough of
    every kind for each page's own re-rank to apply the page's caps."""
    pages = max(1, size // PAGE_SIZE)
    w = dataclasses.replace(weights, author_cap=weights.author_cap * pages)
    result = build_feed(catalog, viewer, engagement, trending, now, size, w, served, prior)
    items = result.page
    vectors = None
    if items and all(c.vector is not None for c in items):
        vectors = np.stack([c.vector for c in items]).astype(np.float16)  # type: ignore[misc]
    # Keep the items' own feature values, not the scorer's table of every candidate
    # (one table: build_feed scores once).
    tables = [c._table for c in items]
    if tables and all(t is not None for t in tables):
        names, columns, _ = tables[0]  # type: ignore[misc]
        rows = [t[2] for t in tables]  # type: ignore[index]
        own = [np.asarray(col)[rows] for col in columns]
        for i, c in enumerate(items):
            c._table = (names, own, i)
    for c in items:
        c.vector = None
    return Plan(
        key, now, items, result.candidates, result.by_source, removed_counts(result.removed),
        vectors=vectors, rows={c.clip.clip_id: i for i, c in enumerate(items)},
    )  # fmt: skip


def removed_counts(removed: Sequence[Removed], into: dict[str, int] | None = None) -> dict[str, int]:
    counts = dict(into or {})
    for r in removed:
        counts[r.filter] = counts.get(r.filter, 0) + 1
    return counts


def page_from_plan(
    plan: Plan,
    viewer: Viewer,
    catalog: Catalog,
    served: Container[str],
    limit: int,
    weights: FeedWeights,
) -> tuple[list[Candidate], list[Removed]]:
    """One page: the plan's items through the live filters, re-ranked for the page."""
    kept, removed = apply_filters(plan.items, filters_for(viewer, catalog, served))
    emb = None
    if plan.vectors is not None and kept:
        emb = plan.vectors[[plan.rows[c.clip.clip_id] for c in kept]].astype(np.float32)
    return rerank(kept, limit, weights, emb), removed


def hit_counts(hits: int, misses: int) -> dict[str, Any]:
    """A cache's hits, misses and hit rate (None before the first lookup), as /readyz shows them."""
    total = hits + misses
    return {"hits": hits, "misses": misses, "hit_rate": round(hits / total, 3) if total else None}


class PlanCache:
    """Plans by viewer (least recently used out first), and which viewers want a new one."""

    def __init__(self, max_users: int = 50_000, ttl_s: float = 120.0, max_age_s: float = 1800.0) -> None:
        self.max_users = max_users
        self.ttl_s = ttl_s
        self.max_age_s = max_age_s
        self._plans: OrderedDict[str, Plan] = OrderedDict()
        self._wanted: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.stale_served = 0
        self.warming = 0  # users still to get a plan made ahead at start
        self.made_ahead = 0  # plans made in the background (not by a request)
        #: requests that found their plan used up (everything in it shown) and made one
        #: while the caller waited
        self.outrun = 0
        #: plans asked for in the background because a page left less than a page in them
        self.running_low = 0

    def __len__(self) -> int:
        return len(self._plans)

    def __contains__(self, user: object) -> bool:
        return user in self._plans

    def get(self, user: str, key: Hashable, now: float) -> Plan | None:
        """The user's plan if its key is ``key`` and it is young enough; a plan past
        ``ttl_s`` is returned once more and the user is marked as wanting a new one."""
        with self._lock:
            plan = self._plans.get(user)
            if plan is None or plan.key != key or now - plan.made_at > self.max_age_s or now < plan.made_at:
                self.misses += 1
                return None
            self._plans.move_to_end(user)
            if now - plan.made_at > self.ttl_s:
                self._wanted[user] = None
                self.stale_served += 1
            self.hits += 1
            return plan

    def put(self, user: str, plan: Plan) -> None:
        with self._lock:
            self._plans[user] = plan
            self._plans.move_to_end(user)
            self._wanted.pop(user, None)
            while len(self._plans) > self.max_users:
                gone, _ = self._plans.popitem(last=False)
                self._wanted.pop(gone, None)

    def drop(self, user: str) -> None:
        with self._lock:
            self._plans.pop(user, None)
            self._wanted.pop(user, None)

    def want(self, users: Sequence[str]) -> None:
        """Ask for new plans for those of ``users`` who have one (their taste moved, or
        the plan served is missing a followed author's new clip)."""
        with self._lock:
            for u in users:
                if u in self._plans:
                    self._wanted[u] = None

    def take_wanted(self, n: int) -> list[str]:
        with self._lock:
            out: list[str] = []
            while self._wanted and len(out) < n:
                out.append(self._wanted.popitem(last=False)[0])
            return out

    def wanted(self) -> int:
        return len(self._wanted)

    def stats(self) -> dict[str, Any]:
        return {
            "plans": len(self._plans),
            **hit_counts(self.hits, self.misses),
            "stale_served": self.stale_served,
            "wanted": len(self._wanted),
            "warming": self.warming,
            "made_ahead": self.made_ahead,
            "outrun": self.outrun,
            "running_low": self.running_low,
        }
