"""Train the frame filter's default CLIP model on clips the procedural generator renders.

    python -m moderation.frame_training.train            # ~50 min on 2 CPU cores
    python -m moderation.frame_training.train --minutes 5 --clips 2000 --out /tmp/clip  # a quick try

What it does, reproducibly (fixed seeds; the only run-to-run difference is how many
steps fit in the time budget on a given machine):

1. draws ``--clips`` prompts from the generator's vocabulary (:mod:`.data`) and renders
   each at 144×256, keeping ``--frames-per-clip`` frames squashed to the model's input;
2. trains an ``open_clip.CLIP`` built from ``CONFIG`` (a ModifiedResNet image tower,
   which sees sprites of 20–40 px far better than a ViT of the same cost, and a small
   text transformer with open_clip's own BPE tokenizer) for ``--minutes``:
   * the symmetric contrastive loss, with every pair of identical captions a positive;
     captions are the prompt itself or a canonical caption of what was parsed from it
     ("a photo of a fox and a knife in the snow");
   * a second contrastive term against the captions of single subjects ("a photo of
     a fox", one template per step, all subjects every step): each frame must be
     closest to the captions of what it shows. This is what zero-shot classification
     and the concept prompts of the filter ask of the model, and without it the small
     text tower aligns subjects far too slowly (a first run: 17% zero-shot top-1 after
     360 steps, against 60%+ with it). ``--unsafe-weight`` above 1 gives an unsafe
     subject that much more of a frame's target than a safe one beside it;
   * plus two training-only heads that predict what the renderer drew (subjects,
     scene, time, style) from the image embedding and the subjects from the text
     embedding; they are dropped before saving and only shape the embeddings;
3. saves ``open_clip_config.json`` and ``open_clip_model.safetensors`` (fp16) to
   ``--out``, a folder open_clip loads as ``local-dir:``, and ``training.json``;
4. calibrates the concept thresholds for the new model (:mod:`.calibrate`).

Validation while training: zero-shot subject accuracy on single-subject clips from a
separate seed range, printed every ``--eval-every`` seconds.

``--steps N --device cuda`` trains exactly N steps on a GPU, with the same seeds, data
and schedule as N steps on the CPU: how configurations are compared at the step count
2 CPU cores reach (``step_cost`` measures it, ``gpu_sweep.sh`` runs the comparison).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from moderation.frame_filter import DEFAULT_MODEL_DIR
from moderation.frame_training import data

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 128
IMAGE_WIDTH = 24


def model_config(image_size: int = IMAGE_SIZE, width: int = IMAGE_WIDTH) -> dict[str, Any]:
    """The open_clip config of the shipped model, at another input size or image-tower width."""
    return {
        "model_cfg": {
            "embed_dim": 128,
            "vision_cfg": {"image_size": image_size, "layers": [1, 1, 1, 1], "width": width, "head_width": 32},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
        },
        "preprocess_cfg": {
            "size": image_size,
            "mode": "RGB",
            "mean": list(OPENAI_MEAN),
            "std": list(OPENAI_STD),
            "interpolation": "bicubic",
            "resize_mode": "squash",
            "fill_color": 0,
        },
    }


CONFIG = model_config()
SUBJECT_TEMPLATES = ("a photo of a {}", "a {}", "a video of a {}", "a clip of a {}")
#: Which caption a training pair uses: the prompt, "a photo of <subjects>", "a photo of <subjects> in <scene>…".
CAPTION_MIX = (0.5, 0.25, 0.25)
WEIGHTS_FILE = "open_clip_model.safetensors"


def build_model(out: Path, config: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """A fresh model and its tokenizer from ``config`` (default CONFIG), written to ``out``
    and read back the way the filter will load it (so training and serving build the
    same network)."""
    import open_clip

    out.mkdir(parents=True, exist_ok=True)
    (out / "open_clip_config.json").write_text(json.dumps(config or CONFIG, indent=2) + "\n")
    for stale in out.glob("*.safetensors"):
        stale.unlink()
    model = open_clip.create_model(f"local-dir:{out}")
    return model, open_clip.get_tokenizer(f"local-dir:{out}")


def subject_prompts(vocab: Any) -> list[list[str]]:
    return [[t.format(data.subject_name(k)) for t in SUBJECT_TEMPLATES] for k in data.subjects(vocab)]


def zero_shot_accuracy(model: Any, tokenizer: Any, images: Any, truth: np.ndarray, vocab: Any) -> float:
    """Top-1 over the vocabulary's subjects, images (N, 3, H, W) already normalised."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        groups = subject_prompts(vocab)
        t = model.encode_text(tokenizer([p for g in groups for p in g]).to(device))
        t = torch.nn.functional.normalize(t, dim=-1).view(len(groups), len(groups[0]), -1).mean(1)
        t = torch.nn.functional.normalize(t, dim=-1)
        feats = torch.cat([model.encode_image(images[i : i + 256].to(device)) for i in range(0, len(images), 256)])
        pred = (torch.nn.functional.normalize(feats, dim=-1) @ t.T).argmax(1).cpu().numpy()
    model.train()
    return float((pred == truth).mean())


def batch_loss(
    model: Any,
    image_head: Any,
    text_head: Any,
    x: Any,
    tokens: Any,
    caption_ids: Any,
    subject_tokens: Any,
    shows: Any,
    labels: Any,
    n_subjects: int,
) -> tuple[Any, Any, Any]:
    """(total, contrastive, single-subject) loss of one batch: ``x`` the normalised frames,
    ``tokens`` their captions (equal ``caption_ids`` are positives of each other),
    ``subject_tokens`` one template's captions of every subject, ``shows`` each frame's
    target distribution over those captions, ``labels`` its multi-hot render labels."""
    import torch

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    image, text, scale = model(x, tokens)[:3]
    logits = scale * image @ text.T
    positive = (caption_ids[:, None] == caption_ids[None, :]).float()
    target = positive / positive.sum(1, keepdim=True)
    contrastive = 0.5 * (
        -(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.T.log_softmax(1)).sum(1).mean()
    )
    prototypes = torch.nn.functional.normalize(model.encode_text(subject_tokens), dim=-1)
    subject = -(shows * (scale * image @ prototypes.T).log_softmax(1)).sum(1).mean()
    aux_image = bce(image_head(image * 10.0), labels)
    aux_text = bce(text_head(text * 10.0), labels[:, :n_subjects])
    return contrastive + subject + aux_image + 0.5 * aux_text, contrastive, subject


def to_input(frames: np.ndarray, flip: np.ndarray | None = None, device: Any = None) -> Any:
    """uint8 (N, H, W, 3) → normalised float (N, 3, H, W), optionally mirrored per row.
    With ``device`` the uint8 frames move there first and are converted there (a quarter
    of the bytes to copy, and no CPU time per step when training on a GPU)."""
    import torch

    x = torch.from_numpy(frames)
    if device is not None:
        x = x.to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if flip is not None and flip.any():
        f = torch.from_numpy(flip).to(x.device)
        x[f] = x[f].flip(-1)
    mean = torch.tensor(OPENAI_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _cached(folder: Path | None, name: str, render: Any) -> np.ndarray:
    """Rendered frames from ``folder`` when a previous run left them there (``name``
    carries the items' digest and the sizes), otherwise rendered now and kept."""
    if folder is None:
        return np.asarray(render())
    path = folder / f"{name}.npy"
    if path.is_file():
        print(f"frames from {path}")
        return np.load(path)
    frames = np.asarray(render())
    folder.mkdir(parents=True, exist_ok=True)
    np.save(path, frames)
    return frames


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--minutes", type=float, default=45.0, help="training time budget (rendering not included)")
    ap.add_argument(
        "--steps", type=int, default=0, help="train exactly this many steps instead (the schedule follows steps)"
    )
    ap.add_argument("--device", default="cpu", help="torch device to train on (rendering stays on the CPU)")
    ap.add_argument("--unsafe-share", type=float, default=0.40, help="share of training prompts with an unsafe object")
    ap.add_argument(
        "--unsafe-weight",
        type=float,
        default=1.0,
        help="weight of an unsafe subject against a safe one in the single-subject caption loss's target "
        "(1: every subject a frame shows counts the same)",
    )
    ap.add_argument("--image-size", type=int, default=IMAGE_SIZE)
    ap.add_argument("--width", type=int, default=IMAGE_WIDTH, help="image tower width")
    ap.add_argument("--clips", type=int, default=14_000)
    ap.add_argument("--frames-per-clip", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="render processes")
    ap.add_argument("--threads", type=int, default=2, help="torch threads while training")
    ap.add_argument("--val", type=int, default=400, help="single-subject validation clips")
    ap.add_argument("--eval-every", type=float, default=180.0, help="seconds between validation runs")
    ap.add_argument("--calib", type=int, default=2500, help="clips for threshold calibration (0: skip)")
    ap.add_argument("--concepts", type=Path, default=None, help="concept file to calibrate (default: shipped)")
    ap.add_argument("--cache", type=Path, default=None, help="keep rendered frames here for the next run")
    ap.add_argument(
        "--render-only", action="store_true", help="render (into --cache) and stop: for runs that share the frames"
    )
    args = ap.parse_args(argv)
    if args.render_only and args.cache is None:
        ap.error("--render-only needs --cache")

    import torch
    from tqdm import tqdm

    from generation.vocabulary import default_vocabulary

    started = time.time()
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    vocab = default_vocabulary()
    names = data.label_names(vocab)
    column = {n: i for i, n in enumerate(names)}
    n_subjects = len(data.subjects(vocab))

    items = data.build_items("train", args.clips, vocab=vocab, mix=data.training_mix(args.unsafe_share))
    train_prompts = {it.prompt for it in items}
    val_pool = data.build_items("val", args.val * 3, exclude=train_prompts, vocab=vocab)
    val_items = [it for it in val_pool if len(set(it.subjects)) == 1][: args.val]
    size = args.image_size
    frames = _cached(
        args.cache,
        f"train-{args.clips}-{args.frames_per_clip}-{size}-{data.items_digest(items)}",
        lambda: data.render_training_frames(items, size, args.frames_per_clip, args.workers, "render train"),
    )
    val_frames = _cached(
        args.cache,
        f"val-{args.val}-{size}-{data.items_digest(val_items)}",
        lambda: data.render_training_frames(val_items, size, 3, args.workers, "render val"),
    )
    rendered = time.time()
    if args.render_only:
        print(f"rendered {len(items)} training and {len(val_items)} validation clips in {rendered - started:.0f} s")
        return
    subject_index = {k: i for i, k in enumerate(data.subjects(vocab))}
    val_x = to_input(val_frames[:, 1])
    val_y = np.array([subject_index[it.subjects[0]] for it in val_items])

    labels = np.zeros((len(items), len(names)), np.float32)
    for i, it in enumerate(items):
        labels[i, [column[name] for name in it.labels]] = 1.0
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, tokenizer = build_model(args.out, model_config(size, args.width))
    model.to(device)
    captions = [[it.prompt, *it.captions] for it in items]
    ids: dict[str, int] = {}
    caption_id = np.array([[ids.setdefault(c, len(ids)) for c in row] for row in captions])
    tokens = tokenizer([c for row in captions for c in row]).view(len(items), 3, -1).to(device)
    labels_t = torch.from_numpy(labels).to(device)

    # Single-subject captions, and "abstract shapes" for clips with no subject.
    names_plain = [data.subject_name(k) for k in data.subjects(vocab)] + ["abstract shapes"]
    subject_tokens = [tokenizer([t.format(n) for n in names_plain]).to(device) for t in SUBJECT_TEMPLATES]
    shows = np.concatenate([labels[:, :n_subjects], labels[:, [column["abstract"]]]], axis=1)
    # --unsafe-weight > 1 pulls a frame that shows a knife beside a fox towards "a knife"
    # more than towards "a fox": a small unsafe object should not drown in a large subject.
    unsafe_columns = [column[f"subject:{k}"] for k in vocab.unsafe]
    shows[:, unsafe_columns] *= args.unsafe_weight
    shows_t = torch.from_numpy(shows / shows.sum(1, keepdims=True)).to(device)

    dim = CONFIG["model_cfg"]["embed_dim"]
    image_head = torch.nn.Linear(dim, len(names)).to(device)
    text_head = torch.nn.Linear(dim, n_subjects).to(device)
    params = [*model.parameters(), *image_head.parameters(), *text_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.02)
    budget = args.minutes * 60.0

    def progress(elapsed: float) -> float:
        return min(1.0, step / args.steps if args.steps else elapsed / budget)

    warmup = 100
    history: list[dict[str, float]] = []
    step, t0, last_eval = 0, time.time(), time.time()
    model.train()
    by_steps = bool(args.steps)
    bar = tqdm(
        total=args.steps or int(budget), desc="train" if by_steps else "train (s)", unit="step" if by_steps else "s",
        mininterval=10,
    )  # fmt: skip
    while progress(elapsed := time.time() - t0) < 1.0:
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * progress(elapsed)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = rng.choice(len(items), size=args.batch, replace=False)
        which = rng.integers(0, args.frames_per_clip, size=args.batch)
        x = to_input(frames[idx, which], flip=rng.random(args.batch) < 0.5, device=device)
        cap = rng.choice(3, size=args.batch, p=CAPTION_MIX)
        t = tokens[torch.from_numpy(idx).to(device), torch.from_numpy(cap).to(device)]
        cid = torch.from_numpy(caption_id[idx, cap]).to(device)
        template = subject_tokens[int(rng.integers(len(subject_tokens)))]
        rows = torch.from_numpy(idx).to(device)
        loss, contrastive, subject = batch_loss(
            model, image_head, text_head, x, t, cid, template, shows_t[rows], labels_t[rows], n_subjects
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        bar.update((step if args.steps else int(time.time() - t0)) - bar.n)
        if step % 20 == 0:
            bar.set_postfix(
                step=step, loss=f"{loss.item():.3f}", con=f"{contrastive.item():.3f}", subj=f"{subject.item():.3f}"
            )
        if time.time() - last_eval >= args.eval_every:
            acc = zero_shot_accuracy(model, tokenizer, val_x, val_y, vocab)
            history.append({"step": step, "seconds": round(time.time() - t0, 1), "val_subject_top1": round(acc, 4)})
            bar.write(f"step {step}: loss {loss.item():.3f}, validation zero-shot subject top-1 {acc:.1%}")
            last_eval = time.time()
    bar.close()
    trained = time.time()
    acc = zero_shot_accuracy(model, tokenizer, val_x, val_y, vocab)
    history.append({"step": step, "seconds": round(trained - t0, 1), "val_subject_top1": round(acc, 4)})
    print(f"trained {step} steps ({step * args.batch / len(items):.1f} epochs); validation subject top-1 {acc:.1%}")

    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / WEIGHTS_FILE))
    size_mb = (args.out / WEIGHTS_FILE).stat().st_size / 1e6
    record = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_mb": round(size_mb, 2),
        "steps": step,
        "epochs": round(step * args.batch / len(items), 2),
        "render_seconds": round(rendered - started, 1),
        "train_seconds": round(trained - t0, 1),
        "validation": history,
        "torch": torch.__version__,
        "device": str(device),
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {args.out / WEIGHTS_FILE} ({size_mb:.1f} MB)")
    if args.calib:
        from moderation.frame_training import calibrate

        calibrate.main(
            ["--model", str(args.out), "--clips", str(args.calib)]
            + (["--concepts", str(args.concepts)] if args.concepts else [])
            + (["--cache", str(args.cache)] if args.cache else [])
        )
    print(f"done in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
