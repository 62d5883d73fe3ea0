"""The offline evaluation harness: metrics against hand-computed values, a replay that
cannot leak the future, rankers that follow taste beating random ones, and the KuaiRand
loader and protocol on a slice of the real log."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from core.records import Interaction
from ranking.engagement import REACTION_WEIGHTS, ClipCounts, fit_content_prior, quality
from ranking.feed import FeedWeights
from ranking.offline import (
    FeedPages,
    FeedScorer,
    MostPopular,
    NewestFirst,
    OfflineEvalError,
    PageQuestion,
    RandomOrder,
    Replay,
    Summary,
    auc,
    coverage,
    cutoff_at,
    dcg,
    empirical_prior,
    evaluate_pages,
    intra_list_diversity,
    ndcg_at_k,
    paired_difference,
    recall_at_k,
)
from ranking.state import PRIOR_REFRESH_S, RankingState

# ---------------------------------------------------------------------------- metrics


def test_dcg_and_ndcg_by_hand() -> None:
    # gains 3, 2, 0, 1 at ranks 1..4: 3/1 + 2/log2(3) + 0 + 1/log2(5)
    assert dcg([3, 2, 0, 1], 4) == pytest.approx(3 + 2 / math.log2(3) + 1 / math.log2(5))
    # ideal order 3, 2, 1, 0
    ideal = 3 + 2 / math.log2(3) + 1 / 2
    assert ndcg_at_k([3, 2, 0, 1], 4) == pytest.approx((3 + 2 / math.log2(3) + 1 / math.log2(5)) / ideal)
    # binary: the one positive at rank 2 of 3 → (1/log2 3) / 1
    assert ndcg_at_k([0, 1, 0], 10) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k([1, 0, 0], 10) == 1.0
    assert ndcg_at_k([0, 0, 0], 10) is None  # nothing to find: the question says nothing
    # a page of 2 judged against a pool whose best two are 1.0 and 0.5
    assert ndcg_at_k([0.5, 0.0], 2, pool_gains=[0.0, 1.0, 0.5, 0.2]) == pytest.approx(0.5 / (1.0 + 0.5 / math.log2(3)))
    # k cuts: a positive below rank k counts nothing
    assert ndcg_at_k([0, 0, 1], 2) == 0.0


def test_recall_auc_coverage_diversity_by_hand() -> None:
    assert recall_at_k(["a", "b", "c"], {"b", "z"}, 2) == 0.5  # 1 hit of min(2, 2)
    assert recall_at_k(["a", "b", "c"], {"a", "b", "c", "d", "e"}, 2) == 1.0  # min(k, |relevant|) = 2
    assert recall_at_k(["a"], set(), 10) is None
    # labels in ranked order 1, 0, 1, 0: pairs (p, n) right: p1>n1, p1>n2, p2>n2 = 3 of 4
    assert auc([1, 0, 1, 0]) == 0.75
    assert auc([1, 1, 0]) == 1.0 and auc([0, 1]) == 0.0
    assert auc([1, 1]) is None and auc([0]) is None
    assert coverage([["a", "b"], ["b", "c"]], ["a", "b", "c", "d"]) == 0.75
    assert coverage([["x"]], []) == 0.0
    # orthogonal pair: distance 1; identical pair: 0; three (e1, e1, e2): pairs 0, 1, 1 → 2/3
    e = np.eye(3, dtype=np.float32)
    assert intra_list_diversity(e[:2]) == pytest.approx(1.0)
    assert intra_list_diversity(np.stack([e[0], e[0]])) == pytest.approx(0.0)
    assert intra_list_diversity(np.stack([e[0], e[0], e[1]])) == pytest.approx(2 / 3)
    assert intra_list_diversity(e[:1]) is None


def test_summary_and_paired_difference() -> None:
    s = Summary.of([1.0, 2.0, 3.0, None])
    assert s.n == 3 and s.mean == 2.0 and s.half_width == pytest.approx(1.96 * 1.0 / math.sqrt(3))
    assert Summary.of([]).n == 0 and str(Summary.of([])) == "n/a"
    d = paired_difference({"u1": 0.8, "u2": 0.6, "u3": None}, {"u1": 0.5, "u2": 0.6, "u4": 0.1})
    assert d.n == 2 and d.mean == pytest.approx(0.15)


# ---------------------------------------------------------------------------- replay
DIM = 4
T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
AXES = np.eye(DIM, dtype=np.float32)


def _clip(n: int, topic: int, at: float):  # type: ignore[no-untyped-def]
    from tests.ranking.test_feed_stages import published

    rec = published(n, uuid.UUID(int=10_000 + n % 3), "cats")
    vec = AXES[topic] + 0.05 * np.random.default_rng(n).normal(size=DIM).astype(np.float32)
    vec /= np.linalg.norm(vec)
    return rec.model_copy(update={"embedding": [float(x) for x in vec], "occurred_at": datetime.fromtimestamp(at, UTC)})


def _cid(n: int) -> str:
    return str(uuid.UUID(int=n))


def _world() -> tuple[list[object], dict[str, int], dict[str, int]]:
    """Twenty clips on four topics; eight users who each like one topic, shown random
    clips over a day, with likes for their topic and skips otherwise."""
    rng = np.random.default_rng(7)
    topic = {_cid(n): n % DIM for n in range(1, 21)}
    records: list[object] = [_clip(n, n % DIM, T0 + n) for n in range(1, 21)]
    users = {str(uuid.UUID(int=500 + u)): u % DIM for u in range(8)}
    for user, fav in users.items():
        for t in sorted(rng.uniform(T0 + 100, T0 + 86_400, size=6)):
            n = int(rng.integers(1, 21))
            at = datetime.fromtimestamp(float(t), UTC)
            records.append(
                Interaction(user_id=uuid.UUID(user), clip_id=uuid.UUID(int=n), kind="impression", occurred_at=at)
            )
            kind = "like" if n % DIM == fav else "skip"
            records.append(Interaction(user_id=uuid.UUID(user), clip_id=uuid.UUID(int=n), kind=kind, occurred_at=at))  # type: ignore[arg-type]
    return records, topic, users


def test_a_time_ordered_split_leaks_nothing_from_after_the_cutoff() -> None:
    records, _, _ = _world()
    shuffled = [records[i] for i in np.random.default_rng(1).permutation(len(records))]
    times = [r.occurred_at.timestamp() for r in records]  # type: ignore[attr-defined]
    cutoff = cutoff_at(times, 0.6)
    state = RankingState(DIM)
    replay = Replay(state, shuffled)
    applied = replay.advance(cutoff)
    before = [r for r in records if r.occurred_at.timestamp() < cutoff]  # type: ignore[attr-defined]
    assert applied == len(before) == state.applied
    assert replay.applied_until < cutoff
    # every interaction the state counted happened before the cutoff
    later = [r for r in records if isinstance(r, Interaction) and r.occurred_at.timestamp() >= cutoff]
    assert later
    counted = sum(sum(c.total.values()) for c in state.engagement.values())
    assert counted == sum(1 for r in before if isinstance(r, Interaction))
    with pytest.raises(OfflineEvalError):
        replay.advance(cutoff - 1)  # time never goes back
    assert replay.advance(float("inf")) == len(records) - len(before)
    with pytest.raises(OfflineEvalError):
        cutoff_at(times, 1.0)


def test_a_taste_following_ranker_beats_random_on_a_small_log() -> None:
    records, topic, users = _world()
    state = RankingState(DIM)
    end = T0 + 86_400
    Replay(state, records).advance(end)
    questions = []
    for user, fav in users.items():
        seen = state.viewer(user).seen
        pool = tuple(c for c in state.catalog.ids() if c not in seen)
        gains = {c: float(topic[c] == fav) for c in pool}
        questions.append(PageQuestion(user, pool, gains, frozenset(c for c, g in gains.items() if g)))
    taste_only = replace(FeedWeights.load(), engagement=0.0, freshness=0.0, social=0.0)
    rankers = [
        FeedScorer(taste_only, diversify=False, name="taste"),
        FeedPages(FeedWeights.load(), name="feed"),
        RandomOrder(3),
    ]
    result = evaluate_pages(state, questions, rankers, end, k=3)
    ndcg = {r["ranker"]: r["ndcg@3"] for r in result.rows()}
    recall = {r["ranker"]: r["recall@3"] for r in result.rows()}
    assert ndcg["taste"] > ndcg["random"] + 0.3 and recall["taste"] > recall["random"] + 0.3
    assert ndcg["feed"] > ndcg["random"]
    for user in users:  # the feed's filters keep what a user has seen off their page
        viewer = state.viewer(user)
        assert not set(rankers[1].rank(state, viewer, (), end, 3)) & set(viewer.seen)


def test_baselines_order_by_what_they_say() -> None:
    records, _, _ = _world()
    state = RankingState(DIM)
    Replay(state, records).advance(float("inf"))
    viewer = state.viewer(None)
    ids = [_cid(n) for n in (3, 9, 14, 20)]
    assert NewestFirst().rank(state, viewer, ids, T0, 4) == [_cid(20), _cid(14), _cid(9), _cid(3)]
    pop = MostPopular(counts={_cid(9): 5, _cid(3): 2}).rank(state, viewer, ids, T0, 2)
    assert pop == [_cid(9), _cid(3)]
    likes = {c: state.engagement[c].total.get("like", 0) for c in ids if c in state.engagement}
    by_engagement = MostPopular(kinds=("like",)).rank(state, viewer, ids, T0, 4)
    assert [likes.get(c, 0) for c in by_engagement] == sorted((likes.get(c, 0) for c in ids), reverse=True)
    assert sorted(RandomOrder(1).rank(state, viewer, ids, T0, 4)) == sorted(ids)


def test_engagement_reactions_are_data_and_the_online_defaults_are_unchanged() -> None:
    counts = ClipCounts()
    for kind, n in {"impression": 10, "view": 4, "like": 2, "complete": 1, "skip": 3}.items():
        counts.add(kind, T0, n)
    # online: (2 + 0.5 - 1.5 + 0.05·20) / (10 + 20) / 0.05 - 1
    assert quality(counts, 0.05) == pytest.approx((2 + 0.5 - 1.5 + 1.0) / 30 / 0.05 - 1)
    clicks = {**REACTION_WEIGHTS, "view": 1.0, "skip": 0.0}
    assert quality(counts, 0.2, clicks) == pytest.approx((4 + 2 + 0.5 + 4.0) / 30 / 0.2 - 1)
    assert quality(counts, 0.05) == pytest.approx((2 + 0.5 - 1.5 + 1.0) / 30 / 0.05 - 1)  # cache keyed on weights
    assert empirical_prior({"c": counts}, clicks) == pytest.approx(6.5 / 10)
    assert empirical_prior({"c": counts}, {"skip": -1.0}) is None  # not positive: no prior from it


# ---------------------------------------------------------------------------- simulation
def test_simulated_users_prefer_the_feed_to_random_and_newest() -> None:
    from ranking import simulate

    config = simulate.SimConfig(clips=80, users=40, creators=10, days=4.0, subjects=8, scenes=4,
                                checkpoints=(1.0,))  # fmt: skip
    world = simulate.build_world(config, simulate.concept_embedder(dim=32))
    assert world.records == sorted(world.records, key=lambda r: r.occurred_at)
    result = simulate.evaluate(world)
    rows = {r["ranker"]: r for r in result.rows()}
    ranker = rows["ranker (online weights)"]
    assert ranker["ndcg@10"] > rows["random"]["ndcg@10"] + 0.05
    assert ranker["ndcg@10"] > rows["newest"]["ndcg@10"] + 0.05
    assert 0.0 < ranker["coverage"] <= 1.0 and rows["random"]["coverage"] > 0.5
    assert 0.0 < ranker["diversity"] <= 2.0
    assert "| ranker (online weights) |" in result.table()


# ---------------------------------------------------------------------------- KuaiRand
@pytest.fixture(scope="module")
def kuairand_slice():  # type: ignore[no-untyped-def]
    from ranking import kuairand

    try:
        return kuairand.load(users=120)
    except kuairand.DatasetMissingError as e:
        pytest.skip(f"KuaiRand data not available here: {e}")


def test_kuairand_loader_and_records(kuairand_slice) -> None:  # type: ignore[no-untyped-def]
    from ranking import kuairand

    data = kuairand_slice
    assert data.log["user_id"].max() < 120 and data.log.height > 1000
    assert data.log["time_ms"].is_sorted()
    ids, matrix = kuairand.item_vectors(data.videos.head(50), kuairand.ItemFeatures(tag=1.0, upload_type=0.5))
    assert len(ids) == 50 and np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    row = {"user_id": 1, "video_id": 2, "time_ms": 1_651_000_000_000, "is_click": 1, "play_time_ms": 4000,
           "is_like": 1, "is_forward": 0, "is_comment": 0, "is_hate": 0}  # fmt: skip
    kinds = [r.kind for r in kuairand.interaction_records([row], kuairand.LogMapping("skip"))]
    assert kinds == ["impression", "view", "like"]
    unclicked = {**row, "is_click": 0, "is_like": 0}
    assert [r.kind for r in kuairand.interaction_records([unclicked], kuairand.LogMapping("skip"))] == [
        "impression",
        "skip",
    ]
    assert [r.kind for r in kuairand.interaction_records([unclicked], kuairand.LogMapping("impression"))] == [
        "impression"
    ]


def test_kuairand_protocol_on_a_slice(kuairand_slice) -> None:  # type: ignore[no-untyped-def]
    from ranking import kuairand

    data = kuairand_slice
    fit, val = kuairand.validation_times(data)
    test_start = kuairand.split_times(data)
    assert fit < val == test_start  # validation lies inside the training period
    qs = kuairand.questions(data, test_start, float("inf"))
    assert qs and all(len(q.candidates) == len(q.labels["is_click"]) for q in qs)
    result = kuairand.evaluate(data, test_start, None, [kuairand.Variant()])
    rows = {(r["signal"], r["ranker"]): r for r in result.rows()}
    for signal in kuairand.SIGNALS:
        assert ("is_click", "popularity") in rows and (signal, "ranker") in rows
    assert 0.3 < rows[("is_click", "random")]["auc"] < 0.7
    assert rows[("is_click", "ranker")]["auc_users"] == rows[("is_click", "popularity")]["auc_users"]


def test_kuairand_missing_data_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ranking import kuairand

    with pytest.raises(kuairand.DatasetMissingError, match="KuaiRand data not found"):
        kuairand.load(tmp_path)


def test_the_ranking_evaluation_notebook_runs(kuairand_slice) -> None:  # type: ignore[no-untyped-def]
    """notebooks/ranking_evaluation.ipynb executes top to bottom (the whole log, ~10 s)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    notebook = nbformat.read(root / "notebooks" / "ranking_evaluation.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), "commit it with outputs cleared"
    nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(root)}}
    ).execute()
    tables = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "execute_result"]
    assert any("popularity" in str(o.get("data", {}).get("text/plain", "")) for o in tables)


# ---------------------------------------------------------------------------- content prior
def test_a_content_prior_learns_what_clips_like_this_one_earn() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(400, DIM))
    true_rate = 0.2 + 0.1 * vectors[:, 0]  # the first direction is what viewers like
    shown = rng.integers(1, 6, size=400)  # a handful of impressions each, as in KuaiRand
    hits = rng.binomial(shown, np.clip(true_rate, 0, 1))
    prior = fit_content_prior(vectors, hits, shown, ridge=10.0)
    assert prior is not None and prior.clips == 400 and prior.impressions == int(shown.sum())
    assert prior.coef[0] == pytest.approx(0.1, abs=0.03) and abs(prior.coef[1]) < 0.03
    predicted = prior.predict(vectors)
    raw = hits / shown
    # what similar clips earned predicts a clip's true rate better than its own four views
    assert np.corrcoef(predicted, true_rate)[0, 1] > np.corrcoef(raw, true_rate)[0, 1] + 0.2
    assert predicted.min() >= raw.min() and predicted.max() <= raw.max()  # never outside what was seen
    assert fit_content_prior(vectors[:5], hits[:5], shown[:5]) is None  # too few clips to fit on
    assert fit_content_prior(vectors, hits, np.zeros(400)) is None  # nobody shown anything


def test_the_engagement_feature_shrinks_toward_the_content_prior() -> None:
    counts = ClipCounts()
    counts.add("impression", T0, 2)
    counts.add("like", T0, 1)
    # no prior: toward the catalogue's rate; a prior: toward what it expects of this clip
    assert quality(counts, 0.1) == pytest.approx((1 + 0.1 * 20) / 22 / 0.1 - 1)
    assert quality(counts, 0.1, expected=0.3) == pytest.approx((1 + 0.3 * 20) / 22 / 0.1 - 1)
    assert quality(counts, 0.1, expected=0.3, prior_weight=5) == pytest.approx((1 + 0.3 * 5) / 7 / 0.1 - 1)
    # a clip nobody has been shown: 0 without a prior, what its look predicts with one
    assert quality(None, 0.1) == 0.0
    assert quality(None, 0.1, expected=0.05) == pytest.approx(-0.5)


def test_unseen_clips_that_look_like_liked_ones_rank_first_with_a_content_prior() -> None:
    records, topic, _ = _world()
    state = RankingState(DIM)
    Replay(state, records).advance(T0 + 86_400)
    # ten new clips, five on each of the two topics viewers liked least and most
    liked = {t: 0 for t in range(DIM)}
    for cid, counts in state.engagement.items():
        liked[topic[cid]] += counts.total.get("like", 0) - counts.total.get("skip", 0)
    best, worst = max(liked, key=liked.__getitem__), min(liked, key=liked.__getitem__)
    new = [_clip(100 + i, worst if i < 5 else best, T0 + 86_400) for i in range(10)]
    Replay(state, new).advance(T0 + 86_401)
    fresh = [str(r.clip_id) for r in new]  # type: ignore[attr-defined]
    nobody = state.viewer(None)
    plain = replace(FeedWeights.load(), similarity=0.0, freshness=0.0, engagement=1.0)
    with_prior = replace(plain, content_prior=True, prior_ridge=1.0)
    assert state.prior_for(T0 + 86_401, plain) is None
    prior = state.prior_for(T0 + 86_401, with_prior)
    assert prior is not None and prior.clips == len(state.engagement) == 19  # the clips shown, not the new ones
    without = FeedScorer(plain, diversify=False).rank(state, nobody, fresh, T0 + 86_401, 5)
    ranked = FeedScorer(with_prior, diversify=False).rank(state, nobody, fresh, T0 + 86_401, 5)
    assert sorted(ranked) == sorted(fresh[5:])  # the five that look like what viewers liked
    assert sorted(without) == sorted(fresh[:5])  # a tie on engagement without it: id order
    # refitted only after PRIOR_REFRESH_S, or when the reactions it weighs change
    assert state.prior_for(T0 + 86_402, with_prior) is prior
    assert state.prior_for(T0 + 86_401 + PRIOR_REFRESH_S, with_prior) is not prior
    clicks = replace(with_prior, reactions={**REACTION_WEIGHTS, "view": 1.0})
    assert state.prior_for(T0 + 86_401 + PRIOR_REFRESH_S, clicks) is not state.prior_for(
        T0 + 86_401 + PRIOR_REFRESH_S, with_prior
    )


def test_a_content_prior_without_ridge_on_too_few_clips_still_fits() -> None:
    vectors = np.zeros((12, DIM))
    vectors[:6, 0], vectors[6:, 1] = 1.0, 1.0  # two distinct looks: a singular system without ridge
    hits, shown = np.array([3] * 6 + [0] * 6), np.full(12, 3)
    prior = fit_content_prior(vectors, hits, shown, ridge=0.0)
    assert prior is not None
    assert prior.predict(vectors[:1])[0] == pytest.approx(1.0) and prior.predict(vectors[6:7])[0] == pytest.approx(0.0)
