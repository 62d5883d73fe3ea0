"""Compare ways of scoring frames on the calibration renders alone, before a choice is
shipped and long before the held-out test split is looked at.

    python -m moderation.frame_training.crossval --concepts a.json b.json --cache /tmp/fcache

Each concept file is a candidate rule (its prompts, references, compositions, scoring,
temperature, sampling rate and window; its thresholds are ignored). For each, the
calibration clips are split in half ``--rounds`` times at random; thresholds are fitted
on one half exactly as :mod:`.calibrate` fits them (special care at ``--care-fp``, then
one shared quantile for ``--flag-fp``) and the other half is judged with them, and the
other way round. The table gives the mean recall of unsafe clips and the mean false
positive rate on the halves not fitted on, with their spread, so two rules are compared
on clips their thresholds never saw without spending the test split on the comparison.
This is how ``compositions`` and ``temperature_scale`` were chosen (docs/performance.md).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from moderation.frame_filter import DEFAULT_CONCEPTS, ConceptSet, FrameFilter, FrameFilterError, load_clip
from moderation.frame_training import data
from moderation.frame_training.calibrate import (
    add_model_options,
    calibration_items,
    clip_margins,
    embed_items,
    fit,
    with_care_thresholds,
)


@dataclasses.dataclass(frozen=True)
class Result:
    name: str
    atoms: int
    recall: tuple[float, float]  # mean, standard deviation over the held-out halves
    false_positives: tuple[float, float]
    care_recall: dict[str, float]
    by_concept: dict[str, float]


def halves(n: int, rounds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit on, judge) index pairs: each of ``rounds`` random halvings, both ways round."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rounds):
        perm = rng.permutation(n)
        a, b = np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])
        out += [(a, b), (b, a)]
    return out


def cross_validate(
    filt: FrameFilter,
    embeddings: list[np.ndarray],
    items: list[data.Item],
    name: str,
    rounds: int = 10,
    flag_fp: float = 0.01,
    care_fp: float = 0.02,
) -> Result:
    """Cross-validated recall and false positives of ``filt``'s scoring rule."""
    recalls, fps = [], []
    safe = np.array([not it.unsafe for it in items])
    names = [c.name for c in filt.concepts.concepts]
    truth = np.array([[n in it.unsafe for n in names] for it in items])
    caught = np.zeros(truth.shape)
    care_recall: dict[str, list[float]] = {}
    for fit_on, judge in halves(len(items), rounds):
        fitted, care = with_care_thresholds(filt, [embeddings[i] for i in fit_on], [items[i] for i in fit_on], care_fp)
        for k, v in care.items():
            care_recall.setdefault(k, []).append(v)
        flag, _, _, _ = fit(clip_margins(fitted, [embeddings[i] for i in fit_on]), safe[fit_on], flag_fp, 0.0)
        hit: np.ndarray = clip_margins(fitted, [embeddings[i] for i in judge]) >= flag
        flagged = np.asarray(hit.any(axis=1), bool)
        recalls.append(float(flagged[~safe[judge]].mean()))
        fps.append(float(flagged[safe[judge]].mean()))
        caught[judge] += flagged[:, None] & truth[judge]
    per = {n: float(caught[truth[:, j], j].mean() / rounds) for j, n in enumerate(names) if truth[:, j].any()}
    concepts = filt.concepts
    labels = [c.name for c in concepts.concepts] + [s.name for s in concepts.special_care]
    atoms = 0 if concepts.compositions is None else len(concepts.compositions.atoms(labels))
    return Result(
        name,
        atoms,
        (float(np.mean(recalls)), float(np.std(recalls))),
        (float(np.mean(fps)), float(np.std(fps))),
        {k: float(np.mean(v)) for k, v in care_recall.items()},
        per,
    )


def table(results: list[Result], flag_fp: float) -> str:
    out = [
        f"Cross-validated on the calibration renders (thresholds for {flag_fp:.0%} false positives on one half, "
        "judged on the other)",
        "",
        "| concept file | compositions | recall | false positives | special care seen | weakest concepts |",
        "|---|---:|---:|---:|---|---|",
    ]
    for r in results:
        care = ", ".join(f"{k} {v:.0%}" for k, v in r.care_recall.items()) or "–"
        weakest = ", ".join(f"{k} {v:.0%}" for k, v in sorted(r.by_concept.items(), key=lambda kv: kv[1])[:3])
        out.append(
            f"| {r.name} | {r.atoms:,} | {r.recall[0]:.1%} ± {r.recall[1]:.1%} "
            f"| {r.false_positives[0]:.2%} ± {r.false_positives[1]:.2%} | {care} | {weakest} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> list[Result]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(ap)
    ap.add_argument("--concepts", type=Path, nargs="+", default=[DEFAULT_CONCEPTS], help="candidate concept files")
    ap.add_argument("--clips", type=int, default=2500)
    ap.add_argument("--rounds", type=int, default=10, help="random halvings (each judged both ways)")
    ap.add_argument("--flag-fp", type=float, default=0.01)
    ap.add_argument("--care-fp", type=float, default=0.02)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.clips < 4:
        ap.error("--rounds must be at least 1 and --clips at least 4")
    if not 0.0 < args.flag_fp < 0.5 or not 0.0 < args.care_fp < 1.0:  # NaN fails too
        ap.error("--flag-fp must be between 0 and 0.5, --care-fp between 0 and 1")
    try:  # every file before any rendering: a bad second file must not cost the first's
        candidates = [(path, ConceptSet.from_file(path)) for path in args.concepts]
    except FrameFilterError as e:
        ap.error(str(e))

    from generation.vocabulary import default_vocabulary

    vocab = default_vocabulary()
    clip = load_clip(args.model, args.pretrained, args.device)
    items = calibration_items(args.model, args.clips, vocab)
    results = []
    for path, concepts in candidates:
        filt = FrameFilter(clip, concepts, check_model=False)
        embeddings = embed_items(clip, filt, items, args.workers, args.cache, "render calib")
        results.append(cross_validate(filt, embeddings, items, path.name, args.rounds, args.flag_fp, args.care_fp))
        print(table(results[-1:], args.flag_fp).splitlines()[-1], flush=True)
    print()
    print(table(results, args.flag_fp))
    return results


if __name__ == "__main__":
    main()
