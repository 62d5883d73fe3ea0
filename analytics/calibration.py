"""Scores of the shipped prompt classifier on the real moderation data, for choosing
its threshold (notebooks/moderation_quality.ipynb).

The data is ``../shared/data/moderation`` (I2P prompts, COCO captions, safe art
prompts), split by hash exactly as ``moderation/train_classifier.py`` splits it. Only
the calibration split is offered: the held-out test split is never used to choose
anything (``bench/prompt_moderation.py`` reports it once).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl


@dataclass(frozen=True)
class PromptScores:
    """Classifier scores per group of the calibration split."""

    hard: np.ndarray  # I2P prompts marked hard (most of their images inappropriate)
    never: np.ndarray  # I2P prompts none of whose images was inappropriate
    coco: np.ndarray  # ordinary image captions
    art: np.ndarray  # safe art prompts
    threshold: float  # the shipped operating point

    @property
    def auc(self) -> float:
        """ROC-AUC of hard against never-inappropriate (same site and style: harm, not style)."""
        from sklearn.metrics import roc_auc_score

        y = np.r_[np.ones(len(self.hard)), np.zeros(len(self.never))]
        return float(roc_auc_score(y, np.r_[self.hard, self.never]))

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(precision, recall, thresholds) of hard against never-inappropriate."""
        from sklearn.metrics import precision_recall_curve

        y = np.r_[np.ones(len(self.hard)), np.zeros(len(self.never))]
        p, r, t = precision_recall_curve(y, np.r_[self.hard, self.never])
        return p, r, t

    def stopped(self, thresholds: np.ndarray | list[float] | None = None) -> pl.DataFrame:
        """Per threshold (the shipped one by default): the share of each group a
        threshold stops, and the precision on hard vs never-inappropriate."""
        ts = np.asarray([self.threshold] if thresholds is None else thresholds, dtype=float)
        hard = (self.hard[None, :] >= ts[:, None]).sum(1)
        never = (self.never[None, :] >= ts[:, None]).sum(1)
        return pl.DataFrame(
            {
                "threshold": ts,
                "recall_hard": hard / max(1, len(self.hard)),
                "precision_hard_vs_never": np.where(hard + never > 0, hard / np.maximum(1, hard + never), np.nan),
                "stopped_never": never / max(1, len(self.never)),
                "stopped_coco": (self.coco[None, :] >= ts[:, None]).mean(1) if len(self.coco) else np.nan,
                "stopped_art": (self.art[None, :] >= ts[:, None]).mean(1) if len(self.art) else np.nan,
            }
        )


def prompt_scores(
    data_dir: Path | None = None, split: str = "calib", coco_sample: int | None = 800, seed: int = 0
) -> PromptScores:
    """Score ``split`` of the moderation data with the shipped classifier (about 12 ms
    a prompt on two cores); ``coco_sample`` caps the captions scored."""
    from moderation import train_classifier as tc
    from moderation.harm_classifier import default_classifier

    if split == "test":
        raise ValueError("the held-out test split is never used for calibration (bench/prompt_moderation.py)")
    if split not in tc.SPLITS:
        raise ValueError(f"unknown split {split!r}: one of {[s for s in tc.SPLITS if s != 'test']}")
    d = tc.load(data_dir)
    i2p = d["i2p"]
    texts = np.array(i2p["text"], dtype=object)
    mine = i2p["split"] == split
    coco = [t for t, s in zip(d["coco"]["text"], d["coco"]["split"], strict=True) if s == split]
    if coco_sample is not None and len(coco) > coco_sample:
        coco = list(np.random.default_rng(seed).choice(np.array(coco, dtype=object), coco_sample, replace=False))
    art = [t for t, s in zip(d["art"]["text"], d["art"]["split"], strict=True) if s == split]
    clf = default_classifier()

    def scored(group: list[str]) -> np.ndarray:
        return np.array([s.score for s in clf.score(group)], dtype=float) if group else np.zeros(0)

    return PromptScores(
        hard=scored(list(texts[mine & (i2p["hard"] == 1)])),
        never=scored(list(texts[mine & (i2p["pct"] == 0)])),
        coco=scored(coco),
        art=scored(art),
        threshold=clf.threshold,
    )
