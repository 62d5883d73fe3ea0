"""Generation role: prompts → rendered clip files → clips.generated.

The render runs in a child process (see streams.executors). A prompt that was
rendered before (its render.json manifest exists) is not rendered again on
redelivery: the same ClipGenerated event, with the same derived event id, is re-sent.

Backends that gain from batching (the diffusers GPU backend, ``max_batch`` > 1) get
micro-batches: the agent takes up to ``max_batch`` prompts that arrive within
``batch_wait_s`` and renders the fresh ones in one call, whose offsets are committed
only after every one of them was handled. A batch that fails is retried one prompt
at a time through the usual error policy, so one poison prompt cannot take its
neighbours to the dead-letter topic. Every clip is signed (a C2PA manifest embedded
in the MP4, generation/provenance.py) before its event goes out. A request the backend cannot serve at all
(cameos on a text-only model) fails its prompt at once with the reason: retrying
cannot help, and no GPU time is spent on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import faust

from core import metrics
from core.errors import RecordError
from core.logging import log_context, record_ids
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
from core.topics import CLIPS_GENERATED, PROMPTS, decode
from generation import CameoLikeness, RenderRequest, UnsupportedRequest, build_generator
from generation.base import Generator, RenderedClip
from generation.encoding import sha256_file
from generation.provenance import ClipClaim, credentials_from, sign_video
from streams.app import RecordSender, derived_event_id, raw_topic
from streams.errors import ErrorPolicy, consume, policy_for
from streams.executors import ProcessRunner

log = logging.getLogger(__name__)
MANIFEST = "render.json"

_generator: Generator | None = None


def _init_generator(backend: str, options: dict[str, Any]) -> None:
    global _generator
    _generator = build_generator(backend, **options)


def _render(request: RenderRequest, out_dir: Path) -> RenderedClip:
    assert _generator is not None, "render pool started without a generator"
    return _generator.generate([request], [out_dir])[0]


def _render_batch(requests: list[RenderRequest], out_dirs: list[Path]) -> list[RenderedClip]:
    assert _generator is not None, "render pool started without a generator"
    return _generator.generate(requests, out_dirs)


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


@dataclass
class _Job:
    rec: PromptSubmitted
    request: RenderRequest
    staged: Path
    prefix: str


def backend_options(settings: Settings) -> dict[str, Any]:
    g = settings.generation
    if g.backend == "diffusers":
        d = g.diffusers
        return {
            "model_dir": d.model_dir,
            "pipeline": d.pipeline,
            "device": d.device,
            "dtype": d.dtype,
            "width": g.width,
            "height": g.height,
            "num_frames": d.num_frames,
            "fps": d.fps,
            "num_inference_steps": d.num_inference_steps,
            "guidance_scale": d.guidance_scale,
            "max_batch": d.max_batch,
            "cpu_offload": d.cpu_offload,
            "negative_prompt": d.negative_prompt,
        }
    return {"width": g.width, "height": g.height, "fps": g.fps, "duration_s": g.duration_s}


class GenerationHandler:
    def __init__(self, settings: Settings, sender: RecordSender, runner: ProcessRunner) -> None:
        self.settings = settings
        self.sender = sender
        self.runner = runner
        self.store = LocalMediaStore(settings.media.root)
        self.credentials = credentials_from(settings)

    # -- one prompt ---------------------------------------------------------------------------------------------
    async def __call__(self, rec: PromptSubmitted, message: Any) -> None:
        if await self._resend_if_rendered(rec):
            return
        job = self._prepare(rec)
        try:
            await self.sender.send_status(
                rec.event_id, rec.prompt_id, "generating", clip_id=clip_id_for_prompt(rec.prompt_id)
            )
            started = time.perf_counter()
            try:
                rendered = await self.runner.run(
                    self.settings.workers.render_timeout_s, _render, job.request, job.staged
                )
            except UnsupportedRequest as e:
                await self._refuse(rec, e)
                return
            await self._finish(job, rendered, int((time.perf_counter() - started) * 1000))
        finally:
            shutil.rmtree(job.staged, ignore_errors=True)

    async def _resend_if_rendered(self, rec: PromptSubmitted) -> bool:
        prefix = self.store.clip_prefix(clip_id_for_prompt(rec.prompt_id))
        manifest_key = f"{prefix}/{MANIFEST}"
        if not self.store.exists(manifest_key):
            return False
        saved = json.loads(self.store.path(manifest_key).read_text())
        media, info = ClipMedia.model_validate(saved["media"]), GeneratorInfo.model_validate(saved["generator"])
        await self._send_generated(rec, media, info, datetime.fromisoformat(saved["generated_at"]))
        return True

    def _prepare(self, rec: PromptSubmitted) -> _Job:
        clip_id = clip_id_for_prompt(rec.prompt_id)
        request = RenderRequest(
            prompt_id=str(rec.prompt_id),
            clip_id=str(clip_id),
            prompt=rec.text,
            seed=rec.seed,
            creator_handle=rec.creator_handle,
            cameos=tuple(
                CameoLikeness(handle=c.handle, image_path=self.store.path(c.likeness_key), sha256=c.likeness_sha256)
                for c in rec.cameos
            ),
        )
        return _Job(rec, request, self.store.staging_dir(), self.store.clip_prefix(clip_id))

    async def _finish(self, job: _Job, rendered: RenderedClip, render_ms: int) -> None:
        rec = job.rec
        rendered = await asyncio.to_thread(self._sign, rec, rendered)
        media = media_from_render(rendered, job.staged, job.prefix)
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
        (job.staged / MANIFEST).write_text(
            json.dumps(
                {
                    "media": media.model_dump(mode="json"),
                    "generator": info.model_dump(mode="json"),
                    "generated_at": generated_at.isoformat(),
                },
                indent=2,
            )
        )
        self.store.commit_dir(job.staged, job.prefix)
        with log_context(**record_ids(rec)):  # a batch renders several prompts at once
            log.info("rendered by %s in %d ms", rendered.generator, render_ms)
        await self._send_generated(rec, media, info, generated_at)

    def _sign(self, rec: PromptSubmitted, rendered: RenderedClip) -> RenderedClip:
        """Embed the signed C2PA manifest; the recorded sha256 is the signed file's."""
        claim = ClipClaim(
            clip_id=str(clip_id_for_prompt(rec.prompt_id)),
            prompt_id=str(rec.prompt_id),
            creator_id=str(rec.user_id),
            creator_handle=rec.creator_handle,
            generator=rendered.generator,
            generator_version=rendered.generator_version,
            prompt_sha256=ClipClaim.hash_prompt(rec.text),
            cameo_user_ids=tuple(str(c.user_id) for c in rec.cameos),
        )
        sign_video(rendered.video_path, claim, self.credentials)
        return dataclasses.replace(rendered, video_sha256=sha256_file(rendered.video_path))

    async def _send_generated(
        self, rec: PromptSubmitted, media: ClipMedia, info: GeneratorInfo, generated_at: datetime
    ) -> None:
        await self.sender.send(
            CLIPS_GENERATED,
            ClipGenerated(
                event_id=derived_event_id(rec.event_id, "clips.generated"),
                occurred_at=generated_at,
                clip_id=clip_id_for_prompt(rec.prompt_id),
                prompt_id=rec.prompt_id,
                user_id=rec.user_id,
                creator_handle=rec.creator_handle,
                text=rec.text,
                parent_clip_id=rec.parent_clip_id,
                cameos=rec.cameos,
                media=media,
                generator=info,
            ),
        )

    async def _refuse(self, rec: PromptSubmitted, exc: UnsupportedRequest) -> None:
        log.warning("prompt %s refused by the %s backend: %s", rec.prompt_id, self.settings.generation.backend, exc)
        await self.sender.send_status(rec.event_id, rec.prompt_id, "failed", reason=f"generation refused: {exc}")

    async def give_up(self, rec: PromptSubmitted, exc: BaseException) -> None:
        await self.sender.send_status(rec.event_id, rec.prompt_id, "failed", reason=f"generation failed: {exc}")

    # -- a micro-batch ------------------------------------------------------------------------------------------
    async def batch(self, messages: Sequence[Any], policy: ErrorPolicy[Any]) -> AsyncIterator[str]:
        """Render the fresh prompts of ``messages`` in one backend call; anything that
        fails (or is a replay, or undecodable) goes through ``policy`` one at a time."""
        fresh: list[tuple[Any, _Job]] = []
        singles: list[Any] = []
        for message in messages:
            try:
                rec = decode(PROMPTS, message.value)
            except RecordError:
                singles.append(message)  # the policy dead-letters it with the reason
                continue
            assert isinstance(rec, PromptSubmitted)
            if self.store.exists(f"{self.store.clip_prefix(clip_id_for_prompt(rec.prompt_id))}/{MANIFEST}"):
                singles.append(message)
            else:
                fresh.append((message, self._prepare(rec)))
        try:
            if len(fresh) == 1:
                singles.append(fresh[0][0])
            elif fresh:
                for _, job in fresh:
                    metrics.record_consumed(policy.consumer, PROMPTS.name, job.rec.occurred_at)
                    await self.sender.send_status(
                        job.rec.event_id, job.rec.prompt_id, "generating", clip_id=clip_id_for_prompt(job.rec.prompt_id)
                    )
                started = time.perf_counter()
                try:
                    rendered = await self.runner.run(
                        self.settings.workers.render_timeout_s * len(fresh),
                        _render_batch,
                        [job.request for _, job in fresh],
                        [job.staged for _, job in fresh],
                    )
                except Exception as e:  # noqa: BLE001 — fall back to one at a time, with retries and the DLQ
                    log.warning("batch of %d failed (%s); rendering one at a time", len(fresh), e)
                    singles.extend(message for message, _ in fresh)
                else:
                    render_ms = int((time.perf_counter() - started) * 1000)
                    for (_, job), clip in zip(fresh, rendered, strict=True):
                        await self._finish(job, clip, render_ms)
                        policy.handled(started)
                        yield "processed"
        finally:
            for _, job in fresh:
                shutil.rmtree(job.staged, ignore_errors=True)
        for message in singles:
            yield await policy(message)


def register(app: faust.App, settings: Settings) -> ErrorPolicy[Any]:
    g = settings.generation
    runner = ProcessRunner(1, _init_generator, (g.backend, backend_options(settings)))
    sender = RecordSender(app)
    handler = GenerationHandler(settings, sender, runner)
    policy = policy_for(app, PROMPTS, settings, handler, sender, on_give_up=handler.give_up)
    max_batch = g.diffusers.max_batch if g.backend == "diffusers" else 1

    async def generate(stream: Any) -> AsyncIterator[str]:
        if max_batch <= 1:
            async for outcome in consume(stream, policy):
                yield outcome
            return
        async for events in stream.take_events(max_batch, within=g.diffusers.batch_wait_s or 0.01):
            async for outcome in handler.batch([e.message for e in events], policy):
                yield outcome

    # Concurrency 1 (faust-streaming issue 606); batching gives the GPU its parallelism.
    app.agent(raw_topic(app, PROMPTS.name), name="generate", concurrency=1)(generate)
    return policy
