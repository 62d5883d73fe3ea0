"""Cameo compositing in the procedural renderer: the likeness is visibly in the clip,
deterministically, and only the image consent was given for is used."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.handles import strip_mentions
from generation import CameoLikeness, GenerationError, ProceduralRenderer, RenderRequest

# A colour the vocabulary never paints: where it shows, the likeness is on screen.
MARKER = (255, 0, 255)


def likeness(tmp_path: Path, handle: str = "leo", colour: tuple[int, int, int] = MARKER) -> CameoLikeness:
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), colour).save(buf, "PNG")
    path = tmp_path / f"{handle}.png"
    path.write_bytes(buf.getvalue())
    return CameoLikeness(handle=handle, image_path=path, sha256=hashlib.sha256(buf.getvalue()).hexdigest())


def request(prompt: str, *cameos: CameoLikeness, seed: int = 5) -> RenderRequest:
    return RenderRequest(prompt_id="p", clip_id="c", prompt=prompt, seed=seed, creator_handle="maya", cameos=cameos)


def marker_pixels(frames: np.ndarray, colour: tuple[int, int, int] = MARKER) -> np.ndarray:
    diff = np.abs(frames.astype(np.int16) - np.array(colour, dtype=np.int16)).sum(axis=-1)
    return (diff < 24).sum(axis=(1, 2))


@pytest.fixture(scope="module")
def renderer() -> ProceduralRenderer:
    return ProceduralRenderer()


def test_the_likeness_is_visible_in_every_frame(renderer: ProceduralRenderer, tmp_path: Path) -> None:
    frames = renderer.render_frames(request("@leo dancing on the beach with a dog", likeness(tmp_path)))
    counts = marker_pixels(frames)
    assert (counts > 0.01 * 288 * 512).all(), "a sizeable portrait in every frame"
    assert not marker_pixels(renderer.render_frames(request("@leo dancing on the beach with a dog"))).any()


def test_two_people_can_be_cast(renderer: ProceduralRenderer, tmp_path: Path) -> None:
    green = (0, 255, 64)
    frames = renderer.render_frames(
        request("@leo and @zoe skating in the city", likeness(tmp_path), likeness(tmp_path, "zoe", green))
    )
    assert marker_pixels(frames).min() > 0 and marker_pixels(frames, green).min() > 0


def test_same_prompt_seed_and_cameo_give_identical_frames(renderer: ProceduralRenderer, tmp_path: Path) -> None:
    cast = likeness(tmp_path)
    first = renderer.render_frames(request("@leo flying a kite", cast))
    again = renderer.render_frames(request("@leo flying a kite", cast))
    assert np.array_equal(first, again)
    other = renderer.render_frames(request("@leo flying a kite", likeness(tmp_path, "leo", (0, 200, 255))))
    assert not np.array_equal(first, other)


def test_only_the_consented_image_is_used(renderer: ProceduralRenderer, tmp_path: Path) -> None:
    cast = likeness(tmp_path)
    cast.image_path.write_bytes(Image.new("RGB", (8, 8)).tobytes())
    with pytest.raises(GenerationError, match="does not match the image consent was given for"):
        renderer.generate([request("@leo surfing", cast)], [tmp_path / "out"])
    missing = CameoLikeness("leo", tmp_path / "gone.png", "0" * 64)
    with pytest.raises(GenerationError, match="unavailable"):
        renderer.generate([request("@leo surfing", missing)], [tmp_path / "out2"])


def test_handles_are_people_not_things_to_draw(renderer: ProceduralRenderer) -> None:
    assert "star" not in renderer.analyse("@sunny_star dancing on the beach").concepts
    assert strip_mentions("@sunny_star and @leo's cat, mail me@home.example", "a person") == (
        "a person and a person cat, mail me@home.example"
    )
