"""The user_taste entry: one interaction at a time, as the ranking worker applies it."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import RecordError
from core.records import ClipMedia, ClipPublished, GeneratorInfo, Interaction
from ranking.state import RankingState
from ranking.taste_table import RECENT_EVENTS, SCHEMA_VERSION, ClipFacts, advance, decode_entry

DIM = 8
AUTHORS = [uuid.uuid4() for _ in range(3)]
CLIPS = [uuid.UUID(int=n + 1) for n in range(6)]
KINDS = ["impression", "view", "like", "unlike", "skip", "share", "comment", "report", "see_less"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _vector(n: int) -> np.ndarray:
    e = np.random.default_rng(n).normal(size=DIM).astype(np.float32)
    return e / np.linalg.norm(e)


def _facts(n: int) -> ClipFacts:
    return ClipFacts(vector=_vector(n), duration_ms=3000, author_id=str(AUTHORS[n % len(AUTHORS)]))


def _published(n: int) -> ClipPublished:
    media = ClipMedia(video_key="v", poster_key="p", frame_keys=[], frame_indices=[], mime_type="video/mp4",
                      width=288, height=512, fps=12, frame_count=36, duration_s=3.0, sha256="0" * 64)  # fmt: skip
    return ClipPublished(
        clip_id=CLIPS[n], prompt_id=uuid.uuid4(), user_id=AUTHORS[n % len(AUTHORS)], creator_handle="h", text="t",
        media=media, generator=GeneratorInfo(name="g", version="1", seed=1, render_ms=1), checks=[],
        embedding=[float(x) for x in _vector(n)], embedding_model="m@1", occurred_at=T0,
    )  # fmt: skip


def _like(user: uuid.UUID, clip: uuid.UUID | None = CLIPS[0], kind: str = "like") -> Interaction:
    return Interaction(user_id=user, clip_id=clip, kind=kind)  # type: ignore[arg-type]


def test_a_redelivered_or_older_message_changes_nothing() -> None:
    me = uuid.uuid4()
    first = advance(None, _like(me), _facts(0), partition=3, offset=10)
    assert first is not None and first["partition"] == 3 and first["offset"] == 10
    assert advance(first, _like(me), _facts(0), partition=3, offset=10) is None
    assert advance(first, _like(me), _facts(0), partition=3, offset=9) is None
    later = advance(first, _like(me, CLIPS[1]), _facts(1), partition=3, offset=11)
    assert later is not None and later["version"] == 2 and later["liked"] == [str(CLIPS[1]), str(CLIPS[0])]


def test_an_event_sent_again_at_a_later_offset_changes_nothing_while_the_entry_remembers_it() -> None:
    me = uuid.uuid4()
    first_like = _like(me)
    entry = advance(None, first_like, _facts(0), partition=3, offset=10)
    assert advance(entry, first_like, _facts(0), partition=3, offset=11) is None, "the outbox's copy"
    for n in range(RECENT_EVENTS - 1):
        entry = advance(entry, _like(me, CLIPS[1], "impression"), _facts(1), partition=3, offset=20 + n)
    assert advance(entry, first_like, _facts(0), partition=3, offset=99) is None, f"{RECENT_EVENTS} kept"
    entry = advance(entry, _like(me, CLIPS[1], "impression"), _facts(1), partition=3, offset=98)
    assert entry is not None and len(base64.b64decode(entry["recent_events"])) == 16 * RECENT_EVENTS
    assert advance(entry, first_like, _facts(0), partition=3, offset=99) is not None, "let go after that"
    damaged = {**entry, "recent_events": "not base64!"}
    assert advance(damaged, first_like, _facts(0), partition=3, offset=99) is not None, "unreadable: none kept"


def test_another_partition_starts_a_new_sequence() -> None:
    me = uuid.uuid4()
    first = advance(None, _like(me), _facts(0), partition=3, offset=10)
    moved = advance(first, _like(me, CLIPS[1]), _facts(1), partition=5, offset=0)
    assert moved is not None and (moved["partition"], moved["offset"], moved["version"]) == (5, 0, 2)


def test_an_unknown_clip_counts_without_moving_the_vector() -> None:
    me = uuid.uuid4()
    entry = advance(None, _like(me, uuid.uuid4()), None, partition=0, offset=0)
    assert entry is not None and entry["vector"] is None and entry["version"] == 1 and entry["offset"] == 0


def test_an_interaction_without_a_clip_is_not_an_entry_change() -> None:
    assert advance(None, _like(uuid.uuid4(), None, "comment"), None, partition=0, offset=0) is None


def test_an_unreadable_stored_entry_starts_afresh_rather_than_failing() -> None:
    me = uuid.uuid4()
    for stored in (
        {"schema_version": 99, "vector": "??"},
        {"schema_version": 1, "partition": 0, "offset": "?"},
        {"schema_version": 2, "vector": "??", "partition": 0, "offset": 0},
    ):
        entry = advance(stored, _like(me), _facts(0), partition=0, offset=4)
        assert entry is not None and entry["version"] == 1 and entry["schema_version"] == SCHEMA_VERSION


def test_a_new_embedding_dimension_restarts_the_taste_vector() -> None:
    me = uuid.uuid4()
    entry = advance(None, _like(me, kind="see_less"), _facts(0), partition=0, offset=0)
    wider = ClipFacts(vector=np.ones(DIM * 2, np.float32) / np.sqrt(DIM * 2), duration_ms=3000, author_id=None)
    entry = advance(entry, _like(me, CLIPS[1]), wider, partition=0, offset=1)
    assert entry is not None and entry["avoid"] == []
    vector = decode_entry(entry).state.vector
    assert vector is not None and len(vector) == DIM * 2


def test_vectors_are_stored_exactly_and_schema_1_entries_still_read() -> None:
    me = uuid.uuid4()
    entry = advance(None, _like(me, kind="see_less"), _facts(0), partition=0, offset=0)
    assert entry is not None and isinstance(entry["vector"], str) and isinstance(entry["avoid"][0], str)
    state = decode_entry(json.loads(json.dumps(entry))).state
    assert state.avoid[0].dtype == np.float32 and np.array_equal(state.avoid[0], _facts(0).vector)
    old = {**state.to_json(), "schema_version": 1, "partition": 0, "offset": 0}  # vectors as lists of floats
    assert isinstance(old["vector"], list)
    back = decode_entry(old).state
    assert back.vector is not None and state.vector is not None
    np.testing.assert_allclose(back.vector, state.vector, atol=1e-6)
    assert len(back.avoid) == 1 and back.version == state.version


def test_a_damaged_vector_is_an_invalid_entry() -> None:
    entry = advance(None, _like(uuid.uuid4()), _facts(0), partition=0, offset=0)
    assert entry is not None
    for bad in ("not base64!", "AAAAAAA=", [0.1, 0.2], "AADAfw=="):  # bad text, 5 bytes, a v1 list, NaN
        with pytest.raises(RecordError, match="invalid entry"):
            decode_entry({**entry, "vector": bad})


interactions = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, len(CLIPS) - 1), st.sampled_from(KINDS), st.integers(0, 7000)),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(interactions)
def test_the_worker_path_moves_taste_as_ranking_state_does_and_a_replay_changes_nothing(
    steps: list[tuple[int, int, str, int]],
) -> None:
    users = [uuid.UUID(int=10_000 + u) for u in range(3)]
    state = RankingState(DIM)
    for n in range(len(CLIPS)):
        state.apply(_published(n))
    table: dict[str, dict[str, Any]] = {}

    def run(also_to_state: bool) -> None:
        for offset, (u, c, kind, watch) in enumerate(steps):
            at = T0 + timedelta(seconds=offset)
            rec = Interaction(user_id=users[u], clip_id=CLIPS[c], kind=kind, watch_ms=watch, occurred_at=at)  # type: ignore[arg-type]
            updated = advance(table.get(str(users[u])), rec, _facts(c), partition=u, offset=offset)
            if updated is not None:
                table[str(users[u])] = updated
            if also_to_state:
                state.apply(rec)

    run(also_to_state=True)
    snapshot = {k: dict(v) for k, v in table.items()}
    run(also_to_state=False)  # the whole log delivered again
    assert table == snapshot
    assert set(table) == set(state.users)
    for user_id, value in table.items():
        got, want = decode_entry(value).state, state.users[user_id]
        assert (got.version, list(got.liked)) == (want.version, list(want.liked))
        assert got.affinity.keys() == want.affinity.keys()
        assert all(abs(got.affinity[a] - want.affinity[a]) < 1e-9 for a in got.affinity)
        assert (got.vector is None) == (want.vector is None)
        if want.vector is not None:
            assert got.vector is not None
            np.testing.assert_allclose(got.vector, want.vector, atol=1e-6)
        assert len(got.avoid) == len(want.avoid)
