"""Frame-level behaviour of the procedural renderer: determinism, fallbacks, watermark, validation."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import generation.procedural as procedural
from generation import GenerationError, Generator, ProceduralRenderer, RenderRequest, build_generator
from generation.watermark import apply_watermark, band_height, watermark_text

REPO_ROOT = Path(__file__).resolve().parents[2]


def request(prompt: str, seed: int = 7, handle: str = "alice") -> RenderRequest:
    return RenderRequest(prompt_id="p", clip_id="c", prompt=prompt, seed=seed, creator_handle=handle)


@pytest.fixture(scope="module")
def renderer() -> ProceduralRenderer:
    return ProceduralRenderer()


def test_render_frames_shape_and_dtype(renderer: ProceduralRenderer) -> None:
    frames = renderer.render_frames(request("a dog running in the park"))
    assert frames.shape == (36, 512, 288, 3)
    assert frames.dtype == np.uint8
    # the clip actually moves
    assert not np.array_equal(frames[0], frames[18])


def test_render_is_deterministic(renderer: ProceduralRenderer) -> None:
    first = renderer.render_frames(request("a cat dancing on the beach at sunset", seed=11))
    second = renderer.render_frames(request("a cat dancing on the beach at sunset", seed=11))
    assert np.array_equal(first, second)
    other_seed = renderer.render_frames(request("a cat dancing on the beach at sunset", seed=12))
    assert not np.array_equal(first, other_seed)
    other_prompt = renderer.render_frames(request("a cat dancing on the beach at night", seed=11))
    assert not np.array_equal(first, other_prompt)


def test_render_is_deterministic_across_processes(renderer: ProceduralRenderer) -> None:
    """Guards against hash()-seeded or set-ordered randomness sneaking in."""
    code = (
        "import hashlib; from generation import ProceduralRenderer, RenderRequest;"
        "f = ProceduralRenderer().render_frames(RenderRequest('p', 'c', 'two birds flying over the snow', 5, 'zoe'));"
        "print(hashlib.sha256(f.tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True, timeout=60
    )
    local = renderer.render_frames(request("two birds flying over the snow", seed=5, handle="zoe"))
    assert out.stdout.strip() == hashlib.sha256(local.tobytes()).hexdigest()


@pytest.mark.parametrize("prompt", ["zxqv blorp wug", "", "   ", "🦄✨ ??? 12345", "a blue dream"])
def test_unknown_prompts_still_render_a_pleasant_clip(renderer: ProceduralRenderer, prompt: str) -> None:
    frames = renderer.render_frames(request(prompt))
    assert frames.shape == (36, 512, 288, 3)
    top = frames[:, : 512 - band_height(512)]
    assert top.std() > 10  # not a flat colour
    assert not np.array_equal(frames[0], frames[-1])  # something moves
    if prompt != "a blue dream":
        assert renderer.analyse(prompt).concepts == ()


def test_watermark_helper_draws_a_dark_band_with_text() -> None:
    frame = np.full((512, 288, 3), 128, np.uint8)
    marked = apply_watermark(frame.copy(), "alice")
    band = band_height(512)
    assert np.array_equal(marked[: 512 - band], frame[: 512 - band])
    region = marked[512 - band :]
    assert region.mean() < 110  # darkened band
    assert region.max() > 200  # bright text pixels
    assert watermark_text("alice") == "AI-generated \u00b7 @alice"


def test_watermark_handles_are_sanitised() -> None:
    assert watermark_text("@bob") == "AI-generated \u00b7 @bob"
    assert watermark_text("  eve\n\u202e ") == "AI-generated \u00b7 @eve"
    assert watermark_text("") == "AI-generated"
    long_handle = "x" * 200
    frame = np.zeros((512, 288, 3), np.uint8)
    apply_watermark(frame, long_handle)  # must not raise or overflow
    assert len(watermark_text(long_handle)) < 60


def test_every_frame_carries_the_watermark(renderer: ProceduralRenderer, monkeypatch: pytest.MonkeyPatch) -> None:
    marked = renderer.render_frames(request("a penguin walking in the snow", handle="frank"))
    monkeypatch.setattr(procedural, "apply_watermark", lambda frames, handle: frames)
    plain = renderer.render_frames(request("a penguin walking in the snow", handle="frank"))
    band = band_height(512)
    assert np.array_equal(marked[:, : 512 - band], plain[:, : 512 - band])
    for f in range(marked.shape[0]):
        assert not np.array_equal(marked[f, 512 - band :], plain[f, 512 - band :]), f"frame {f} has no watermark"


def test_creator_handle_only_changes_the_watermark(renderer: ProceduralRenderer) -> None:
    a = renderer.render_frames(request("a robot dancing", handle="alice"))
    b = renderer.render_frames(request("a robot dancing", handle="bob"))
    band = band_height(512)
    assert np.array_equal(a[:, : 512 - band], b[:, : 512 - band])
    assert not np.array_equal(a[:, 512 - band :], b[:, 512 - band :])


def test_other_valid_sizes_render(tmp_path: Path) -> None:
    small = ProceduralRenderer(width=180, height=320, fps=24, duration_s=2.0)
    assert small.frame_count == 48
    frames = small.render_frames(request("a fish swimming under the sea"))
    assert frames.shape == (48, 320, 180, 3)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width": 289},
        {"height": 511},
        {"width": 512, "height": 288},
        {"width": 288, "height": 288},
        {"width": 400, "height": 512},
        {"fps": 11},
        {"fps": 25},
        {"fps": 12.5},
        {"fps": True},
        {"duration_s": 1.9},
        {"duration_s": 6.5},
        {"duration_s": float("nan")},
        {"width": 288.0},
        {"width": 100, "height": 178},
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError) as excinfo:
        ProceduralRenderer(**kwargs)  # type: ignore[arg-type]
    assert str(excinfo.value)  # readable message, not an empty error


def test_build_generator() -> None:
    generator = build_generator("procedural")
    assert isinstance(generator, ProceduralRenderer)
    assert isinstance(generator, Generator)
    assert (generator.name, generator.version) == ("procedural", "procedural-2")
    assert build_generator("procedural", fps=24).fps == 24  # type: ignore[attr-defined]
    with pytest.raises(GenerationError, match=r"stable-diffusion.*procedural"):
        build_generator("stable-diffusion")


@pytest.mark.parametrize("seed", [-1, 2**80])
def test_any_integer_seed_is_accepted(renderer: ProceduralRenderer, seed: int) -> None:
    frames = renderer.render_frames(request("a heart floating", seed=seed))
    assert frames.shape == (36, 512, 288, 3)


def test_subject_counts_are_capped(renderer: ProceduralRenderer) -> None:
    analysis = renderer.analyse("99 cats and 40 dogs")
    assert [s.count for s in analysis.subjects] == [5, 5]
    frames = renderer.render_frames(request("99 cats and 40 dogs"))
    assert frames.shape == (36, 512, 288, 3)
