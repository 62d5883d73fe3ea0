"""Windowed engagement counts per clip: the basis of trending and smoothed rates.

Counts are kept in hopping windows: time is cut into buckets of ``step`` seconds, and a
window of ``size`` seconds is the sum of the buckets it spans, so "likes in the last
hour" moves forward every ``step`` without replaying events. One :class:`ClipCounts`
holds the buckets of one clip for every kind; buckets older than the largest window
expire as new events arrive. The ranking worker keeps one per clip in a Faust table
(the value is :meth:`ClipCounts.to_json`), the offline evaluator keeps them in a dict:
both run this code.

Smoothed rates (:func:`smoothed_rate`) shrink a clip's rate toward a prior when it has
few impressions, so three likes out of three views does not outrank a clip with 400
likes out of 1,000. The prior is the catalogue's rate, or, with a :class:`ContentPrior`,
the rate that clips *like this one* earn: a linear model of the clip's embedding fitted
on every clip's counts (:func:`fit_content_prior`). Most clips have been shown a handful
of times, and their own counts say little; what similar clips did says more.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = ("impression", "view", "complete", "like", "share", "comment", "skip", "see_less", "report")
STEP_S = 300  # five-minute buckets
WINDOWS_S: Mapping[str, int] = {"1h": 3600, "24h": 86_400}
HORIZON_S = max(WINDOWS_S.values())


@dataclass
class ClipCounts:
    """Bucketed counts of one clip: {bucket start (epoch s): {kind: count}}."""

    buckets: dict[int, dict[str, int]] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    step: int = STEP_S
    #: (reactions, weighted reactions, times shown), kept until the next event.
    _quality: tuple[Mapping[str, float], float, int] | None = field(default=None, repr=False, compare=False)
    #: The earliest bucket's start (None: not known yet), so that most events need not
    #: scan every bucket to find none expired (a busy clip has 288 of them).
    _first: int | None = field(default=None, repr=False, compare=False)

    def add(self, kind: str, at: float, n: int = 1) -> None:
        self._quality = None
        start = int(at // self.step) * self.step
        bucket = self.buckets.get(start)
        if bucket is None:
            bucket = self.buckets[start] = {}
            if self._first is not None and start < self._first:
                self._first = start
        bucket[kind] = bucket.get(kind, 0) + n
        self.total[kind] = self.total.get(kind, 0) + n
        self.expire(at)

    def expire(self, now: float, horizon: int = HORIZON_S) -> None:
        oldest = int(now // self.step) * self.step - horizon
        if self._first is None:
            self._first = min(self.buckets, default=oldest)
        if self._first >= oldest:
            return
        for start in [s for s in self.buckets if s < oldest]:
            del self.buckets[start]
        self._first = min(self.buckets, default=oldest)

    def window(self, size_s: int, now: float) -> dict[str, int]:
        """Counts of the hopping window of ``size_s`` seconds ending with the bucket of ``now``."""
        end = int(now // self.step) * self.step
        out: dict[str, int] = {}
        for start, counts in self.buckets.items():
            if end - size_s < start <= end:
                for kind, n in counts.items():
                    out[kind] = out.get(kind, 0) + n
        return out

    def latest(self, kinds: Container[str]) -> float | None:
        """When the latest bucket holding one of ``kinds`` ends (None: there is none)."""
        starts = [start for start, counts in self.buckets.items() if any(k in kinds for k in counts)]
        return max(starts) + self.step if starts else None

    def to_json(self) -> dict[str, Any]:
        return {"b": {str(k): v for k, v in self.buckets.items()}, "t": self.total, "s": self.step}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClipCounts:
        return cls(
            buckets={int(k): dict(v) for k, v in data.get("b", {}).items()},
            total=dict(data.get("t", {})),
            step=int(data.get("s", STEP_S)),
        )


def kinds_of(interaction_kind: str, watch_ms: int | None, duration_ms: int | None) -> tuple[str, ...]:
    """The counters one interaction bumps: a view that reached the end is also a completion."""
    if interaction_kind not in KINDS:
        return ()
    if interaction_kind == "view" and watch_ms and duration_ms and watch_ms >= 0.9 * duration_ms:
        return ("view", "complete")
    return (interaction_kind,)


#: What each reaction counts for in :func:`quality`, per impression; a deployment may
#: weigh them otherwise (``FeedWeights.reactions``), say count views where a view is a
#: choice the viewer made rather than autoplay.
REACTION_WEIGHTS: Mapping[str, float] = {
    "like": 1.0,
    "share": 2.0,
    "complete": 0.5,
    "skip": -0.5,
    "see_less": -2.0,
    "report": -5.0,
}


def reactions_and_shown(counts: ClipCounts, reactions: Mapping[str, float] = REACTION_WEIGHTS) -> tuple[float, int]:
    """(weighted reactions, times shown) of one clip over its whole life."""
    total = counts.total
    shown = max(total.get("impression", 0), total.get("view", 0))
    return sum(w * total.get(kind, 0) for kind, w in reactions.items()), shown


#: How many impressions' worth of weight the prior carries in a smoothed rate.
PRIOR_WEIGHT = 20.0


def quality(
    counts: ClipCounts | None,
    prior_rate: float,
    reactions: Mapping[str, float] = REACTION_WEIGHTS,
    expected: float | None = None,
    prior_weight: float = PRIOR_WEIGHT,
) -> float:
    """The scorer's engagement feature: the smoothed rate of good reactions (likes,
    shares, completions, less skips, "see less" and reports; weights ``reactions``) per
    impression, relative to the catalogue's rate ``prior_rate``, minus one. The rate
    shrinks toward ``expected`` (what a :class:`ContentPrior` predicts for this clip)
    when given, otherwise toward ``prior_rate`` (then a clip nobody has reacted to
    scores 0). The counts' sums are cached on ``counts`` until its next event, because
    every feed request asks this of hundreds of clips."""
    if counts is None:
        hits, shown = 0.0, 0
    else:
        cached = counts._quality
        if cached is not None and cached[0] is reactions:
            hits, shown = cached[1], cached[2]
        else:
            hits, shown = reactions_and_shown(counts, reactions)
            counts._quality = (reactions, hits, shown)
    toward = prior_rate if expected is None else expected
    return smoothed_rate(hits, shown, toward, prior_weight) / max(prior_rate, 1e-6) - 1.0


def smoothed_rate(hits: float, trials: float, prior_rate: float, prior_weight: float = PRIOR_WEIGHT) -> float:
    """(hits + prior_rate·w) / (trials + w): a Beta-prior estimate of a rate."""
    return (hits + prior_rate * prior_weight) / (max(trials, 0) + prior_weight)


@dataclass(frozen=True)
class ContentPrior:
    """The weighted reaction rate a clip can expect from its embedding alone: a linear
    model, predictions kept within the range of the rates it was fitted on."""

    coef: np.ndarray
    intercept: float
    low: float
    high: float
    clips: int  # clips with impressions it was fitted on
    impressions: int

    def predict(self, vectors: np.ndarray) -> np.ndarray:
        """One expected rate per row of ``vectors`` (clip embeddings)."""
        raw = np.asarray(vectors, np.float64) @ self.coef + self.intercept
        return np.clip(raw, self.low, self.high)


#: Fewer clips with impressions than this and no content prior is fitted.
MIN_PRIOR_CLIPS = 10


def fit_content_prior(
    vectors: np.ndarray, hits: np.ndarray, shown: np.ndarray, ridge: float = 100.0
) -> ContentPrior | None:
    """Weighted ridge regression of each clip's reaction rate (``hits / shown``) on its
    embedding, each clip weighing as many times as it was shown (so it is the least
    squares fit of every impression's outcome); ``ridge`` is in impressions. None when
    fewer than :data:`MIN_PRIOR_CLIPS` clips have impressions."""
    n = np.asarray(shown, np.float64)
    keep = n > 0
    if int(keep.sum()) < MIN_PRIOR_CLIPS:
        return None
    x = np.asarray(vectors, np.float64)[keep]
    n = n[keep]
    rate = np.asarray(hits, np.float64)[keep] / n
    total = float(n.sum())
    x_mean = n @ x / total
    r_mean = float(n @ rate) / total
    xc = x - x_mean
    weighted = xc * n[:, None]
    gram, target = weighted.T @ xc + max(ridge, 0.0) * np.eye(x.shape[1]), weighted.T @ (rate - r_mean)
    try:
        coef = np.linalg.solve(gram, target)
    except np.linalg.LinAlgError:  # no ridge and fewer distinct clips than dimensions
        coef = np.linalg.lstsq(gram, target, rcond=None)[0]
    return ContentPrior(
        coef=coef, intercept=float(r_mean - x_mean @ coef), low=float(rate.min()), high=float(rate.max()),
        clips=int(keep.sum()), impressions=int(total),
    )  # fmt: skip


#: What each kind of event in the window counts for in :func:`trending_score`.
#: Impressions count for nothing: being shown is not engagement.
TRENDING_WEIGHTS: Mapping[str, float] = {
    "view": 0.2,
    "complete": 0.5,
    "like": 1.0,
    "share": 2.0,
    "comment": 1.0,
    "skip": -0.2,
    "see_less": -1.0,
    "report": -3.0,
}


def trending_score(counts: ClipCounts, now: float, window_s: int = WINDOWS_S["1h"]) -> float:
    """Engagement in the window, weighted by how much each action says."""
    w = counts.window(window_s, now)
    return sum(n * TRENDING_WEIGHTS[k] for k, n in w.items() if k in TRENDING_WEIGHTS)
