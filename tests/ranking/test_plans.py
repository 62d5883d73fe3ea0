"""Feed plans: made once with the staged ranking, sliced per page with live filters."""

from __future__ import annotations

import numpy as np

from ranking.catalog import Catalog, ClipInfo
from ranking.feed import FeedWeights, Viewer, build_feed
from ranking.index import ClipIndex
from ranking.plans import PlanCache, make_plan, page_from_plan

NOW = 1_800_000_000.0
DIM = 8


def world(n: int = 120, authors: int = 12) -> Catalog:
    rng = np.random.default_rng(3)
    cat = Catalog(ClipIndex(DIM))
    for i in range(n):
        e = rng.normal(size=DIM).astype(np.float32)
        cat.add(
            ClipInfo(
                f"c{i}", f"a{i % authors}", NOW - i * 600, embedding=tuple(float(x) for x in e / np.linalg.norm(e))
            )
        )
    return cat


def viewer(**kw: object) -> Viewer:
    taste = np.eye(DIM, dtype=np.float32)[0]
    return Viewer("me", following=frozenset({"a1", "a2"}), vector=taste, **kw)  # type: ignore[arg-type]


def test_pages_sliced_from_a_plan_keep_each_pages_caps_and_never_repeat() -> None:
    cat, w = world(), FeedWeights()
    plan = make_plan("k", cat, viewer(), {}, [], NOW, w)
    assert len(plan.items) == 100 and len({c.clip.clip_id for c in plan.items}) == 100
    served: set[str] = set()
    for _ in range(4):
        page, _ = page_from_plan(plan, viewer(), cat, served, 20, w)
        assert len(page) == 20
        authors = [c.clip.author_id for c in page]
        assert max(authors.count(a) for a in authors) <= w.author_cap, "the page's author cap"
        ids = {c.clip.clip_id for c in page}
        assert not ids & served
        served |= ids
    # The first page is what ranking from scratch gives (same stages, same order).
    first, _ = page_from_plan(plan, viewer(), cat, set(), 20, w)
    direct = build_feed(cat, viewer(), {}, [], NOW, 20, w)
    assert len({c.clip.clip_id for c in first} & {c.clip.clip_id for c in direct.page}) >= 16


def test_live_filters_apply_to_a_plan_made_before() -> None:
    cat, w = world(), FeedWeights()
    plan = make_plan("k", cat, viewer(), {}, [], NOW, w)
    top = [c.clip.clip_id for c in plan.items[:5]]
    near = {c.clip.author_id for c in plan.items[:5]}
    blocked = next(c.clip.author_id for c in plan.items if c.clip.author_id not in near)
    cat.remove(top[0])  # taken down since
    later = viewer(seen=frozenset({top[1]}), rejected=frozenset({top[2]}), hidden=frozenset({blocked}))
    page, removed = page_from_plan(plan, later, cat, {top[4]}, 20, w)
    ids = {c.clip.clip_id for c in page}
    assert not ids & {top[0], top[1], top[2], top[4]}
    assert all(c.clip.author_id != blocked for c in page)
    assert {r.filter for r in removed} >= {"live", "seen", "rejected", "hidden_author"}


def test_the_cache_serves_a_plan_only_for_its_key_and_age() -> None:
    cat, w = world(30), FeedWeights()
    cache = PlanCache(max_users=2, ttl_s=60, max_age_s=600)
    cache.put("u1", make_plan(("v1",), cat, viewer(), {}, [], NOW, w))
    assert cache.get("u1", ("v1",), NOW + 1) is not None
    assert cache.get("u1", ("v2",), NOW + 1) is None, "taste, graph or steering moved: never served"
    assert cache.get("u2", ("v1",), NOW + 1) is None
    # Past the TTL: served once more, and the user wants a new one (made in the background).
    assert cache.get("u1", ("v1",), NOW + 61) is not None
    assert cache.take_wanted(10) == ["u1"] and cache.take_wanted(10) == []
    assert cache.get("u1", ("v1",), NOW + 601) is None, "too old to serve at all"
    # Taste moved for users with a plan: only they are remade.
    cache.want(["u1", "nobody"])
    assert cache.take_wanted(10) == ["u1"]
    # Least recently used out first.
    cache.put("u2", make_plan(("v",), cat, viewer(), {}, [], NOW, w))
    cache.get("u1", ("v1",), NOW + 2)
    cache.put("u3", make_plan(("v",), cat, viewer(), {}, [], NOW, w))
    assert "u1" in cache and "u3" in cache and "u2" not in cache
    stats = cache.stats()
    assert stats["plans"] == 2 and stats["hits"] >= 3 and stats["misses"] >= 3
