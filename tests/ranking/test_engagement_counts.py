"""Windowed engagement counts: hopping windows, and buckets expiring past the horizon
whatever order events arrive in."""

from __future__ import annotations

import random

from ranking.engagement import HORIZON_S, STEP_S, ClipCounts

T0 = 1_800_000_000.0  # a bucket boundary


def reference_buckets(events: list[tuple[str, float]]) -> dict[int, dict[str, int]]:
    """What the buckets must hold after ``events`` in this order: every bucket within the
    horizon of the latest event seen so far at the time, counted from scratch."""
    buckets: dict[int, dict[str, int]] = {}
    for kind, at in events:
        start = int(at // STEP_S) * STEP_S
        b = buckets.setdefault(start, {})
        b[kind] = b.get(kind, 0) + 1
        # ClipCounts expires relative to each event's own time, as it arrives
        oldest = int(at // STEP_S) * STEP_S - HORIZON_S
        buckets = {s: v for s, v in buckets.items() if s >= oldest}
    return buckets


def test_windows_sum_the_buckets_they_span() -> None:
    c = ClipCounts()
    c.add("view", T0)
    c.add("view", T0 + 1800)
    c.add("like", T0 + 3500)
    c.add("view", T0 + 7000)
    assert c.window(3600, T0 + 7000) == {"view": 1}
    assert c.window(86_400, T0 + 7000) == {"view": 3, "like": 1}
    assert c.total == {"view": 3, "like": 1}


def test_buckets_past_the_horizon_expire_in_any_event_order() -> None:
    rng = random.Random(7)
    for _ in range(30):
        events = [(rng.choice(["view", "like", "impression"]), T0 + rng.uniform(0, 3 * HORIZON_S)) for _ in range(300)]
        if rng.random() < 0.5:
            events.sort(key=lambda e: e[1])  # in time order, as live traffic mostly is
        c = ClipCounts()
        for kind, at in events:
            c.add(kind, at)
        assert c.buckets == reference_buckets(events)
        assert sum(c.total.values()) == 300  # totals never expire


def test_counts_read_back_from_json_keep_expiring() -> None:
    c = ClipCounts()
    c.add("view", T0)
    c.add("view", T0 + 600)
    again = ClipCounts.from_json(c.to_json())
    again.add("like", T0 + HORIZON_S + 300)  # the first bucket is now past the horizon
    assert sorted(again.buckets) == [int(T0) + 600, int(T0 + HORIZON_S + 300) // STEP_S * STEP_S]
