"""Each worker role's agent through Faust's test_context(): real handlers, real render
in a child process, real SQL; only the broker is replaced by capturing sends."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import pytest
from sqlalchemy import func, select

from core.db import make_engine, make_sessionmaker, migrate, session_scope
from core.db.models import Prompt, PromptEvent, User
from core.records import (
    CameoCast,
    ClipBlocked,
    ClipFlagged,
    ClipGenerated,
    ClipPublished,
    GenerationStatus,
    PromptModeration,
    PromptSubmitted,
    Record,
    clip_id_for_prompt,
)
from core.settings import DiffusersSettings, GenerationSettings, MediaSettings, Settings, WorkerSettings
from core.topics import TopicSpec
from streams.app import RecordSender
from streams.worker import build


class Captured:
    def __init__(self) -> None:
        self.records: list[tuple[str, Record]] = []
        self.raw: list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]] = []

    def of(self, kind: type[Record]) -> list[Any]:
        return [r for _, r in self.records if isinstance(r, kind)]


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Captured:
    cap = Captured()

    async def send(self: RecordSender, spec: TopicSpec, record: Record, headers: Any = None) -> None:
        cap.records.append((spec.name, record))

    async def send_raw(self: RecordSender, name: str, key: Any, value: Any, headers: dict[str, bytes]) -> None:
        cap.raw.append((name, key, value, headers))

    monkeypatch.setattr(RecordSender, "send", send)
    monkeypatch.setattr(RecordSender, "send_raw", send_raw)
    return cap


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    return Settings(
        environment="test",
        database_url=url,
        media=MediaSettings(root=tmp_path / "media"),
        workers=WorkerSettings(data_dir=tmp_path / "faust", retry_backoff_s=0),
    )


def app_for(settings: Settings, role: str) -> faust.App:
    app = build(settings, role)
    app.finalize()
    app.flow_control.resume()
    return app


def _prompt(text: str = "a cat dancing on the beach at sunset") -> PromptSubmitted:
    return PromptSubmitted(
        prompt_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        creator_handle="maya",
        text=text,
        seed=3,
        moderation=PromptModeration(action="allow", policy_version="t"),
    )


async def test_generation_renders_once_and_replays_the_same_event(settings: Settings, captured: Captured) -> None:
    app = app_for(settings, "generation")
    prompt = _prompt()
    async with app.agents["generate"].test_context() as agent:
        await agent.put(prompt.to_bytes(), key=str(prompt.prompt_id).encode())
        await agent.put(prompt.to_bytes(), key=str(prompt.prompt_id).encode())  # redelivery
    statuses = captured.of(GenerationStatus)
    assert [s.status for s in statuses] == ["generating"], "a redelivered prompt is not rendered again"
    first, second = captured.of(ClipGenerated)
    assert first == second, "the replay re-sends the identical event (same event id)"
    assert first.clip_id == clip_id_for_prompt(prompt.prompt_id)
    video = settings.media.root / first.media.video_key
    assert hashlib.sha256(video.read_bytes()).hexdigest() == first.media.sha256
    assert {"cat", "dancing", "beach"} <= set(first.generator.concepts)
    assert all((settings.media.root / k).is_file() for k in first.media.frame_keys)
    assert not any((settings.media.root / ".staging").iterdir()), "no half-written render left behind"


async def test_moderation_publishes_a_sound_clip_and_blocks_a_tampered_one(
    settings: Settings, captured: Captured
) -> None:
    gen_app = app_for(settings, "generation")
    prompt = _prompt("a red fox running through a snowy forest")
    async with gen_app.agents["generate"].test_context() as agent:
        await agent.put(prompt.to_bytes())
    generated: ClipGenerated = captured.of(ClipGenerated)[0]
    tampered = generated.model_copy(
        update={"event_id": uuid.uuid4(), "media": generated.media.model_copy(update={"sha256": "0" * 64})}
    )

    mod_app = app_for(settings, "moderation")
    async with mod_app.agents["moderate"].test_context() as agent:
        await agent.put(generated.to_bytes())
        await agent.put(tampered.to_bytes())
    published: ClipPublished = captured.of(ClipPublished)[0]
    assert published.clip_id == generated.clip_id and all(c.passed for c in published.checks)
    assert {c.name for c in published.checks} >= {
        "prompt_policy",
        "media_integrity",
        "media_decode",
        "media_format",
        "provenance",
        "frame_safety",
    }
    # The frame filter's CLIP embedding travels with the clip, for ranking.
    assert published.embedding is not None and len(published.embedding) == 128
    assert abs(sum(x * x for x in published.embedding) - 1.0) < 1e-3
    assert published.embedding_model is not None and published.embedding_model.startswith("frame_model@")
    blocked: ClipBlocked = captured.of(ClipBlocked)[0]
    assert any("sha" in r.lower() or "hash" in r.lower() for r in blocked.reasons)
    assert [s.status for s in captured.of(GenerationStatus)][-4:] == [
        "moderating",
        "published",
        "moderating",
        "rejected",
    ]


async def test_the_frame_filter_holds_back_what_an_obfuscated_prompt_rendered(
    settings: Settings, captured: Captured
) -> None:
    """The prompt filter knows no "revolver"; the renderer draws a gun anyway, and the
    frame filter sees it: the clip is not published."""
    gen_app = app_for(settings, "generation")
    prompt = _prompt("a cowboy with a revolver in the desert")
    async with gen_app.agents["generate"].test_context() as agent:
        await agent.put(prompt.to_bytes())
    generated: ClipGenerated = captured.of(ClipGenerated)[0]
    assert "gun" in generated.generator.concepts
    mod_app = app_for(settings, "moderation")
    async with mod_app.agents["moderate"].test_context() as agent:
        await agent.put(generated.to_bytes())
    assert captured.of(ClipPublished) == []
    (held,) = captured.of(ClipFlagged) + captured.of(ClipBlocked)
    frame = next(c for c in held.checks if c.name == "frame_safety")
    assert not frame.passed and "gun (weapon)" in frame.detail
    assert all(c.passed for c in held.checks if c.name != "frame_safety")
    status = captured.of(GenerationStatus)[-1]
    assert status.status == ("in_review" if isinstance(held, ClipFlagged) else "rejected")
    if isinstance(held, ClipFlagged):
        assert held.embedding is not None and held.media == generated.media


async def test_materializer_applies_once_and_dead_letters_poison(settings: Settings, captured: Captured) -> None:
    factory = make_sessionmaker(make_engine(settings.database_url))
    pid = uuid.uuid4()
    with session_scope(factory) as s:
        user = User(handle="maya", handle_key="maya", display_name="Maya")
        s.add(user)
        s.flush()
        s.add(Prompt(id=pid, user_id=user.id, text="a cat", seed=1, status="queued", moderation={}))
    app = app_for(settings, "materializer")
    status = GenerationStatus(prompt_id=pid, status="generating")
    async with app.agents["materialize_generation_status"].test_context() as agent:
        await agent.put(status.to_bytes())
        await agent.put(b"\x00 definitely not json", key=b"poison")
        await agent.put(status.to_bytes())
        await agent.put(GenerationStatus(prompt_id=pid, status="moderating").to_bytes())
    with session_scope(factory) as s:
        assert s.get(Prompt, pid).status == "moderating", "the good message after the poison was processed"
        assert s.scalar(select(func.count()).select_from(PromptEvent)) == 2, "the duplicate changed nothing"
    ((name, key, value, headers),) = captured.raw
    assert name == "generation.status.dlq" and key == b"poison" and value == b"\x00 definitely not json"
    assert headers["x-dlq-consumer"] == b"clipstream-materializer"


def _likeness(settings: Settings, handle: str = "leo") -> CameoCast:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (160, 160), (230, 180, 150)).save(buf, "WEBP")
    key = f"likenesses/{handle}/face.webp"
    path = settings.media.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return CameoCast(
        user_id=uuid.uuid4(),
        handle=handle,
        likeness_key=key,
        likeness_sha256=hashlib.sha256(buf.getvalue()).hexdigest(),
    )


async def test_generation_composites_the_cast_and_passes_it_on(settings: Settings, captured: Captured) -> None:
    app = app_for(settings, "generation")
    plain = _prompt("@leo dancing on the beach")
    cast = plain.model_copy(update={"prompt_id": uuid.uuid4(), "cameos": [_likeness(settings)]})
    async with app.agents["generate"].test_context() as agent:
        await agent.put(plain.to_bytes())
        await agent.put(cast.to_bytes())
    without, with_cast = captured.of(ClipGenerated)
    assert without.cameos == [] and [c.handle for c in with_cast.cameos] == ["leo"]
    assert without.media.sha256 != with_cast.media.sha256, "the likeness is in the picture"


async def test_a_swapped_likeness_file_fails_the_prompt(settings: Settings, captured: Captured) -> None:
    app = app_for(settings, "generation")
    cameo = _likeness(settings)
    (settings.media.root / cameo.likeness_key).write_bytes(b"someone else entirely")
    rec = _prompt("@leo surfing").model_copy(update={"cameos": [cameo]})
    async with app.agents["generate"].test_context() as agent:
        await agent.put(rec.to_bytes())
    assert not captured.of(ClipGenerated)
    failed = [s for s in captured.of(GenerationStatus) if s.status == "failed"]
    assert failed and "does not match the image consent was given for" in (failed[0].reason or "")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("diffusers")
    from generation.tiny_pipeline import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-wan")


def _diffusers_settings(settings: Settings, model_dir: Path) -> Settings:
    return settings.model_copy(
        update={
            "generation": GenerationSettings(
                backend="diffusers",
                width=144,
                height=256,
                diffusers=DiffusersSettings(
                    model_dir=model_dir,
                    pipeline="WanPipeline",
                    device="cpu",
                    dtype="float32",
                    num_frames=9,
                    fps=12,
                    num_inference_steps=2,
                    max_batch=3,
                    batch_wait_s=0.5,
                ),
            )
        }
    )


@pytest.mark.slow
async def test_diffusers_worker_renders_micro_batches_and_refuses_cameos(
    settings: Settings, captured: Captured, tiny_model: Path
) -> None:
    settings = _diffusers_settings(settings, tiny_model)
    app = app_for(settings, "generation")
    prompts = [_prompt(f"a red fox running {i}") for i in range(3)]
    cameo = _prompt("@leo dancing").model_copy(update={"cameos": [_likeness(settings)]})
    async with app.agents["generate"].test_context() as agent:
        for rec in [*prompts, cameo]:
            await agent.put(rec.to_bytes(), key=str(rec.prompt_id).encode(), wait=False)
        for _ in range(1200):  # the child process loads torch and the pipeline first: generous on a busy machine
            if len(captured.of(ClipGenerated)) == 3 and any(
                s.status == "failed" for s in captured.of(GenerationStatus)
            ):
                break
            await asyncio.sleep(0.1)
    generated = captured.of(ClipGenerated)
    assert sorted(g.prompt_id for g in generated) == sorted(p.prompt_id for p in prompts)
    assert all(g.generator.name == "diffusers" and g.media.frame_count == 9 for g in generated)
    assert len({g.generator.render_ms for g in generated}) == 1, "the three rendered in one batch"
    refused = [s for s in captured.of(GenerationStatus) if s.status == "failed"]
    assert [s.prompt_id for s in refused] == [cameo.prompt_id]
    assert "cannot render cameos" in (refused[0].reason or "")
    assert not captured.raw, "a refusal is not a poison message"


async def test_moderation_rechecks_cameo_consent_before_publishing(settings: Settings, captured: Captured) -> None:
    from core.db.models import Likeness

    factory = make_sessionmaker(make_engine(settings.database_url))
    cameo = _likeness(settings)
    with session_scope(factory) as s:
        creator = User(handle="maya", handle_key="maya", display_name="Maya")
        owner = User(id=cameo.user_id, handle="leo", handle_key="leo", display_name="Leo")
        s.add_all([creator, owner])
        s.flush()
        s.add(
            Likeness(
                user_id=owner.id,
                image_key=cameo.likeness_key,
                image_sha256=cameo.likeness_sha256,
                consent="everyone",
                restrictions="",
            )
        )
        creator_id = creator.id
    gen_app = app_for(settings, "generation")
    rec = _prompt("@leo dancing on the beach").model_copy(update={"cameos": [cameo], "user_id": creator_id})
    async with gen_app.agents["generate"].test_context() as agent:
        await agent.put(rec.to_bytes())
    generated: ClipGenerated = captured.of(ClipGenerated)[0]

    mod_app = app_for(settings, "moderation")
    async with mod_app.agents["moderate"].test_context() as agent:
        await agent.put(generated.to_bytes())
        with session_scope(factory) as s:  # @leo revokes while the clip waits
            s.get(Likeness, cameo.user_id).revoked_at = datetime.now(UTC)
        await agent.put(generated.model_copy(update={"event_id": uuid.uuid4()}).to_bytes())
    published: ClipPublished = captured.of(ClipPublished)[0]
    assert any(c.name == "cameo_consent" and c.passed for c in published.checks)
    blocked: ClipBlocked = captured.of(ClipBlocked)[0]
    assert blocked.reasons == ["@leo has turned off their cameo"]
