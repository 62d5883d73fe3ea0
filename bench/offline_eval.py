"""Offline evaluation of the personalised feed against baselines measured in the same run.

Two data sets, one harness (``ranking/offline.py``), the online ranking code throughout:

* **KuaiRand-1K random exposure** (``ranking/kuairand.py``; Gao et al., CIKM 2022,
  CC BY-SA 4.0): the log before a global time split is replayed through RankingState;
  each user's later impressions are ranked by the online scorer and by random,
  newest-first and popularity; per-user AUC and NDCG@10 for is_click, long_view,
  is_like. The scorer's configuration is chosen on a validation split carved from the
  training period (printed), then the test period is read once.
* **Simulated users** (``ranking/simulate.py``): a catalogue rendered by the procedural
  generator and embedded by the shipped CLIP frame model, users with latent tastes,
  random exposure; build_feed pages at checkpoints against the users' true liking:
  NDCG@10, Recall@10, catalogue coverage, intra-list diversity.

Usage: .venv/bin/python bench/offline_eval.py [--data-dir ../shared/data/ranking] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ranking import kuairand, simulate  # noqa: E402
from ranking.feed import FeedWeights  # noqa: E402
from ranking.offline import FeedPages, markdown_table  # noqa: E402


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, no GPU used"


def run_kuairand(data: kuairand.KuaiRand, quick: bool) -> kuairand.Variant:
    print(f"\n## KuaiRand-1K random exposure ({data.log.height} impressions, {data.log['user_id'].n_unique()} users)")
    print(f"Source: {kuairand.ATTRIBUTION}; read from {data.source}")
    started = time.perf_counter()
    tuning = kuairand.tune(data, kuairand.default_grid(quick=quick))
    took = time.perf_counter() - started
    fit, val = kuairand.validation_times(data)
    print(f"\n### Validation (training period only: fit before {fit:.0f}, validate until {val:.0f}; {took:.0f} s)")
    print("Objective: (AUC + NDCG@10) / 2 per signal, averaged weighted by users per signal.\n")
    rows = sorted(tuning.rows(), key=lambda r: -r["objective"])
    print(markdown_table(rows))
    best = tuning.best
    print(f"\nChosen: {best.label()}")

    started = time.perf_counter()
    split = kuairand.split_times(data)
    online = replace(best, weights=FeedWeights.load(), empirical_prior=False)
    result = kuairand.evaluate(
        data,
        split,
        None,
        [best, replace(best, diversify=False), online],
        names=["ranker (validated)", "ranker (validated, score only)", "ranker (online weights)"],
    )
    took = time.perf_counter() - started
    print(f"\n### Test (impressions from {split:.0f} on, read once; {took:.0f} s)")
    print("AUC: per user (users with a positive and a negative), averaged; ± a 95% interval.\n")
    print(result.table())
    print("\nPaired difference, ranker (validated) − popularity, same users:\n")
    lines = ["| signal | Δ AUC | Δ NDCG@10 |", "|---|---|---|"]
    for signal, diff in result.versus("ranker (validated)", "popularity").items():
        lines.append(f"| {signal} | {diff['auc']} | {diff['ndcg']} |")
    print("\n".join(lines))
    return best


def run_simulation(quick: bool, cache_dir: Path, workers: int, validated: kuairand.Variant | None) -> None:
    config = simulate.SimConfig.quick() if quick else simulate.SimConfig()
    print(f"\n## Simulated users ({config.users} users, {config.clips} prompts, {config.days:g} days)")
    started = time.perf_counter()
    world = simulate.build_world(config, simulate.clip_embeddings(cache_dir, workers))
    took = time.perf_counter() - started
    print(f"World built in {took:.0f} s (rendering and embedding with the frame model, or its cache in {cache_dir})\n")
    print(markdown_table([simulate.summary(world)]))
    extra = []
    if validated is not None:
        extra.append(
            FeedPages(validated.weights, name="ranker (KuaiRand-validated)", prior_from_log=validated.empirical_prior)
        )
    started = time.perf_counter()
    result = simulate.evaluate(world, simulate.rankers(extra))
    took = time.perf_counter() - started
    shares = ", ".join(f"{s:.0%}" for s in config.checkpoints)
    print(f"\n### Pages of 10 at {shares} of the log's time span, every active user ({took:.0f} s)")
    print("NDCG@10 against the users' true like probabilities over every live unseen clip; Recall@10 of")
    print("the clips they would more likely like than not (over min(10, relevant)); coverage: share of the")
    print("live catalogue on any page at a checkpoint; diversity: mean pairwise cosine distance of CLIP")
    print("embeddings on a page; distinct subjects: subjects per clip on a page.\n")
    print(result.table())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=kuairand.DEFAULT_DATA_DIR, help="KuaiRand CSVs")
    parser.add_argument("--quick", action="store_true", help="smaller validation grid and simulated world")
    parser.add_argument("--only", choices=["kuairand", "simulation"], help="run one of the two")
    parser.add_argument("--cache-dir", type=Path, default=simulate.DEFAULT_CACHE_DIR, help="embedding cache")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    print(f"# Offline evaluation of the personalised feed\nMachine: {machine()}")
    validated = None
    if args.only != "simulation":
        try:
            data = kuairand.load(args.data_dir)
        except kuairand.DatasetMissingError as e:
            print(f"error: {e}\n(pass --data-dir, or --only simulation)", file=sys.stderr)
            return 2
        validated = run_kuairand(data, args.quick)
    if args.only != "kuairand":
        run_simulation(args.quick, args.cache_dir, args.workers, validated)
    print(f"\nTotal: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
