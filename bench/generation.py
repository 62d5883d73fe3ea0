"""Generation backends: clips/s and latency at batch 1, 4 and 8.

Baseline, measured in the same run: batch 1 of the same backend. A batch's requests
all finish when the batch does, so a request's latency is its batch's wall time.

Backends measured:
* procedural (CPU, the embedded default), 288x512, 12 fps, 3 s;
* diffusers: on CUDA with the pipeline in --model-dir (bf16) when a GPU is present;
  otherwise the tiny random Wan pipeline on the CPU, which measures the backend's
  batching code path, not a real model (its numbers say nothing about GPU speed).

Usage: .venv/bin/python bench/generation.py [--clips 24] [--model-dir DIR] [--skip-diffusers]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.stats import pct
from generation import Generator, RenderRequest, build_generator

PROMPTS = [
    "a cat dancing on the beach at sunset",
    "a neon robot spinning in the city at night",
    "three red cars driving in the desert",
    "a vintage train in the mountains in the morning",
    "an astronaut floating in space",
    "a pastel ice cream jumping in the snow",
]


def run(gen: Generator, batch: int, clips: int) -> tuple[float, list[float]]:
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
            t0 = time.perf_counter()
            gen.generate(reqs, dirs)
            latencies += [time.perf_counter() - t0] * n
    return clips / (time.perf_counter() - started), latencies


def table(title: str, factory: Callable[[int], Generator], clips: int) -> None:
    print(f"\n{title}, {clips} clips per batch size")
    print(f"{'batch':>5} {'clips/s':>8} {'vs batch 1':>10} {'p50 ms':>8} {'p95 ms':>8}")
    base = None
    for batch in (1, 4, 8):
        rate, lat = run(factory(batch), batch, clips)
        base = base or rate
        print(f"{batch:>5} {rate:>8.2f} {rate / base:>9.2f}x {pct(lat, 50) * 1000:>8.0f} {pct(lat, 95) * 1000:>8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--model-dir", type=Path, default=None, help="diffusers pipeline folder (default: tiny)")
    parser.add_argument("--skip-diffusers", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    table("procedural backend, 288x512, 12 fps, 3 s", lambda batch: build_generator("procedural"), args.clips)
    if args.skip_diffusers:
        return
    import torch

    cuda = torch.cuda.is_available()
    model_dir = args.model_dir
    if model_dir is None:
        from generation.tiny_pipeline import save_tiny_pipeline

        model_dir = save_tiny_pipeline(Path(tempfile.mkdtemp()) / "tiny-wan")
    options: dict[str, Any] = {
        "model_dir": model_dir,
        "device": "cuda" if cuda else "cpu",
        "dtype": "bfloat16" if cuda else "float32",
    }
    if cuda and args.model_dir is not None:
        title = f"diffusers backend on {torch.cuda.get_device_name()}, {model_dir.name}, bf16, 288x512x33, 30 steps"
        options.update(width=288, height=512, num_frames=33, fps=16, num_inference_steps=30)
    else:
        where = torch.cuda.get_device_name() if cuda else "the CPU"
        title = f"diffusers backend, TINY RANDOM Wan pipeline on {where} (code path only), 144x256x9, 2 steps"
        options.update(width=144, height=256, num_frames=9, fps=12, num_inference_steps=2)
    table(title, lambda batch: build_generator("diffusers", max_batch=batch, **options), args.clips)


if __name__ == "__main__":
    main()
