"""Per-user and per-IP token-bucket rate limits for the HTTP API, answered with 429 and ``Retry-After``.

Why token buckets: they allow a short burst (``capacity``) and then a steady rate, which matches how people use
the app (a few quick prompts, then a pause) while capping what a script can do. State lives in process memory:
with several API replicas each enforces its own copy, so the effective limit is per replica; that is a deliberate
trade for zero extra infrastructure, and the interface would survive a move to a shared store.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from api.problems import ApiError

# Float refill can land a hair below a whole token after waiting exactly ``retry_after_s``; forgive that much.
_EPS = 1e-9
# Eviction looks at this many least recently used buckets for a full one, so one insert never scans 100k keys.
_EVICT_SCAN = 64
IP_MULTIPLIER = 5
_NOUNS = {
    "signup": "sign-ups",
    "login": "login attempts",
    "verify": "verifications",
}  # so messages read "too many login attempts from ..."


@dataclass(frozen=True)
class Limit:
    name: str  # e.g. "prompts"; also the bucket namespace, so one subject has one bucket per limit
    capacity: int  # burst size (tokens)
    per_seconds: float  # time to refill `capacity` tokens fully (rate = capacity / per_seconds)

    def __post_init__(self) -> None:
        if self.capacity < 1 or not self.per_seconds > 0:
            raise ValueError(f"limit {self.name!r} needs capacity >= 1 and per_seconds > 0")

    @property
    def rate(self) -> float:
        return self.capacity / self.per_seconds


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float  # 0 when allowed; otherwise seconds until the same call would be allowed (> 0)
    remaining: int  # whole tokens left after this call


class _Bucket:
    __slots__ = ("last", "limit", "tokens")

    def __init__(self, limit: Limit, now: float) -> None:
        self.limit, self.tokens, self.last = limit, float(limit.capacity), now

    def refill(self, limit: Limit, now: float) -> None:
        # max(): a clock that steps back must not drain tokens; the newest Limit wins if config changed.
        self.limit = limit
        self.tokens = min(float(limit.capacity), self.tokens + max(0.0, now - self.last) * limit.rate)
        self.last = max(self.last, now)


class RateLimiter:
    """Token buckets keyed by (limit name, subject), in process memory, thread-safe (FastAPI runs sync endpoints
    in a thread pool). Bounded memory: at most ``max_keys`` buckets; full buckets that are idle are evicted first
    (LRU). Evicting a full bucket loses nothing, since a missing bucket starts full. Only when none of the oldest
    few is full is the least recently used one dropped, which forgives that subject; that takes more than
    ``max_keys`` live subjects at once, and the IP bucket still applies."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        if max_keys < 2:
            raise ValueError("max_keys must be >= 2 (enforce holds a user and an IP bucket at once)")
        self._clock, self._max_keys = clock, max_keys
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def hit(self, limit: Limit, subject: str, cost: int = 1) -> Decision:
        return self.hit_all([(limit, subject)], cost)[0]

    def hit_all(self, checks: Sequence[tuple[Limit, str]], cost: int = 1) -> list[Decision]:
        """All or nothing under one lock: tokens are taken from every bucket only if each allows. When any denies,
        nothing is taken, and the buckets that would have allowed report ``allowed=True`` with their tokens
        untouched; the caller is denied if any decision is not allowed."""
        if cost < 1 or any(cost > limit.capacity for limit, _ in checks):
            raise ValueError(f"cost {cost} must be >= 1 and <= every capacity, or it could never be allowed")
        if len(checks) > self._max_keys:
            raise ValueError(f"{len(checks)} buckets in one call exceed max_keys={self._max_keys}")
        with self._lock:
            now = self._clock()
            keys = {(limit.name, subject) for limit, subject in checks}
            buckets = [self._bucket(limit, subject, now, keys) for limit, subject in checks]
            each = [b.tokens + _EPS >= cost for b in buckets]
            decisions = []
            for b, allowed in zip(buckets, each, strict=True):
                if all(each):
                    b.tokens = max(0.0, b.tokens - cost)
                retry = 0.0 if allowed else (cost - b.tokens) / b.limit.rate
                decisions.append(Decision(allowed, retry, int(b.tokens + _EPS)))
            return decisions

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def _bucket(self, limit: Limit, subject: str, now: float, keep: set[tuple[str, str]]) -> _Bucket:
        key = (limit.name, subject)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._evict_one(now, keep)
            bucket = self._buckets[key] = _Bucket(limit, now)
        else:
            bucket.refill(limit, now)
            self._buckets.move_to_end(key)
        return bucket

    def _evict_one(self, now: float, keep: set[tuple[str, str]]) -> None:
        # ``keep``: buckets this very call holds; evicting one would detach it and lose the tokens it is about to take.
        for i, (key, b) in enumerate(self._buckets.items()):
            if i >= _EVICT_SCAN:
                break
            if key not in keep and b.tokens + max(0.0, now - b.last) * b.limit.rate >= b.limit.capacity:
                del self._buckets[key]
                return
        del self._buckets[next(k for k in self._buckets if k not in keep)]


class RateLimited(ApiError):
    """429 with ``Retry-After``. Subclasses ``ApiError`` (a ``ClipstreamError``), so the problem handler in
    ``api.problems`` already renders it; routes need no extra wiring."""

    def __init__(self, retry_after_s: float, limit_name: str, scope: str) -> None:
        self.retry_after_s, self.limit_name, self.scope = retry_after_s, limit_name, scope
        seconds = max(1, math.ceil(retry_after_s))  # Retry-After is whole seconds; never tell a client "0"
        source = "this account" if scope == "user" else "this network address"
        detail = f"too many {_NOUNS.get(limit_name, limit_name)} from {source}: try again in {seconds} s"
        super().__init__(429, "rate-limited", "Too many requests", detail, headers={"Retry-After": str(seconds)})


DEFAULT_LIMITS: dict[str, Limit] = {
    limit.name: limit
    for limit in (
        Limit("prompts", 10, 60),
        Limit("writes", 60, 60),
        Limit("signup", 5, 3600),
        Limit("login", 10, 300),
        Limit("verify", 30, 60),
    )
}


def ip_limit(limit: Limit) -> Limit:
    """The per-IP limit: 5x the burst over the same period (so 5x the rate), since many users share an IP
    behind NAT or a mobile carrier and must not lock each other out."""
    return Limit(limit.name, limit.capacity * IP_MULTIPLIER, limit.per_seconds)


def enforce(limiter: RateLimiter, limit: Limit, *, user_id: str | None, ip: str | None) -> None:
    """Take one token from the user's and the IP's bucket, or raise ``RateLimited`` and take none.

    Both are checked atomically, so a denied user does not burn the shared IP budget and vice versa. When both
    deny, the longer wait is reported: retrying sooner would fail on the other scope."""
    checks: list[tuple[Limit, str]] = []
    scopes: list[str] = []
    if user_id is not None:
        checks.append((limit, f"user:{user_id}"))
        scopes.append("user")
    if ip is not None:
        checks.append((ip_limit(limit), f"ip:{ip}"))
        scopes.append("ip")
    if not checks:
        return
    denied = [(d.retry_after_s, s) for d, s in zip(limiter.hit_all(checks), scopes, strict=True) if not d.allowed]
    if denied:
        retry_after_s, scope = max(denied)
        raise RateLimited(retry_after_s, limit.name, scope)
