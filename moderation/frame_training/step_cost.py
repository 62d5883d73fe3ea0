"""What one training step of a frame-model configuration costs on this machine, and so
how many steps the training script fits in its CPU time budget.

    python -m moderation.frame_training.step_cost                     # the default variants
    python -m moderation.frame_training.step_cost --variant w32:32:128 --variant s160:24:160

Issue 5 requires ``python -m moderation.frame_training.train`` to finish in about an hour
on 2 CPU cores, so a configuration is only worth shipping at the step count 2 cores reach
in its 45 training minutes. Variants are compared on a GPU at exactly that count
(``train --steps N --device cuda``, see ``gpu_sweep.sh``); this script finds N.

Each variant runs the training script's own step (:func:`.train.batch_loss`, backward,
AdamW) on random frames of its input size (a step's cost does not depend on what the
frames show), a few warm-up steps first, then ``--steps`` timed ones; the variants take
turns over ``--rounds`` rounds so that other work on the machine weighs on all of them
alike. The shipped run is the reference: ``--reference-steps`` steps took
``--reference-seconds`` of training with the cores to itself, and a variant gets that
count scaled by the measured cost of the reference configuration over its own.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from moderation.frame_training import train

DEFAULT_VARIANTS = ("base:24:128", "s144:24:144", "s160:24:160", "w32:32:128")


def _setup(width: int, size: int, batch: int, folder: Path) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    model, tokenizer = train.build_model(folder, train.model_config(size, width))
    model.train()
    dim = train.CONFIG["model_cfg"]["embed_dim"]
    n_labels, n_subjects = 120, 53  # about the vocabulary's; the heads are negligible either way
    image_head, text_head = torch.nn.Linear(dim, n_labels), torch.nn.Linear(dim, n_subjects)
    params = [*model.parameters(), *image_head.parameters(), *text_head.parameters()]
    rng = np.random.default_rng(0)
    words = ["fox", "knife", "snow", "beach", "night", "a photo of", "running", "two", "red", "city"]
    captions = [" ".join(rng.choice(words, size=8)) for _ in range(batch)]
    shows = rng.random((batch, n_subjects + 1)).astype(np.float32)
    return {
        "model": model,
        "heads": (image_head, text_head),
        "optimizer": torch.optim.AdamW(params, lr=1e-4, weight_decay=0.02),
        "frames": rng.integers(0, 256, size=(batch, size, size, 3), dtype=np.uint8),
        "tokens": tokenizer(captions),
        "ids": torch.from_numpy(rng.integers(0, batch // 2, size=batch)),
        "subjects": tokenizer([f"a photo of a {w}" for w in (words * 6)[: n_subjects + 1]]),
        "shows": torch.from_numpy(shows / shows.sum(1, keepdims=True)),
        "labels": torch.from_numpy((rng.random((batch, n_labels)) < 0.05).astype(np.float32)),
        "n_subjects": n_subjects,
        "rng": rng,
    }


def _step(s: dict[str, Any]) -> None:
    import torch

    flip = s["rng"].random(len(s["frames"])) < 0.5
    x = train.to_input(s["frames"], flip=flip)
    image_head, text_head = s["heads"]
    loss, _, _ = train.batch_loss(
        s["model"], image_head, text_head, x, s["tokens"], s["ids"], s["subjects"], s["shows"], s["labels"],
        s["n_subjects"],
    )  # fmt: skip
    s["optimizer"].zero_grad(set_to_none=True)
    loss.backward()
    s["optimizer"].step()
    with torch.no_grad():
        s["model"].logit_scale.clamp_(0, math.log(100))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--variant", action="append", default=None, help="name:width:image_size (repeatable; default: a few)"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads, as the training script uses")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before its first round")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reference", default="base", help="the variant that is the shipped configuration")
    ap.add_argument("--reference-steps", type=int, default=3357, help="steps the shipped run trained")
    ap.add_argument("--reference-seconds", type=float, default=2700.7, help="its training seconds")
    ap.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    variants = {}
    for spec in args.variant or DEFAULT_VARIANTS:
        name, width, size = spec.split(":")
        variants[name] = (int(width), int(size))
    if args.reference not in variants:
        raise SystemExit(f"the reference variant {args.reference!r} is not among {list(variants)}")
    cpu: dict[str, list[float]] = {n: [] for n in variants}
    wall: dict[str, list[float]] = {n: [] for n in variants}
    with tempfile.TemporaryDirectory() as tmp:
        states = {}
        for name, (width, size) in variants.items():
            states[name] = _setup(width, size, args.batch, Path(tmp) / name)
            for _ in range(args.warmup):
                _step(states[name])
        for _ in range(args.rounds):
            for name, state in states.items():
                for _ in range(args.steps):
                    c0, w0 = time.process_time(), time.perf_counter()
                    _step(state)
                    cpu[name].append(time.process_time() - c0)
                    wall[name].append(time.perf_counter() - w0)
    ref_wall = float(np.median(wall[args.reference]))
    result: dict[str, Any] = {"threads": args.threads, "batch": args.batch, "variants": {}}
    print("| variant | width | image | CPU s/step | wall s/step | cost vs reference | steps in the reference's time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (width, size) in variants.items():
        ratio = float(np.median(wall[name])) / ref_wall
        steps = int(args.reference_steps / ratio)
        row = {
            "width": width,
            "image_size": size,
            "cpu_seconds_per_step": round(float(np.median(cpu[name])), 3),
            "wall_seconds_per_step": round(float(np.median(wall[name])), 3),
            "cost_vs_reference": round(ratio, 3),
            "steps": steps,
            "steps_from_own_wall_time": int(args.reference_seconds / float(np.median(wall[name]))),
        }
        result["variants"][name] = row
        print(
            f"| {name} | {width} | {size} | {row['cpu_seconds_per_step']:.3f} | {row['wall_seconds_per_step']:.3f} "
            f"| {ratio:.2f} | {steps} |"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
