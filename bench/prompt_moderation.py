"""Prompt moderation measured on the held-out split of ../shared/data/moderation/.

The split is the training script's (sha256 of the normalised prompt: 60% train, 15%
calibration, 25% held out), so nothing here was tuned on. Rows, all measured in this run:

* baseline: logistic regression on MiniLM embeddings, I2P hard vs 0%, trained here on
  the training split, its threshold set on the calibration split like the classifier's;
* classifier: the shipped weights (moderation/data/classifier/), shipped threshold;
* term lists: the rule-based prompt policy (moderation/data/terms/), block or review = flagged;
* combined: what the API applies (term lists, plus the classifier on texts of four words
  or more).

Columns: ROC-AUC of I2P `hard` against I2P prompts whose images were never
inappropriate (same prompt site and style: this measures harm, not style); recall on
I2P hard and on all I2P prompts; false positives on COCO captions and safe art prompts.

Usage: .venv/bin/python bench/prompt_moderation.py   (about 1 minute on 2 cores)
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moderation.harm_classifier import default_classifier
from moderation.prompt_policy import load_prompt_policy
from moderation.text_moderation import MIN_CLASSIFIER_WORDS
from moderation.train_classifier import DEFAULT_DATA, embed_texts, fit_baseline, load, sub, threshold_for


def evaluate(name: str, auc_scores: np.ndarray, flags: dict[str, np.ndarray], hard: np.ndarray, pct: np.ndarray) -> str:
    """One table row: AUC from ``auc_scores`` (I2P), rates from the boolean ``flags``."""
    from sklearn.metrics import roc_auc_score

    ev = (hard == 1) | (pct == 0)
    auc = roc_auc_score(hard[ev], auc_scores[ev])
    i2p, coco, art = flags["i2p"], flags["coco"], flags["art"]
    return (
        f"{name:<34} {auc:>6.3f} {i2p[hard == 1].mean():>12.1%} {i2p.mean():>11.1%} "
        f"{coco.mean():>9.2%} {art.mean():>8.2%}"
    )


def main() -> None:
    if not (DEFAULT_DATA / "i2p_dev.csv").is_file():
        sys.exit(f"no evaluation data in {DEFAULT_DATA} (see ../shared/data/README.md)")
    started = time.time()
    d = load()
    i2p = d["i2p"]
    test = {src: d[src]["split"] == "test" for src in d}
    calib = {src: d[src]["split"] == "calib" for src in d}
    texts = {src: [t for t, m in zip(d[src]["text"], test[src], strict=True) if m] for src in d}
    feats = {src: embed_texts(texts[src]) for src in d}

    clf = default_classifier()
    scores = {src: clf.scores(feats[src])[0] for src in d}
    hard, pct = i2p["hard"][test["i2p"]], i2p["pct"][test["i2p"]]

    policy = load_prompt_policy()
    rules = {src: np.array([policy.check(t).action != "allow" for t in texts[src]], dtype=float) for src in d}
    long_enough = {src: np.array([len(t.split()) >= MIN_CLASSIFIER_WORDS for t in texts[src]], dtype=bool) for src in d}
    combined = {
        src: np.maximum(rules[src], ((scores[src] >= clf.threshold) & long_enough[src]).astype(float)) for src in d
    }
    # For the AUC, the rules add a full point on top of the classifier's score.
    combined_auc_scores = {src: scores[src] + rules[src] * (1 + np.abs(scores[src]).max()) for src in d}

    train = i2p["split"] == "train"
    all_i2p = embed_texts(list(i2p["text"]))
    base = fit_baseline(sub(all_i2p, train), i2p["hard"][train], i2p["pct"][train])
    cal_texts = {src: [t for t, m in zip(d[src]["text"], calib[src], strict=True) if m] for src in ("coco", "art")}
    cal_feats = {src: embed_texts(cal_texts[src]) for src in cal_texts}
    base_th = threshold_for(base(cal_feats["coco"]), base(cal_feats["art"]))
    base_scores = {src: base(feats[src]) for src in d}

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"held-out split: {int(hard.sum())} I2P hard, {int((pct == 0).sum())} I2P 0%, {len(hard)} I2P in all, "
        f"{len(texts['coco'])} COCO captions, {len(texts['art'])} art prompts\n"
    )
    print(f"{'':<34} {'AUC':>6} {'recall hard':>12} {'recall I2P':>11} {'FP COCO':>9} {'FP art':>8}")
    rows = [
        ("baseline: LR on MiniLM", base_scores["i2p"], {k: v >= base_th for k, v in base_scores.items()}),
        ("classifier (shipped)", scores["i2p"], {k: v >= clf.threshold for k, v in scores.items()}),
        ("term lists", rules["i2p"], {k: v > 0 for k, v in rules.items()}),
        ("combined (what the API applies)", combined_auc_scores["i2p"], {k: v > 0 for k, v in combined.items()}),
    ]
    for name, auc_scores, flags in rows:
        print(evaluate(name, auc_scores, flags, hard, pct))
    print(
        f"\nclassifier threshold {clf.threshold:.4f}; baseline threshold {base_th:.4f}; {time.time() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
