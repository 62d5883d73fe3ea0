"""analytics.prompt_scores: the shipped prompt classifier on the moderation data's
calibration split (never the held-out one), on a small folder shaped like the real one."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from analytics import prompt_scores
from moderation.train_classifier import split_of

HARMFUL = "a bloody decapitated corpse, gore, mutilated body, photorealistic {}"
BENIGN = "a photo of a {} sitting on a wooden table in the kitchen"


def _calib(template: str, n: int) -> list[str]:
    """``n`` texts from ``template`` that the hash puts in the calibration split."""
    out = [t for t in (template.format(i) for i in range(400)) if split_of(t) == "calib"]
    assert len(out) >= n
    return out[:n]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("moderation-data")
    with open(d / "i2p_dev.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "categories", "inappropriate_percentage"])
        w.writerows([t, "violence", 90] for t in _calib(HARMFUL, 8))
        w.writerows([t, "violence", 0] for t in _calib("a quiet watercolor landscape of hills, number {}", 8))
    art = "an oil painting of flowers {}"
    for name, template in (("coco_captions_dev.csv", BENIGN), ("art_prompts_safe.csv", art)):
        with open(d / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["prompt"])
            w.writerows([t] for t in _calib(template, 6))
    return d


def test_the_held_out_split_is_refused() -> None:
    with pytest.raises(ValueError, match="never used for calibration"):
        prompt_scores(split="test")


def test_scores_per_group_and_what_each_threshold_stops(data: Path) -> None:
    s = prompt_scores(data, coco_sample=4)
    assert (len(s.hard), len(s.never), len(s.coco), len(s.art)) == (8, 8, 4, 6)
    assert s.hard.min() > s.coco.max(), "gore scores above kitchen captions"
    assert s.auc > 0.9
    table = s.stopped(np.linspace(s.never.min(), s.hard.max(), 5))
    assert table["recall_hard"].to_list() == sorted(table["recall_hard"].to_list(), reverse=True)
    shipped = s.stopped()
    assert shipped["threshold"][0] == s.threshold and shipped.columns[-2:] == ["stopped_coco", "stopped_art"]
    precision, recall, _ = s.pr_curve()
    assert len(precision) == len(recall) and recall[0] == 1.0
