"""Measure the frame filter on held-out renders: what the docs and issue 5 report.

    python -m moderation.frame_training.evaluate          # ~8 min on 2 cores

Test clips come from their own seed range and leave out every training and calibration
prompt; they are rendered, encoded and decoded exactly as in production, and judged by
the shipped concept file through :meth:`FrameFilter.judge` (no threshold is tuned here).

* zero-shot subject top-1: clips showing exactly one kind of subject, their embedding
  (what goes on ``clips.published``) against "a photo of a <subject>" for every subject;
* unsafe detection: share of clips with an unsafe object that are flagged or blocked,
  and share of safe clips that are (false positives);
* obfuscated wording: clips whose prompt names the unsafe object only by words the
  training captions never used, and how many of those prompts the prompt filter
  (term lists + learned classifier) let through.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from moderation.frame_filter import DEFAULT_CONCEPTS, DEFAULT_MODEL_DIR, ConceptSet, FrameFilter, load_clip
from moderation.frame_training import data
from moderation.frame_training.calibrate import add_model_options, embed_items
from moderation.frame_training.train import subject_prompts

TARGETS = {"subject_top1": 0.80, "unsafe_recall": 0.95, "false_positives": 0.02}


def judge_all(filt: FrameFilter, embeddings: list[np.ndarray]) -> tuple[list[Any], np.ndarray]:
    verdicts, means = [], []
    for e in embeddings:
        v = filt.judge(e)
        verdicts.append(v)
        means.append(np.asarray(v.embedding, np.float32))
    return verdicts, np.stack(means)


def prompt_filter_passes(prompts: list[str]) -> list[bool]:
    from moderation.harm_classifier import default_classifier
    from moderation.prompt_policy import load_prompt_policy
    from moderation.text_moderation import TextModerator

    moderator = TextModerator(load_prompt_policy(), default_classifier())  # as the API runs it
    return [moderator.check(p).allowed for p in prompts]


def evaluation_items(
    model: str | Path, calib_clips: int, n_test: int, n_obf: int, vocab: Any
) -> tuple[list[data.Item], list[data.Item]]:
    """The test and obfuscated-wording clips for a model: their own seed ranges, less
    every prompt the model trained on and the ``calib_clips`` its thresholds were fit on."""
    seen = data.training_prompts(model, vocab)
    calib = data.build_items("calib", calib_clips, exclude=seen, vocab=vocab)  # as calibration_items does
    seen |= {it.prompt for it in calib}  # exactly the clips calibration scored
    test = data.build_items("test", n_test, exclude=seen, vocab=vocab)
    obf = data.build_items("obf", n_obf, exclude=seen, vocab=vocab)
    return test, obf


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(ap)
    ap.add_argument("--concepts", type=Path, default=DEFAULT_CONCEPTS)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--obf", type=int, default=600)
    ap.add_argument(
        "--no-prompt-filter", action="store_true", help="skip the prompt-filter columns (where MiniLM is not installed)"
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR / "evaluation.json")
    args = ap.parse_args(argv)

    from generation.vocabulary import default_vocabulary

    vocab = default_vocabulary()
    clip = load_clip(args.model, args.pretrained, args.device)
    concepts = ConceptSet.from_file(args.concepts)
    filt = FrameFilter(clip, concepts)
    test, obf = evaluation_items(args.model, int(concepts.calibration.get("clips", 0)), args.test, args.obf, vocab)
    test_v, test_e = judge_all(filt, embed_items(clip, filt, test, args.workers, args.cache, "render test"))
    obf_v, _ = judge_all(filt, embed_items(clip, filt, obf, args.workers, args.cache, "render obf"))

    keys = data.subjects(vocab)
    text = filt.embed_texts_mean(subject_prompts(vocab))
    single = [i for i, it in enumerate(test) if len(set(it.subjects)) == 1]
    pred = (test_e[single] @ text.T).argmax(1)
    right = np.array([keys[p] == test[i].subjects[0] for p, i in zip(pred, single, strict=True)])
    confusions = Counter(
        f"{test[i].subjects[0]}→{keys[p]}" for p, i, ok in zip(pred, single, right, strict=True) if not ok
    ).most_common(8)

    def rate(flags: list[bool]) -> float:
        return round(float(np.mean(flags)), 4) if flags else float("nan")

    unsafe = [v.action != "publish" for v, it in zip(test_v, test, strict=True) if it.unsafe]
    safe = [v.action != "publish" for v, it in zip(test_v, test, strict=True) if not it.unsafe]
    blocked_safe = [v.action == "block" for v, it in zip(test_v, test, strict=True) if not it.unsafe]
    blocked_unsafe = [v.action == "block" for v, it in zip(test_v, test, strict=True) if it.unsafe]
    by_concept = {
        name: rate([v.action != "publish" for v, it in zip(test_v, test, strict=True) if name in it.unsafe])
        for name in sorted(vocab.unsafe)
    }
    obf_caught = [v.action != "publish" for v in obf_v]
    passes = [False] * len(obf) if args.no_prompt_filter else prompt_filter_passes([it.prompt for it in obf])
    result = {
        "model": clip.name,
        "test_clips": len(test),
        "single_subject_clips": len(single),
        "subject_top1": rate(list(right)),
        "top_confusions": confusions,
        "unsafe_clips": len(unsafe),
        "unsafe_recall": rate(unsafe),
        "unsafe_blocked": rate(blocked_unsafe),
        "recall_by_concept": by_concept,
        "safe_clips": len(safe),
        "false_positives": rate(safe),
        "safe_blocked": rate(blocked_safe),
        "obfuscated_clips": len(obf),
        "obfuscated_recall": rate(obf_caught),
        "obfuscated_prompts_passing_prompt_filter": rate(passes),
        "obfuscated_recall_among_passing": rate([c for c, p in zip(obf_caught, passes, strict=True) if p]),
        "targets": TARGETS,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return result


def table(r: dict[str, Any]) -> str:
    rows = [
        ("zero-shot subject top-1", f"{r['subject_top1']:.1%}", "≥ 80%", r["single_subject_clips"]),
        ("unsafe recall (flag or block)", f"{r['unsafe_recall']:.1%}", "≥ 95%", r["unsafe_clips"]),
        ("unsafe blocked outright", f"{r['unsafe_blocked']:.1%}", "", r["unsafe_clips"]),
        ("false positives on safe clips", f"{r['false_positives']:.2%}", "≤ 2%", r["safe_clips"]),
        ("safe clips blocked", f"{r['safe_blocked']:.2%}", "", r["safe_clips"]),
        ("obfuscated wording: recall", f"{r['obfuscated_recall']:.1%}", "≥ 95%", r["obfuscated_clips"]),
        ("obfuscated prompts the prompt filter let through", f"{r['obfuscated_prompts_passing_prompt_filter']:.1%}", "",
         r["obfuscated_clips"]),
        ("… of which the frame filter caught", f"{r['obfuscated_recall_among_passing']:.1%}", "", ""),
    ]  # fmt: skip
    out = [
        f"Frame filter on held-out renders ({r['model']})",
        "",
        "| metric | measured | target | clips |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    out += ["", "recall by concept: " + ", ".join(f"{k} {v:.0%}" for k, v in r["recall_by_concept"].items())]
    return "\n".join(out)


if __name__ == "__main__":
    main()
