"""ClipIndex: exact below the size threshold, IVF above it, removals at once, snapshots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ranking.index import ClipIndex, ClipIndexError


def clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Vectors in clusters, as clip embeddings of a few dozen subjects are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    return (centres[rng.integers(0, 40, n)] + 0.7 * rng.normal(size=(n, dim))).astype(np.float32)


def ids(n: int, start: int = 0) -> list[str]:
    return [f"clip-{i}" for i in range(start, start + n)]


def recall_at_10(index: ClipIndex, queries: np.ndarray) -> float:
    got = [
        len({h.clip_id for h in index.search(q, 10)} & {h.clip_id for h in index.exact_search(q, 10)}) / 10
        for q in queries
    ]
    return float(np.mean(got))


def test_exact_search_returns_the_nearest_clips_best_first() -> None:
    x = clustered(500)
    index = ClipIndex(32)
    index.add_many(ids(500), x)
    hits = index.search(x[17], 5)
    assert hits[0].clip_id == "clip-17" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert index.kind == "flat" and len(index) == 500 and "clip-3" in index


def test_a_growing_index_switches_to_ivf_with_recall_at_10_of_at_least_0_95() -> None:
    x = clustered(6000)
    index = ClipIndex(32, exact_below=2000)
    index.add_many(ids(1500), x[:1500])
    assert index.kind == "flat"
    index.add_many(ids(4500, 1500), x[1500:])
    assert index.kind == "ivf" and len(index) == 6000
    queries = x[:300] + 0.2 * np.random.default_rng(1).normal(size=(300, 32)).astype(np.float32)
    assert recall_at_10(index, queries) >= 0.95


@pytest.mark.parametrize("exact_below", [10_000, 100], ids=["flat", "ivf"])
def test_a_removed_clip_never_comes_back_and_pages_stay_full(exact_below: int) -> None:
    x = clustered(1000)
    index = ClipIndex(32, exact_below=exact_below)
    index.add_many(ids(1000), x)
    removed = {f"clip-{i}" for i in range(0, 1000, 2)}
    for clip_id in removed:
        assert index.remove(clip_id)
    assert not index.remove("clip-0")  # twice: nothing to do
    for q in x[:50]:
        hits = index.search(q, 10)
        assert len(hits) == 10 and not removed & {h.clip_id for h in hits}
    assert index.needs_compaction()  # half the stored rows are dead
    index.compact()
    assert len(index) == 500 and not index.needs_compaction()
    assert not removed & {h.clip_id for q in x[:50] for h in index.search(q, 10)}


def test_an_ivf_index_that_outgrew_its_training_is_retrained() -> None:
    x = clustered(3000)
    index = ClipIndex(32, exact_below=200, regrow=4.0)
    index.add_many(ids(200), x[:200])
    assert index.kind == "ivf" and not index.needs_compaction()
    index.add_many(ids(2800, 200), x[200:])
    assert index.needs_compaction()
    index.compact()
    assert not index.needs_compaction() and recall_at_10(index, x[:100]) >= 0.95


def test_exclusions_and_upserts() -> None:
    x = clustered(200)
    index = ClipIndex(32)
    index.add_many(ids(200), x)
    seen = {h.clip_id for h in index.search(x[0], 5)}
    assert not seen & {h.clip_id for h in index.search(x[0], 5, exclude=seen)}
    index.add("clip-0", x[150])  # re-published with a new embedding
    assert len(index) == 200
    top = index.search(x[150], 2)
    assert {h.clip_id for h in top} == {"clip-0", "clip-150"}
    assert np.allclose(index.vector("clip-0"), x[150] / np.linalg.norm(x[150]), atol=1e-6)


def test_bad_vectors_are_refused() -> None:
    index = ClipIndex(4)
    with pytest.raises(ClipIndexError, match="NaN"):
        index.add("a", [0.1, float("nan"), 0.0, 0.0])
    with pytest.raises(ClipIndexError, match="zeros"):
        index.add("a", [0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError):
        index.add("a", [1.0, 2.0, 3.0])  # wrong dimension
    assert len(index) == 0 and index.search([1.0, 0.0, 0.0, 0.0], 3) == []


@pytest.mark.parametrize("exact_below", [10_000, 100], ids=["flat", "ivf"])
def test_a_snapshot_restores_the_index_its_tombstones_and_log_position(tmp_path: Path, exact_below: int) -> None:
    x = clustered(800)
    index = ClipIndex(32, exact_below=exact_below, model="m@abc")
    index.add_many(ids(800), x)
    index.remove("clip-5")
    index.position = {"clips.published:0": 412, "moderation.decisions:0": 9}
    index.save(tmp_path / "snap")
    index.add("clip-900", x[1])
    index.save(tmp_path / "snap")  # replaced whole, never half-written
    restored = ClipIndex.load(tmp_path / "snap")
    assert (restored.kind, len(restored), restored.model) == (index.kind, 800, "m@abc")
    assert restored.position == index.position
    for q in x[:20]:
        assert [h.clip_id for h in restored.search(q, 10)] == [h.clip_id for h in index.search(q, 10)]
    assert "clip-5" not in {h.clip_id for h in restored.search(x[5], 10)}
    assert not list(tmp_path.glob(".snapshot-*")) and not (tmp_path / "snap.old").exists()
    (tmp_path / "snap" / "state.json").write_text("{")
    with pytest.raises(ClipIndexError, match="cannot load"):
        ClipIndex.load(tmp_path / "snap")
