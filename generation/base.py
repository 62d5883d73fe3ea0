"""Backend-neutral contract between generation backends and the stream processors.

Stream processors depend only on this module, so a GPU model backend can
replace the procedural renderer without touching them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class CameoLikeness:
    """A person cast in the clip, with consent, and the image they registered."""

    handle: str  # without the "@"
    image_path: Path
    sha256: str  # of the image file; a different file is refused


@dataclass(frozen=True)
class RenderRequest:
    prompt_id: str
    clip_id: str
    prompt: str
    seed: int
    creator_handle: str  # without the "@"
    cameos: tuple[CameoLikeness, ...] = ()


@dataclass(frozen=True)
class RenderedClip:
    clip_id: str
    video_path: Path  # <out_dir>/clip.mp4
    poster_path: Path  # <out_dir>/poster.jpg
    frame_paths: tuple[Path, ...]  # <out_dir>/frames/000.jpg ...: >= 1 per second, plus first and last frame
    frame_indices: tuple[int, ...]  # which video frame each sampled frame is
    width: int
    height: int
    fps: int
    frame_count: int
    duration_s: float
    mime_type: str  # "video/mp4"
    video_sha256: str  # hex sha256 of the mp4 bytes
    generator: str  # "procedural"
    generator_version: str  # e.g. "procedural-2"
    concepts: tuple[str, ...]  # vocabulary concepts recognised in the prompt, in a stable order


@runtime_checkable
class Generator(Protocol):
    """Batch interface: model backends amortise loading over a batch, so the contract is batch-shaped."""

    name: str
    version: str

    def generate(self, requests: Sequence[RenderRequest], out_dirs: Sequence[Path]) -> list[RenderedClip]:
        """Render ``requests[i]`` into ``out_dirs[i]`` (one fresh directory per request, created by the caller)."""
        ...


class GenerationError(Exception):
    """A clip could not be rendered; the message names the clip_id so the failure can be routed back to it."""


class UnsupportedRequest(GenerationError):
    """The backend cannot render this kind of request (for example cameos on a text-only model).
    Retrying cannot help, so the worker fails the prompt at once with this message."""
