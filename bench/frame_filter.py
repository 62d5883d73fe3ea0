"""CLIP frame filter: frames per second through the moderation worker's path, against a
bare batched forward of the same model on the same frames, measured in the same run
(both run the image tower the filter runs, its batch norms folded; the bare forward of
the tower as trained is printed too, for what the folding gains).

The worker's frame filter per clip: take the frames its clip checks decoded (the
checks decode every frame of the MP4 to verify it, whatever the filter does), sample
1 frame/s plus first and last, convert, preprocess, embed, judge every concept. For
comparison, the filter decoding the file itself (``scan_video``, as it did before the
decode was shared). The baseline and the worker path are measured in alternation,
``--rounds`` times each, and the ratio reported is the median of the rounds' ratios:
on this machine one pass of either moves by a third from run to run. Usage:
    .venv/bin/python bench/frame_filter.py [--clips 40] [--threads 1] [--rounds 5]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import torch

from core.stats import pct
from generation import ProceduralRenderer, RenderRequest
from generation.encoding import encode_mp4
from moderation.frame_filter import load_frame_filter, read_frames, to_inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the worker's default is 1)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="alternating passes of the baseline and the worker path")
    args = parser.parse_args()
    for name in ("clips", "batch", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    renderer = ProceduralRenderer()
    prompts = ["a cat dancing on the beach", "a cowboy with a revolver in the desert", "a robot in the city at night"]
    paths = []
    for i in range(args.clips):
        frames = renderer.render_frames(RenderRequest("p", f"c{i}", prompts[i % len(prompts)], i, "bench"))
        paths.append(tmp / f"c{i}.mp4")
        encode_mp4(frames, paths[-1], renderer.fps)
    filt = load_frame_filter(batch_size=args.batch)
    filt.scan_video(paths[0])  # warm up

    # Baseline: the model alone, on the same frames already preprocessed, in full batches.
    sampled = [read_frames(p, filt.concepts.frames_per_second) for p in paths]
    inputs = torch.cat([to_inputs(frames, filt.clip.preprocess) for frames in sampled])

    def bare_pass(encode: Callable[[torch.Tensor], torch.Tensor] = filt.clip.encode_image) -> float:
        """The tower the filter runs (batch norms folded: ``inference_tower``), or
        ``encode``: the tower as trained, for what folding gains."""
        t0 = time.perf_counter()
        with torch.no_grad():
            for s in range(0, len(inputs), args.batch):
                encode(inputs[s : s + args.batch])
        return len(inputs) / (time.perf_counter() - t0)

    # What the clip checks hand over (their cost, not the filter's).
    handed = []
    for p in paths:
        with av.open(str(p)) as container:
            handed.append(list(container.decode(container.streams.video[0])))

    def worker_pass() -> list[float]:
        per_clip = []
        for decoded in handed:
            t0 = time.perf_counter()
            filt.scan_frames(filt.sample(decoded, renderer.fps))
            per_clip.append(time.perf_counter() - t0)
        return per_clip

    bares, unfolded, paths_fps, per_clip = [], [], [], []
    for _ in range(args.rounds):
        bares.append(bare_pass())
        unfolded.append(bare_pass(filt.clip.model.encode_image))
        timings = worker_pass()
        paths_fps.append(len(inputs) / sum(timings))
        per_clip += timings
    ratios = sorted(w / b for w, b in zip(paths_fps, bares, strict=True))
    bare = pct(bares, 50)

    decode, own_decode = [], []
    for p in paths:
        t0 = time.perf_counter()
        read_frames(p, filt.concepts.frames_per_second)
        decode.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        filt.scan_video(p)
        own_decode.append(time.perf_counter() - t0)
    frames = len(inputs)
    path_fps = pct(paths_fps, 50)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} with {args.threads} thread(s); model {filt.clip.name}"
    )
    print(f"{args.clips} clips of 288x512, 3 s; {frames} sampled frames ({frames / args.clips:.0f} a clip)\n")
    print(f"{'path':<44} {'frames/s':>9} {'p50 ms/clip':>12} {'p95 ms/clip':>12}")
    print(f"{'bare batched forward (baseline), median':<44} {bare:>9.0f} {'':>12} {'':>12}")
    print(f"{'  the same, tower as trained (no folding)':<44} {pct(unfolded, 50):>9.0f} {'':>12} {'':>12}")
    print(
        f"{'decode + sample only':<44} {frames / sum(decode):>9.0f} "
        f"{pct(decode, 50) * 1000:>12.1f} {pct(decode, 95) * 1000:>12.1f}"
    )
    print(
        f"{'filter decoding the file itself (before)':<44} {frames / sum(own_decode):>9.0f} "
        f"{pct(own_decode, 50) * 1000:>12.1f} {pct(own_decode, 95) * 1000:>12.1f}"
    )
    print(
        f"{'worker path (shared decode: embed, judge)':<44} {path_fps:>9.0f} "
        f"{pct(per_clip, 50) * 1000:>12.1f} {pct(per_clip, 95) * 1000:>12.1f}"
    )
    print(f"\nworker path / bare forward, the rounds sorted: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"median: {pct(ratios, 50):.2f}  (target >= 0.8)")
    folding = sorted(b / u for b, u in zip(bares, unfolded, strict=True))
    print(f"folded / unfolded bare forward, the rounds sorted: {', '.join(f'{r:.2f}' for r in folding)}")


if __name__ == "__main__":
    main()
