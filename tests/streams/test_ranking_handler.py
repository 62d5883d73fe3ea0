"""The ranking role without a broker: the clip lookup (SQL store + LRU), the handler, and
the agent through Faust's test_context() (DLQ sends captured)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_sessionmaker, migrate, session_scope
from core.db.models import Clip
from core.records import Interaction
from core.settings import MediaSettings, RankingSettings, Settings, WorkerSettings
from streams.app import RecordSender, create_app
from streams.roles import ranking
from streams.roles.ranking import ClipLookup, RankingHandler


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    return url


@pytest.fixture
def both(db_url: str) -> sessionmaker[Session]:
    """SQLite, then PostgreSQL: the lookup's query runs on the driver, so each dialect's
    column types (UUID, JSON) are checked."""
    migrate(db_url)
    return make_sessionmaker(make_engine(db_url))


@pytest.fixture
def factory(url: str) -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(url))


def _clip(factory: sessionmaker[Session], status: str = "published", embedding: list[float] | None = None) -> Clip:
    now = datetime.now(UTC)
    clip = Clip(
        id=uuid.uuid4(), prompt_id=uuid.uuid4(), user_id=uuid.uuid4(), creator_handle="h", text="t", status=status,
        video_key="v", poster_key="p", mime_type="video/mp4", width=288, height=512, fps=12, frame_count=30,
        duration_s=2.5, sha256="0" * 64, generator={}, embedding=embedding if embedding is not None else [3.0, 4.0],
        generated_at=now,
    )  # fmt: skip
    with session_scope(factory) as s:
        s.add(clip)
    return clip


def test_a_published_clip_gives_its_normalised_embedding_author_and_duration(both: sessionmaker[Session]) -> None:
    clip = _clip(both)
    facts = ClipLookup(both).get(clip.id)
    assert facts is not None and facts.vector is not None
    np.testing.assert_allclose(facts.vector, [0.6, 0.8], rtol=1e-6)
    assert (facts.duration_ms, facts.author_id) == (2500, str(clip.user_id))


@pytest.mark.parametrize(
    ("status", "embedding"), [("in_review", [1.0, 0.0]), ("removed", [1.0, 0.0]), ("published", [])]
)
def test_a_clip_that_is_not_live_or_has_no_embedding_moves_no_vector(
    both: sessionmaker[Session], status: str, embedding: list[float]
) -> None:
    facts = ClipLookup(both).get(_clip(both, status, embedding).id)
    assert facts is not None and facts.vector is None and facts.author_id is not None


def test_a_missing_clip_is_looked_up_again_and_the_cache_is_bounded(both: sessionmaker[Session]) -> None:
    lookup = ClipLookup(both, max_size=2)
    missing = uuid.uuid4()
    assert lookup.get(missing) is None
    a, b, c = (_clip(both) for _ in range(3))
    for clip in (a, b, a, c):  # c evicts b, the least recently used
        assert lookup.get(clip.id) is not None
    assert lookup.hits == 1 and lookup.misses == 4
    assert lookup.get(b.id) is not None and lookup.misses == 5
    assert lookup.get(missing) is None and lookup.misses == 6, "a miss is never cached"


@dataclass
class Msg:
    partition: int
    offset: int


async def test_the_handler_writes_each_message_once(factory: sessionmaker[Session]) -> None:
    clip = _clip(factory)
    table: dict[bytes, dict[str, object]] = {}
    handler = RankingHandler(table, ClipLookup(factory))
    me = uuid.uuid4()
    like = Interaction(user_id=me, clip_id=clip.id, kind="like")
    await handler(like, Msg(4, 0))
    await handler(like, Msg(4, 0))  # redelivered
    await handler(Interaction(user_id=me, clip_id=uuid.uuid4(), kind="view", watch_ms=10), Msg(4, 1))
    await handler(Interaction(user_id=me, kind="comment"), Msg(4, 2))  # no clip: nothing to do
    entry = table[str(me).encode()]
    assert (entry["version"], entry["partition"], entry["offset"]) == (2, 4, 1)
    assert (handler.applied, handler.duplicates, handler.unknown_clips) == (2, 1, 1)


async def test_the_agent_keeps_the_table_and_dead_letters_poison(
    tmp_path: Path, url: str, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    dead: list[tuple[str, bytes | None]] = []

    async def send_raw(self: RecordSender, name: str, key: bytes | None, value: bytes | None, headers: object) -> None:
        dead.append((name, value))

    monkeypatch.setattr(RecordSender, "send_raw", send_raw)
    settings = Settings(
        environment="test",
        database_url=url,
        media=MediaSettings(root=tmp_path / "media"),
        workers=WorkerSettings(data_dir=tmp_path / "faust", retry_backoff_s=0),
        ranking=RankingSettings(worker_states=500),
    )
    settings.workers.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, "ranking")
    handler = ranking.register(app, settings).handler
    assert isinstance(handler, RankingHandler) and handler.max_states == 500  # RANKING__WORKER_STATES
    app.finalize()
    app.flow_control.resume()
    clip, me = _clip(factory), uuid.uuid4()
    async with app.agents["rank"].test_context() as agent:
        await agent.put(b"\x00 junk", key=str(me).encode())
        await agent.put(Interaction(user_id=me, clip_id=clip.id, kind="like").to_bytes(), key=str(me).encode())
        await agent.put(Interaction(user_id=me, clip_id=clip.id, kind="share").to_bytes(), key=str(me).encode())
    entry = app.tables["user_taste"][str(me).encode()]
    assert entry["version"] == 2 and entry["liked"] == [str(clip.id)] and entry["offset"] == 2
    assert dead == [("interactions.dlq", b"\x00 junk")]
    assert handler.decoded == 1, "Faust's table hands back the value written: the kept state is used"


class FailingOnce(dict[bytes, dict[str, object]]):
    """A table whose next write fails (the changelog send raised, say)."""

    fail = False

    def __setitem__(self, key: bytes, value: dict[str, object]) -> None:
        if self.fail:
            self.fail = False
            raise RuntimeError("changelog send failed")
        super().__setitem__(key, value)


async def test_the_handler_decodes_an_entry_only_when_the_table_holds_another_value(
    factory: sessionmaker[Session],
) -> None:
    clip = _clip(factory)
    table = FailingOnce()
    handler = RankingHandler(table, ClipLookup(factory))
    me = uuid.uuid4()
    key = str(me).encode()

    async def view(offset: int) -> None:
        await handler(Interaction(user_id=me, clip_id=clip.id, kind="view", watch_ms=2500), Msg(0, offset))

    await view(0)
    await view(1)
    assert handler.decoded == 1, "the second view used the state kept from the first write"
    table[key] = dict(table[key])  # the table now holds another object (a recovery, say)
    await view(2)
    assert handler.decoded == 2
    table.fail = True
    with pytest.raises(RuntimeError):
        await view(3)
    await view(3)  # the error policy's retry: must not apply the view twice
    assert table[key]["version"] == 4 and table[key]["offset"] == 3
    assert handler.decoded == 3, "a failed write drops the kept state"


async def test_a_page_impression_is_one_write_with_each_clip_applied(factory: sessionmaker[Session]) -> None:
    """The API sends one impression record a feed page: it moves the entry as the same
    clips' impressions one a record did (version, time, vector, affinity), in one write,
    at the page's position, and looks none of its clips up (an impression moves no
    vector or affinity)."""
    known = [_clip(factory) for _ in range(3)]
    me = uuid.uuid4()
    page = Interaction(user_id=me, kind="impression", clip_ids=[c.id for c in known] + [uuid.uuid4()])
    one_by_one: dict[bytes, dict[str, object]] = {}
    single = RankingHandler(one_by_one, ClipLookup(factory))
    for i, rec in enumerate(page.per_clip()):
        await single(rec, Msg(2, i))
    table: dict[bytes, dict[str, object]] = {}
    lookup = ClipLookup(factory)
    handler = RankingHandler(table, lookup)
    await handler(page, Msg(2, 3))
    await handler(page, Msg(2, 3))  # redelivered
    entry, expected = table[str(me).encode()], one_by_one[str(me).encode()]
    assert entry["version"] == expected["version"] == 4
    assert (entry["partition"], entry["offset"]) == (2, 3)
    position = ("partition", "offset", "recent_events")  # where each came from, and which events
    same = {k: v for k, v in entry.items() if k not in position}
    assert same == {k: v for k, v in expected.items() if k not in position}
    assert (handler.applied, handler.duplicates, handler.unknown_clips) == (1, 1, 0)
    assert lookup.misses == 0 and single.clips.misses == 4, "the page looked no clip up"


async def test_an_event_sent_twice_moves_the_entry_once_and_a_failed_write_is_retried(
    factory: sessionmaker[Session],
) -> None:
    """The outbox sends again what the API's producer timed out on: the same event id at
    a later offset. A record whose write failed is not remembered, so its retry applies."""
    clip = _clip(factory)
    table = FailingOnce()
    handler = RankingHandler(table, ClipLookup(factory))
    me = uuid.uuid4()
    key = str(me).encode()
    like = Interaction(user_id=me, clip_id=clip.id, kind="like")
    await handler(like, Msg(1, 0))
    taste = dict(table[key])
    await handler(like, Msg(1, 7))  # the outbox's copy, later on the partition
    assert table[key] == taste and handler.duplicates == 1
    view = Interaction(user_id=me, clip_id=clip.id, kind="view", watch_ms=2500)
    table.fail = True
    with pytest.raises(RuntimeError):
        await handler(view, Msg(1, 8))
    await handler(view, Msg(1, 8))  # the error policy's retry of the same record
    assert (table[key]["version"], table[key]["offset"]) == (2, 8)
    assert (handler.applied, handler.duplicates) == (2, 1)


async def test_an_event_sent_twice_is_caught_by_a_worker_that_did_not_see_the_first(
    factory: sessionmaker[Session],
) -> None:
    """A restart or a rebalance between the two copies: the new owner of the partition
    knows the first copy only from the entry, which keeps its user's last event ids."""
    clip = _clip(factory)
    table: dict[bytes, dict[str, object]] = {}
    me = uuid.uuid4()
    key = str(me).encode()
    like = Interaction(user_id=me, clip_id=clip.id, kind="like")
    await RankingHandler(table, ClipLookup(factory))(like, Msg(2, 0))
    for n in range(1, 31):  # more of the user's events come between the copies
        await RankingHandler(table, ClipLookup(factory))(
            Interaction(user_id=me, clip_id=clip.id, kind="impression"), Msg(2, n)
        )
    taste = dict(table[key])
    restarted = RankingHandler(table, ClipLookup(factory))
    await restarted(like, Msg(2, 40))  # the outbox's copy
    assert table[key] == taste and (restarted.duplicates, restarted.applied) == (1, 0)
    view = Interaction(user_id=me, clip_id=clip.id, kind="view", watch_ms=2500)
    await restarted(view, Msg(2, 41))
    assert (table[key]["version"], table[key]["offset"]) == (taste["version"] + 1, 41)  # type: ignore[operator]


def test_warming_loads_the_clips_published_last_and_keeps_what_is_cached(both: sessionmaker[Session]) -> None:
    clips = [_clip(both) for _ in range(4)]
    with session_scope(both) as s:
        for n, clip in enumerate(clips):  # published in this order
            s.get(Clip, clip.id).published_at = datetime(2026, 11, 1, n, tzinfo=UTC)  # type: ignore[union-attr]
    hidden = _clip(both, "in_review", [1.0, 0.0])
    lookup = ClipLookup(both, max_size=3)
    assert lookup.warm() == 3
    assert lookup.cached(clips[0].id) is None and lookup.cached(hidden.id) is None, "the oldest, and one not live"
    for clip in clips[1:]:
        facts = lookup.cached(clip.id)
        assert facts is not None and facts.vector is not None and facts.author_id == str(clip.user_id)
        assert facts.duration_ms == 2500
    assert lookup.misses == 0
