"""Replica snapshots: what a restart reads instead of replaying the whole log."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from test_feed_stages import DIM, NOW, _at, cid, published

from core.records import ClipFlagged, Interaction, ModerationDecision
from ranking.feed import Viewer, build_feed
from ranking.snapshot import load_snapshot, save_snapshot
from ranking.state import RankingState, UserState


def _state() -> tuple[RankingState, uuid.UUID]:
    me, author = uuid.uuid4(), uuid.uuid4()
    state = RankingState(DIM)
    topics = ["cats", "beach", "horror", "cars"]
    for n in range(1, 31):
        state.apply(published(n, author, topics[n % 4], age_h=n / 10))
    state.apply(published(99, author, "horror", cls=ClipFlagged))
    state.apply(ModerationDecision(clip_id=uuid.UUID(int=5), decision="takedown", decided_by="reviewer"))
    for n in (2, 6, 10):
        state.apply(Interaction(user_id=me, clip_id=uuid.UUID(int=n), kind="like", occurred_at=_at(0.5)))
    state.apply(Interaction(user_id=me, clip_id=uuid.UUID(int=3), kind="see_less", occurred_at=_at(0.4)))
    return state, me


def test_a_snapshot_restores_what_the_feed_reads(tmp_path: Path) -> None:
    state, me = _state()
    positions = {"clips.published:0": 31, "interactions:3": 4}
    save_snapshot(state, positions, tmp_path / "snap")
    restored = load_snapshot(tmp_path / "snap", DIM)
    assert restored is not None
    again, at = restored
    assert at == positions
    assert sorted(again.catalog.ids()) == sorted(state.catalog.ids()) and cid(5) not in again.catalog
    assert again.catalog.index.vector(cid(7)) is not None
    np.testing.assert_allclose(again.catalog.index.vector(cid(7)), state.catalog.index.vector(cid(7)))
    u, v = state.users[str(me)], again.users[str(me)]
    assert list(v.seen) == list(u.seen) and list(v.liked) == list(u.liked) and len(v.avoid) == 1
    np.testing.assert_allclose(v.vector, u.vector, atol=1e-5)
    assert again.engagement[cid(2)].total == state.engagement[cid(2)].total
    # Held clips come back on a reviewer's publish, as before the restart.
    again.apply(ModerationDecision(clip_id=uuid.UUID(int=99), decision="publish", decided_by="reviewer"))
    assert cid(99) in again.catalog

    def page(s: RankingState) -> list[str]:
        us = s.users[str(me)]
        viewer = Viewer(str(me), seen=frozenset(us.seen), vector=s.taste(str(me)), avoid=tuple(us.avoid))
        return [c.clip.clip_id for c in build_feed(s.catalog, viewer, s.engagement, [], NOW, limit=8).page]

    state.apply(ModerationDecision(clip_id=uuid.UUID(int=99), decision="publish", decided_by="reviewer"))
    assert page(again) == page(state)


def test_an_interaction_sent_on_both_sides_of_a_snapshot_counts_once(tmp_path: Path) -> None:
    """The outbox can send a record again after the API's producer timed out on it: the
    first copy lands before the snapshot's positions, the second after them. The
    restored replica must still know the first."""
    state, me = _state()
    like = Interaction(user_id=me, clip_id=uuid.UUID(int=14), kind="like", occurred_at=_at(0.2))
    state.apply(like, (3, 5))
    save_snapshot(state, {"interactions:3": 6}, tmp_path / "snap")
    restored = load_snapshot(tmp_path / "snap", DIM)
    assert restored is not None
    again, _ = restored
    vector = again.users[str(me)].vector.copy()  # type: ignore[union-attr]
    likes = again.engagement[cid(14)].total.get("like")
    again.apply(like, (3, 9))  # the outbox's copy, after the snapshot
    assert again.repeats == 1
    assert again.engagement[cid(14)].total.get("like") == likes == 1
    np.testing.assert_array_equal(again.users[str(me)].vector, vector)
    fresh = Interaction(user_id=me, clip_id=uuid.UUID(int=15), kind="like", occurred_at=_at(0.1))
    again.apply(fresh, (3, 10))
    assert again.engagement[cid(15)].total.get("like") == 1, "a new event still counts"


def test_a_damaged_or_foreign_snapshot_is_ignored(tmp_path: Path) -> None:
    assert load_snapshot(tmp_path / "none", DIM) is None
    state, _ = _state()
    save_snapshot(state, {}, tmp_path / "snap")
    assert load_snapshot(tmp_path / "snap", DIM * 2) is None, "another embedding size"
    (tmp_path / "snap" / "state.json.gz").write_bytes(b"not gzip")
    assert load_snapshot(tmp_path / "snap", DIM) is None


def test_tastes_seeded_from_the_worker_table_are_not_applied_twice() -> None:
    """A replica without a snapshot starts users from the user_taste table, then replays
    the log: interactions the entry already holds only mark clips seen."""
    state, me = _state()
    worker_view = state.users[str(me)]
    fresh = RankingState(DIM)
    for n in range(1, 31):
        fresh.apply(published(n, uuid.uuid4(), ["cats", "beach", "horror", "cars"][n % 4], age_h=n / 10))
    seeded_copy = UserState.from_json(worker_view.to_json())
    fresh.seed_tastes({str(me): (seeded_copy, 4, 10)})
    before = fresh.users[str(me)].vector.copy()  # type: ignore[union-attr]
    covered = Interaction(user_id=me, clip_id=uuid.UUID(int=7), kind="like", occurred_at=_at(0.3))
    fresh.apply(covered, (4, 9))
    assert np.allclose(fresh.users[str(me)].vector, before), "already in the entry: taste unchanged"  # type: ignore[arg-type]
    assert cid(7) in fresh.users[str(me)].seen and fresh.engagement[cid(7)].total["like"] == 1
    fresh.apply(Interaction(user_id=me, clip_id=uuid.UUID(int=8), kind="like", occurred_at=_at(0.2)), (4, 11))
    assert not np.allclose(fresh.users[str(me)].vector, before), "after the entry: applied"  # type: ignore[arg-type]
