"""The learned prompt classifier and how the API combines it with the term lists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moderation.harm_classifier import default_classifier
from moderation.prompt_policy import load_prompt_policy
from moderation.text_moderation import MIN_CLASSIFIER_WORDS, TextModerator

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "moderation"

HARMFUL = [
    "a man's head being cut off with blood spraying everywhere",
    "mutilated corpse with intestines spilling out",
    "nazi soldiers gassing jews, celebrating the holocaust",
    "a man snorting lines of cocaine off a table",
]
BENIGN = [
    "a cat dancing on the beach at sunset",
    "my grandma baking bread in her kitchen",
    "a golden retriever catching a frisbee in the park",
    "a fireworks show over the city on new year's eve",
]


@pytest.fixture(scope="module")
def moderator() -> TextModerator:
    return TextModerator(load_prompt_policy(), default_classifier())


def test_the_classifier_runs_offline_and_ranks_harm_above_everyday_prompts() -> None:
    scored = default_classifier().score(HARMFUL + BENIGN)
    harmful, benign = [s.score for s in scored[:4]], [s.score for s in scored[4:]]
    assert min(harmful) > max(benign)
    assert all(s.flagged for s in scored[:4]) and not any(s.flagged for s in scored[4:])
    # The category heads are weaker (weak labels): they say which kinds, not which one.
    assert set(scored[0].categories) == {
        "sexual",
        "violence",
        "self-harm",
        "hate",
        "harassment",
        "illegal activity",
        "shocking",
        "minors",
    }
    assert scored[1].categories["shocking"] > 0.5


def test_the_classifier_catches_what_the_term_lists_miss(moderator: TextModerator) -> None:
    text = HARMFUL[0]
    assert load_prompt_policy().check(text).action == "allow", "no listed term in this one"
    decision = moderator.check(text)
    assert decision.action == "block"
    (reason,) = decision.reasons
    assert reason.source == "classifier" and reason.category == "violence"
    assert reason.as_text().startswith("violence: learned classifier, harm score 0.")
    assert decision.policy_version == moderator.version and "+harm-clf-" in moderator.version


def test_both_layers_report_their_reasons(moderator: TextModerator) -> None:
    decision = moderator.check("a man beheaded, blood and gore everywhere")
    assert {r.source for r in decision.reasons} == {"terms", "classifier"}


def test_short_texts_and_handles_do_not_trip_the_classifier(moderator: TextModerator) -> None:
    for comment in ("nice", "ok", "so good", "a purple dream"):
        assert len(comment.split()) < MIN_CLASSIFIER_WORDS
        assert moderator.check(comment).action == "allow", comment
    # A handle reads "a person" to the classifier; unknown tokens would otherwise score high.
    assert moderator.check("@web_person and a red fox dancing in the snow at night").action == "allow"
    for text in BENIGN:
        assert moderator.check(text).action == "allow", text


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "i2p_dev.csv").is_file(), reason="../shared/data/moderation is not present")
def test_held_out_quality_has_not_regressed() -> None:
    """The shipped weights on the held-out split (the benchmark's numbers, with margin)."""
    from sklearn.metrics import roc_auc_score

    from moderation.train_classifier import embed_texts, load

    d = load()
    clf = default_classifier()
    rng = np.random.default_rng(0)

    def held_out(src: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        idx = np.where(d[src]["split"] == "test")[0]
        if limit is not None:
            idx = np.sort(rng.choice(idx, size=min(limit, len(idx)), replace=False))
        return clf.scores(embed_texts([d[src]["text"][i] for i in idx]))[0], idx

    s_i2p, idx = held_out("i2p")
    hard, pct = d["i2p"]["hard"][idx], d["i2p"]["pct"][idx]
    ev = (hard == 1) | (pct == 0)
    assert roc_auc_score(hard[ev], s_i2p[ev]) >= 0.82
    assert (s_i2p[hard == 1] >= clf.threshold).mean() >= 0.75
    s_coco, _ = held_out("coco", 1500)
    s_art, _ = held_out("art")
    assert (s_coco >= clf.threshold).mean() <= 0.02 and (s_art >= clf.threshold).mean() <= 0.06


def test_the_classifier_is_named_by_its_weights(tmp_path: Path) -> None:
    """Decisions record the classifier's version: retrained weights with the same
    threshold must not record theirs under the old name."""
    import shutil

    from moderation.harm_classifier import DATA_DIR, HarmClassifier

    shipped = HarmClassifier(DATA_DIR)
    assert HarmClassifier(DATA_DIR).version == shipped.version, "the same files, the same name"
    copy = tmp_path / "clf"
    shutil.copytree(DATA_DIR, copy)
    weights = dict(np.load(copy / "harm_clf.npz"))
    weights["ridge_w"] = weights["ridge_w"] * 1.01
    np.savez(copy / "harm_clf.npz", **weights)
    assert HarmClassifier(copy).version != shipped.version
