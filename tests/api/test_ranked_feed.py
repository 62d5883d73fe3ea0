"""The personalised feed end to end: a real broker, the API's own ranking replica
tailing it, clips published as the moderation worker and materializer would.

Clip embeddings are the shipped CLIP model's text embeddings of each clip's subject
("a photo of a cat"), so steering words land in the same space as they do live.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.feed_service import FeedService
from api.schemas import FeedPage
from core.db import make_engine, make_sessionmaker, migrate, session_scope
from core.db.models import User
from core.materialize import apply_event
from core.records import ClipPublished, GeneratorInfo, Interaction, ModerationDecision
from core.settings import ApiSettings, KafkaSettings, MediaSettings, RankingSettings, Settings
from core.topics import CLIPS_PUBLISHED, INTERACTIONS, MODERATION_DECISIONS, record_key
from moderation.frame_filter import load_frame_filter
from tests.support.factories import fake_media, signup
from tests.support.stack import produce, read_topic, running_broker, wait_for

pytestmark = pytest.mark.integration

TOPICS = ("cat", "car", "beach", "forest")
PER_TOPIC = 12


@pytest.fixture
def bootstrap(tmp_path: Path) -> Iterator[str]:
    """A broker of its own: the replica reads everything in the log, and a clip another
    test published (into another database) would be ranked here but never served."""
    yield from running_broker(tmp_path / "tansu.log")


@pytest.fixture(scope="module")
def vectors() -> dict[str, np.ndarray]:
    """Loaded before any app starts (two threads importing the model stack at once race)."""
    vecs = load_frame_filter().embed_texts([f"a photo of a {t}" for t in TOPICS])
    return dict(zip(TOPICS, vecs, strict=True))


@pytest.fixture
def client(vectors: dict[str, np.ndarray], sqlite_url: str, bootstrap: str, tmp_path: Path) -> Iterator[TestClient]:
    migrate(sqlite_url)
    settings = Settings(
        environment="test",
        database_url=sqlite_url,
        kafka=KafkaSettings(bootstrap_servers=bootstrap),
        media=MediaSettings(root=tmp_path / "media"),
        api=ApiSettings(run_outbox_relay=False, rate_limits_enabled=False, gc_settle_every_s=0),
        ranking=RankingSettings(replica=True, snapshot_dir=tmp_path / "snapshot"),
    )
    with TestClient(create_app(settings)) as c:
        yield c


class World:
    def __init__(self, client: TestClient, db: str, bootstrap: str) -> None:
        self.client, self.bootstrap = client, bootstrap
        self.factory: sessionmaker[Session] = make_sessionmaker(make_engine(db))
        self.topic_of: dict[str, str] = {}
        self.author_of: dict[str, str] = {}

    def user_id(self, handle: str) -> uuid.UUID:
        with session_scope(self.factory) as s:
            return s.query(User).filter(User.handle_key == handle).one().id

    def publish(self, handle: str, topic: str, vector: np.ndarray) -> str:
        """What the moderation worker sends and the materializer stores."""
        cid = uuid.uuid4()
        rec = ClipPublished(
            clip_id=cid,
            prompt_id=uuid.uuid4(),
            user_id=self.user_id(handle),
            creator_handle=handle,
            text=f"a {topic}",
            media=fake_media(f"clips/{cid}"),
            generator=GeneratorInfo(name="test", version="test", seed=1, render_ms=1),
            checks=[],
            embedding=[float(x) for x in vector],
            embedding_model="frame_model",
        )
        apply_event(self.factory, CLIPS_PUBLISHED.name, rec)
        produce(self.bootstrap, CLIPS_PUBLISHED.name, [(record_key(CLIPS_PUBLISHED, rec), rec.to_bytes())])
        self.topic_of[str(cid)] = topic
        self.author_of[str(cid)] = handle
        return str(cid)

    def feed(self, headers: dict[str, str], **params: Any) -> dict[str, Any]:
        resp = self.client.get("/v1/feed", headers=headers, params={"limit": 10, "explain": True, **params})
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    def impression_records(self, handle: str) -> list[dict[str, Any]]:
        """The impression records on the topic for ``handle``, in the order the API sent them."""
        key = str(self.user_id(handle)).encode()
        values = [json.loads(m.value) for m in read_topic(self.bootstrap, INTERACTIONS.name) if m.key == key]
        return [v for v in values if v["kind"] == "impression"]

    def impressions(self, handle: str) -> list[dict[str, Any]]:
        """The same, one a clip shown (a page's record read as its consumers read it)."""
        pages = [Interaction.model_validate(v) for v in self.impression_records(handle)]
        return [json.loads(one.to_bytes()) for page in pages for one in page.per_clip()]

    def ranking(self) -> dict[str, Any]:
        return self.client.get("/readyz").json()["ranking"]  # type: ignore[no-any-return]


@pytest.fixture
def world(vectors: dict[str, np.ndarray], client: TestClient, sqlite_url: str, bootstrap: str) -> World:
    w = World(client, sqlite_url, bootstrap)
    rng = np.random.default_rng(7)
    creators = [f"maker_{i}" for i in range(6)]
    for h in creators:
        signup(client, h)
    for t in TOPICS:
        for i in range(PER_TOPIC):
            v = vectors[t] + rng.normal(0, 0.02, vectors[t].shape)
            w.publish(creators[(i + TOPICS.index(t)) % len(creators)], t, v / np.linalg.norm(v))
    wait_for(lambda: w.ranking()["clips"] == len(TOPICS) * PER_TOPIC or None, 30, "the replica has every clip")
    return w


def test_cold_start_then_likes_change_the_next_page_and_pages_never_repeat(world: World) -> None:
    maya = signup(world.client, "maya")
    first = world.feed(maya)
    assert first["ranking"]["mode"] == "personalised"
    assert first["explain"]["cold_start"] is True
    authors = [world.author_of[c["id"]] for c in first["data"]]
    assert len(first["data"]) == 10
    assert max(authors.count(a) for a in set(authors)) <= 2, "author cap on a page"
    assert len({world.topic_of[c["id"]] for c in first["data"]}) >= 3, "a cold start is diverse"
    # The page is recorded as impressions: one page id, each clip's position on it.
    shown = wait_for(lambda: (i := world.impressions("maya")) and len(i) >= 10 and i, 10, "impressions recorded")
    assert [x["clip_id"] for x in shown] == [c["id"] for c in first["data"]]
    assert [x["attributes"]["position"] for x in shown] == list(range(10))
    assert len({x["attributes"]["page"] for x in shown}) == 1
    (page,) = world.impression_records("maya")  # one record for the page, naming its clips in order
    assert page["clip_ids"] == [c["id"] for c in first["data"]] and page["clip_id"] is None

    cats = [cid for cid, t in world.topic_of.items() if t == "cat"][:3]
    for cid in cats:
        assert world.client.put(f"/v1/clips/{cid}/like", headers=maya).status_code == 202
    # The like reaches this replica through the log.
    wait_for(lambda: set(cats) <= set(world.feed(maya, limit=1)["explain"]["liked"]) or None, 10, "likes applied")

    page = world.feed(maya)
    top = [world.topic_of[c["id"]] for c in page["data"][:5]]
    assert top.count("cat") >= 3, f"after liking cats the next page leads with cats: {top} {page['explain']}"
    assert page["explain"]["cold_start"] is False
    assert not set(cats) & {c["id"] for c in page["data"]}, "liked clips are seen"

    # Walk a fresh session to the end: every clip once, none twice.
    served: list[str] = []
    cursor = None
    for _ in range(20):
        p = world.feed(maya, **({"cursor": cursor} if cursor else {}))
        served += [c["id"] for c in p["data"]]
        cursor = p["next_cursor"]
        if cursor is None:
            break
    assert len(served) == len(set(served)), "no clip twice in one session"
    assert set(served) == set(world.topic_of), "seen clips come back after the unseen ones, until the end"


def test_see_less_steering_following_and_takedowns(world: World) -> None:
    theo = signup(world.client, "theo")
    cars = [cid for cid, t in world.topic_of.items() if t == "car"]
    assert world.client.post(f"/v1/clips/{cars[0]}/see-less", headers=theo).status_code == 202
    wait_for(lambda: world.feed(theo, limit=1)["explain"]["taste_version"] > 0 or None, 10, "see-less applied")
    page = world.feed(theo, limit=12)
    assert cars[0] not in {c["id"] for c in page["data"]}
    assert [world.topic_of[c["id"]] for c in page["data"]].count("car") == 0, "see less like this"
    everything = world.feed(theo, limit=100)
    assert cars[0] not in {c["id"] for c in everything["data"]}, "never again, even once all else is seen"
    assert everything["explain"]["removed"].get("rejected") or cars[0] not in world.topic_of

    resp = world.client.put("/v1/me/feed/steering", headers=theo, json={"text": "more beaches, less forests"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["more"] == ["beaches"] and resp.json()["less"] == ["forests"]
    assert world.client.get("/v1/me/feed/steering", headers=theo).json()["text"] == "more beaches, less forests"
    page = world.feed(theo)
    top = [world.topic_of[c["id"]] for c in page["data"][:4]]
    assert top.count("beach") >= 3, f"steered to beaches: {top}"
    assert page["explain"]["steering"] == "more beaches, less forests"
    assert world.client.delete("/v1/me/feed/steering", headers=theo).status_code == 204
    assert world.client.get("/v1/me/feed/steering", headers=theo).status_code == 404
    bad = world.client.put("/v1/me/feed/steering", headers=theo, json={"text": "   "})
    assert bad.status_code == 422

    # Following someone brings their clips onto the first page.
    assert world.client.put("/v1/users/maker_5/follow", headers=theo).status_code in (200, 204)
    page = world.feed(theo)
    firsts = [c for c in page["explain"]["items"] if "following" in c["sources"]]
    assert firsts and all(world.author_of[c["clip_id"]] == "maker_5" for c in firsts)

    # A takedown on the log leaves this replica's feed at once, for everyone.
    beach = next(c["id"] for c in world.feed({}, limit=20)["data"] if world.topic_of[c["id"]] == "beach")
    rec = ModerationDecision(clip_id=uuid.UUID(beach), decision="takedown", decided_by="reviewer")
    produce(world.bootstrap, MODERATION_DECISIONS.name, [(record_key(MODERATION_DECISIONS, rec), rec.to_bytes())])
    deadline = time.monotonic() + 10
    while world.ranking()["clips"] == len(TOPICS) * PER_TOPIC and time.monotonic() < deadline:
        time.sleep(0.1)
    ids = {c["id"] for c in world.feed({}, limit=100)["data"]}
    assert beach not in ids and len(ids) == len(TOPICS) * PER_TOPIC - 1


def test_bad_cursor_and_newest_order(world: World) -> None:
    resp = world.client.get("/v1/feed", params={"cursor": "bm90IGEgY3Vyc29y"})
    assert resp.status_code == 400 and "cursor" in resp.json()["detail"]
    newest = world.client.get("/v1/feed", params={"order": "newest", "limit": 5}).json()
    assert newest["ranking"]["mode"] == "newest" and newest["ranking"]["reason"] == "asked for newest first"
    assert world.client.get("/v1/feed", params={"order": "sideways"}).status_code == 422


def test_a_restart_resumes_from_the_snapshot(world: World) -> None:
    service = world.client.app.state.feed  # type: ignore[attr-defined]
    maya = signup(world.client, "maya")
    cid = next(iter(world.topic_of))
    assert world.client.put(f"/v1/clips/{cid}/like", headers=maya).status_code == 202
    wait_for(lambda: cid in world.feed(maya, limit=1)["explain"]["liked"] or None, 10, "like applied")
    service.snapshot()
    applied_before = service.tail.applied

    async def restart() -> tuple[int, int, int]:
        again = FeedService(service.settings)
        assert again.tail is not None and again.tail.positions, "starts from the snapshot's positions"
        assert all(at <= service.tail.positions[key] for key, at in again.tail.positions.items())
        await again.start()
        try:
            assert await again.tail.wait_ready(15)
            user = again.state.users[str(world.user_id("maya"))]
            return len(again.state.catalog), again.tail.applied, int(cid in user.liked)
        finally:
            await again.stop()

    clips, applied, liked = asyncio.run(restart())
    assert clips == len(TOPICS) * PER_TOPIC and liked == 1
    assert applied < applied_before, "only what came after the snapshot is read again"


def test_a_process_that_only_reads_the_snapshot_leaves_it_as_it_was(world: World) -> None:
    """The second and later API processes on a host (``API__PROCESSES``) start from the
    first one's snapshot but never write it: two writers swapping one folder would race."""
    service = world.client.app.state.feed  # type: ignore[attr-defined]
    service.snapshot()
    folder = service.settings.ranking.snapshot_dir
    written = {p: p.stat().st_mtime_ns for p in [folder, *folder.rglob("*")]}
    ranking = service.settings.ranking.model_copy(update={"save_snapshots": False})
    reader = FeedService(service.settings.model_copy(update={"ranking": ranking}))
    assert reader.tail is not None and reader.tail.positions, "starts from the snapshot's positions"

    async def run() -> int:
        await reader.start()
        try:
            assert await reader.tail.wait_ready(15)
            reader.snapshot()
            return len(reader.state.catalog)
        finally:
            await reader.stop()

    assert asyncio.run(run()) == len(TOPICS) * PER_TOPIC
    assert {p: p.stat().st_mtime_ns for p in [folder, *folder.rglob("*")]} == written


def test_pages_come_from_a_plan_made_ahead_and_a_like_replaces_it(world: World) -> None:
    """The second page of a session, and the next session's first, are sliced from the
    plan the first request made; a like makes the background remake it (the next page is
    ranked with the like), and every page still matches the documented schema."""
    ines = signup(world.client, "ines")
    first = world.feed(ines)
    FeedPage.model_validate(first)
    assert first["explain"]["plan"]["from_cache"] is False, "nothing made ahead for a new user"
    second = world.feed(ines, cursor=first["next_cursor"])
    FeedPage.model_validate(second)
    assert second["explain"]["plan"]["from_cache"] is True
    assert not {c["id"] for c in first["data"]} & {c["id"] for c in second["data"]}
    plans = world.ranking()["plans"]
    assert plans["hits"] >= 1 and plans["plans"] >= 1
    feed = world.client.app.state.feed  # type: ignore[attr-defined]
    wait_for(lambda: feed.started() or None, 10, "the replica caught up, its first plans made (core.heap settles then)")

    # Impressions (the pages just served) only feed the seen filter: the plan stays.
    time.sleep(0.5)
    again = world.feed(ines)
    assert again["explain"]["plan"]["from_cache"] is True
    assert not {c["id"] for c in again["data"]} & {c["id"] for c in first["data"] + second["data"]}

    cat = next(cid for cid, t in world.topic_of.items() if t == "cat")
    made_ahead = world.ranking()["plans"]["made_ahead"]
    assert world.client.put(f"/v1/clips/{cat}/like", headers=ines).status_code == 202
    wait_for(lambda: world.ranking()["plans"]["made_ahead"] > made_ahead or None, 10, "a plan remade in the background")
    cache = world.ranking()["clip_cache"]
    page = world.feed(ines, limit=3)
    assert page["explain"]["plan"]["from_cache"] is True, "served from the plan made ahead"
    assert cat in page["explain"]["liked"] and page["explain"]["cold_start"] is False, "ranked with the like"
    # The plan made ahead brought its head's clip JSON with it: clips never served
    # before, and no trip to the SQL store for their fixed parts.
    assert not {c["id"] for c in page["data"]} & {c["id"] for c in first["data"] + second["data"] + again["data"]}
    after = world.ranking()["clip_cache"]
    assert after["misses"] == cache["misses"] and after["hits"] == cache["hits"] + len(page["data"])


def test_a_plan_running_low_is_remade_before_the_viewer_runs_out(world: World) -> None:
    """A page that leaves less than a page in the plan asks for the next plan in the
    background, so the viewer's next request is served from one instead of waiting
    while it is made (under the state's lock, which every other request needs too)."""
    omar = signup(world.client, "omar")
    first = world.feed(omar, limit=4)  # makes the plan
    size = first["explain"]["plan"]["size"]
    feed = world.client.app.state.feed  # type: ignore[attr-defined]
    wait_for(lambda: feed.started() or None, 10, "the replica caught up, its first plans made")
    plans = world.ranking()["plans"]
    limit = (size - 4) // 2 + 1  # a full page, after which less than another is left
    second = world.feed(omar, limit=limit, cursor=first["next_cursor"])
    assert second["explain"]["plan"]["from_cache"] is True and len(second["data"]) == limit
    after = world.ranking()["plans"]
    assert after["running_low"] == plans["running_low"] + 1
    wait_for(lambda: world.ranking()["plans"]["made_ahead"] > plans["made_ahead"] or None, 10, "the next plan made")
    third = world.feed(omar, limit=3, cursor=second["next_cursor"])
    assert third["explain"]["plan"]["from_cache"] is True, "served from the plan made ahead"
    assert world.ranking()["plans"]["outrun"] == plans["outrun"], "no request made a plan"
    shown = [c["id"] for page in (first, second, third) for c in page["data"]]
    assert len(shown) == len(set(shown)), "no clip twice in one session"


def test_a_followed_authors_new_clip_gets_a_plan_remade(world: World, vectors: dict[str, np.ndarray]) -> None:
    noor = signup(world.client, "noor")
    assert world.client.put("/v1/users/maker_2/follow", headers=noor).status_code in (200, 204)
    world.feed(noor)  # a plan for the new graph
    made_ahead = world.ranking()["plans"]["made_ahead"]
    fresh = world.publish("maker_2", "forest", vectors["forest"])
    wait_for(lambda: world.ranking()["clips"] == len(TOPICS) * PER_TOPIC + 1 or None, 10, "the new clip on the replica")
    world.feed(noor, limit=1)  # served from the old plan, which asks for a new one
    wait_for(lambda: world.ranking()["plans"]["made_ahead"] > made_ahead or None, 10, "the plan remade")
    page = world.feed(noor, limit=20)
    assert page["explain"]["plan"]["from_cache"] is True
    assert fresh in {c["id"] for c in page["data"]}, "the followed author's new clip is on the next page"


def test_a_new_clip_reaches_the_anonymous_feed(world: World, vectors: dict[str, np.ndarray]) -> None:
    """Anonymous callers share one plan; any new clip gets it remade in the background."""
    world.feed({}, limit=1)  # the shared plan
    made_ahead = world.ranking()["plans"]["made_ahead"]
    fresh = world.publish("maker_3", "cat", vectors["cat"])
    wait_for(lambda: world.ranking()["clips"] == len(TOPICS) * PER_TOPIC + 1 or None, 10, "the new clip on the replica")
    world.feed({}, limit=1)  # served from the old plan, which asks for a new one
    wait_for(lambda: world.ranking()["plans"]["made_ahead"] > made_ahead or None, 10, "the plan remade")
    page = world.feed({}, limit=len(TOPICS) * PER_TOPIC + 1)
    assert page["explain"]["plan"]["from_cache"] is True
    assert fresh in {c["id"] for c in page["data"]}


def test_with_a_content_prior_new_clips_start_from_what_clips_like_them_earned(
    world: World, vectors: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``content_prior`` in the feed weights: a clip nobody has been shown yet scores the
    engagement its look predicts (a fit over every clip's counts), not zero."""
    monkeypatch.setattr("ranking.state.PRIOR_REFRESH_S", 0.0)  # refit on every plan
    service = world.client.app.state.feed  # type: ignore[attr-defined]
    service.weights = dataclasses.replace(service.weights, content_prior=True, prior_ridge=1.0)
    cats = {cid for cid, t in world.topic_of.items() if t == "cat"}
    for i in range(3):  # three fans are shown everything and like every cat
        fan = signup(world.client, f"fan_{i}")
        cursor = None
        for _ in range(10):
            page = world.feed(fan, **({"cursor": cursor} if cursor else {}))
            cursor = page["next_cursor"]
            if cursor is None:
                break
        for cid in cats:
            assert world.client.put(f"/v1/clips/{cid}/like", headers=fan).status_code == 202
    liked = len(cats) * 3
    wait_for(lambda: sum(c.total.get("like", 0) for c in service.state.engagement.values()) >= liked or None, 20,
             "the likes on the replica")  # fmt: skip
    new = {world.publish("maker_1", t, vectors[t]): t for t in ("cat", "cat", "car", "car")}
    wait_for(
        lambda: world.ranking()["clips"] == len(TOPICS) * PER_TOPIC + 4 or None, 10, "the new clips on the replica"
    )
    prior = service.state.prior_for(time.time(), service.weights)
    assert prior is not None and prior.predict(vectors["cat"][None])[0] > prior.predict(vectors["car"][None])[0]

    maya = signup(world.client, "maya")
    engagement: dict[str, float] = {}
    cursor = None
    for _ in range(10):  # her whole session, to find the new clips on its pages
        page = world.feed(maya, **({"cursor": cursor} if cursor else {}))
        engagement.update({item["clip_id"]: item["engagement"] for item in page["explain"]["items"]})
        cursor = page["next_cursor"]
        if cursor is None:
            break
    new_cats = [engagement[c] for c, t in new.items() if t == "cat"]
    new_cars = [engagement[c] for c, t in new.items() if t == "car"]
    # unshown, so without the prior all four would score 0; with it cats start high
    assert min(new_cats) > 0 > max(new_cars), (new_cats, new_cars)
