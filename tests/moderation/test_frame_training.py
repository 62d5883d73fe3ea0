"""The frame model's training data, calibration maths and training script."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from generation.vocabulary import default_vocabulary
from moderation.frame_filter import load_clip
from moderation.frame_training import crossval, data, train
from moderation.frame_training.calibrate import fit
from moderation.prompt_policy import load_prompt_policy


def test_obfuscated_words_pass_the_term_lists_and_never_reach_training_captions() -> None:
    policy = load_prompt_policy()
    vocab = default_vocabulary()
    for key, words in data.OBFUSCATED.items():
        for word in words:
            assert policy.check(f"a cowboy with a {word}").allowed, f"{word!r} is in the term lists"
            parsed = [s.key for s in vocab.parse(f"a {word}").subjects]
            assert parsed == [key], f"the renderer must draw {key} for {word!r}, it parsed {parsed}"
    items = data.build_items("train", 1500, vocab=vocab, mix=data.training_mix(0.4))
    text = " ".join(f"{it.prompt} {' '.join(it.captions)}" for it in items).lower()
    for key, words in data.OBFUSCATED.items():
        synonyms = vocab.get("subjects", key).spec.get("synonyms", [])
        for word in words:
            # Nor inside a longer synonym: "immolation" bans "self immolation" too.
            assert f" {word} " not in f" {text} ", f"{word!r} occurs in training captions"
        assert any(f" {s} " in f" {text} " for s in synonyms if s not in words), f"no synonym of {key} trains"


def test_the_training_mix_changes_only_training_and_evaluation_leaves_out_what_a_model_saw(tmp_path: Path) -> None:
    vocab = default_vocabulary()
    heavy = data.build_items("train", 800, vocab=vocab, mix=data.training_mix(0.4))
    assert abs(sum(it.kind == "unsafe" for it in heavy) / len(heavy) - 0.4) < 0.06
    with pytest.raises(ValueError, match="unsafe share"):
        data.training_mix(0.95)
    # A model folder records its training set; evaluation splits rebuild and exclude it.
    (tmp_path / "training.json").write_text(json.dumps({"args": {"clips": 800, "unsafe_share": 0.4}}))
    assert data.training_prompts(tmp_path, vocab) == {it.prompt for it in heavy}
    assert data.training_prompts(tmp_path / "missing", vocab) == set()  # e.g. real ViT-B-32 weights
    # Cache keys follow the items: another split or another order is another key.
    test = data.build_items("test", 30, vocab=vocab)
    assert data.items_digest(test) == data.items_digest(list(test))
    assert data.items_digest(test) != data.items_digest(test[1:])
    assert data.items_digest(test) != data.items_digest(test, "another transform")


def test_splits_are_disjoint_and_labels_are_what_the_renderer_parsed() -> None:
    vocab = default_vocabulary()
    train_items = data.build_items("train", 600, vocab=vocab)
    test_items = data.build_items("test", 300, exclude={it.prompt for it in train_items}, vocab=vocab)
    assert not {it.prompt for it in train_items} & {it.prompt for it in test_items}
    assert len({it.seed for it in train_items + test_items}) == 900
    kinds = {k: sum(it.kind == k for it in train_items) / len(train_items) for k in data.MIX}
    assert all(abs(kinds[k] - share) < 0.08 for k, share in data.MIX.items()), kinds
    for it in train_items + test_items:
        parsed = [s.key for s in vocab.parse(it.prompt).subjects]
        assert it.subjects == parsed
        assert it.unsafe == sorted({k for k in parsed if k in vocab.unsafe})
        assert (it.kind == "unsafe") == bool(it.unsafe)
        assert set(it.labels) <= set(data.label_names(vocab))
    obf = data.build_items("obf", 50, vocab=vocab)
    assert all(it.kind == "unsafe" and it.unsafe for it in obf)


def test_thresholds_keep_false_positives_within_the_target_across_all_concepts() -> None:
    rng = np.random.default_rng(0)
    safe = rng.normal(0.1, 0.05, size=(2000, 5))
    unsafe = rng.normal(0.1, 0.05, size=(500, 5))
    unsafe[np.arange(500), rng.integers(0, 5, 500)] += 0.35  # each unsafe clip shows one concept
    margins = np.vstack([safe, unsafe])
    is_safe = np.arange(len(margins)) < 2000
    flag, block, q, fp = fit(margins, is_safe, flag_fp=0.01, block_margin=0.02)
    assert fp <= 0.01 and (safe >= flag).any(axis=1).mean() == pytest.approx(fp)
    assert 0.0015 < q < 0.01, "the union of five concepts needs a stricter per-concept quantile"
    assert np.all(block >= flag) and np.all(block > safe.max(axis=0))
    assert (unsafe >= flag).any(axis=1).mean() > 0.9


def test_the_training_script_writes_a_model_open_clip_loads(tmp_path: Path) -> None:
    out = tmp_path / "model"
    train.main(["--out", str(out), "--steps", "3", "--clips", "48", "--val", "6", "--calib", "0", "--batch", "16"])
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 3 and record["weights_mb"] < 25 and record["args"]["unsafe_share"] == 0.4
    assert json.loads((out / "open_clip_config.json").read_text()) == train.CONFIG
    clip = load_clip(out)
    assert clip.name.startswith("model@") and clip.embed_dim == train.CONFIG["model_cfg"]["embed_dim"]


def test_halvings_split_every_clip_once_each_way() -> None:
    pairs = crossval.halves(101, rounds=3)
    assert len(pairs) == 6
    for (a, b), (b2, a2) in zip(pairs[::2], pairs[1::2], strict=True):
        assert np.array_equal(a, a2) and np.array_equal(b, b2)
        assert not set(a) & set(b) and sorted({*a, *b}) == list(range(101))
    assert not np.array_equal(pairs[0][0], pairs[2][0])  # each round its own halving


def test_cross_validation_tells_a_filter_that_sees_from_one_that_does_not() -> None:
    from moderation.frame_filter import load_frame_filter

    filt = load_frame_filter()
    items = data.build_items("calib", 160, vocab=default_vocabulary())
    assert 20 < sum(bool(it.unsafe) for it in items) < 140
    rng = np.random.default_rng(0)
    # Clips "showing" their prompt: text embeddings of it, a little noise per frame.
    shown = filt.embed_texts([it.prompt for it in items])
    seeing = [shown[i] + rng.normal(0, 0.02, (6, shown.shape[1])).astype(np.float32) for i in range(len(items))]
    blind = [rng.normal(0, 1, (6, shown.shape[1])).astype(np.float32) for _ in items]
    good = crossval.cross_validate(filt, seeing, items, "seeing", rounds=3, flag_fp=0.05)
    bad = crossval.cross_validate(filt, blind, items, "blind", rounds=3, flag_fp=0.05)
    assert good.recall[0] > 0.6 and good.false_positives[0] < 0.2
    assert bad.recall[0] < 0.3, "noise must not look like detection"
    assert set(good.by_concept) <= {c.name for c in filt.concepts.concepts}
    assert "| seeing |" in crossval.table([good, bad], 0.05)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "0"], "--rounds"),
        (["--flag-fp", "0"], "--flag-fp"),
        (["--care-fp", "1.5"], "--care-fp"),
        (["--concepts", "{good}", "{bad}"], "unusable"),
        (["--concepts", "{missing}"], "unusable"),
    ],
)
def test_crossval_refuses_bad_options_and_concept_files_before_rendering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from moderation.frame_filter import DEFAULT_CONCEPTS

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    paths = {"good": str(DEFAULT_CONCEPTS), "bad": str(bad), "missing": str(tmp_path / "none.json")}
    with pytest.raises(SystemExit) as exit_:
        crossval.main([a.format(**paths) for a in args] + ["--cache", str(tmp_path / "never")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "never").exists(), "nothing was rendered"
