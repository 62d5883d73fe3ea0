"""Feed stages, each alone, and the whole request on a small catalogue fed by records."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from core.records import (
    CameoCast,
    ClipFlagged,
    ClipMedia,
    ClipPublished,
    GeneratorInfo,
    Interaction,
    ModerationDecision,
)
from ranking.catalog import Catalog, ClipInfo
from ranking.engagement import ClipCounts, smoothed_rate
from ranking.feed import (
    DEFAULT_WEIGHTS_FILE,
    Candidate,
    FeedWeights,
    Steering,
    Viewer,
    apply_filters,
    build_feed,
    filters_for,
    gather,
    rerank,
    score,
    source_cameos,
    source_followed,
    source_fresh,
    source_neighbours,
    source_remixes,
)
from ranking.index import ClipIndex
from ranking.state import RankingState, RecentIds
from ranking.steering import SteeringError, parse, steering_for

NOW = 1_800_000_000.0
DIM = 8
AXES = {name: np.eye(DIM, dtype=np.float32)[i] for i, name in enumerate(["cats", "beach", "horror", "cars"])}


def clip(n: int, author: str, topic: str = "cats", age_h: float = 1.0, **kw: object) -> ClipInfo:
    e = AXES[topic] + 0.05 * np.random.default_rng(n).normal(size=DIM).astype(np.float32)
    return ClipInfo(f"c{n}", author, NOW - age_h * 3600, embedding=tuple(float(x) for x in e / np.linalg.norm(e)), **kw)  # type: ignore[arg-type]


def catalog_of(*clips: ClipInfo) -> Catalog:
    cat = Catalog(ClipIndex(DIM))
    for c in clips:
        cat.add(c)
    return cat


def test_catalog_lookups_and_removal() -> None:
    cat = catalog_of(
        clip(1, "ann", age_h=3), clip(2, "ann", age_h=1), clip(3, "bob", cast=("ann",)),
        clip(4, "cid", parent_clip_id="c1"),
    )  # fmt: skip
    assert cat.by_author("ann", 10) == ["c2", "c1"]
    assert cat.by_author("ann", 10, since=NOW - 2 * 3600) == ["c2"]
    assert cat.casting("ann", 5) == ["c3"] and cat.remixes_of("c1", 5) == ["c4"]
    assert cat.remove("c2") and not cat.remove("c2")
    assert cat.by_author("ann", 10) == ["c1"] and "c2" not in {h.clip_id for h in cat.index.search(AXES["cats"], 10)}
    assert cat.remove_casting("ann") == ["c3"] and cat.casting("ann", 5) == []


def test_sources_each_find_their_own_clips() -> None:
    w = FeedWeights()
    cat = catalog_of(
        clip(1, "friend"), clip(2, "followed"), clip(3, "stranger", cast=("me",)),
        clip(4, "stranger", topic="beach", parent_clip_id="c9"), clip(5, "old_friend", age_h=400),
        clip(6, "stranger2", topic="horror", age_h=0.1),
    )  # fmt: skip
    me = Viewer("me", following=frozenset({"friend", "followed", "old_friend"}), friends=frozenset({"friend"}),
                vector=AXES["beach"], liked=("c9",))  # fmt: skip
    assert sorted(source_followed(cat, me, NOW, w)) == [("c1", "friends"), ("c2", "following")]  # c5 too old
    assert source_cameos(cat, me, NOW, w) == [("c3", "cast_me")]
    assert source_neighbours(cat, me, w)[0] == ("c4", "neighbours")
    assert source_remixes(cat, me, w) == [("c4", "remixes")]
    fresh = source_fresh(cat, {"c6": ClipCounts(total={"impression": 500})}, NOW, w)
    assert ("c6", "fresh") not in fresh and ("c1", "fresh") in fresh  # c6 had its chance


def test_filters_say_what_they_removed_and_why() -> None:
    cat = catalog_of(clip(1, "a"), clip(2, "blocked"), clip(3, "a"), clip(4, "me"), clip(5, "a"))
    viewer = Viewer("me", hidden=frozenset({"blocked"}), seen=frozenset({"c3"}))
    cands = gather(cat, [("c1", "x"), ("c2", "x"), ("c3", "x"), ("c4", "x"), ("c5", "x"), ("c1", "y")])
    cat.remove("c5")
    kept, removed = apply_filters(cands, filters_for(viewer, cat, served=frozenset()))
    assert [c.clip.clip_id for c in kept] == ["c1"] and kept[0].sources == {"x", "y"}
    assert {(r.clip_id, r.filter) for r in removed} == {("c2", "hidden_author"), ("c3", "seen"), ("c4", "own"),
                                                         ("c5", "live")}  # fmt: skip


def test_the_scorer_puts_friends_taste_and_steering_first_and_see_less_last() -> None:
    w = FeedWeights()
    cat = catalog_of(clip(1, "friend", "cars"), clip(2, "x", "cats"), clip(3, "y", "horror"), clip(4, "z", "beach"))
    cands = gather(cat, [(f"c{i}", "neighbours") for i in range(1, 5)])
    base = Viewer("me", following=frozenset({"friend"}), friends=frozenset({"friend"}), vector=AXES["cats"])
    order = [c.clip.clip_id for c in score(cands, base, {}, NOW, w, cat)]
    assert order[:2] == ["c1", "c2"] or order[:2] == ["c2", "c1"]
    steered = Viewer("me", vector=AXES["cats"], steering=Steering("more beaches", more=AXES["beach"]))
    assert score(gather(cat, [(f"c{i}", "n") for i in range(1, 5)]), steered, {}, NOW, w, cat)[0].clip.clip_id == "c4"
    avoid = Viewer("me", vector=AXES["horror"], avoid=(AXES["horror"],))
    assert score(gather(cat, [(f"c{i}", "n") for i in range(1, 5)]), avoid, {}, NOW, w, cat)[-1].clip.clip_id == "c3"


def test_smoothed_engagement_does_not_trust_three_views() -> None:
    assert smoothed_rate(3, 3, 0.05) < smoothed_rate(400, 1000, 0.05)


def test_rerank_caps_authors_limits_exploration_and_spreads_topics() -> None:
    w = FeedWeights(author_cap=2, exploration_share=0.2, mmr_lambda=0.5)
    clips = [clip(i, "prolific", "cats") for i in range(6)] + [clip(10 + i, f"a{i}", "cats") for i in range(4)]
    clips += [clip(20, "b", "beach"), clip(21, "c", "cars")] + [clip(30 + i, f"n{i}", "horror") for i in range(5)]
    cands = [Candidate(c, {"fresh"} if c.clip_id.startswith("c3") else {"trending"}, score=1.0 - i * 0.01)
             for i, c in enumerate(clips)]  # fmt: skip
    page = rerank(cands, 8, w)
    authors = [c.clip.author_id for c in page]
    assert authors.count("prolific") == 2
    assert sum(c.sources == {"fresh"} for c in page) <= 2
    assert {"b", "c"} <= set(authors), "diversity: other topics make the page though they score lower"


def test_steering_text_parses_into_more_and_less() -> None:
    assert parse("more cats and beaches, less horror") == (["cats", "beaches"], ["horror"])
    assert parse("show me dogs & cats but no ghosts") == (["dogs", "cats"], ["ghosts"])
    assert parse("No spiders. More of the ocean!") == (["ocean"], ["spiders"])
    with pytest.raises(SteeringError):
        parse("x" * 301)

    def embed(texts: list[str]) -> np.ndarray:
        return np.stack([AXES[t.removeprefix("a photo of ")] for t in texts])

    s = steering_for("more cats, less horror", embed)
    assert np.allclose(s.more, AXES["cats"]) and np.allclose(s.less, AXES["horror"])
    with pytest.raises(SteeringError):
        steering_for(" , . ", embed)


# ---------------------------------------------------------------------------- state from records
def _at(h: float) -> datetime:
    return datetime.fromtimestamp(NOW, UTC) - timedelta(hours=h)


def published(n: int, author: uuid.UUID, topic: str, age_h: float = 1.0, cast: uuid.UUID | None = None,
              cls: type = ClipPublished) -> ClipPublished:  # fmt: skip
    info = clip(n, "x", topic)
    media = ClipMedia(video_key="v", poster_key="p", frame_keys=[], frame_indices=[], mime_type="video/mp4",
                      width=288, height=512, fps=12, frame_count=36, duration_s=3.0, sha256="0" * 64)  # fmt: skip
    extra = {"checks": []} | ({"reasons": ["gun 0.5"]} if cls is ClipFlagged else {})
    return cls(  # type: ignore[no-any-return]
        clip_id=uuid.UUID(int=n), prompt_id=uuid.uuid4(), user_id=author, creator_handle="h", text="t",
        media=media, generator=GeneratorInfo(name="g", version="1", seed=1, render_ms=1),
        cameos=[CameoCast(user_id=cast, handle="c", likeness_key="k", likeness_sha256="0" * 64)] if cast else [],
        embedding=[] if info.embedding is None else info.embedding.tolist(), embedding_model="m@1",
        occurred_at=_at(age_h), **extra,
    )  # fmt: skip


def cid(n: int) -> str:
    return str(uuid.UUID(int=n))


def test_the_state_follows_the_log_and_a_first_like_changes_the_next_page() -> None:
    me, friend, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    state = RankingState(DIM)
    topics = ["cats", "beach", "horror", "cars"]
    for n in range(1, 41):
        state.apply(published(n, other if n % 5 else friend, topics[n % 4], age_h=n / 10))
    cold = build_feed(state.catalog, Viewer(str(me)), state.engagement, state.trending(NOW), NOW, limit=10)
    assert len(cold.page) == 10 and cold.by_source.get("fresh")
    # Likes of two horror clips: the next page leans to horror.
    for n in (2, 6):
        state.apply(Interaction(user_id=me, clip_id=uuid.UUID(int=n), kind="like", occurred_at=_at(0)))
    viewer = Viewer(str(me), vector=state.taste(str(me)), seen=frozenset(state.users[str(me)].seen))
    warm = build_feed(state.catalog, viewer, state.engagement, state.trending(NOW), NOW, limit=10)
    horror = {cid(n) for n in range(1, 41) if topics[n % 4] == "horror"}
    share = lambda page: sum(c.clip.clip_id in horror for c in page) / len(page)  # noqa: E731
    assert share(warm.page) > share(cold.page) and share(warm.page) >= 0.3
    assert not {cid(2), cid(6)} & {c.clip.clip_id for c in warm.page}  # liked = seen
    # A takedown leaves the catalogue and the index at once; a restore brings it back,
    # vector included (the catalogue keeps none of its own while the index holds it).
    vector = state.catalog.index.vector(cid(10))
    assert vector is not None and state.catalog.get(cid(10)).embedding is None  # type: ignore[union-attr]
    state.apply(ModerationDecision(clip_id=uuid.UUID(int=10), decision="takedown", decided_by="reviewer"))
    assert cid(10) not in state.catalog
    assert cid(10) not in {h.clip_id for h in state.catalog.index.search(AXES["cats"], 40)}
    state.apply(ModerationDecision(clip_id=uuid.UUID(int=10), decision="restore", decided_by="reviewer"))
    assert cid(10) in state.catalog
    np.testing.assert_allclose(state.catalog.index.vector(cid(10)), vector)  # type: ignore[arg-type]
    # A flagged clip waits for review; approval publishes it.
    state.apply(published(99, other, "cats", cls=ClipFlagged))
    assert cid(99) not in state.catalog
    state.apply(ModerationDecision(clip_id=uuid.UUID(int=99), decision="publish", decided_by="reviewer"))
    assert cid(99) in state.catalog


def test_engagement_trending_and_affinity_from_interactions() -> None:
    me, author = uuid.uuid4(), uuid.uuid4()
    state = RankingState(DIM)
    for n in (1, 2, 3):
        state.apply(published(n, author, "cats"))
    for _ in range(5):
        state.apply(Interaction(user_id=uuid.uuid4(), clip_id=uuid.UUID(int=2), kind="like", occurred_at=_at(0.1)))
    state.apply(Interaction(user_id=me, clip_id=uuid.UUID(int=3), kind="view", watch_ms=3000, occurred_at=_at(0.1)))
    assert state.engagement[cid(3)].total == {"view": 1, "complete": 1}
    assert state.trending(NOW)[0] == cid(2)
    state.apply(Interaction(user_id=me, clip_id=uuid.UUID(int=1), kind="like", occurred_at=_at(0)))
    # A view (0.1) then a like (1.0): one like says a little about the author...
    assert state.closeness(str(me)) == {str(author): pytest.approx((0.95 * 0.1 + 1.0) / 5.0)}
    for _ in range(6):
        state.apply(Interaction(user_id=me, clip_id=uuid.UUID(int=2), kind="share", occurred_at=_at(0)))
    assert state.closeness(str(me)) == {str(author): 1.0}, "...many make them as close as a friend"
    state.apply(Interaction(user_id=me, clip_id=uuid.UUID(int=1), kind="see_less", occurred_at=_at(0)))
    assert len(state.users[str(me)].avoid) == 1


def test_trending_scans_only_clips_with_engagement_it_weighs() -> None:
    """Impressions, most of the log, count for nothing in trending: a clip that was only
    shown is not among the clips a refresh scores (under load, tens of thousands of
    them held the state's lock for a tenth of a second every refresh), after a restore
    either; a like makes it one."""
    author = uuid.uuid4()
    state = RankingState(DIM)
    for n in range(1, 6):
        state.apply(published(n, author, "cats"))
        state.apply(Interaction(user_id=uuid.uuid4(), clip_id=uuid.UUID(int=n), kind="impression", occurred_at=_at(0)))
    state.apply(Interaction(user_id=uuid.uuid4(), clip_id=uuid.UUID(int=4), kind="like", occurred_at=_at(0)))
    assert set(state._active or ()) == {cid(4)}
    assert state.trending(NOW) == [cid(4)]
    # Liked five hours ago: still in the 24 h counts, but not trending any more.
    state.apply(Interaction(user_id=uuid.uuid4(), clip_id=uuid.UUID(int=5), kind="like", occurred_at=_at(5)))
    state.forget_activity()  # as after a restore: rebuilt from the counts at the next refresh
    state._trending_at = float("-inf")  # refresh now, not in TRENDING_REFRESH_S
    assert state.trending(NOW) == [cid(4)] and set(state._active or ()) == {cid(4)}
    state.apply(Interaction(user_id=uuid.uuid4(), clip_id=uuid.UUID(int=2), kind="like", occurred_at=_at(0)))
    state._trending_at = float("-inf")
    assert set(state.trending(NOW)) == {cid(2), cid(4)}


def test_a_page_impression_counts_and_marks_each_clip_it_showed() -> None:
    author, viewer = uuid.uuid4(), uuid.uuid4()
    state = RankingState(DIM)
    for n in range(1, 4):
        state.apply(published(n, author, "cats"))
    page = Interaction(
        user_id=viewer, kind="impression", clip_ids=[uuid.UUID(int=n) for n in (1, 3)], occurred_at=_at(0)
    )
    state.apply(page)
    user = state.user(str(viewer))
    assert user is not None and set(user.seen.keys()) == {cid(1), cid(3)}
    assert user.version == 2 and user.ranked_version == 0, "seen, but nothing to rank again for"
    assert [
        state.engagement[cid(n)].total.get("impression", 0) if cid(n) in state.engagement else 0 for n in (1, 2, 3)
    ] == [1, 0, 1]


def test_an_interaction_delivered_twice_counts_once() -> None:
    """The API's producer can time out on a record the broker did take, and the outbox
    then sends it again: the same event id at a later offset changes nothing."""
    author, viewer = uuid.uuid4(), uuid.uuid4()
    state = RankingState(DIM)
    state.apply(published(1, author, "cats"))
    like = Interaction(user_id=viewer, clip_id=uuid.UUID(int=1), kind="like", occurred_at=_at(0))
    page = Interaction(user_id=viewer, kind="impression", clip_ids=[uuid.UUID(int=1)], occurred_at=_at(0))
    for offset, rec in enumerate([like, page, like, page]):
        state.apply(rec, (0, offset))
    user = state.user(str(viewer))
    assert user is not None and (user.version, user.ranked_version) == (2, 1)
    assert state.engagement[cid(1)].total == {"like": 1, "impression": 1}
    assert state.repeats == 2
    np.testing.assert_allclose(np.linalg.norm(user.vector), 1.0, rtol=1e-5)  # one pull, not two


def test_recent_ids_remember_between_one_and_two_windows() -> None:
    recent = RecentIds(size=3)
    ids = [uuid.UUID(int=n) for n in range(10)]
    assert [recent.seen_before(i) for i in ids[:6]] == [False] * 6
    assert all(recent.seen_before(i) for i in ids[:6])  # this window and the one before
    assert not recent.seen_before(ids[6])  # a third window starts: the first is let go
    assert not recent.seen_before(ids[0]), "forgotten two windows later"
    assert recent.seen_before(ids[3])


def test_recent_ids_survive_bytes_in_order() -> None:
    recent = RecentIds(size=3)
    ids = [uuid.UUID(int=n) for n in range(1, 6)]
    for i in ids:
        recent.add(i)
    again = RecentIds.from_bytes(recent.copy().to_bytes(), size=3)
    assert all(i in again for i in ids)
    for n in (6, 7):  # 7 turns a window: the oldest three go, as in the original
        again.add(uuid.UUID(int=n))
        recent.add(uuid.UUID(int=n))
    assert [i in again for i in ids] == [i in recent for i in ids] == [False, False, False, True, True]
    assert RecentIds.from_bytes(b"").to_bytes() == b""
    with pytest.raises(ValueError, match="whole number"):
        RecentIds.from_bytes(b"x" * 17)


def test_a_page_impression_does_what_an_impression_of_each_of_its_clips_does() -> None:
    """The replicas apply a page without making a record a clip; the state must come
    out as it would from those records (seen sets, counts, version, time), also for a
    viewer whose table entry already holds the page (a seeded replay)."""
    author = uuid.uuid4()
    viewers = [uuid.uuid4() for _ in range(3)]
    states = RankingState(DIM), RankingState(DIM)
    for state in states:
        for n in range(1, 6):
            state.apply(published(n, author, "cats"))
        state.seeded[str(viewers[2])] = (0, 10)
    for k, viewer in enumerate(viewers):
        for p, ids in enumerate(([1, 2, 3], [3, 4], [5, 1, 2, 4])):
            page = Interaction(
                user_id=viewer, kind="impression", clip_ids=[uuid.UUID(int=n) for n in ids], occurred_at=_at(k + p)
            )
            states[0].apply(page, (0, p))
            for one in page.per_clip():
                states[1].apply(one, (0, p))
    paged, one_by_one = states
    for viewer in viewers:
        a, b = paged.user(str(viewer)), one_by_one.user(str(viewer))
        assert a is not None and b is not None
        assert (list(a.seen), a.version, a.ranked_version, a.last_at) == (
            list(b.seen),
            b.version,
            b.ranked_version,
            b.last_at,
        )
    assert paged.users[str(viewers[2])].version == 0, "a replayed page moves no version"
    assert {c: n.total for c, n in paged.engagement.items()} == {c: n.total for c, n in one_by_one.engagement.items()}
    assert paged._active == one_by_one._active


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"prior_weight": 0}, "prior_weight must be a number above 0"),
        ({"prior_weight": -5}, "prior_weight must be a number above 0"),
        ({"prior_ridge": -1}, "prior_ridge must be a number at least 0"),
        ({"prior_ridge": "lots"}, "prior_ridge must be a number"),
        ({"content_prior": "yes"}, "content_prior must be true or false"),
    ],
)
def test_feed_weights_refuse_content_prior_settings_that_would_break_scoring(
    tmp_path: Path, setting: dict[str, object], message: str
) -> None:
    path = tmp_path / "weights.json"
    path.write_text(json.dumps({**json.loads(DEFAULT_WEIGHTS_FILE.read_text()), **setting}))
    with pytest.raises(ValueError, match=message):
        FeedWeights.load(path)
    path.write_text(json.dumps({"content_prior": True, "prior_weight": 10, "prior_ridge": 0}))
    assert FeedWeights.load(path).prior_weight == 10
