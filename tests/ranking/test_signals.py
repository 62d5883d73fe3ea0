"""Interactions move a user's taste vector toward what they like and away from what they don't."""

from __future__ import annotations

import numpy as np

from ranking.signals import SignalWeights, apply, query_vector

CATS = np.array([1.0, 0.0, 0.0], np.float32)
HORROR = np.array([0.0, 1.0, 0.0], np.float32)


def test_a_new_user_is_cold_until_something_says_what_they_like() -> None:
    assert query_vector(None) is None
    assert apply(None, CATS, "impression") is None
    assert apply(None, CATS, "view") is None  # no watch time: no signal
    liked = apply(None, CATS, "like")
    assert np.allclose(query_vector(liked), CATS)


def test_likes_pull_and_see_less_pushes_harder_than_a_skip() -> None:
    user = apply(None, CATS, "like")
    user = apply(user, HORROR, "like")
    before = float(query_vector(user) @ HORROR)
    skipped = query_vector(apply(user, HORROR, "skip"))
    less = query_vector(apply(user, HORROR, "see_less"))
    assert float(less @ HORROR) < float(skipped @ HORROR) < before
    assert float(less @ CATS) > float(query_vector(user) @ CATS)


def test_watch_time_decides_whether_a_view_pulls_or_pushes() -> None:
    w = SignalWeights()
    assert w.weight("view", watch_ms=300, duration_ms=3000) < 0  # 10%: scrolled past
    assert w.weight("view", watch_ms=1200, duration_ms=3000) == 0  # the neutral point
    assert 0 < w.weight("view", watch_ms=3000, duration_ms=3000) < w.weight("view", watch_ms=6000, duration_ms=3000)
    assert w.weight("view", watch_ms=60_000, duration_ms=3000) == w.weight("view", watch_ms=6000, duration_ms=3000)


def test_recent_taste_outweighs_old_taste() -> None:
    user = None
    for _ in range(10):
        user = apply(user, CATS, "like")
    for _ in range(14):
        user = apply(user, HORROR, "like")
    q = query_vector(user)
    assert float(q @ HORROR) > float(q @ CATS)
