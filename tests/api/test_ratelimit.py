"""Rate limiter: token buckets with a fake clock (no sleeping), enforce() scopes, and the 429 it renders."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from api import problems
from api.ratelimit import DEFAULT_LIMITS, Limit, RateLimited, RateLimiter, enforce
from core.errors import ClipstreamError

PROMPTS = Limit("prompts", 10, 60)  # one token every 6 s


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> RateLimiter:
    return RateLimiter(clock=clock)


def test_burst_up_to_capacity_then_deny_with_retry_after(limiter: RateLimiter, clock: FakeClock) -> None:
    remaining = [limiter.hit(PROMPTS, "u1").remaining for _ in range(10)]
    assert remaining == list(range(9, -1, -1))
    denied = limiter.hit(PROMPTS, "u1")
    assert denied == denied.__class__(allowed=False, retry_after_s=pytest.approx(6.0), remaining=0)
    clock.advance(2.5)
    assert limiter.hit(PROMPTS, "u1").retry_after_s == pytest.approx(3.5)
    clock.advance(3.5)  # waiting exactly retry_after_s is enough, despite float rounding
    assert limiter.hit(PROMPTS, "u1").allowed
    assert not limiter.hit(PROMPTS, "u1").allowed


def test_refill_over_time_is_capped_at_capacity(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(10):
        limiter.hit(PROMPTS, "u1")
    clock.advance(30)  # 5 tokens back
    assert sum(limiter.hit(PROMPTS, "u1").allowed for _ in range(10)) == 5
    clock.advance(10_000)  # never more than capacity
    assert sum(limiter.hit(PROMPTS, "u1").allowed for _ in range(20)) == 10


def test_cost_greater_than_one(limiter: RateLimiter, clock: FakeClock) -> None:
    assert limiter.hit(PROMPTS, "u1", cost=4).remaining == 6
    assert limiter.hit(PROMPTS, "u1", cost=4).remaining == 2
    denied = limiter.hit(PROMPTS, "u1", cost=4)
    assert not denied.allowed and denied.remaining == 2
    assert denied.retry_after_s == pytest.approx(12.0)  # until the whole cost is available
    assert limiter.hit(PROMPTS, "u1", cost=2).allowed  # the denied call took nothing
    for bad in (0, 11):
        with pytest.raises(ValueError):
            limiter.hit(PROMPTS, "u1", cost=bad)


def test_subjects_and_limits_are_isolated(limiter: RateLimiter) -> None:
    for _ in range(10):
        assert limiter.hit(PROMPTS, "u1").allowed
    assert not limiter.hit(PROMPTS, "u1").allowed
    assert limiter.hit(PROMPTS, "u2").allowed
    assert limiter.hit(DEFAULT_LIMITS["writes"], "u1").allowed
    limiter.reset()
    assert limiter.hit(PROMPTS, "u1").allowed


def test_default_limits() -> None:
    got = {k: (v.name, v.capacity, v.per_seconds) for k, v in DEFAULT_LIMITS.items()}
    assert got == {
        "prompts": ("prompts", 10, 60),
        "writes": ("writes", 60, 60),
        "signup": ("signup", 5, 3600),
        "login": ("login", 10, 300),
        "verify": ("verify", 30, 60),
    }
    with pytest.raises(ValueError):
        Limit("bad", 0, 60)


def test_enforce_denies_per_user_with_readable_error(limiter: RateLimiter) -> None:
    for _ in range(10):
        enforce(limiter, PROMPTS, user_id="u1", ip="10.0.0.1")
    with pytest.raises(RateLimited) as exc:
        enforce(limiter, PROMPTS, user_id="u1", ip="10.0.0.1")
    e = exc.value
    assert isinstance(e, ClipstreamError)
    assert (e.limit_name, e.scope, e.status) == ("prompts", "user", 429)
    assert e.retry_after_s == pytest.approx(6.0)
    assert str(e) == "too many prompts from this account: try again in 6 s"
    assert e.headers == {"Retry-After": "6"}
    enforce(limiter, PROMPTS, user_id=None, ip=None)  # nothing to key on: a no-op


def test_ip_limit_is_five_times_user_limit(limiter: RateLimiter, clock: FakeClock) -> None:
    for i in range(50):  # 50 different users behind one NAT
        enforce(limiter, PROMPTS, user_id=f"u{i}", ip="10.0.0.1")
    with pytest.raises(RateLimited) as exc:
        enforce(limiter, PROMPTS, user_id="fresh", ip="10.0.0.1")
    assert exc.value.scope == "ip"
    assert "from this network address" in str(exc.value)
    assert exc.value.retry_after_s == pytest.approx(1.2)  # same period, 5x rate: 50 per 60 s
    for _ in range(50):  # anonymous (signup/login) traffic is limited by IP alone
        enforce(limiter, PROMPTS, user_id=None, ip="10.0.0.2")
    with pytest.raises(RateLimited):
        enforce(limiter, PROMPTS, user_id=None, ip="10.0.0.2")


def test_denied_call_takes_no_tokens_from_the_other_scope(limiter: RateLimiter) -> None:
    for _ in range(10):
        enforce(limiter, PROMPTS, user_id="greedy", ip="10.0.0.9")
    for _ in range(100):  # the user is out; these must not drain the shared IP bucket
        with pytest.raises(RateLimited):
            enforce(limiter, PROMPTS, user_id="greedy", ip="10.0.0.9")
    for i in range(40):  # 50 - 10 left for the neighbours
        enforce(limiter, PROMPTS, user_id=f"n{i}", ip="10.0.0.9")
    with pytest.raises(RateLimited) as exc:
        enforce(limiter, PROMPTS, user_id="late", ip="10.0.0.9")
    assert exc.value.scope == "ip"
    # and the IP denial took nothing from this user's own bucket: elsewhere it still has a full burst
    for _ in range(10):
        enforce(limiter, PROMPTS, user_id="late", ip="10.0.0.10")


def test_eviction_bound_prefers_full_idle_buckets(clock: FakeClock) -> None:
    limiter, slow = RateLimiter(clock=clock, max_keys=4), Limit("slow", 10, 3600)  # slow: one token per 6 min
    for _ in range(10):
        limiter.hit(slow, "drained")  # least recently used from here on, but empty: must survive
    for i in range(20):
        limiter.hit(PROMPTS, f"new{i}")
        assert len(limiter) <= 4
        clock.advance(6)  # the newcomer is full again, so it is the one to go
    assert not limiter.hit(slow, "drained").allowed  # not forgiven: its bucket was kept
    for i in range(4):  # busy0-2 replace full buckets; then none is full and the least recently used goes
        limiter.hit(PROMPTS, f"busy{i}")
    assert len(limiter) == 4
    assert limiter.hit(slow, "drained").allowed  # the cost of that fallback: this subject was forgiven


def test_eviction_never_detaches_a_bucket_in_use(clock: FakeClock) -> None:
    limiter, slow = RateLimiter(clock=clock, max_keys=3), Limit("slow", 10, 3600)
    limiter.hit(PROMPTS, "u")
    clock.advance(6)  # "u" is full again
    for subject in ("x", "y"):  # drained, so "u" is the only full bucket: the eviction candidate
        limiter.hit(slow, subject, cost=5)
    # the new "v" needs room; "u" is full, but this very call is taking a token from it
    assert all(d.allowed for d in limiter.hit_all([(PROMPTS, "u"), (PROMPTS, "v")]))
    assert len(limiter) == 3
    assert limiter.hit(PROMPTS, "u").remaining == 8  # both tokens counted; a detached bucket would say 9


def test_threads_never_allow_more_than_capacity() -> None:
    def clock() -> float:
        time.sleep(0)  # yield inside the critical section (the clock stays frozen), so an unlocked limiter races
        return 1000.0

    limiter, limit = RateLimiter(clock=clock), Limit("writes", 6000, 60)
    allowed: list[int] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        allowed.append(sum(limiter.hit(limit, "shared").allowed for _ in range(1000)))

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old_interval)
    assert sum(allowed) == 6000  # frozen clock: exactly the burst, never more


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 20),
    per_seconds=st.floats(0.1, 1000),
    ops=st.lists(st.one_of(st.floats(0, 100), st.integers(1, 20)), max_size=200),
)
def test_allowed_never_exceeds_capacity_plus_refill(capacity: int, per_seconds: float, ops: list) -> None:
    clock = FakeClock()
    limiter, limit = RateLimiter(clock=clock), Limit("p", capacity, per_seconds)
    start, taken = clock.now, 0
    for op in ops:
        if isinstance(op, float):
            clock.advance(op)
            continue
        cost = min(op, capacity)
        d = limiter.hit(limit, "s", cost)
        assert d.allowed == (d.retry_after_s == 0) and d.retry_after_s >= 0 and 0 <= d.remaining <= capacity
        taken += cost if d.allowed else 0
        assert taken <= capacity + limit.rate * (clock.now - start) + 1e-6
        if not d.allowed:  # the promise in retry_after_s holds
            clock.advance(d.retry_after_s)
            assert limiter.hit(limit, "s", cost).allowed
            taken += cost


def test_rate_limited_renders_429_problem_with_retry_after(limiter: RateLimiter) -> None:
    app = FastAPI()
    problems.install(app)

    @app.post("/v1/prompts")
    def submit(request: Request) -> dict[str, bool]:
        enforce(limiter, Limit("prompts", 1, 12), user_id="u1", ip=request.client.host if request.client else None)
        return {"ok": True}

    client = TestClient(app)
    assert client.post("/v1/prompts").status_code == 200
    resp = client.post("/v1/prompts")
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "12"
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["type"].endswith("/rate-limited") and body["status"] == 429
    assert body["detail"] == "too many prompts from this account: try again in 12 s"
