"""Offline evaluation: replay a recorded log in time order through the online ranking
code, then measure what each ranker would have put in front of each user.

The state is the API's :class:`~ranking.state.RankingState`, fed record by record by
:class:`Replay`, which never lets a record at or after the evaluation time in (time only
moves forward). The ranker under test is the API's own code: :class:`FeedScorer` orders
a given candidate list with :func:`ranking.feed.score` and :func:`ranking.feed.rerank`
(held-out impressions of a logged data set), :class:`FeedPages` asks
:func:`ranking.feed.build_feed` for a page (sources, filters, scorer, re-rank: a
simulated world, where every unseen clip can be judged). Baselines, measured in the same
run on the same questions: :class:`RandomOrder`, :class:`NewestFirst`,
:class:`MostPopular`.

Metrics (all per question, then averaged over questions with a 95% interval):

* :func:`ndcg_at_k`: DCG of the first ``k`` (linear gains, log2 discount) over the DCG
  of the best possible ``k`` from the same pool;
* :func:`recall_at_k`: relevant items in the first ``k`` over ``min(k, relevant)``, so a
  perfect page scores 1 however many relevant items the pool holds;
* :func:`auc`: the share of (positive, negative) pairs a ranking puts in the right order,
  computed per user from the order itself (so it is defined for every ranker, scores or
  not) and averaged over users with at least one of each;
* :func:`coverage`: the share of the live catalogue that appears on at least one page;
* :func:`intra_list_diversity`: mean pairwise cosine distance of a page's embeddings.

``ranking/kuairand.py`` (a real random-exposure log) and ``ranking/simulate.py``
(simulated users over the generator's vocabulary) build on this module;
``bench/offline_eval.py`` runs both; ``docs/ranking-evaluation.md`` has the protocol and
the numbers.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

import numpy as np

from core.errors import ClipstreamError
from ranking.engagement import REACTION_WEIGHTS, ClipCounts, reactions_and_shown
from ranking.feed import FeedWeights, Viewer, build_feed, gather, rerank, score
from ranking.state import RankingState


class OfflineEvalError(ClipstreamError):
    """An evaluation that cannot run as asked (no data, a log that goes back in time)."""


# ---------------------------------------------------------------------------- metrics
def dcg(gains: Sequence[float], k: int) -> float:
    """Discounted cumulative gain of the first ``k`` gains (linear gain, log2 discount)."""
    return float(sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k])))


def ndcg_at_k(ranked_gains: Sequence[float], k: int, pool_gains: Sequence[float] | None = None) -> float | None:
    """DCG@k of a ranking over the best DCG@k the pool allows (``pool_gains``: every
    candidate's gain, ranked or not; by default the ranked gains themselves). None when
    the pool holds no gain at all: the question says nothing about the ranker."""
    pool = list(ranked_gains if pool_gains is None else pool_gains)
    best = dcg(sorted(pool, reverse=True), k)
    if best <= 0.0:
        return None
    return dcg(ranked_gains, k) / best


def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float | None:
    """Relevant items among the first ``k`` over ``min(k, len(relevant))``; None
    without relevant items."""
    if not relevant:
        return None
    hits = sum(1 for item in ranked[:k] if item in relevant)
    return hits / min(k, len(relevant))


def auc(labels_in_order: Sequence[float]) -> float | None:
    """Share of (positive, negative) pairs a ranking orders correctly, from the labels
    (> 0 positive) in ranked order; None without both a positive and a negative."""
    positives = negatives = 0
    correct = 0
    for label in labels_in_order:
        if label > 0:
            positives += 1
        else:
            negatives += 1
            correct += positives  # every positive so far is ranked above this negative
    if positives == 0 or negatives == 0:
        return None
    return correct / (positives * negatives)


def coverage(pages: Iterable[Sequence[str]], catalogue: Collection[str]) -> float:
    """Share of ``catalogue`` that appears on at least one page."""
    if not catalogue:
        return 0.0
    shown = {item for page in pages for item in page}
    return sum(1 for item in catalogue if item in shown) / len(catalogue)


def intra_list_diversity(vectors: np.ndarray) -> float | None:
    """Mean pairwise cosine distance (1 - cosine) of a page's item vectors; None for a
    page of fewer than two items."""
    n = len(vectors)
    if n < 2:
        return None
    v = np.asarray(vectors, np.float64)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    mean_sim = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return float(1.0 - mean_sim)


@dataclass(frozen=True)
class Summary:
    """Mean of a metric over questions, with the half-width of a normal 95% interval."""

    mean: float
    half_width: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Summary:
        v = np.array([x for x in values if x is not None], np.float64)
        if len(v) == 0:
            return cls(float("nan"), float("nan"), 0)
        hw = 1.96 * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
        return cls(float(v.mean()), hw, len(v))

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a"
        return f"{self.mean:.4f} ± {self.half_width:.4f}" if math.isfinite(self.half_width) else f"{self.mean:.4f}"


def paired_difference(a: Mapping[Any, float | None], b: Mapping[Any, float | None]) -> Summary:
    """Mean of ``a - b`` over the questions both answered (the same users), with its
    interval: whether one ranker beats another beyond the noise of the sample."""
    return Summary.of(av - bv for key, av in a.items() if av is not None and (bv := b.get(key)) is not None)


def empirical_prior(
    engagement: Mapping[str, ClipCounts], reactions: Mapping[str, float] = REACTION_WEIGHTS
) -> float | None:
    """The catalogue's average rate of weighted reactions per impression in the replayed
    log: the prior the engagement feature should shrink toward (empirical Bayes) instead
    of a constant guessed for another population. None when it is not positive (the
    feature divides by it)."""
    hits = shown = 0.0
    for counts in engagement.values():
        h, n = reactions_and_shown(counts, reactions)
        hits, shown = hits + h, shown + n
    rate = hits / shown if shown else 0.0
    return rate if rate > 0 else None


# ---------------------------------------------------------------------------- replay
def occurred(record: Any) -> float:
    at: datetime = record.occurred_at
    return at.timestamp()


def time_ordered(records: Iterable[Any]) -> list[Any]:
    """Records sorted by ``occurred_at``; records of the same instant keep their order
    (a publish before the interactions it receives, an impression before its view)."""
    return sorted(records, key=occurred)


def cutoff_at(times: Sequence[float] | np.ndarray, fraction: float) -> float:
    """The time before which ``fraction`` of ``times`` lie: one global split point, so
    every user is split at the same moment and nothing after it can leak into training."""
    if not 0.0 < fraction < 1.0:
        raise OfflineEvalError(f"split fraction must be in (0, 1), not {fraction}")
    if len(times) == 0:
        raise OfflineEvalError("cannot split an empty log")
    return float(np.quantile(np.asarray(times, np.float64), fraction, method="higher"))


class Replay:
    """A log applied to a :class:`RankingState` in time order, up to a moving clock.

    :meth:`advance` applies every record strictly before the given time and nothing
    else; the clock never goes back, so an evaluation at time ``t`` sees exactly the log
    before ``t``, as the online state would have.
    """

    def __init__(self, state: RankingState, records: Iterable[Any]) -> None:
        self.state = state
        self.records = time_ordered(records)
        self._times = [occurred(r) for r in self.records]
        self.position = 0
        self.clock = float("-inf")

    def advance(self, until: float) -> int:
        """Apply the records with ``occurred_at < until``; returns how many were applied."""
        if until < self.clock:
            raise OfflineEvalError(f"replay cannot go back in time (at {self.clock}, asked for {until})")
        start = self.position
        while self.position < len(self.records) and self._times[self.position] < until:
            self.state.apply(self.records[self.position])
            self.position += 1
        self.clock = until
        return self.position - start

    @property
    def applied_until(self) -> float:
        """Time of the last record applied (-inf before the first)."""
        return self._times[self.position - 1] if self.position else float("-inf")


# ---------------------------------------------------------------------------- rankers
class Ranker(Protocol):
    """Orders clips for one viewer at one moment; returns at most ``limit`` clip ids."""

    name: str

    def rank(
        self, state: RankingState, viewer: Viewer, candidates: Sequence[str], now: float, limit: int
    ) -> list[str]: ...


def _rng(seed: int, user_id: str | None) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(str(user_id).encode())])


def _by_key_random_ties(
    candidates: Sequence[str], key: Callable[[str], float], rng: np.random.Generator, limit: int
) -> list[str]:
    """Highest ``key`` first; equal keys in a random (seeded) order, so a baseline with
    many ties is not flattered or punished by the order the candidates came in."""
    shuffled = [candidates[i] for i in rng.permutation(len(candidates))]
    return sorted(shuffled, key=lambda c: -key(c))[:limit]


@dataclass
class _OnlineWeights:
    """The scorer's weights, with the engagement prior taken from the replayed log when
    ``prior_from_log`` (recomputed only when the state has moved on)."""

    weights: FeedWeights = field(default_factory=FeedWeights.load)
    name: str = "ranker"
    prior_from_log: bool = False
    _cached: tuple[int, int, FeedWeights] | None = field(default=None, init=False, repr=False)

    def weights_for(self, state: RankingState) -> FeedWeights:
        if not self.prior_from_log:
            return self.weights
        key = (id(state), state.applied)
        if self._cached is None or self._cached[:2] != key:
            prior = empirical_prior(state.engagement, self.weights.reactions)
            w = self.weights if prior is None else replace(self.weights, prior_like_rate=prior)
            self._cached = (*key, w)
        return self._cached[2]


@dataclass
class FeedScorer(_OnlineWeights):
    """The online scorer and re-ranker over a given candidate list (every candidate
    tagged with one offline source, so no source-specific feature fires)."""

    diversify: bool = True  # rerank (MMR, author cap) after scoring, as the feed does

    def rank(self, state: RankingState, viewer: Viewer, candidates: Sequence[str], now: float, limit: int) -> list[str]:
        with state.lock:
            w = self.weights_for(state)
            cands = gather(state.catalog, [(c, "offline") for c in candidates])
            scored = score(cands, viewer, state.engagement, now, w, state.catalog, state.prior_for(now, w))
            page = rerank(scored, limit, w) if self.diversify else scored[:limit]
        return [c.clip.clip_id for c in page]


@dataclass
class FeedPages(_OnlineWeights):
    """A page from :func:`ranking.feed.build_feed`: the request the API serves, its own
    sources and filters included (the candidate list is ignored: the filters already
    leave out what the viewer has seen)."""

    def rank(self, state: RankingState, viewer: Viewer, candidates: Sequence[str], now: float, limit: int) -> list[str]:
        with state.lock:
            w = self.weights_for(state)
            trending, prior = state.trending(now), state.prior_for(now, w)
            result = build_feed(state.catalog, viewer, state.engagement, trending, now, limit, w, prior=prior)
        return [c.clip.clip_id for c in result.page]


@dataclass
class RandomOrder:
    seed: int = 0
    name: str = "random"

    def rank(self, state: RankingState, viewer: Viewer, candidates: Sequence[str], now: float, limit: int) -> list[str]:
        rng = _rng(self.seed, viewer.user_id)
        return [candidates[i] for i in rng.permutation(len(candidates))[:limit]]


@dataclass
class NewestFirst:
    """Reverse-chronological: the most recently published first."""

    seed: int = 0
    name: str = "newest"

    def rank(self, state: RankingState, viewer: Viewer, candidates: Sequence[str], now: float, limit: int) -> list[str]:
        def published(cid: str) -> float:
            info = state.catalog.get(cid)
            return info.published_at if info is not None else float("-inf")

        return _by_key_random_ties(candidates, published, _rng(self.seed, viewer.user_id), limit)


@dataclass
class MostPopular:
    """The most positives first: ``counts`` (clip → count) when given, otherwise the
    online engagement counters of ``kinds`` as the state holds them at ``now``. With a
    ``signal``, it answers for that signal only (popularity by that signal's positives)."""

    counts: Mapping[str, float] | None = None
    kinds: tuple[str, ...] = ("like",)
    seed: int = 0
    name: str = "popularity"
    signal: str | None = None

    def rank(self, state: RankingState, viewer: Viewer, candidates: Sequence[str], now: float, limit: int) -> list[str]:
        if self.counts is not None:
            counts = self.counts

            def key(cid: str) -> float:
                return float(counts.get(cid, 0.0))

        else:

            def key(cid: str) -> float:
                c = state.engagement.get(cid)
                return 0.0 if c is None else float(sum(c.total.get(k, 0) for k in self.kinds))

        with state.lock:
            return _by_key_random_ties(candidates, key, _rng(self.seed, viewer.user_id), limit)


# ---------------------------------------------------------------------------- questions
@dataclass(frozen=True)
class RankingQuestion:
    """Order ``candidates`` for one user (a logged data set: their held-out impressions),
    with one label per candidate per signal (> 0: positive)."""

    user_id: str
    candidates: tuple[str, ...]
    labels: Mapping[str, tuple[float, ...]]


@dataclass(frozen=True)
class PageQuestion:
    """Serve one page to one user; ``gains`` judge every clip the page may hold (a
    simulated user's true liking), ``relevant`` is the set recall counts."""

    user_id: str
    pool: tuple[str, ...]
    gains: Mapping[str, float]
    relevant: frozenset[str]


@dataclass
class RankingResult:
    """Per ranker and signal, AUC and NDCG@k of every question (by user)."""

    k: int
    auc: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    ndcg: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for ranker, by_signal in self.auc.items():
            for signal, per_user in by_signal.items():
                a, n = Summary.of(per_user.values()), Summary.of(self.ndcg[ranker][signal].values())
                out.append(
                    {"signal": signal, "ranker": ranker, "auc": a.mean, "auc_ci": a.half_width, "auc_users": a.n,
                     f"ndcg@{self.k}": n.mean, f"ndcg@{self.k}_ci": n.half_width, "ndcg_users": n.n}
                )  # fmt: skip
        return out

    def versus(self, ranker: str, baseline: str) -> dict[str, dict[str, Summary]]:
        """Per signal, the paired difference ``ranker - baseline`` of AUC and NDCG."""
        return {
            signal: {
                "auc": paired_difference(self.auc[ranker][signal], self.auc[baseline][signal]),
                "ndcg": paired_difference(self.ndcg[ranker][signal], self.ndcg[baseline][signal]),
            }
            for signal in self.auc[ranker]
        }

    def table(self) -> str:
        signals = list(dict.fromkeys(r["signal"] for r in self.rows()))
        lines = [f"| signal | ranker | AUC (per user) | NDCG@{self.k} | users (AUC / NDCG) |", "|---|---|---|---|---|"]
        for signal in signals:
            for ranker in self.auc:
                a = Summary.of(self.auc[ranker][signal].values())
                n = Summary.of(self.ndcg[ranker][signal].values())
                lines.append(f"| {signal} | {ranker} | {a} | {n} | {a.n} / {n.n} |")
        return "\n".join(lines)


def evaluate_rankings(
    state: RankingState,
    questions: Sequence[RankingQuestion],
    rankers: Sequence[Ranker],
    now: float,
    k: int = 10,
    viewer: Callable[[str], Viewer] | None = None,
) -> RankingResult:
    """Every ranker orders every question's candidates (all of them); AUC and NDCG@k per
    signal from the order. A ranker with a ``signal`` attribute is judged on that signal
    only (several such rankers may share a name)."""
    result = RankingResult(k)
    make_viewer = viewer or (lambda uid: state.viewer(uid))
    for ranker in rankers:
        result.auc[ranker.name] = {}
        result.ndcg[ranker.name] = {}
    for q in questions:
        with state.lock:
            v = make_viewer(q.user_id)
        for ranker in rankers:
            order = ranker.rank(state, v, q.candidates, now, len(q.candidates))
            position = {cid: i for i, cid in enumerate(order)}
            missing = [c for c in q.candidates if c not in position]
            order = order + missing  # a ranker that dropped a candidate ranks it last
            index = {cid: i for i, cid in enumerate(q.candidates)}
            only = getattr(ranker, "signal", None)
            for signal, labels in q.labels.items():
                if only is not None and signal != only:
                    continue
                ranked = [labels[index[cid]] for cid in order]
                result.auc[ranker.name].setdefault(signal, {})[q.user_id] = auc(ranked)
                result.ndcg[ranker.name].setdefault(signal, {})[q.user_id] = ndcg_at_k(ranked, k)
    return result


@dataclass
class PageResult:
    """Per ranker: NDCG@k and Recall@k of every page, intra-list diversity, and the pages
    themselves for coverage."""

    k: int
    ndcg: dict[str, dict[Any, float | None]] = field(default_factory=dict)
    recall: dict[str, dict[Any, float | None]] = field(default_factory=dict)
    diversity: dict[str, dict[Any, float | None]] = field(default_factory=dict)
    coverage: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, dict[str, dict[Any, float | None]]] = field(default_factory=dict)

    def merge(self, other: PageResult) -> None:
        for mine, theirs in [(self.ndcg, other.ndcg), (self.recall, other.recall), (self.diversity, other.diversity)]:
            for name, values in theirs.items():
                mine.setdefault(name, {}).update(values)
        for name, cov in other.coverage.items():
            self.coverage.setdefault(name, []).extend(cov)
        for metric, by_ranker in other.extra.items():
            for name, values in by_ranker.items():
                self.extra.setdefault(metric, {}).setdefault(name, {}).update(values)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for name in self.ndcg:
            n, r, d = (
                Summary.of(self.ndcg[name].values()),
                Summary.of(self.recall[name].values()),
                Summary.of(self.diversity[name].values()),
            )
            row = {"ranker": name, f"ndcg@{self.k}": n.mean, f"ndcg@{self.k}_ci": n.half_width,
                   f"recall@{self.k}": r.mean, f"recall@{self.k}_ci": r.half_width,
                   "coverage": float(np.mean(self.coverage[name])) if self.coverage.get(name) else float("nan"),
                   "diversity": d.mean, "pages": n.n}  # fmt: skip
            for metric, by_ranker in self.extra.items():
                row[metric] = Summary.of(by_ranker.get(name, {}).values()).mean
            out.append(row)
        return out

    def table(self) -> str:
        extra = list(self.extra)
        head = f"| ranker | NDCG@{self.k} | Recall@{self.k} | coverage | intra-list diversity |"
        head += "".join(f" {m} |" for m in extra) + " pages |"
        lines = [head, "|---" * (6 + len(extra)) + "|"]
        for name in self.ndcg:
            n, r = Summary.of(self.ndcg[name].values()), Summary.of(self.recall[name].values())
            d = Summary.of(self.diversity[name].values())
            cov = float(np.mean(self.coverage[name])) if self.coverage.get(name) else float("nan")
            cells = "".join(f" {Summary.of(self.extra[m].get(name, {}).values()).mean:.3f} |" for m in extra)
            lines.append(f"| {name} | {n} | {r} | {cov:.3f} | {d.mean:.4f} |{cells} {n.n} |")
        return "\n".join(lines)


def evaluate_pages(
    state: RankingState,
    questions: Sequence[PageQuestion],
    rankers: Sequence[Ranker],
    now: float,
    k: int = 10,
    label: Any = None,
    page_metrics: Mapping[str, Callable[[Sequence[str]], float | None]] | None = None,
) -> PageResult:
    """Every ranker serves a page of ``k`` to every question's user at ``now``; pages are
    judged by the question's gains and relevant set, coverage is over the live catalogue,
    diversity over the clips' embeddings in the index. ``label`` tells questions of
    several evaluation times apart; ``page_metrics`` adds metrics of a page's clip ids."""
    result = PageResult(k)
    live = state.catalog.ids()
    pages: dict[str, list[list[str]]] = {r.name: [] for r in rankers}
    for q in questions:
        with state.lock:
            v = state.viewer(q.user_id)
        key = (label, q.user_id)
        pool_gains = [q.gains.get(c, 0.0) for c in q.pool]
        for ranker in rankers:
            page = ranker.rank(state, v, q.pool, now, k)
            pages[ranker.name].append(page)
            gains = [q.gains.get(c, 0.0) for c in page]
            result.ndcg.setdefault(ranker.name, {})[key] = ndcg_at_k(gains, k, pool_gains)
            result.recall.setdefault(ranker.name, {})[key] = recall_at_k(page, q.relevant, k)
            with state.lock:
                vectors = state.catalog.index.vectors(page) if page else np.zeros((0, 1), np.float32)
            result.diversity.setdefault(ranker.name, {})[key] = intra_list_diversity(vectors)
            for metric, fn in (page_metrics or {}).items():
                result.extra.setdefault(metric, {}).setdefault(ranker.name, {})[key] = fn(page)
    for name, served in pages.items():
        result.coverage[name] = [coverage(served, live)]
    return result


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain markdown table of dict rows (floats to four places)."""
    if not rows:
        return ""
    cols = list(columns or rows[0].keys())

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
