"""Set the frame filter's thresholds for a model, on renders no training step saw.

    python -m moderation.frame_training.calibrate                       # the shipped model
    python -m moderation.frame_training.calibrate --model ViT-B-32 --pretrained /models/vit-b-32.bin

Renders ``--clips`` prompts of the ``calib`` split exactly as production does (288×512,
12 fps, 3 s, H.264), scores the frames the filter samples (``--frames-per-second``) over
windows of ``--window`` seconds (both kept in the file: the thresholds hold for them),
then:

* special care (a child on screen): its threshold is the ``1 - care_fp`` quantile of the
  score on clips without a child;
* ``flag``: one shared quantile ``q`` of each concept's scores on safe clips, the largest
  ``q`` whose union over all concepts flags at most ``--flag-fp`` of the safe clips
  (1% by default, half the 2% the product allows, for margin on unseen clips);
* ``block``: ``--block-margin`` above the highest score any safe clip reached, so a
  clip is blocked without review only when it is far past everything safe seen.

The thresholds, the model's name (with its weights' hash) and what was measured are
written back into the concept file.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from moderation.frame_filter import (
    DEFAULT_CONCEPTS,
    DEFAULT_MODEL_DIR,
    Compositions,
    Concept,
    ConceptSet,
    FrameFilter,
    FrameFilterError,
    SpecialCare,
    load_clip,
)
from moderation.frame_training import data


def embed_items(
    clip: Any, filt: FrameFilter, items: list[data.Item], workers: int, cache: Path | None, desc: str
) -> list[np.ndarray]:
    """Frame embeddings (F, D) of each item rendered as in production; kept in ``cache``
    per model and split, so recalibrating the same weights renders nothing (and the
    rendered inputs too, so new weights of the same input size render nothing)."""
    path = None
    per_second = filt.concepts.frames_per_second
    if cache is not None:
        # Keyed like the inputs (the preprocessing and its version too), plus the weights.
        name = data.inputs_path(items, clip.preprocess, cache, desc, per_second).stem
        path = cache / f"{clip.name}-{name}.npz"
        if path.is_file():
            stored = np.load(path)
            return [stored[str(i)] for i in range(len(items))]
    inputs = data.cached_production_inputs(items, clip.preprocess, cache, workers, desc, per_second)
    embeddings = [filt.embed_inputs(x) for x in inputs]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{str(i): e for i, e in enumerate(embeddings)})  # type: ignore[arg-type]
    return embeddings


def calibration_items(model: str | Path, clips: int, vocab: Any = None) -> list[data.Item]:
    """The ``calib`` split's first ``clips`` prompts that ``model`` did not train on."""
    return data.build_items("calib", clips, exclude=data.training_prompts(model, vocab), vocab=vocab)


def with_care_thresholds(
    filt: FrameFilter, embeddings: list[np.ndarray], items: list[data.Item], care_fp: float
) -> tuple[FrameFilter, dict[str, float]]:
    """``filt`` with each special-care threshold at the ``1 - care_fp`` quantile of its
    highest frame score on clips without it on screen, and how many of the clips with
    it on screen reach that threshold (by name)."""
    care, care_recall = [], {}
    for j, s in enumerate(filt.concepts.special_care):  # a child on screen in any one frame
        score = np.array([float(filt.frame_scores(e)[1][:, j].max()) for e in embeddings])
        without = np.array([s.name not in it.subjects for it in items])
        threshold = round(float(np.quantile(score[without], 1.0 - care_fp)), 4)
        care.append(SpecialCare(s.name, s.prompts, threshold))
        if (~without).any():  # how often it is seen where it is on screen
            care_recall[s.name] = round(float((score[~without] >= threshold).mean()), 4)
    concepts = dataclasses.replace(filt.concepts, special_care=tuple(care))
    return filt.with_thresholds(concepts), care_recall


def clip_margins(filt: FrameFilter, embeddings: list[np.ndarray]) -> np.ndarray:
    """Per clip, the score of each concept that its thresholds apply to (N, C): what
    :meth:`FrameFilter.judge` compares."""
    return np.stack([filt.clip_scores(e)[0] for e in embeddings])


def add_model_options(ap: argparse.ArgumentParser) -> None:
    """The options every command that renders and embeds the calibration or test clips
    takes: which model, where it runs, how many render processes, the cache."""
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model folder, or an open_clip name")
    ap.add_argument("--pretrained", default=None, help="weights file for a named model")
    ap.add_argument("--workers", type=int, default=2, help="render processes")
    ap.add_argument("--device", default="cpu", help="torch device for the model")
    ap.add_argument("--cache", type=Path, default=None, help="keep frame embeddings here for the next run")


def fit(
    margins: np.ndarray, safe: np.ndarray, flag_fp: float, block_margin: float
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(flag thresholds, block thresholds, q, union FP on safe clips) from per-clip
    margins (N, C): the largest per-concept quantile whose union stays within flag_fp."""
    neg = margins[safe]
    lo, hi = 0.0, 0.5
    for _ in range(40):
        q = (lo + hi) / 2
        th = np.quantile(neg, 1.0 - q, axis=0)
        if (neg >= th).any(axis=1).mean() <= flag_fp:
            lo = q
        else:
            hi = q
    flag = np.quantile(neg, 1.0 - lo, axis=0)
    # Ties at the quantile can flag a few more than asked: nudge past them.
    flag = np.nextafter(flag.astype(np.float64), np.inf)
    block = np.maximum(neg.max(axis=0) + block_margin, flag)
    return flag, block, lo, float((neg >= flag).any(axis=1).mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(ap)
    ap.add_argument("--concepts", type=Path, default=DEFAULT_CONCEPTS)
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: --concepts)")
    ap.add_argument("--clips", type=int, default=2500)
    ap.add_argument(
        "--frames-per-second", type=int, default=None, help="frames judged per second of video (default: the file's)"
    )
    ap.add_argument(
        "--window", type=float, default=None, help="seconds frame scores are averaged over (default: the file's)"
    )
    ap.add_argument(
        "--compositions",
        choices=("keep", "vocabulary", "none"),
        default="keep",
        help="score concepts beside the vocabulary's safe subjects and scenes too (default: as the file has it)",
    )
    ap.add_argument("--temperature-scale", type=float, default=None, help="times the model's temperature (softmax)")
    ap.add_argument("--flag-fp", type=float, default=0.01)
    ap.add_argument("--block-margin", type=float, default=0.02)
    ap.add_argument("--care-fp", type=float, default=0.02)
    args = ap.parse_args(argv)

    from generation.vocabulary import default_vocabulary

    vocab = default_vocabulary()
    clip = load_clip(args.model, args.pretrained, args.device)
    base = ConceptSet.from_file(args.concepts)
    try:
        if args.frames_per_second is not None:
            base = dataclasses.replace(base, frames_per_second=args.frames_per_second)
        if args.window is not None:
            base = dataclasses.replace(base, window_s=args.window)
        if args.temperature_scale is not None:
            base = dataclasses.replace(base, temperature_scale=args.temperature_scale)
    except FrameFilterError as e:
        ap.error(str(e))
    named = [c.name for c in base.concepts] + [s.name for s in base.special_care]
    unknown = [n for n in named if n not in vocab.concepts["subjects"]]
    if unknown:
        raise SystemExit(f"concepts {unknown} are not vocabulary subjects: calibration cannot know the truth")
    if args.compositions != "keep":
        composed = None
        if args.compositions == "vocabulary":
            composed = Compositions.from_json(data.compositions(vocab, named))
        try:
            base = dataclasses.replace(base, compositions=composed)
        except FrameFilterError as e:
            ap.error(str(e))
    filt = FrameFilter(clip, base, check_model=False)
    items = calibration_items(args.model, args.clips, vocab)
    embeddings = embed_items(clip, filt, items, args.workers, args.cache, "render calib")

    filt, care_recall = with_care_thresholds(filt, embeddings, items, args.care_fp)
    base = filt.concepts
    margins = clip_margins(filt, embeddings)
    safe = np.array([not it.unsafe for it in items])
    flag, block, q, fp = fit(margins, safe, args.flag_fp, args.block_margin)
    names = [c.name for c in base.concepts]
    truth = np.array([[n in it.unsafe for n in names] for it in items])
    unsafe = ~safe
    caught = (margins[unsafe] >= flag).any(axis=1).mean() if unsafe.any() else float("nan")
    own = {
        n: round(float((margins[truth[:, j], j] >= flag[j]).mean()), 4)
        for j, n in enumerate(names)
        if truth[:, j].any()
    }
    concepts = tuple(
        Concept(c.name, c.category, c.prompts, round(float(flag[j]), 4), round(float(block[j]), 4))
        for j, c in enumerate(base.concepts)
    )
    calibration = {
        "date": dt.date.today().isoformat(),
        "clips": len(items),
        "safe_clips": int(safe.sum()),
        "unsafe_clips": int(unsafe.sum()),
        "flag_fp_target": args.flag_fp,
        "flag_fp_measured": round(fp, 4),
        "per_concept_quantile": round(q, 5),
        "unsafe_recall_flag_or_block": round(float(caught), 4),
        "recall_by_concept": own,
        "scoring": base.scoring,
        "frames_per_second": base.frames_per_second,
        "window_s": base.window_s,
        "compositions": 0 if base.compositions is None else len(base.compositions.atoms(named)),
        "temperature_scale": base.temperature_scale,
        "frames_per_clip": round(float(np.mean([len(e) for e in embeddings])), 2),
        "block_margin": args.block_margin,
        "care_fp": args.care_fp,
        "care_recall": care_recall,
    }
    result = dataclasses.replace(base, model=clip.name, concepts=concepts, calibration=calibration)
    out = args.out or args.concepts
    out.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(calibration, indent=2))
    print(f"wrote {out} for model {clip.name}")


if __name__ == "__main__":
    main()
