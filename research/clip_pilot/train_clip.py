"""Train a tiny open_clip CLIP from scratch on procedural renders (CPU, 2 threads).

Usage (from a scratch folder outside the repository, PYTHONPATH=<repository root>):
    python train_clip.py --data data/train --out runs/final --steps 2000
Writes runs/<name>/model.pt (fp32 state_dict), model_config.json (open_clip CLIP kwargs + preprocessing),
concepts.json (vocabulary subjects, unsafe concepts -> safety category, prompt templates), train_log.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- config (one place)
CONFIG = {
    "seed": 0,
    "threads": 2,
    "model": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": [112, 64], "patch_size": 16, "width": 176, "layers": 6, "head_width": 44,
                       "mlp_ratio": 4.0},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 4},
        "quick_gelu": False,
    },
    "batch_size": 128,
    "lr": 2e-3,
    "weight_decay": 0.1,
    "warmup_steps": 100,
    "caption_mix": {"prompt": 0.35, "canon_subjects": 0.4, "canon_full": 0.25},
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "shift_px": 4,  # random translation augmentation
}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: dict) -> open_clip.CLIP:
    return open_clip.CLIP(
        embed_dim=cfg["embed_dim"],
        vision_cfg=open_clip.CLIPVisionCfg(**{**cfg["vision_cfg"], "image_size": tuple(cfg["vision_cfg"]["image_size"])}),
        text_cfg=open_clip.CLIPTextCfg(**cfg["text_cfg"]),
        quick_gelu=cfg["quick_gelu"],
    )


def get_tokenizer(cfg: dict):
    # open_clip's SimpleTokenizer (BPE vocab ships inside the package; no download).
    return open_clip.get_tokenizer("ViT-B-32", context_length=cfg["text_cfg"]["context_length"])


def preprocess(frames_u8: torch.Tensor, mean, std) -> torch.Tensor:
    """(B,H,W,3) uint8 -> normalised (B,3,H,W) float."""
    x = frames_u8.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def augment(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    B, _, H, W = x.shape
    flip = torch.rand(B, generator=gen) < 0.5
    x = torch.where(flip.view(B, 1, 1, 1), x.flip(3), x)
    if shift:
        pad = F.pad(x, (shift, shift, shift, shift), mode="replicate")
        dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()  # one shift per batch (cheap)
        x = pad[:, :, dy:dy + H, dx:dx + W]
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("data/train"), help="prefix of <prefix>.npy/.json")
    ap.add_argument("--out", type=Path, default=Path("runs/final"))
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=None,
                    help="optional wall-clock budget: the cosine schedule follows max(step, time) progress and "
                         "training stops when the budget is spent (steps then is an upper bound)")
    args = ap.parse_args()
    cfg = CONFIG
    set_seed(cfg["seed"])
    torch.set_num_threads(cfg["threads"])
    gen = torch.Generator().manual_seed(cfg["seed"])

    frames = torch.from_numpy(np.load(args.data.with_suffix(".npy"), mmap_mode="r")[:])  # (N,F,H,W,3) uint8
    meta = json.loads(args.data.with_suffix(".json").read_text())
    N, FPC = frames.shape[:2]
    tok = get_tokenizer(cfg["model"])
    kinds = list(cfg["caption_mix"])
    texts = {k: [m[k] for m in meta] for k in kinds}
    tokens = {k: tok(texts[k]) for k in kinds}  # (N, ctx) each
    caption_id = {}  # identical caption strings are positives for each other (multi-positive targets)
    ids = {k: torch.tensor([caption_id.setdefault(t, len(caption_id)) for t in texts[k]]) for k in kinds}
    probs = torch.tensor(list(cfg["caption_mix"].values()))

    model = build_model(cfg["model"])
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model params: {n_params / 1e6:.2f}M ({n_params * 4 / 2**20:.1f} MiB fp32); clips={N} frames/clip={FPC}")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n and "logit" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n and "logit" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg["lr"], betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < cfg["warmup_steps"]:
            return cfg["lr"] * (step + 1) / cfg["warmup_steps"]
        p = (step - cfg["warmup_steps"]) / max(1, args.steps - cfg["warmup_steps"])
        if args.minutes:
            p = max(p, (time.time() - t0) / (60 * args.minutes))
        p = min(p, 1.0)
        return cfg["lr"] * 0.5 * (1 + math.cos(math.pi * p))

    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    bar = tqdm(range(args.steps), desc="train", mininterval=10) if tqdm else range(args.steps)
    log, t0, B = [], time.time(), cfg["batch_size"]
    perm, ptr = torch.randperm(N, generator=gen), 0
    model.train()
    done_steps = 0
    for step in bar:
        if args.minutes and time.time() - t0 > 60 * args.minutes:
            break
        done_steps = step + 1
        if ptr + B > N:
            perm, ptr = torch.randperm(N, generator=gen), 0
        idx = perm[ptr:ptr + B]
        ptr += B
        fi = torch.randint(0, FPC, (B,), generator=gen)
        x = augment(preprocess(frames[idx, fi], cfg["mean"], cfg["std"]), cfg["shift_px"], gen)
        choice = torch.multinomial(probs, B, replacement=True, generator=gen)
        txt = torch.stack([tokens[kinds[c]][i] for c, i in zip(choice.tolist(), idx.tolist())])
        cid = torch.stack([ids[kinds[c]][i] for c, i in zip(choice.tolist(), idx.tolist())])
        target = (cid[:, None] == cid[None, :]).float()
        target = target / target.sum(1, keepdim=True)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        img_f, txt_f, scale = model(x, txt)
        logits = scale * img_f @ txt_f.t()
        loss = 0.5 * (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                      + torch.sum(-target * F.log_softmax(logits.t(), 1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 25 == 0 or step == args.steps - 1:
            acc = (logits.argmax(1) == torch.arange(B)).float().mean().item()
            log.append({"step": step, "loss": round(loss.item(), 4), "batch_i2t_acc": round(acc, 3),
                        "scale": round(scale.item(), 2), "elapsed_s": round(time.time() - t0, 1)})
            if tqdm:
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
            else:
                print(log[-1], flush=True)
    elapsed = time.time() - t0
    args.steps = done_steps
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "model.pt")
    from generation.vocabulary import default_vocabulary

    vocab = default_vocabulary()
    (args.out / "model_config.json").write_text(json.dumps({
        "open_clip_kwargs": cfg["model"], "tokenizer": "open_clip SimpleTokenizer (get_tokenizer('ViT-B-32'))",
        "mean": cfg["mean"], "std": cfg["std"], "input": "RGB frame, watermark band cropped, resized to HxW",
        "train": {**{k: v for k, v in cfg.items() if k != "model"}, "steps": args.steps, "clips": N,
                  "frames_per_clip": FPC, "seconds": round(elapsed, 1), "epochs": round(args.steps * B / N, 2),
                  "params": n_params},
    }, indent=1))
    (args.out / "concepts.json").write_text(json.dumps({
        "subjects": list(vocab.concepts["subjects"]),
        "unsafe": vocab.unsafe,
        "template": "a photo of {article} {name}",
        "names": {k: ("person on fire" if k == "burning_person" else k.replace("_", " "))
                  for k in vocab.concepts["subjects"]},
    }, indent=1))
    (args.out / "train_log.json").write_text(json.dumps(log))
    size = (args.out / "model.pt").stat().st_size
    print(f"done: {args.steps} steps ({args.steps * B / N:.2f} epochs of clips) in {elapsed / 60:.1f} min; "
          f"weights {size / 2**20:.1f} MiB -> {args.out}")


if __name__ == "__main__":
    main()
