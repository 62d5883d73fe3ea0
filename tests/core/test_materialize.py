"""The materializer's SQL logic on both backends: idempotent, monotonic, lossless."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from core.db import make_engine, make_sessionmaker, migrate, session_scope
from core.db.models import Clip, Prompt, PromptEvent, User
from core.materialize import apply_event
from core.records import (
    ClipBlocked,
    ClipGenerated,
    ClipMedia,
    ClipPublished,
    GenerationStatus,
    GeneratorInfo,
    SafetyCheck,
    clip_id_for_prompt,
)
from tests.support.factories import fake_media


@pytest.fixture
def factory(db_url: str):  # type: ignore[no-untyped-def]
    migrate(db_url)
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _prompt(factory) -> uuid.UUID:  # type: ignore[no-untyped-def]
    pid = uuid.uuid4()
    with session_scope(factory) as s:
        user = User(handle="maya", handle_key=f"maya{pid.hex[:6]}", display_name="Maya")
        s.add(user)
        s.flush()
        s.add(Prompt(id=pid, user_id=user.id, text="a cat", seed=1, status="queued", moderation={}))
    return pid


def _media() -> ClipMedia:
    return fake_media("clips/x")


def _published(pid: uuid.UUID, **kw) -> ClipPublished:  # type: ignore[no-untyped-def]
    return ClipPublished(
        clip_id=clip_id_for_prompt(pid),
        prompt_id=pid,
        user_id=uuid.uuid4(),
        creator_handle="maya",
        text="a cat",
        media=_media(),
        checks=[SafetyCheck(name="x", passed=True, detail="ok")],
        generator=GeneratorInfo(name="procedural", version="1", seed=1, render_ms=5),
        **kw,
    )


def test_status_only_moves_forward_and_dedupes(factory) -> None:  # type: ignore[no-untyped-def]
    pid = _prompt(factory)
    generating = GenerationStatus(prompt_id=pid, status="generating")
    assert apply_event(factory, "generation.status", generating)
    assert not apply_event(factory, "generation.status", generating), "same event_id must be a no-op"
    apply_event(factory, "generation.status", GenerationStatus(prompt_id=pid, status="moderating"))
    apply_event(factory, "generation.status", GenerationStatus(prompt_id=pid, status="generating"))  # late replay
    with session_scope(factory) as s:
        assert s.get(Prompt, pid).status == "moderating"
        assert s.scalar(select(func.count()).select_from(PromptEvent).where(PromptEvent.prompt_id == pid)) == 3


def test_a_clip_published_twice_is_one_feed_entry(factory) -> None:  # type: ignore[no-untyped-def]
    pid = _prompt(factory)
    first = _published(pid)
    apply_event(factory, "clips.published", first)
    # A replay with a fresh event id (e.g. re-moderated after a crash) must not duplicate.
    apply_event(factory, "clips.published", _published(pid, occurred_at=datetime.now(UTC) + timedelta(seconds=5)))
    with session_scope(factory) as s:
        clips = list(s.scalars(select(Clip).where(Clip.prompt_id == pid)))
        assert len(clips) == 1
        assert clips[0].status == "published"
        assert clips[0].published_at == first.occurred_at
        assert s.get(Prompt, pid).status == "published"
        assert s.get(Prompt, pid).clip_id == first.clip_id


def test_generated_then_blocked_never_reaches_the_feed(factory) -> None:  # type: ignore[no-untyped-def]
    pid = _prompt(factory)
    cid = clip_id_for_prompt(pid)
    gen = ClipGenerated(
        clip_id=cid,
        prompt_id=pid,
        user_id=uuid.uuid4(),
        creator_handle="maya",
        text="a cat",
        media=_media(),
        generator=GeneratorInfo(name="procedural", version="1", seed=1, render_ms=5),
    )
    apply_event(factory, "clips.generated", gen)
    apply_event(
        factory,
        "clips.blocked",
        ClipBlocked(
            clip_id=cid, prompt_id=pid, user_id=gen.user_id, reasons=["media_integrity: hash mismatch"], checks=[]
        ),
    )
    apply_event(factory, "clips.published", _published(pid))  # a block is not undone by a stray publish
    with session_scope(factory) as s:
        clip = s.get(Clip, cid)
        assert clip.status == "blocked" and clip.published_at is None
        prompt = s.get(Prompt, pid)
        assert prompt.status == "rejected" and "hash mismatch" in prompt.reason


def test_status_for_an_unknown_prompt_changes_nothing(factory) -> None:  # type: ignore[no-untyped-def]
    assert apply_event(factory, "generation.status", GenerationStatus(prompt_id=uuid.uuid4(), status="generating"))
    with session_scope(factory) as s:
        assert s.scalar(select(func.count()).select_from(Prompt)) == 0


def test_the_queued_event_the_api_already_recorded_is_applied_cleanly(factory) -> None:  # type: ignore[no-untyped-def]
    """The API writes the "queued" timeline row with the prompt; the same event then
    arrives from the outbox and must be accepted, not fail as a duplicate."""
    pid = _prompt(factory)
    queued = GenerationStatus(prompt_id=pid, status="queued")
    with session_scope(factory) as s:
        s.add(PromptEvent(event_id=queued.event_id, prompt_id=pid, status="queued", occurred_at=queued.occurred_at))
    assert apply_event(factory, "generation.status", queued)
    with session_scope(factory) as s:
        assert s.scalar(select(func.count()).select_from(PromptEvent).where(PromptEvent.prompt_id == pid)) == 1
