"""ClipIndex (FAISS): queries/s, recall@10 against exact search, build time and memory
per clip at 100k and 1M clips, with exact brute-force search measured in the same run.

Vectors are synthetic but shaped like clip embeddings: 128-d (the shipped frame model's
width), clustered around a few hundred centres (subjects × scenes) with noise, and
queries are taste-like mixtures of a few clips. Usage:
    .venv/bin/python bench/faiss_index.py [--sizes 100000 1000000] [--queries 2000] [--dim 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from ranking.index import ClipIndex


def clustered(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    x = centres[rng.integers(0, len(centres), n)] + 0.45 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--exact-queries", type=int, default=300, help="queries timed on brute force (slow at 1M)")
    args = ap.parse_args()
    import faiss

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(400, args.dim)).astype(np.float32)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads; dim {args.dim}")  # fmt: skip
    rows = []
    for n in args.sizes:
        x = clustered(n, args.dim, rng, centres)
        ids = [f"{i:08x}" for i in range(n)]
        before = rss_mb()
        t0 = time.perf_counter()
        index = ClipIndex(args.dim)
        for s in range(0, n, 50_000):
            index.add_many(ids[s : s + 50_000], x[s : s + 50_000])
        if index.needs_compaction():
            index.compact()  # as the ranking worker does: IVF lists retrained for the grown index
        build = time.perf_counter() - t0
        grown = rss_mb() - before
        picks = rng.integers(0, n, size=(args.queries, 3))
        q = x[picks].sum(axis=1)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        index.search(q[0], 10)
        t0 = time.perf_counter()
        found = [index.search(v, 10) for v in q]
        single = args.queries / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        index.search_many(q, 10)
        batched = args.queries / (time.perf_counter() - t0)
        # Baseline: exact brute force over the same vectors, same queries, same process.
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(x)
        m = min(args.exact_queries, args.queries)
        t0 = time.perf_counter()
        truth = [flat.search(q[i : i + 1], 10)[1][0] for i in range(m)]
        exact_qps = m / (time.perf_counter() - t0)
        recall = np.mean([len({int(h.clip_id, 16) for h in found[i]} & set(truth[i].tolist())) / 10 for i in range(m)])
        stats = index.stats()
        rows.append((n, index.kind, build, single, batched, exact_qps, recall, stats["bytes"] / n, grown * 1e6 / n))
        del flat, index, x
    print()
    print("| clips | index | build s | queries/s (one at a time) | queries/s (batched) | exact queries/s | "
          "speed-up vs exact | recall@10 | index bytes/clip | process bytes/clip |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, kind, build, single, batched, exact_qps, recall, per, grown in rows:
        print(f"| {n:,} | {kind} | {build:.1f} | {single:,.0f} | {batched:,.0f} | {exact_qps:,.0f} | "
              f"{single / exact_qps:.1f}× | {recall:.3f} | {per:,.0f} | {grown:,.0f} |")  # fmt: skip
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3:,.0f} MB")


if __name__ == "__main__":
    main()
