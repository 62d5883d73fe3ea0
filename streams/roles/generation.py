"""Generation role: prompts → rendered clip files → clips.generated.

The render runs in a child process (see streams.executors). A prompt that was
rendered before (its render.json manifest exists) is not rendered again on
redelivery: the same ClipGenerated event, with the same derived event id, is re-sent.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import faust

from core.media import LocalMediaStore
from core.records import (
    ClipGenerated,
    ClipMedia,
    GeneratorInfo,
    PromptSubmitted,
    clip_id_for_prompt,
    utcnow,
)
from core.settings import Settings
from core.topics import CLIPS_GENERATED, PROMPTS
from generation import RenderRequest, build_generator
from generation.base import Generator, RenderedClip
from streams.app import RecordSender, derived_event_id
from streams.errors import ErrorPolicy, register_agent
from streams.executors import ProcessRunner

MANIFEST = "render.json"

_generator: Generator | None = None


def _init_generator(backend: str, options: dict[str, Any]) -> None:
    global _generator
    _generator = build_generator(backend, **options)


def _render(request: RenderRequest, out_dir: Path) -> RenderedClip:
    assert _generator is not None, "render pool started without a generator"
    return _generator.generate([request], [out_dir])[0]


def media_from_render(rendered: RenderedClip, staged: Path, prefix: str) -> ClipMedia:
    def key(path: Path) -> str:
        return f"{prefix}/{path.resolve().relative_to(staged.resolve()).as_posix()}"

    return ClipMedia(
        video_key=key(rendered.video_path),
        poster_key=key(rendered.poster_path),
        frame_keys=[key(p) for p in rendered.frame_paths],
        frame_indices=list(rendered.frame_indices),
        mime_type=rendered.mime_type,
        width=rendered.width,
        height=rendered.height,
        fps=rendered.fps,
        frame_count=rendered.frame_count,
        duration_s=rendered.duration_s,
        sha256=rendered.video_sha256,
    )


class GenerationHandler:
    def __init__(self, settings: Settings, sender: RecordSender, runner: ProcessRunner) -> None:
        self.settings = settings
        self.sender = sender
        self.runner = runner
        self.store = LocalMediaStore(settings.media.root)

    async def __call__(self, rec: PromptSubmitted, message: Any) -> None:
        clip_id = clip_id_for_prompt(rec.prompt_id)
        prefix = self.store.clip_prefix(clip_id)
        manifest_key = f"{prefix}/{MANIFEST}"
        if self.store.exists(manifest_key):
            saved = json.loads(self.store.path(manifest_key).read_text())
            media, info = ClipMedia.model_validate(saved["media"]), GeneratorInfo.model_validate(saved["generator"])
            generated_at = datetime.fromisoformat(saved["generated_at"])
        else:
            await self.sender.send_status(rec.event_id, rec.prompt_id, "generating", clip_id=clip_id)
            media, info, generated_at = await self._render(rec, clip_id, prefix)
        await self.sender.send(
            CLIPS_GENERATED,
            ClipGenerated(
                event_id=derived_event_id(rec.event_id, "clips.generated"),
                occurred_at=generated_at,
                clip_id=clip_id,
                prompt_id=rec.prompt_id,
                user_id=rec.user_id,
                creator_handle=rec.creator_handle,
                text=rec.text,
                parent_clip_id=rec.parent_clip_id,
                media=media,
                generator=info,
            ),
        )

    async def _render(
        self, rec: PromptSubmitted, clip_id: Any, prefix: str
    ) -> tuple[ClipMedia, GeneratorInfo, datetime]:
        request = RenderRequest(
            prompt_id=str(rec.prompt_id),
            clip_id=str(clip_id),
            prompt=rec.text,
            seed=rec.seed,
            creator_handle=rec.creator_handle,
        )
        staged = self.store.staging_dir()
        try:
            started = time.perf_counter()
            rendered = await self.runner.run(self.settings.workers.render_timeout_s, _render, request, staged)
            render_ms = int((time.perf_counter() - started) * 1000)
            media = media_from_render(rendered, staged, prefix)
            info = GeneratorInfo(
                name=rendered.generator,
                version=rendered.generator_version,
                seed=rec.seed,
                concepts=list(rendered.concepts),
                render_ms=render_ms,
            )
            generated_at = utcnow()
            # The manifest is written last inside the staged folder and the folder is
            # moved into place whole: its presence means a complete render. A replay
            # re-sends the identical event from it.
            (staged / MANIFEST).write_text(
                json.dumps(
                    {
                        "media": media.model_dump(mode="json"),
                        "generator": info.model_dump(mode="json"),
                        "generated_at": generated_at.isoformat(),
                    },
                    indent=2,
                )
            )
            self.store.commit_dir(staged, prefix)
            return media, info, generated_at
        finally:
            if staged.exists():
                shutil.rmtree(staged, ignore_errors=True)

    async def give_up(self, rec: PromptSubmitted, exc: BaseException) -> None:
        await self.sender.send_status(rec.event_id, rec.prompt_id, "failed", reason=f"generation failed: {exc}")


def register(app: faust.App, settings: Settings) -> ErrorPolicy[Any]:
    g = settings.generation
    runner = ProcessRunner(
        1,
        _init_generator,
        (g.backend, {"width": g.width, "height": g.height, "fps": g.fps, "duration_s": g.duration_s}),
    )
    sender = RecordSender(app)
    handler = GenerationHandler(settings, sender, runner)
    return register_agent(app, PROMPTS, settings, handler, name="generate", sender=sender, on_give_up=handler.give_up)
