"""The GPU backend: a diffusers text-to-video (or image-to-video) pipeline.

The pipeline is loaded with ``from_pretrained`` from a local folder (nothing is ever
downloaded: ``local_files_only``), in bf16 on CUDA by default. Requests are rendered
in micro-batches of up to ``max_batch`` prompts per forward pass, each with its own
seeded generator so a clip does not depend on its neighbours in the batch. A CUDA
out-of-memory error splits the batch in half and retries each half (and lowers the
batch size for the rest of the process); a single clip that does not fit fails with a
clear error. The stream worker runs all of this in a child process with a per-job
timeout, so a hung kernel is killed rather than wedging the worker.

Cameos need image conditioning. Pipelines whose ``__call__`` takes an ``image``
(image-to-video) animate a first frame that the procedural renderer sketches from the
prompt, with the cast people's portraits composited from their consented likeness
images; text-only pipelines refuse cameo requests with :class:`UnsupportedRequest`
before any GPU work.

Every frame gets the same visible watermark as the procedural renderer's, and the
same files come out (clip.mp4, poster.jpg, frames/), see generation.encoding.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.errors import ConfigurationError
from core.handles import strip_mentions
from generation.base import GenerationError, RenderedClip, RenderRequest, UnsupportedRequest
from generation.encoding import package_clip
from generation.procedural import ProceduralRenderer
from generation.vocabulary import default_vocabulary
from generation.watermark import apply_watermark

log = logging.getLogger(__name__)
GENERATOR_NAME = "diffusers"
#: Latent patches are 16 px in Wan and LTX (8x VAE, 2x2 patches).
SIZE_MULTIPLE = 16


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _model_fingerprint(model_dir: Path) -> str:
    """A short id of the weights' configuration, recorded as the generator version."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.rglob("*.json")):
        digest.update(path.relative_to(model_dir).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


class DiffusersGenerator:
    """Implements :class:`generation.base.Generator` with a diffusers video pipeline."""

    name = GENERATOR_NAME

    def __init__(
        self,
        model_dir: Path | str | None = None,
        pipeline: str = "auto",
        device: str = "cuda",
        dtype: str = "bfloat16",
        width: int = 288,
        height: int = 512,
        num_frames: int = 33,
        fps: int = 16,
        num_inference_steps: int = 30,
        guidance_scale: float = 5.0,
        max_batch: int = 4,
        cpu_offload: bool = False,
        negative_prompt: str = "",
        max_sequence_length: int = 226,
    ) -> None:
        import diffusers
        import torch

        if model_dir is None:
            raise ConfigurationError(
                "the diffusers backend needs GENERATION__DIFFUSERS__MODEL_DIR: a local folder with model_index.json"
            )
        model_dir = Path(model_dir)
        if not (model_dir / "model_index.json").is_file():
            raise ConfigurationError(f"{model_dir} is not a diffusers pipeline folder (no model_index.json)")
        if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE or height <= width:
            raise ConfigurationError(
                f"diffusers clips are vertical with sides that are multiples of {SIZE_MULTIPLE}; got {width}x{height}"
            )
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigurationError(
                "GENERATION__DIFFUSERS__DEVICE is cuda but no CUDA device is visible; "
                "set it to cpu to run (very slowly) on the CPU"
            )
        if pipeline == "auto":
            cls: Any = diffusers.DiffusionPipeline
        else:
            cls = getattr(diffusers, pipeline, None)
            if cls is None:
                raise ConfigurationError(f"diffusers has no pipeline class {pipeline!r}")
        torch_dtype = getattr(torch, dtype)
        self.pipe = cls.from_pretrained(model_dir, torch_dtype=torch_dtype, local_files_only=True)
        if cpu_offload:
            self.pipe.enable_model_cpu_offload(device=device)
        else:
            self.pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = device
        self.width, self.height = width, height
        self.num_frames, self.fps = num_frames, fps
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.negative_prompt = negative_prompt
        self.max_sequence_length = max_sequence_length
        #: Lowered after an out-of-memory error, so later batches do not hit it again.
        self.batch_limit = max(1, max_batch)
        self.image_conditioning = "image" in inspect.signature(self.pipe.__call__).parameters
        self._sketcher: ProceduralRenderer | None = None
        self.pipeline_class = type(self.pipe).__name__
        self.version = f"{self.pipeline_class}-{_model_fingerprint(model_dir)}"
        self.vocabulary = default_vocabulary()
        self.forward_passes = 0  # observable by tests and the benchmark

    # -- Generator protocol ---------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[RenderRequest], out_dirs: Sequence[Path]) -> list[RenderedClip]:
        if len(requests) != len(out_dirs):
            raise ValueError(f"got {len(requests)} requests but {len(out_dirs)} output directories")
        for request in requests:
            if request.cameos and not self.image_conditioning:
                raise UnsupportedRequest(
                    f"clip_id={request.clip_id!r}: {self.pipeline_class} is text-only and cannot render cameos"
                )
        # Text-to-video pipelines batch prompts together. Image-to-video pipelines condition a
        # whole call on one image and every request has its own first frame, so they render
        # one request per forward pass.
        frames: dict[int, np.ndarray] = {}
        step = 1 if self.image_conditioning else self.batch_limit
        start = 0
        while start < len(requests):
            chunk = list(range(start, min(len(requests), start + step)))
            for index, video in zip(chunk, self._render([requests[i] for i in chunk]), strict=True):
                frames[index] = video
            start += len(chunk)
        clips = []
        for i, (request, out_dir) in enumerate(zip(requests, out_dirs, strict=True)):
            video = frames[i]
            apply_watermark(video, request.creator_handle)
            clips.append(
                package_clip(
                    video,
                    Path(out_dir),
                    self.fps,
                    clip_id=request.clip_id,
                    generator=self.name,
                    generator_version=self.version,
                    concepts=self.vocabulary.parse(strip_mentions(request.prompt)).concepts,
                )
            )
        return clips

    # -- batching with out-of-memory splitting --------------------------------------------------------------------
    def _render(self, chunk: list[RenderRequest]) -> list[np.ndarray]:
        try:
            return self._forward(chunk)
        except Exception as exc:
            if not _is_out_of_memory(exc):
                ids = ", ".join(r.clip_id for r in chunk)
                raise GenerationError(f"{self.pipeline_class} failed for clip_id(s) {ids}: {exc}") from exc
            self._free_memory()
            if len(chunk) == 1:
                raise GenerationError(
                    f"clip_id={chunk[0].clip_id!r}: out of GPU memory rendering one "
                    f"{self.width}x{self.height}x{self.num_frames} clip; lower the size or enable cpu_offload"
                ) from exc
            half = math.ceil(len(chunk) / 2)
            self.batch_limit = min(self.batch_limit, half)
            log.warning("out of GPU memory with a batch of %d; splitting and retrying as %d", len(chunk), half)
            return self._render(chunk[:half]) + self._render(chunk[half:])

    def _free_memory(self) -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _forward(self, chunk: list[RenderRequest]) -> list[np.ndarray]:
        import torch

        generators = [torch.Generator(device="cpu").manual_seed(int(r.seed)) for r in chunk]
        kwargs: dict[str, Any] = {
            # A model knows nobody by @handle: the cast are "a person" to it (and in the
            # first frame an image-to-video model animates, they have faces).
            "prompt": [strip_mentions(r.prompt, "a person") for r in chunk],
            "negative_prompt": [self.negative_prompt] * len(chunk),
            "height": self.height,
            "width": self.width,
            "num_frames": self.num_frames,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "generator": generators,
            "output_type": "np",
        }
        if "max_sequence_length" in inspect.signature(self.pipe.__call__).parameters:
            kwargs["max_sequence_length"] = self.max_sequence_length
        if self.image_conditioning:
            kwargs["image"] = self._first_frame(chunk[0])
        self.forward_passes += 1
        with torch.inference_mode():
            output = self._call_pipeline(**kwargs).frames
        videos = output if isinstance(output, list) else list(output)
        if len(videos) != len(chunk):
            raise GenerationError(f"{self.pipeline_class} returned {len(videos)} videos for {len(chunk)} prompts")
        return [self._to_uint8(np.asarray(v)) for v in videos]

    def _call_pipeline(self, **kwargs: Any) -> Any:
        return self.pipe(**kwargs)

    def _to_uint8(self, video: np.ndarray) -> np.ndarray:
        if video.ndim != 4:
            raise GenerationError(f"unexpected video shape {video.shape}")
        if video.shape[-1] != 3 and video.shape[1] == 3:  # (F, C, H, W) → (F, H, W, C)
            video = video.transpose(0, 2, 3, 1)
        if video.dtype != np.uint8:
            video = np.clip(np.rint(video.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(video)

    def _first_frame(self, request: RenderRequest) -> Image.Image:
        """The image an image-to-video pipeline animates: the procedural renderer's first
        frame for the prompt (its scene and subjects, and the cast people's portraits
        composited from their consented likeness images), at the model's frame size."""
        if self._sketcher is None:
            self._sketcher = ProceduralRenderer(width=self.width, height=self.height, fps=12, duration_s=2.0)
        return Image.fromarray(self._sketcher.sketch(request), "RGB")
