"""Generation backends: clips/s and latency at batch 1, 4 and 8.

Baseline, measured in the same run: batch 1 of the same backend. A batch's requests
all finish when the batch does, so a request's latency is its batch's wall time.
The GPU backend is measured when CUDA is present (it arrives with the diffusers
backend); on CPU-only machines the table says so.

Usage: .venv/bin/python bench/generation.py [--clips 24]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.stats import pct
from generation import RenderRequest, build_generator

PROMPTS = [
    "a cat dancing on the beach at sunset",
    "a neon robot spinning in the city at night",
    "three red cars driving in the desert",
    "a vintage train in the mountains in the morning",
    "an astronaut floating in space",
    "a pastel ice cream jumping in the snow",
]


def run(batch: int, clips: int) -> tuple[float, list[float]]:
    gen = build_generator("procedural")
    gen.generate([RenderRequest("w", "w", "warm up", 0, "bench")], [Path(tempfile.mkdtemp())])
    latencies: list[float] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for first in range(0, clips, batch):
            n = min(batch, clips - first)
            reqs = [
                RenderRequest(f"p{first + i}", f"c{first + i}", PROMPTS[(first + i) % len(PROMPTS)], first + i, "bench")
                for i in range(n)
            ]
            dirs = [Path(tmp) / f"{first + i}" for i in range(n)]
            for d in dirs:
                d.mkdir()
            t0 = time.perf_counter()
            gen.generate(reqs, dirs)
            latencies += [time.perf_counter() - t0] * n
    return clips / (time.perf_counter() - started), latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=24)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"procedural backend, 288x512, 12 fps, 3 s, {args.clips} clips per batch size\n")
    print(f"{'batch':>5} {'clips/s':>8} {'vs batch 1':>10} {'p50 ms':>8} {'p95 ms':>8}")
    base = None
    for batch in (1, 4, 8):
        rate, lat = run(batch, args.clips)
        base = base or rate
        print(f"{batch:>5} {rate:>8.2f} {rate / base:>9.2f}x {pct(lat, 50) * 1000:>8.0f} {pct(lat, 95) * 1000:>8.0f}")
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    print(
        "\nGPU backend: "
        + (
            "CUDA present — run with the diffusers backend configured"
            if cuda
            else "not measured (no CUDA on this machine; the diffusers backend is not built yet)"
        )
    )
    print(f"mean per clip at batch 1: {1000 / base:.0f} ms" if base else "")


if __name__ == "__main__":
    main()
