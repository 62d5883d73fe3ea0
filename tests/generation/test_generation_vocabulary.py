"""The prompt vocabulary: data invariants, parsing, and validation of edited data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from generation import ProceduralRenderer
from generation.motion import TRAJECTORIES, compute_pose
from generation.scenery import ParticleContext, build_backdrop, build_particles, resolve_style
from generation.sprites import render_sprite
from generation.vocabulary import DEFAULT_VOCABULARY_PATH, Vocabulary, VocabularyError, default_vocabulary


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return default_vocabulary()


def test_vocabulary_covers_the_required_concepts(vocab: Vocabulary) -> None:
    subjects = vocab.concepts["subjects"]
    scenes = vocab.concepts["scenes"]
    motions = vocab.concepts["motions"]
    assert len(subjects) >= 20 and len(scenes) >= 8 and len(motions) >= 6
    for key in (
        "cat",
        "dog",
        "fox",
        "bird",
        "fish",
        "person",
        "car",
        "rocket",
        "boat",
        "pizza",
        "tree",
        "flower",
        "ball",
        "robot",
    ):
        assert key in subjects
    for key in ("beach", "city", "forest", "space", "snow", "desert", "underwater", "mountains"):
        assert key in scenes
    for key in ("dancing", "running", "spinning", "flying", "jumping", "floating"):
        assert key in motions
    for key in ("sunset", "night", "morning"):
        assert key in vocab.concepts["times"]
    assert len(vocab.concepts["colors"]) >= 8


@pytest.mark.parametrize(
    ("prompt", "concepts"),
    [
        ("a cat dancing on the beach at sunset", ("cat", "dancing", "beach", "sunset")),
        ("A CAT Dancing On The Beach At Sunset!!!", ("cat", "dancing", "beach", "sunset")),
        ("puppies running through the city at night", ("dog", "running", "city", "night")),
        ("kitties spinning in outer space", ("cat", "spinning", "space")),
        ("a red car and a blue fish under the sea", ("red", "car", "blue", "fish", "underwater")),
        ("cat cat cat", ("cat",)),
        ("the quick brown fox jumps", ("brown", "fox", "jumping")),
    ],
)
def test_concepts_are_recognised_in_prompt_order(vocab: Vocabulary, prompt: str, concepts: tuple[str, ...]) -> None:
    assert vocab.parse(prompt).concepts == concepts


def test_counts_colours_and_motions_bind_to_subjects(vocab: Vocabulary) -> None:
    analysis = vocab.parse("two red cars and a blue fish swimming")
    car, fish = analysis.subjects
    assert (car.key, car.count, car.color) == ("car", 2, "red")
    assert (fish.key, fish.count, fish.color, fish.motion) == ("fish", 1, "blue", "swimming")
    assert vocab.parse("birds").subjects[0].count == 2
    assert vocab.parse("people dancing").subjects[0].count == 2
    assert vocab.parse("a couple of foxes").subjects[0].count == 2
    assert vocab.parse("a purple dream").free_colors == ("purple",)


def test_every_sprite_renders(vocab: Vocabulary) -> None:
    sprites = [c.spec["sprite"] for c in vocab.concepts["subjects"].values()] + list(vocab.abstract_sprites)
    for spec in sprites:
        image = render_sprite(spec, 64, tint=(10, 200, 30, 255), outline=(0, 0, 0, 255), outline_px=1)
        assert image.mode == "RGBA"
        assert 8 <= max(image.size) <= 70
        assert np.asarray(image)[..., 3].max() == 255


def test_every_scene_and_time_builds(vocab: Vocabulary) -> None:
    rng = np.random.default_rng(0)
    times = [None] + [c.spec for c in vocab.concepts["times"].values()]
    for scene in vocab.concepts["scenes"].values():
        for time in times:
            style = resolve_style(scene.spec, time)
            backdrop = build_backdrop(style, 144, 256, rng)
            assert backdrop.image.shape == (256, 144, 3)
            ctx = ParticleContext(144, 256, 24, 2.0, rng, backdrop, tuple(vocab.palettes[0]), style.tint)
            frame = Image.fromarray(backdrop.image)
            draw = ImageDraw.Draw(frame, "RGBA")
            for layer in build_particles(style.particles, ctx):
                layer.draw(draw, 0)
                layer.draw(draw, 23)


def _cyclic_steps(values: np.ndarray, period: float | None) -> np.ndarray:
    steps = np.roll(values, -1) - values
    if period is not None:
        steps = (steps + period / 2) % period - period / 2
    return np.asarray(np.abs(steps), dtype=np.float64)


@pytest.mark.parametrize(("fps", "duration"), [(12, 2.0), (12, 3.0), (24, 4.5), (15, 6.0)])
def test_motions_loop_seamlessly(vocab: Vocabulary, fps: int, duration: float) -> None:
    """Clips are watched on repeat: the last-to-first frame step must look like any other step."""
    frame_count = round(fps * duration)
    for key, concept in vocab.concepts["motions"].items():
        spec = concept.spec
        pose = compute_pose(spec["trajectory"], frame_count, duration, 0.3, spec.get("params", {}))
        tracks: list[tuple[str, np.ndarray | None, float | None]] = [
            ("dx", pose.dx, None),
            ("dy", pose.dy, None),
            ("sx", pose.sx, None),
            ("sy", pose.sy, None),
            ("angle", pose.angle, 360.0),
            ("wrap_x", pose.wrap_x, 1.0),
            ("wrap_y", pose.wrap_y, 1.0),
        ]
        for name, values, period in tracks:
            if values is None:
                continue
            assert values.shape == (frame_count,) and np.isfinite(values).all(), (key, name)
            steps = _cyclic_steps(values, period)
            assert steps[-1] <= 1.5 * steps[:-1].max() + 1e-9, (key, name)
    assert set(TRAJECTORIES) >= {c.spec["trajectory"] for c in vocab.concepts["motions"].values()}


def _load_default() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DEFAULT_VOCABULARY_PATH.read_text(encoding="utf-8"))
    return data


def test_custom_vocabulary_path_is_used(tmp_path: Path) -> None:
    data = _load_default()
    data["subjects"]["cat"]["synonyms"].append("kitteh")
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    renderer = ProceduralRenderer(vocabulary_path=path)
    assert renderer.analyse("a kitteh").concepts == ("cat",)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["motions"]["dancing"].__setitem__("trajectory", "moonwalk"), "moonwalk"),
        (lambda d: d["subjects"]["dog"]["synonyms"].append("kitten"), "kitten"),
        (lambda d: d["subjects"]["cat"]["sprite"]["shapes"].append({"type": "blob"}), "blob"),
        (
            lambda d: d["subjects"]["cat"]["sprite"]["shapes"].append(
                {"type": "circle", "c": [0, 0], "r": 1, "fill": "fur"}
            ),
            "fur",
        ),
        (lambda d: d["scenes"]["beach"].__setitem__("sky", ["#zzzzzz", "#ffffff"]), "zzzzzz"),
        (lambda d: d["scenes"]["beach"]["props"].append({"kind": "volcano"}), "volcano"),
        (lambda d: d["subjects"].__setitem__("beach", d["subjects"]["cat"]), "unique"),
        (lambda d: d.__delitem__("motions"), "motions"),
    ],
)
def test_broken_vocabulary_is_rejected_with_a_readable_error(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = _load_default()
    mutate(data)
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.from_path(path)
    with pytest.raises(ValueError):
        ProceduralRenderer(vocabulary_path=path)


def test_unreadable_vocabulary_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="cannot read"):
        Vocabulary.from_path(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(VocabularyError, match="not valid JSON"):
        Vocabulary.from_path(bad)
