"""Compare frame-model variants on a GPU, each at the step count 2 CPU cores reach.

    bash moderation/frame_training/gpu_sweep.sh                  # on a GPU machine, results in $OUT
    python -m moderation.frame_training.sweep --variant 'base:3357:' --variant 'w32:2000:--width 32'

Issue 5 wants the shipped model trainable by ``train`` in about an hour on 2 CPU cores,
so a configuration is judged at the steps 2 cores fit in 45 training minutes
(``python -m moderation.frame_training.step_cost`` measures them), not at what a GPU
could do. The same script on a GPU (``train --steps N --device cuda``) gets there in a
few minutes, with the same seeds, data and schedule.

A variant is ``NAME:STEPS:TRAIN-ARGS`` (extra arguments of ``train``, for example
``--image-size 160`` or ``--unsafe-weight 2``); ``NAME:0:`` trains nothing and
recalibrates and evaluates the shipped model instead, the control that says whether
this machine's renders give the numbers the docs report. The sweep

1. renders the training frames once per input size into a shared cache
   (``train --render-only``), and starts each variant's training as soon as its size is
   there, up to ``--parallel`` of them at once on the one GPU, in the order given;
2. meanwhile renders the calibration, test and obfuscated-wording clips once, exactly as
   ``calibrate`` and ``evaluate`` would, preprocessed for every input size at the same
   time (:func:`.data.prerender_production_inputs`), so neither renders anything;
3. per variant, after its training: ``calibrate`` (its own copy of the concept file) and
   ``evaluate`` (without the prompt-filter columns, which do not depend on the model);
4. writes to ``--out``: ``summary.json`` (every variant's training record, evaluation
   and calibration, rewritten as each variant finishes), ``logs.tar.gz``, and
   ``NAME.tar`` (weights, config, concept file, records) of the ``--keep`` best variants
   by unsafe recall among those within the false-positive target; a tar over 15 MiB
   travels as ``NAME.tar.part0``, ``.part1``… (``cat NAME.tar.part* > NAME.tar``).

Every stage is its own process: one that fails or overruns loses its variant only.
Past ``--deadline`` seconds whatever still runs is stopped and the rest reported.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moderation.frame_filter import DEFAULT_CONCEPTS, DEFAULT_MODEL_DIR, ConceptSet

#: In order of priority (``--parallel`` train at once). Steps: the shipped run's 3,357 in 45
#: minutes scaled by each configuration's cost per step against the shipped one's, as
#: ``step_cost --threads 1`` measured it (s144 1.34, w32 1.59, s160 1.78 times the cost;
#: the FLOP counts say 1.19, 1.74 and 1.53).
DEFAULT_VARIANTS = (
    "shipped:0:",
    "base:3357:",
    "uw3:3357:--unsafe-weight 3",
    "s144:2507:--image-size 144",
    "w32:2116:--width 32",
    "s160:1884:--image-size 160",
)
PART = 15 * 2**20
T0 = time.time()


def log(message: str) -> None:
    elapsed = int(time.time() - T0)
    print(f"[sweep +{elapsed // 60:02d}:{elapsed % 60:02d}] {message}", flush=True)


@dataclass
class Variant:
    name: str
    steps: int
    train_args: list[str]
    stages: list[tuple[str, list[str]]] = field(default_factory=list)
    state: str = "waiting"  # waiting | running <stage> | done | failed <stage>
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> Variant:
        name, steps, extra = spec.split(":", 2)
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise SystemExit(f"variant name {name!r}: letters, digits, '-' and '_' only")
        return cls(name, int(steps), shlex.split(extra))

    @property
    def image_size(self) -> int:
        return int(_option(self.train_args, "--image-size", "128"))


def _option(args: list[str], name: str, default: str) -> str:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"moderation.frame_training.{module}", *args]


def _start(cmd: list[str], logfile: Path) -> subprocess.Popen[bytes]:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("ab") as f:
        f.write(("$ " + shlex.join(cmd) + "\n").encode())
        f.flush()
        # Its own process group, so a stop takes its render workers too.
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _tail(path: Path, lines: int = 8) -> str:
    """The last non-empty lines of a stage's log (progress bars split on carriage returns)."""
    try:
        text = path.read_text(errors="replace").replace("\r", "\n")
    except OSError:
        return ""
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


# ---------------------------------------------------------------------------- prerender
def prerender(argv: list[str]) -> None:
    """Render the calibration, test and obf clips once for every input size (step 2)."""
    ap = argparse.ArgumentParser(prog="sweep prerender")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--sizes", required=True, help="comma-separated input sizes")
    ap.add_argument("--clips", type=int, required=True)
    ap.add_argument("--unsafe-share", type=float, required=True)
    ap.add_argument("--calib", type=int, required=True)
    ap.add_argument("--test", type=int, required=True)
    ap.add_argument("--obf", type=int, required=True)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args(argv)

    import torch
    from safetensors.torch import save_file

    from generation.vocabulary import default_vocabulary
    from moderation.frame_filter import load_clip
    from moderation.frame_training import data, train
    from moderation.frame_training.calibrate import calibration_items
    from moderation.frame_training.evaluate import evaluation_items

    vocab = default_vocabulary()
    transforms = []
    folder = args.work / "standin"
    for size in [int(s) for s in args.sizes.split(",")]:
        # A stand-in with the variants' preprocessing and training record: splits and
        # cache keys depend on nothing else.
        model, _ = train.build_model(folder / str(size), train.model_config(size))
        state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / str(size) / "w.safetensors"))
        record = {"args": {"clips": args.clips, "unsafe_share": args.unsafe_share}}
        (folder / str(size) / "training.json").write_text(json.dumps(record))
        transforms.append(load_clip(folder / str(size)).preprocess)
    model_dir = folder / args.sizes.split(",")[0]
    calib = calibration_items(model_dir, args.calib, vocab)
    test, obf = evaluation_items(model_dir, args.calib, args.test, args.obf, vocab)
    cache = args.work / "cache"
    per_second = ConceptSet.from_file(DEFAULT_CONCEPTS).frames_per_second  # what calibrate will sample
    for items, desc in ((calib, "render calib"), (test, "render test"), (obf, "render obf")):
        started = time.time()
        paths = data.prerender_production_inputs(items, transforms, cache, args.workers, desc, per_second)
        print(f"{desc}: {len(items)} clips in {time.time() - started:.0f} s → {', '.join(p.name for p in paths)}")


# ---------------------------------------------------------------------------- results
def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _result(v: Variant, work: Path) -> dict[str, Any]:
    model = work / "models" / v.name
    concepts = _read(work / "concepts" / f"{v.name}.json") or {}
    return {
        "name": v.name,
        "steps": v.steps,
        "train_args": v.train_args,
        "state": v.state,
        "seconds": {k: round(s, 1) for k, s in v.seconds.items()},
        "training": _read(model / "training.json"),
        "calibration": concepts.get("calibration"),
        "evaluation": _read(work / "evaluations" / f"{v.name}.json"),
    }


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "–"


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| variant | steps | state | val top-1 | zero-shot | unsafe recall | FP | obf recall | train s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        e, t = r["evaluation"] or {}, r["training"] or {}
        val = (t.get("validation") or [{}])[-1].get("val_subject_top1")
        rows.append(
            f"| {r['name']} | {t.get('steps', r['steps'])} | {r['state']} | {_fmt(val, '.1%')} "
            f"| {_fmt(e.get('subject_top1'), '.1%')} | {_fmt(e.get('unsafe_recall'), '.1%')} "
            f"| {_fmt(e.get('false_positives'), '.2%')} | {_fmt(e.get('obfuscated_recall'), '.1%')} "
            f"| {_fmt(t.get('train_seconds'), '.0f')} |"
        )
    return "\n".join(rows)


def best(results: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """The ``keep`` evaluated variants with the highest unsafe recall among those within
    the false-positive target (then the others), zero-shot accuracy breaking ties."""
    done = [r for r in results if r["evaluation"]]

    def key(r: dict[str, Any]) -> tuple[bool, float, float]:
        e = r["evaluation"]
        return (e["false_positives"] <= e["targets"]["false_positives"], e["unsafe_recall"], e["subject_top1"])

    return sorted(done, key=key, reverse=True)[:keep]


def _write_json(path: Path, payload: Any) -> None:
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    partial.replace(path)


def _pack(r: dict[str, Any], work: Path, out: Path) -> list[Path]:
    """The variant's model folder, concept file and evaluation as NAME.tar, in parts of
    at most 15 MiB (the device tool brings back files of at most 16 MiB)."""
    name = r["name"]
    tar_path = work / f"{name}.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(work / "models" / name, arcname=f"{name}/model")
        for extra, arc in ((work / "concepts" / f"{name}.json", "frame_concepts.json"),
                           (work / "evaluations" / f"{name}.json", "evaluation.json")):  # fmt: skip
            if extra.is_file():
                tar.add(extra, arcname=f"{name}/{arc}")
    blob = tar_path.read_bytes()
    if len(blob) <= PART:
        (out / tar_path.name).write_bytes(blob)
        return [out / tar_path.name]
    parts = []
    for i in range(0, len(blob), PART):
        part = out / f"{name}.tar.part{i // PART}"
        part.write_bytes(blob[i : i + PART])
        parts.append(part)
    return parts


# ---------------------------------------------------------------------------- the sweep
def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    global T0
    T0 = time.time()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["prerender"]:
        prerender(argv[1:])
        return []
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=None, help="NAME:STEPS:TRAIN-ARGS (repeatable)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/frame-sweep"), help="scratch folder (renders, models)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "/tmp/frame-sweep/out"))
    ap.add_argument("--device", default="cuda")
    cores = len(os.sched_getaffinity(0))
    ap.add_argument("--workers", type=int, default=max(2, cores - 2), help="processes rendering training frames")
    ap.add_argument(
        "--prerender-workers",
        type=int,
        default=max(2, cores - 5),
        help="processes rendering test clips beside training",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per training process")
    ap.add_argument("--parallel", type=int, default=4, help="variants training at once, in the order given")
    ap.add_argument("--clips", type=int, default=14_000)
    ap.add_argument("--unsafe-share", type=float, default=0.40)
    ap.add_argument("--val", type=int, default=400)
    ap.add_argument("--calib", type=int, default=2500)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--obf", type=int, default=600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps-override", type=int, default=0, help="train every variant this many steps (dry runs)")
    ap.add_argument("--keep", type=int, default=2, help="bring back the weights of this many best variants")
    ap.add_argument("--deadline", type=float, default=470.0, help="seconds; then stop what still runs and report")
    args = ap.parse_args(argv)

    variants = [Variant.parse(s) for s in (args.variant or DEFAULT_VARIANTS)]
    if len({v.name for v in variants}) != len(variants):
        raise SystemExit("variant names repeat")
    if args.steps_override:
        for v in variants:
            v.steps = args.steps_override
    work, out = args.work, args.out
    for sub in ("models", "concepts", "evaluations", "logs", "cache"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    deadline = T0 + args.deadline
    log(f"{len(variants)} variants on {args.device}: " + ", ".join(f"{v.name} ({v.steps} steps)" for v in variants))
    common = ["--clips", str(args.clips), "--val", str(args.val), "--unsafe-share", str(args.unsafe_share)]
    for v in variants:
        model = work / "models" / v.name
        concepts = work / "concepts" / f"{v.name}.json"
        # Nothing of an earlier sweep in the same folder may pass for this one's (renders stay).
        shutil.rmtree(model, ignore_errors=True)
        for stale in (work / "evaluations" / f"{v.name}.json", *(work / "logs").glob(f"{v.name}.*.log")):
            stale.unlink(missing_ok=True)
        concepts.write_text(DEFAULT_CONCEPTS.read_text())  # calibrate rewrites this copy, never the shipped file
        cache = str(work / "cache")
        train_cmd = _python(
            "train", "--out", str(model), "--steps", str(v.steps), "--device", args.device, "--calib", "0",
            "--cache", cache, "--threads", str(args.threads), "--batch", str(args.batch), "--eval-every", "60",
            *common, *v.train_args,
        )  # fmt: skip
        v.stages = [
            # steps 0: the control, the shipped model as it is
            ("copy", ["cp", "-r", str(DEFAULT_MODEL_DIR), str(model)]) if v.steps == 0 else ("train", train_cmd),
            ("calibrate", _python(
                "calibrate", "--model", str(model), "--concepts", str(concepts), "--clips", str(args.calib),
                "--device", args.device, "--cache", cache, "--workers", "2",
            )),
            ("evaluate", _python(
                "evaluate", "--model", str(model), "--concepts", str(concepts), "--test", str(args.test),
                "--obf", str(args.obf), "--device", args.device, "--cache", cache, "--workers", "2",
                "--no-prompt-filter", "--out", str(work / "evaluations" / f"{v.name}.json"),
            )),
        ]  # fmt: skip

    sizes = sorted({v.image_size for v in variants}, key=lambda s: (s != 128, s))
    rendered: set[int] = set()
    render_proc: subprocess.Popen[bytes] | None = None
    render_size = 0
    render_started = 0.0
    prerender_proc: subprocess.Popen[bytes] | None = None
    prerender_started = 0.0
    prerender_done = False

    def summary() -> list[dict[str, Any]]:
        results = [_result(v, work) for v in variants]
        _write_json(out / "summary.json", {"elapsed_s": round(time.time() - T0, 1), "variants": results})
        return results

    while True:
        now = time.time()
        if now > deadline:
            log(f"deadline of {args.deadline:.0f} s reached: stopping what still runs")
            for proc in (render_proc, prerender_proc, *(v.proc for v in variants)):
                if proc is not None:
                    _stop(proc)
            for v in variants:
                if v.state.startswith("running") or v.state == "waiting":
                    v.state = f"stopped ({v.state})"
            break
        # 1. training frames, one input size after another
        if render_proc is not None and render_proc.poll() is not None:
            rc = render_proc.returncode
            log(f"training frames at {render_size}px {'rendered' if rc == 0 else f'FAILED (rc {rc})'} "
                f"in {now - render_started:.0f} s")  # fmt: skip
            if rc != 0:
                print(_tail(work / "logs" / f"render-{render_size}.log"), flush=True)
                for v in variants:
                    if v.image_size == render_size:
                        v.state = "failed render"
            rendered.add(render_size)
            render_proc = None
        if render_proc is None and len(rendered) < len(sizes):
            render_size = next(s for s in sizes if s not in rendered)
            render_started = now
            log(f"rendering training frames at {render_size}px")
            render_proc = _start(
                _python("train", "--render-only", "--cache", str(work / "cache"), "--image-size", str(render_size),
                        "--workers", str(args.workers), "--out", str(work / "models" / "_render"), *common),
                work / "logs" / f"render-{render_size}.log",
            )  # fmt: skip
        # 2. production clips, once the training frames leave the cores
        if prerender_proc is None and not prerender_done and len(rendered) == len(sizes):
            prerender_started = now
            log(f"rendering calibration/test/obf clips for {sizes}")
            prerender_proc = _start(
                _python("sweep", "prerender", "--work", str(work), "--sizes", ",".join(map(str, sizes)),
                        "--clips", str(args.clips), "--unsafe-share", str(args.unsafe_share), "--calib",
                        str(args.calib), "--test", str(args.test), "--obf", str(args.obf),
                        "--workers", str(args.prerender_workers)),
                work / "logs" / "prerender.log",
            )  # fmt: skip
        if prerender_proc is not None and prerender_proc.poll() is not None:
            rc = prerender_proc.returncode
            log(f"calibration/test/obf clips {'rendered' if rc == 0 else f'FAILED (rc {rc}); stages render their own'}"
                f" in {now - prerender_started:.0f} s")  # fmt: skip
            if rc != 0:
                print(_tail(work / "logs" / "prerender.log"), flush=True)
            prerender_proc, prerender_done = None, True
        # 3. each variant's stages
        for v in variants:
            if v.proc is not None and v.proc.poll() is not None:
                stage = v.state.split()[-1]
                v.seconds[stage] = now - v.started
                rc = v.proc.returncode
                v.proc = None
                if rc != 0:
                    v.state = f"failed {stage}"
                    log(f"{v.name}: {stage} FAILED (rc {rc}) after {v.seconds[stage]:.0f} s")
                    print(_tail(work / "logs" / f"{v.name}.{stage}.log"), flush=True)
                    summary()
                    continue
                log(f"{v.name}: {stage} done in {v.seconds[stage]:.0f} s")
                v.state = "done" if stage == v.stages[-1][0] else f"after {stage}"
                if v.state == "done":
                    r = _result(v, work)
                    e = r["evaluation"] or {}
                    zero_shot, recall = _fmt(e.get("subject_top1"), ".1%"), _fmt(e.get("unsafe_recall"), ".1%")
                    fp = _fmt(e.get("false_positives"), ".2%")
                    log(f"{v.name}: zero-shot {zero_shot}, unsafe recall {recall}, FP {fp}")
                    summary()
            if v.proc is not None or v.state == "done" or v.state.startswith("failed"):
                continue
            done_stages = [name for name, _ in v.stages if name in v.seconds]
            name, cmd = v.stages[len(done_stages)]
            training = sum(1 for w in variants if w.state == "running train")
            if name == "train":
                ready = v.image_size in rendered and training < args.parallel
            else:
                ready = name == "copy" or prerender_done
            if ready:
                v.state, v.started = f"running {name}", now
                log(f"{v.name}: {name} started")
                v.proc = _start(cmd, work / "logs" / f"{v.name}.{name}.log")
        active = render_proc or prerender_proc or any(v.proc for v in variants)
        pending = any(not (v.state == "done" or v.state.startswith("failed")) for v in variants)
        if not active and not pending:
            break
        if not active and pending and prerender_done and len(rendered) == len(sizes):
            break  # nothing can move any more
        time.sleep(0.5)

    results = summary()
    print("\n" + table(results) + "\n", flush=True)
    for r in best([r for r in results if r["steps"] > 0], args.keep):
        try:
            files = _pack(r, work, out)
            log(f"kept {r['name']}: " + ", ".join(f"{p.name} ({p.stat().st_size / 2**20:.1f} MiB)" for p in files))
        except OSError as exc:
            log(f"could not pack {r['name']}: {exc!r}")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(work / "logs", arcname="logs")
    log("done: " + ", ".join(sorted(p.name for p in out.iterdir())))
    return results


if __name__ == "__main__":
    main()
