"""The grown vocabulary: counts, new subjects, styles and the flagged unsafe concepts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from generation import ProceduralRenderer, RenderRequest
from generation.styles import GRADE_KEYS, apply_style
from generation.vocabulary import (
    DEFAULT_VOCABULARY_PATH,
    SAFETY_CATEGORIES,
    UNSAFE_SECTION,
    Vocabulary,
    VocabularyError,
    default_vocabulary,
    unsafe_concepts,
)
from generation.watermark import band_height

NEW_SUBJECTS = (
    "child",
    "dancer",
    "astronaut",
    "bike",
    "train",
    "plane",
    "bus",
    "ice_cream",
    "burger",
    "sushi",
    "guitar",
    "umbrella",
    "book",
    "elephant",
    "turtle",
)
UNSAFE = {
    "gun": "weapon",
    "rifle": "weapon",
    "knife": "weapon",
    "blood": "gore",
    "syringe": "drugs",
    "pills": "drugs",
    "burning_person": "fire_on_person",
}
STYLES = ("neon", "pastel", "vintage", "noir")


def _data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DEFAULT_VOCABULARY_PATH.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def renderer() -> ProceduralRenderer:
    return ProceduralRenderer()


def _request(prompt: str, seed: int = 11) -> RenderRequest:
    return RenderRequest(prompt_id="p", clip_id="c", prompt=prompt, seed=seed, creator_handle="tester")


# --------------------------------------------------------------------------- counts
def test_data_counts() -> None:
    data = _data()
    assert len(data["subjects"]) >= 40  # safe subjects alone
    assert len(data["scenes"]) >= 10
    assert len(data["motions"]) >= 10
    assert len(data["styles"]) >= 4
    assert set(STYLES) <= set(data["styles"])
    assert set(NEW_SUBJECTS) <= set(data["subjects"])
    assert {key: spec["safety_category"] for key, spec in data[UNSAFE_SECTION].items()} == UNSAFE
    assert all(spec["unsafe"] is True for spec in data[UNSAFE_SECTION].values())
    assert {spec["safety_category"] for spec in data[UNSAFE_SECTION].values()} == set(SAFETY_CATEGORIES)


def test_loaded_vocabulary_matches_the_data() -> None:
    data, vocab = _data(), default_vocabulary()
    assert len(vocab.concepts["subjects"]) == len(data["subjects"]) + len(data[UNSAFE_SECTION])
    assert len(vocab.concepts["styles"]) == len(data["styles"])
    assert vocab.unsafe == UNSAFE


# --------------------------------------------------------------------------- new subjects render
def _subject_region(renderer: ProceduralRenderer, prompt: str, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """Pixels of the middle frame that the subject sprites paint (same prompt and seed, actors removed)."""
    frames = renderer.render_frames(_request(prompt))
    with monkeypatch.context() as m:
        m.setattr(ProceduralRenderer, "_actors", lambda self, *args, **kwargs: [])
        bare = renderer.render_frames(_request(prompt))
    mid = len(frames) // 2
    diff = np.abs(frames[mid].astype(int) - bare[mid].astype(int)).max(axis=2)
    mask: np.ndarray = diff > 24
    return mask


@pytest.mark.parametrize("key", NEW_SUBJECTS + tuple(UNSAFE))
def test_each_new_subject_renders_visibly(
    renderer: ProceduralRenderer, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = f"a {key.replace('_', ' ')}"
    analysis = renderer.analyse(prompt)
    assert [s.key for s in analysis.subjects] == [key]
    mask = _subject_region(renderer, prompt, monkeypatch)
    h, w = mask.shape
    assert mask.sum() > 0.01 * h * w, f"{key} painted only {mask.sum()} px"
    frame = renderer.render_frames(_request(prompt))[renderer.frame_count // 2]
    empty = renderer.render_frames(_request(""))[renderer.frame_count // 2]
    in_region = np.abs(frame.astype(int) - empty.astype(int)).max(axis=2)[mask]
    assert in_region.mean() > 12, f"{key} region looks like the empty-prompt render"


# --------------------------------------------------------------------------- styles
@pytest.mark.parametrize("style", STYLES)
def test_styles_are_recognised(renderer: ProceduralRenderer, style: str) -> None:
    analysis = renderer.analyse(f"a {style} cat on the beach")
    assert analysis.style == style
    assert analysis.concepts == (style, "cat", "beach")


def test_style_synonyms() -> None:
    vocab = default_vocabulary()
    assert vocab.parse("a black and white photo of a dog").style == "noir"
    assert vocab.parse("retro cars").style == "vintage"
    assert vocab.parse("cyberpunk city at night").style == "neon"
    # without a style word nothing is graded, and colour words still bind to subjects
    plain = vocab.parse("a black cat and a white dog")
    assert plain.style is None and [s.color for s in plain.subjects] == ["black", "white"]


def _styled(
    renderer: ProceduralRenderer, prompt: str, style: str | None, monkeypatch: pytest.MonkeyPatch
) -> np.ndarray:
    """Render ``prompt`` with ``style`` forced, so the random streams are identical across styles."""
    vocab = renderer.vocabulary
    original = Vocabulary.parse
    with monkeypatch.context() as m:
        m.setattr(vocab, "parse", lambda text: dataclasses.replace(original(vocab, text), style=style))
        return renderer.render_frames(_request(prompt))


@pytest.mark.parametrize("style", STYLES)
def test_styles_change_the_frames(renderer: ProceduralRenderer, style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    prompt = "a red car and a dog in the city at sunset"
    base = _styled(renderer, prompt, None, monkeypatch)
    styled = _styled(renderer, prompt, style, monkeypatch)
    assert base.shape == styled.shape
    assert np.abs(base.astype(int) - styled.astype(int)).mean() > 8, style


def test_noir_is_greyscale_and_neon_is_more_saturated(
    renderer: ProceduralRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = "a red car and a dog in the city at sunset"
    band = renderer.height - band_height(renderer.height)  # leave the (ungraded) watermark band out
    noir = _styled(renderer, prompt, "noir", monkeypatch)[:, :band].astype(int)
    assert (noir.max(axis=3) - noir.min(axis=3)).max() <= 2

    def saturation(frames: np.ndarray) -> float:
        f = frames[:, :band].astype(float)
        return float((f.max(axis=3) - f.min(axis=3)).mean())

    base = _styled(renderer, prompt, None, monkeypatch)
    assert saturation(_styled(renderer, prompt, "neon", monkeypatch)) > saturation(base) * 1.15
    assert saturation(_styled(renderer, prompt, "pastel", monkeypatch)) < saturation(base)


def test_apply_style_grades_arrays_in_place() -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 64, 36, 3), dtype=np.uint8)
    graded = frames.copy()
    apply_style(graded, default_vocabulary().get("styles", "vintage").spec)
    assert graded.dtype == np.uint8 and np.abs(graded.astype(int) - frames.astype(int)).mean() > 8


# --------------------------------------------------------------------------- unsafe concepts
@pytest.mark.parametrize(
    ("prompt", "expected", "by_category"),
    [
        ("a man holding a pistol", ("gun",), {"weapon": ("gun",)}),
        ("two rifles and a knife", ("rifle", "knife"), {"weapon": ("rifle", "knife")}),
        ("a pool of blood on the street", ("blood",), {"gore": ("blood",)}),
        ("a syringe next to some pills", ("syringe", "pills"), {"drugs": ("syringe", "pills")}),
        ("a person on fire in the city", ("burning_person",), {"fire_on_person": ("burning_person",)}),
        ("a burning man", ("burning_person",), {"fire_on_person": ("burning_person",)}),
        ("noir knife and blood", ("knife", "blood"), {"weapon": ("knife",), "gore": ("blood",)}),
        ("a cat dancing on the beach at sunset", (), {}),
        ("a shooting star in space", (), {}),
    ],
)
def test_unsafe_concepts_are_recognised_and_flagged(
    prompt: str, expected: tuple[str, ...], by_category: dict[str, tuple[str, ...]]
) -> None:
    vocab = default_vocabulary()
    concepts = vocab.parse(prompt).concepts
    assert unsafe_concepts(concepts) == expected
    assert vocab.safety_categories(concepts) == by_category
    for category in SAFETY_CATEGORIES:
        assert unsafe_concepts(concepts, category) == by_category.get(category, ())


def test_unsafe_concepts_helper_edges() -> None:
    assert unsafe_concepts(()) == ()
    assert unsafe_concepts(("cat", "gun", "unknown", "gun")) == ("gun",)
    assert default_vocabulary().safety_category("knife") == "weapon"
    assert default_vocabulary().safety_category("cat") is None
    with pytest.raises(ValueError, match="safety category"):
        unsafe_concepts(("gun",), "explosives")


def test_rendered_clip_reports_unsafe_concepts(renderer: ProceduralRenderer, tmp_path: Path) -> None:
    (clip,) = renderer.generate([_request("a knife and blood in the city, noir")], [tmp_path / "clip"])
    assert clip.concepts == ("knife", "blood", "city", "noir")
    assert unsafe_concepts(clip.concepts) == ("knife", "blood")


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize(
    "prompt",
    ["a neon astronaut floating in space", "vintage train in the desert", "a man on fire, noir", "pastel ice cream"],
)
def test_styled_and_new_renders_are_deterministic(prompt: str) -> None:
    first = ProceduralRenderer().render_frames(_request(prompt, seed=5))
    second = ProceduralRenderer().render_frames(_request(prompt, seed=5))
    assert first.tobytes() == second.tobytes()


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[UNSAFE_SECTION]["gun"].__delitem__("safety_category"), "safety_category"),
        (lambda d: d[UNSAFE_SECTION]["gun"].__setitem__("safety_category", "spicy"), "safety_category"),
        (lambda d: d[UNSAFE_SECTION]["knife"].__delitem__("unsafe"), "unsafe"),
        (lambda d: d["subjects"]["cat"].__setitem__("unsafe", True), "unsafe"),
        (lambda d: d["styles"]["noir"]["grade"].__setitem__("sharpen", 2), "sharpen"),
        (lambda d: d["styles"]["neon"]["grade"].__setitem__("saturation", 9), "saturation"),
        (lambda d: d["styles"]["vintage"]["grade"].__setitem__("duotone", ["#000000"]), "duotone"),
        (lambda d: d["styles"].__setitem__("gun", {"grade": {"contrast": 1.2}}), "unique"),
        (lambda d: d[UNSAFE_SECTION]["gun"]["synonyms"].append("kitten"), "kitten"),
    ],
)
def test_broken_styles_and_unsafe_entries_are_rejected(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = _data()
    mutate(data)
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.from_path(path)


def test_grade_keys_are_documented() -> None:
    doc = (DEFAULT_VOCABULARY_PATH.parent / "VOCABULARY.md").read_text(encoding="utf-8")
    for key in GRADE_KEYS:
        assert f"`{key}`" in doc, key
    for category in SAFETY_CATEGORIES:
        assert f"`{category}`" in doc, category
