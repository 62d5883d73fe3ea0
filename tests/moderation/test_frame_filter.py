"""The CLIP frame filter with the shipped model: loading, decisions, rendered clips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from generation.base import RenderRequest
from generation.encoding import encode_mp4, sample_frame_indices
from generation.procedural import ProceduralRenderer
from moderation.frame_filter import (
    DEFAULT_CONCEPTS,
    DEFAULT_MODEL_DIR,
    Compositions,
    Concept,
    ConceptSet,
    FrameFilter,
    FrameFilterError,
    SpecialCare,
    inference_tower,
    load_clip,
    load_frame_filter,
    read_frames,
    sample_frames,
    to_inputs,
)
from moderation.frame_training import data


@pytest.fixture(scope="module")
def shipped() -> FrameFilter:
    return load_frame_filter()


def _render(tmp_path: Path, prompt: str, seed: int = 5, name: str = "clip") -> Path:
    renderer = ProceduralRenderer()
    frames = renderer.render_frames(RenderRequest("p", name, prompt, seed, "maya"))
    path = tmp_path / f"{name}.mp4"
    encode_mp4(frames, path, renderer.fps)
    return path


def test_the_shipped_model_is_small_calibrated_for_its_weights_and_trained_in_budget(shipped: FrameFilter) -> None:
    weights = DEFAULT_MODEL_DIR / "open_clip_model.safetensors"
    assert weights.stat().st_size <= 25 * 1024 * 1024
    assert shipped.concepts.model == shipped.clip.name, "retrained weights need recalibrated thresholds"
    record = json.loads((DEFAULT_MODEL_DIR / "training.json").read_text())
    assert record["render_seconds"] + record["train_seconds"] <= 60 * 60
    concepts = ConceptSet.from_file(DEFAULT_CONCEPTS)
    assert {c.name for c in concepts.concepts} == set(default_unsafe())
    assert all(c.block is not None and c.block >= c.flag for c in concepts.concepts)


def default_unsafe() -> list[str]:
    from generation.vocabulary import default_vocabulary

    return sorted(default_vocabulary().unsafe)


def test_frames_are_read_from_the_video_at_one_per_second_plus_first_and_last(tmp_path: Path) -> None:
    path = _render(tmp_path, "a cat on the beach")
    frames = read_frames(path)
    assert len(frames) == 4  # 36 frames at 12 fps: 0, 12, 24 and 35
    assert (frames[0].width, frames[0].height) == (288, 512)


def test_a_safe_clip_is_published_with_its_embedding(shipped: FrameFilter, tmp_path: Path) -> None:
    verdict = shipped.scan_video(_render(tmp_path, "a red fox dancing in the snow at night"))
    assert verdict.action == "publish", verdict.detail
    assert verdict.reasons == () and set(verdict.scores) == set(default_unsafe())
    assert len(verdict.embedding) == 128 and abs(np.linalg.norm(verdict.embedding) - 1) < 1e-3
    assert f"{len(sample_frame_indices(36, 12, shipped.concepts.frames_per_second))} frames clear" in verdict.detail


def test_the_clip_checks_decoded_frames_judge_as_the_file_does(shipped: FrameFilter, tmp_path: Path) -> None:
    """The worker hands the clip checks' decoded frames to the filter instead of
    decoding the file again: same frames, same verdict, same embedding."""
    from generation.encoding import sha256_file
    from moderation.clip_checks import ClipExpectations, check_generated_clip
    from moderation.prompt_policy import load_prompt_policy

    path = _render(tmp_path, "a cowboy with a revolver in the desert")
    kept: list[object] = []
    expected = ClipExpectations(width=288, height=512, frame_count=36, fps=12, video_sha256=sha256_file(path))
    checks = check_generated_clip("a cowboy in the desert", path, expected, load_prompt_policy(), kept)
    assert checks.action == "publish" and len(kept) == 36, checks.reasons
    from_checks = shipped.scan_frames(shipped.sample(kept, 12))
    from_file = shipped.scan_video(path)
    assert from_checks == from_file and from_checks.action != "publish"
    with pytest.raises(FrameFilterError):
        sample_frames([], 12)


def test_video_frames_are_scaled_by_swscale_close_to_what_pil_would(shipped: FrameFilter, tmp_path: Path) -> None:
    """``to_inputs`` scales decoded frames with swscale, straight from YUV, instead of
    converting them to full-size RGB images and resizing those with PIL: the inputs
    differ by about one 255th on average, the embeddings hardly; images and pixels
    still take open_clip's own PIL path."""
    path = _render(tmp_path, "a chef holding a machete in the city")
    frames = read_frames(path)
    images = [f.to_image() for f in frames]
    batched = to_inputs(frames, shipped.clip.preprocess)
    one_by_one = torch.stack([shipped.clip.preprocess(im) for im in images])  # open_clip's own PIL path
    assert batched.shape == one_by_one.shape == (4, 3, 128, 128)
    std = torch.tensor(shipped.clip.preprocess.transforms[-1].std).view(1, 3, 1, 1)
    assert float(((batched - one_by_one) * std).abs().mean()) * 255 < 2.0
    cosines = (shipped.embed_inputs(batched) * shipped.embed_inputs(one_by_one)).sum(axis=1)
    assert cosines.min() > 0.99
    assert torch.equal(to_inputs(images, shipped.clip.preprocess), one_by_one)
    assert torch.equal(to_inputs([np.asarray(im) for im in images], shipped.clip.preprocess), one_by_one)
    with pytest.raises(FrameFilterError):
        to_inputs([], shipped.clip.preprocess)


def test_the_image_tower_runs_with_its_batch_norms_folded_and_embeds_as_trained(
    shipped: FrameFilter, tmp_path: Path
) -> None:
    """The filter embeds with :func:`inference_tower`: the same features as the tower
    as trained (``model.encode_image``), without a batch norm left to run."""
    assert shipped.clip.image_tower is not None
    norms = (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)
    assert any(isinstance(m, norms) for m in shipped.clip.model.visual.modules())
    assert not any(isinstance(m, norms) for m in shipped.clip.image_tower.modules())
    inputs = to_inputs(read_frames(_render(tmp_path, "a chef holding a machete in the city")), shipped.clip.preprocess)
    for batch in (inputs[:1], inputs, torch.cat([inputs] * 3)):  # any batch size
        with torch.no_grad():
            trained = shipped.clip.model.encode_image(batch)
            folded = shipped.clip.encode_image(batch)
        assert folded.shape == trained.shape
        assert float((folded - trained).abs().max()) < 1e-3
    plain = load_clip(DEFAULT_MODEL_DIR, optimize=False)
    assert plain.image_tower is None
    np.testing.assert_allclose(
        FrameFilter(plain, shipped.concepts).embed_inputs(inputs), shipped.embed_inputs(inputs), atol=1e-4
    )


def test_a_tower_that_cannot_be_folded_runs_as_it_is() -> None:
    class Branchy(torch.nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.norm(self.conv(x))
            return y.mean((2, 3)) if float(y.sum()) > 0 else -y.mean((2, 3))

    class Plain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean((2, 3))

    example = torch.randn(2, 3, 8, 8)
    branchy, plain = Branchy().eval(), Plain().eval()
    assert inference_tower(branchy, example) is branchy
    assert inference_tower(plain, example) is plain  # nothing to fold


@pytest.mark.parametrize(
    ("prompt", "concept"),
    [("a cowboy with a revolver in the desert", "gun"), ("a chef holding a machete in the city", "knife")],
)
def test_what_an_obfuscated_prompt_rendered_is_caught(
    shipped: FrameFilter, tmp_path: Path, prompt: str, concept: str
) -> None:
    verdict = shipped.scan_video(_render(tmp_path, prompt))
    assert verdict.action in ("flag", "block"), verdict.detail
    assert any(r.startswith(f"{concept} (") for r in verdict.reasons), verdict.reasons


def test_held_out_renders_are_judged_well(shipped: FrameFilter) -> None:
    """A small slice of the evaluation (the full one is moderation.frame_training.evaluate),
    as a regression guard for the shipped weights and thresholds: with compositions
    (2026-11-28, pairs and scenes, then styles and abstract shapes too: the same both
    times) 28 of these 30 unsafe clips are caught and none of the 30 safe ones is
    flagged (25 and 0 without them, over the same 1.5 s windows of 4 frames a second).
    The bounds leave room either way for other CPUs' arithmetic. The target (95%
    recall) is not met yet; see docs/performance.md."""
    items = data.build_items("test", 200)
    unsafe = [it for it in items if it.unsafe][:30]
    safe = [it for it in items if not it.unsafe][:30]
    per_second = shipped.concepts.frames_per_second
    inputs = data.render_production_inputs(unsafe + safe, shipped.clip.preprocess, 2, "render", per_second)
    actions = [shipped.judge(shipped.embed_inputs(x)).action for x in inputs]
    caught = sum(a != "publish" for a in actions[:30])
    false = sum(a != "publish" for a in actions[30:])
    assert caught >= 26 and false <= 2, (caught, false)


# ------------------------------------------------------------------------- decisions
def _orthogonal(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """A unit vector orthogonal to every row of ``vectors``."""
    v = np.random.default_rng(seed).normal(size=vectors.shape[1])
    q, _ = np.linalg.qr(vectors.T)
    v -= q @ (q.T @ v)
    return v / np.linalg.norm(v)


def _towards(target: np.ndarray, away: np.ndarray, cosine: float) -> np.ndarray:
    return cosine * target + np.sqrt(1 - cosine**2) * away


def test_thresholds_decide_publish_flag_and_block_and_special_care_lowers_them(shipped: FrameFilter) -> None:
    concepts = ConceptSet(
        model=shipped.clip.name,
        concepts=(Concept("gun", "weapon", ("a gun",), flag=0.5, block=0.9),),
        special_care=(SpecialCare("child", ("a child",), threshold=0.6),),
        adjustment=0.05,
    )
    f = FrameFilter(shipped.clip, concepts)
    gun, child = f._concept_vecs[0], f._care_vecs[0]
    # Directions: pure gun, and what is left of the child vector once gun is removed.
    other = _orthogonal(np.stack([gun, child]))
    child_only = child - (child @ gun) * gun
    child_only /= np.linalg.norm(child_only)
    clear = _towards(gun, other, 0.3)
    flagged = _towards(gun, other, 0.6)
    blocked = _towards(gun, other, 0.95)
    assert f.judge(np.stack([clear, clear])).action == "publish"
    verdict = f.judge(np.stack([clear, flagged, clear]))
    assert verdict.action == "flag" and verdict.reasons[0].endswith("≥ flag 0.500 at frame 1")
    assert f.judge(np.stack([flagged, blocked])).action == "block", "the worst frame decides"
    # Just under the flag threshold, but with a child on screen: flagged with special care.
    near = _towards(gun, child_only, 0.47)
    assert near @ gun < 0.5 and near @ child >= 0.6
    verdict = f.judge(near[None, :].astype(np.float32))
    assert verdict.action == "flag" and "with special care" in verdict.reasons[0]


def test_a_window_of_frames_decides_so_a_one_frame_flicker_does_not(shipped: FrameFilter, tmp_path: Path) -> None:
    """With ``window_s`` a concept's clip score is its best mean over that many seconds
    of sampled frames: one frame just past the threshold between clear ones is not
    enough, the same score held for the window is, and so is one frame far past it."""
    concepts = ConceptSet(
        model=shipped.clip.name,
        concepts=(Concept("gun", "weapon", ("a gun",), flag=0.5, block=0.9),),
        frames_per_second=2,
        window_s=1.0,
    )
    assert concepts.window_frames == 2
    f = FrameFilter(shipped.clip, concepts)
    gun = f._concept_vecs[0]
    other = _orthogonal(gun[None, :])
    clear, flagged, glaring = (_towards(gun, other, c) for c in (0.3, 0.6, 0.95))
    assert f.judge(np.stack([clear, flagged, clear])).action == "publish"  # (0.3 + 0.6) / 2 < 0.5
    held = f.judge(np.stack([clear, flagged, flagged, clear]))
    assert held.action == "flag" and held.reasons[0].endswith("≥ flag 0.500 over frames 1–2"), held.reasons
    assert held.scores["gun"] == pytest.approx(0.6, abs=1e-3)
    assert f.judge(np.stack([clear, glaring, clear])).action == "flag"  # (0.3 + 0.95) / 2 ≥ 0.5
    assert f.judge(flagged[None, :].astype(np.float32)).action == "flag"  # shorter than the window
    # The rate and the window travel with the thresholds in the concept file.
    path = tmp_path / "concepts.json"
    path.write_text(json.dumps(concepts.to_json()))
    again = ConceptSet.from_file(path)
    assert (again.frames_per_second, again.window_s, again.window_frames) == (2, 1.0, 2)


def test_compositions_weigh_a_concept_beside_ordinary_things(shipped: FrameFilter, tmp_path: Path) -> None:
    """With compositions a frame is also weighed against "a dog and a gun" (owned by
    the concept) and "a dog and a cat" (a reference): a frame that looks like the dog
    with the gun (here the caption's own embedding) scores the gun higher than against
    the single things alone, and a frame of two ordinary things does not."""
    composed = Compositions(
        nouns={"gun": "a gun", "knife": "a knife", "child": "a child"},
        others=("a dog", "a cat", "a child"),
        scenes=("forest",),
    )
    atoms = dict(composed.atoms(["gun", "knife", "child"]))
    # Each concept beside each other thing both ways, the others in pairs, all in the scene.
    assert len(atoms) == 2 * (2 * 3) + 3 * 2 + 5
    assert atoms["a photo of a dog and a gun"] == atoms["a photo of a gun and a dog"] == (0,)
    assert atoms["a photo of a gun in the forest"] == (0,) and atoms["a photo of a cat in the forest"] == ()
    assert atoms["a photo of a dog and a cat"] == atoms["a photo of a cat and a dog"] == ()
    assert "a photo of a gun and a knife" not in atoms
    # Special care owns every caption showing it, beside a concept too.
    assert atoms["a photo of a child and a dog"] == (2,) and atoms["a photo of a knife and a child"] == (1, 2)
    composed = Compositions(nouns={"gun": "a gun"}, others=("a dog", "a cat"), scenes=("forest",))
    plain = ConceptSet(
        model=shipped.clip.name,
        concepts=(Concept("gun", "weapon", ("a photo of a gun",), flag=0.5),),
        scoring="softmax",
        references=(("a photo of a dog",), ("a photo of a cat",)),
    )
    with_them = dataclasses.replace(plain, compositions=composed, temperature_scale=0.75)
    alone, beside = FrameFilter(shipped.clip, plain), FrameFilter(shipped.clip, with_them)
    dog_and_gun, dog_and_cat = shipped.embed_texts(["a photo of a dog and a gun", "a photo of a dog and a cat"])
    gun_alone = alone.frame_scores(dog_and_gun[None, :])[0][0, 0]
    gun_beside = beside.frame_scores(dog_and_gun[None, :])[0][0, 0]
    assert gun_beside > 0.9 and gun_beside > gun_alone + 0.1, (gun_alone, gun_beside)
    assert beside.frame_scores(dog_and_cat[None, :])[0][0, 0] < 0.2
    path = tmp_path / "concepts.json"
    path.write_text(json.dumps(with_them.to_json()))
    assert ConceptSet.from_file(path) == with_them


def test_compositions_show_every_noun_in_every_style_and_abstract_shapes_alone(tmp_path: Path) -> None:
    """Styles ("noir") change how everything looks, so every noun appears in each; things
    the generator draws only by themselves (abstract shapes) appear in every scene and
    style but never beside anything. Owners follow what each caption shows."""
    composed = Compositions(
        nouns={"gun": "a gun", "child": "a child"},
        others=("a dog", "a child"),
        scenes=("forest", "city"),
        styles=("noir", "neon"),
        alone=("abstract shapes",),
    )
    atoms = dict(composed.atoms(["gun", "child"]))
    assert atoms["a photo of a gun, noir style"] == (0,) and atoms["a photo of a child, neon style"] == (1,)
    assert atoms["a photo of a dog, noir style"] == ()
    shapes = [t for t in atoms if "abstract shapes" in t]
    assert all(atoms[t] == () for t in shapes) and not any(" and " in t for t in shapes)
    assert len(shapes) == 2 + 2 + 2 * 2  # styles, scenes, scenes and styles
    assert "a photo of abstract shapes in the city, neon style" in atoms
    # Pairs and scenes as before, plus three nouns and the shapes in two styles, and the shapes' scenes.
    assert len(atoms) == (2 * 2 + 2) + 3 * 2 + 3 * 2 + 2 + 2 + 4
    raw = {"model": "m", "concepts": [], "scoring": "softmax", "compositions": composed.to_json()}
    path = tmp_path / "concepts.json"
    path.write_text(json.dumps(raw))
    assert ConceptSet.from_file(path).compositions == composed
    raw["compositions"]["style"] = "a photo of {a} in {mood}"
    path.write_text(json.dumps(raw))
    with pytest.raises(FrameFilterError, match="template"):
        ConceptSet.from_file(path)


def test_calibration_refuses_a_rate_or_window_out_of_range_before_rendering(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from moderation.frame_training import calibrate

    for argv, message in ((["--frames-per-second", "0"], "frames_per_second"), (["--window", "-2"], "window_s")):
        with pytest.raises(SystemExit) as exit_info:
            calibrate.main([*argv, "--out", "/nonexistent/never-written.json"])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_concept_file_for_another_model_is_refused(shipped: FrameFilter) -> None:
    other = dataclasses.replace(shipped.concepts, model="ViT-B-32@0123456789ab")
    with pytest.raises(FrameFilterError, match="recalibrate"):
        FrameFilter(shipped.clip, other)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["concepts"][0].update(prompts=[]), "no prompts"),
        (lambda c: c["concepts"][0].update(flag=0.5, block=0.4), "blocks below"),
        (lambda c: c["concepts"].append(dict(c["concepts"][0])), "repeat"),
        (lambda c: c.pop("concepts"), "unusable"),
        (lambda c: c.update(frames_per_second=0), "frames_per_second"),
        (lambda c: c.update(frames_per_second=25), "frames_per_second"),
        (lambda c: c.update(window_s=-1), "window_s"),
        (lambda c: c.update(frames_per_second=2.5), "whole number"),
        (lambda c: c.update(temperature_scale=0), "temperature_scale"),
        (lambda c: c.update(scoring="cosine"), "need scoring 'softmax'"),
        (lambda c: c["compositions"]["nouns"].pop("rifle"), r"no noun for concepts \['rifle'\]"),
        (lambda c: c["compositions"].update(pair="a photo of {a} and {c}"), "template"),
        (lambda c: c["compositions"].pop("others"), "unusable"),
        (lambda c: c["compositions"].update(nouns=["a gun"]), "unusable"),
    ],
)
def test_malformed_concept_files_are_refused(tmp_path: Path, edit: object, message: str) -> None:
    raw = json.loads(DEFAULT_CONCEPTS.read_text())
    edit(raw)  # type: ignore[operator]
    path = tmp_path / "concepts.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(FrameFilterError, match=message):
        ConceptSet.from_file(path)


def test_models_load_only_from_local_files(tmp_path: Path) -> None:
    with pytest.raises(FrameFilterError, match="local weights file"):
        load_clip("ViT-B-32")
    with pytest.raises(FrameFilterError, match="local weights file"):
        load_clip("ViT-B-32", tmp_path / "missing.bin")
    (tmp_path / "open_clip_config.json").write_text((DEFAULT_MODEL_DIR / "open_clip_config.json").read_text())
    with pytest.raises(FrameFilterError, match="no weights"):
        load_clip(tmp_path)


def test_new_thresholds_reuse_the_text_embeddings_and_nothing_else_may_change(shipped: FrameFilter) -> None:
    cs = shipped.concepts
    strict = dataclasses.replace(cs, concepts=tuple(dataclasses.replace(c, flag=0.0, block=None) for c in cs.concepts))
    other = shipped.with_thresholds(strict)
    assert other._pool is shipped._pool and shipped.concepts is cs  # the original is untouched
    frames = np.tile(shipped.embed_texts(["a photo of a dog"]), (4, 1))
    assert shipped.judge(frames).action == "publish" and other.judge(frames).action == "flag"
    reworded = dataclasses.replace(cs, concepts=(dataclasses.replace(cs.concepts[0], prompts=("a spoon",)),))
    for changed in (reworded, dataclasses.replace(cs, temperature_scale=1.0), dataclasses.replace(cs, window_s=0.0)):
        with pytest.raises(FrameFilterError, match="more than thresholds"):
            shipped.with_thresholds(changed)
