"""The diffusers GPU backend on a tiny random Wan pipeline: the real loading path
(from_pretrained on a local folder), micro-batching, out-of-memory splitting, cameo
refusal, and the files every backend writes. Runs on the CPU here; the `gpu` test
runs the same on CUDA in bf16 when a GPU is present."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from core.errors import ConfigurationError  # noqa: E402
from core.settings import DiffusersSettings, GenerationSettings  # noqa: E402
from generation import CameoLikeness, GenerationError, RenderRequest, UnsupportedRequest, build_generator  # noqa: E402
from generation.capabilities import supports_cameos  # noqa: E402
from generation.diffusers_backend import DiffusersGenerator  # noqa: E402
from generation.tiny_pipeline import save_tiny_pipeline  # noqa: E402
from generation.watermark import band_height  # noqa: E402

pytestmark = pytest.mark.slow
SMALL = {"width": 144, "height": 256, "num_frames": 9, "fps": 12, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-wan")


def _generator(model_dir: Path | None, **overrides: Any) -> DiffusersGenerator:
    options = {"model_dir": model_dir, "device": "cpu", "dtype": "float32", "max_batch": 4, **SMALL, **overrides}
    generator = build_generator("diffusers", **options)
    assert isinstance(generator, DiffusersGenerator)
    return generator


def _requests(n: int, **kw: Any) -> list[RenderRequest]:
    return [RenderRequest(f"p{i}", f"c{i}", f"a cat dancing on the beach {i}", i, "maya", **kw) for i in range(n)]


def _dirs(tmp_path: Path, n: int) -> list[Path]:
    return [tmp_path / f"out{i}" for i in range(n)]


def test_a_batch_renders_in_one_forward_pass_into_playable_watermarked_clips(model_dir: Path, tmp_path: Path) -> None:
    gen = _generator(model_dir)
    clips = gen.generate(_requests(3), _dirs(tmp_path, 3))
    assert gen.forward_passes == 1
    assert gen.version.startswith("WanPipeline-")
    for clip in clips:
        assert (clip.width, clip.height, clip.frame_count, clip.fps) == (144, 256, 9, 12)
        assert clip.generator == "diffusers" and "cat" in clip.concepts
        assert hashlib.sha256(clip.video_path.read_bytes()).hexdigest() == clip.video_sha256
        with av.open(str(clip.video_path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 9 and frames[0].shape == (256, 144, 3)
        # The dark watermark band sits at the bottom of every frame (random weights give mid-grey noise).
        band = band_height(256)
        assert all(f[-band:].mean() < f[: -band - 4].mean() for f in frames)
        assert clip.poster_path.is_file() and clip.frame_paths and all(p.is_file() for p in clip.frame_paths)


def test_a_clip_depends_on_its_prompt_and_seed_not_on_its_batch(model_dir: Path, tmp_path: Path) -> None:
    gen = _generator(model_dir)
    alone = gen.generate(_requests(1), _dirs(tmp_path / "a", 1))[0]
    again = gen.generate(_requests(1), _dirs(tmp_path / "b", 1))[0]
    assert alone.video_sha256 == again.video_sha256
    batched = gen.generate(_requests(3), _dirs(tmp_path / "c", 3))
    first = np.asarray(Image.open(alone.poster_path), dtype=np.int16)
    in_batch = np.asarray(Image.open(batched[0].poster_path), dtype=np.int16)
    assert np.abs(first - in_batch).mean() < 2.0  # same seed → same noise, whatever the neighbours


def test_out_of_memory_splits_the_batch_and_retries(model_dir: Path, tmp_path: Path) -> None:
    gen = _generator(model_dir)
    real_call = gen._call_pipeline
    sizes: list[int] = []

    def tight_memory(**kwargs: Any) -> Any:  # a GPU on which only one clip fits at a time
        sizes.append(len(kwargs["prompt"]))
        if len(kwargs["prompt"]) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_call(**kwargs)

    gen._call_pipeline = tight_memory  # type: ignore[method-assign]
    clips = gen.generate(_requests(4), _dirs(tmp_path, 4))
    assert [c.clip_id for c in clips] == ["c0", "c1", "c2", "c3"]
    assert sizes[:3] == [4, 2, 1], "4 → halves of 2 → singles"
    assert gen.batch_limit == 1, "later batches start at the size that fitted"


def test_a_single_clip_out_of_memory_is_a_clear_failure(model_dir: Path, tmp_path: Path) -> None:
    gen = _generator(model_dir)

    def no_memory(chunk: list[RenderRequest]) -> list[np.ndarray]:
        raise torch.OutOfMemoryError("CUDA out of memory")

    gen._forward = no_memory  # type: ignore[method-assign]
    with pytest.raises(GenerationError, match="out of GPU memory rendering one 144x256x9 clip"):
        gen.generate(_requests(2), _dirs(tmp_path, 2))


def test_text_only_pipelines_refuse_cameos_before_rendering(model_dir: Path, tmp_path: Path) -> None:
    gen = _generator(model_dir)
    cameo = CameoLikeness("leo", tmp_path / "leo.webp", "0" * 64)
    with pytest.raises(UnsupportedRequest, match="text-only and cannot render cameos"):
        gen.generate(_requests(2) + _requests(1, cameos=(cameo,)), _dirs(tmp_path, 3))
    assert gen.forward_passes == 0, "no GPU time spent on a batch that cannot be served"


@pytest.fixture(scope="module")
def i2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-wan-i2v", image_to_video=True)


def test_image_to_video_pipelines_animate_a_sketch_with_the_cast(i2v_dir: Path, tmp_path: Path) -> None:
    gen = _generator(i2v_dir)  # pipeline "auto": the class comes from model_index.json
    assert gen.pipeline_class == "WanImageToVideoPipeline" and gen.image_conditioning
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (255, 0, 255)).save(buf, "PNG")
    (tmp_path / "leo.png").write_bytes(buf.getvalue())
    cameo = CameoLikeness("leo", tmp_path / "leo.png", hashlib.sha256(buf.getvalue()).hexdigest())
    seen: list[Image.Image] = []
    real_call = gen._call_pipeline

    def spy(**kwargs: Any) -> Any:
        seen.append(kwargs["image"])
        return real_call(**kwargs)

    gen._call_pipeline = spy  # type: ignore[method-assign]
    clips = gen.generate([*_requests(1, cameos=(cameo,)), *_requests(1)], _dirs(tmp_path, 2))
    assert len(clips) == 2 and gen.forward_passes == 2, "one conditioning image per forward pass"
    with_cast, plain = (np.asarray(im, dtype=np.int16) for im in seen)
    assert with_cast.shape == (256, 144, 3)
    magenta = (np.abs(with_cast - np.array([255, 0, 255])).sum(axis=-1) < 30).sum()
    assert magenta > 200, "the cast likeness is in the frame the model animates"
    assert (np.abs(plain - np.array([255, 0, 255])).sum(axis=-1) < 30).sum() == 0
    settings = GenerationSettings(backend="diffusers", diffusers=DiffusersSettings(model_dir=i2v_dir))
    assert supports_cameos(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_dir": None}, "needs GENERATION__DIFFUSERS__MODEL_DIR"),
        ({"model_dir": Path("/nonexistent")}, "no model_index.json"),
        ({"width": 150}, "multiples of 16"),
        ({"pipeline": "NoSuchPipeline"}, "no pipeline class"),
    ],
)
def test_bad_configuration_fails_loudly(model_dir: Path, overrides: dict[str, Any], message: str) -> None:
    options = {"model_dir": model_dir, **overrides}
    with pytest.raises(ConfigurationError, match=message):
        _generator(**options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_configuration_error(model_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="no CUDA device"):
        _generator(model_dir, device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_same_path_on_cuda_in_bf16(model_dir: Path, tmp_path: Path) -> None:
    gen = _generator(model_dir, device="cuda", dtype="bfloat16")
    clips = gen.generate(_requests(4), _dirs(tmp_path, 4))
    assert gen.forward_passes == 1 and len(clips) == 4
    assert next(gen.pipe.transformer.parameters()).dtype == torch.bfloat16
    assert all(c.video_path.stat().st_size > 0 for c in clips)
