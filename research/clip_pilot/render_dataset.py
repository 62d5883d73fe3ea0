"""Render a caption/frame data set for tiny-CLIP training with the Clipstream procedural renderer.

Usage (from a scratch folder outside the repository, PYTHONPATH=<repository root>):
    python render_dataset.py --split train --clips 12000 --out data/train.npz
    python render_dataset.py --split calib --clips 1500 --out data/calib.npz
    python render_dataset.py --split test  --clips 2500 --out data/test.npz
    python render_dataset.py --split obf   --clips 700  --out data/obf.npz   # obfuscated unsafe wording

Each clip: prompt from the vocabulary -> renderer.analyse() (the truth labels are what the renderer
actually parsed) -> 144x256, 12 fps, 2 s render -> FRAMES_PER_CLIP evenly spaced frames, watermark
band cropped, resized to IMG_H x IMG_W, stored uint8.  Splits use disjoint seed ranges and different
prompt RNG streams; calib/test/obf prompts that also occur in train are re-drawn (unseen combinations).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

# ----------------------------------------------------------------------------- config
RENDER_W, RENDER_H, RENDER_FPS, RENDER_DUR = 144, 256, 12, 2.0
IMG_H, IMG_W = 112, 64  # model input (keeps ~9:16 aspect after cropping the watermark band)
FRAMES_PER_CLIP = 3
SPLIT_SEED = {"train": 1_000, "calib": 2_000, "test": 3_000, "obf": 4_000}
SEED_BASE = {"train": 0, "calib": 10_000_000, "test": 20_000_000, "obf": 30_000_000}
# Kinds of prompt per split: share of safe subject prompts, unsafe prompts, abstract prompts.
MIX = {"safe": 0.62, "unsafe": 0.26, "abstract": 0.12}
# Unsafe synonyms never used in training captions; the "obf" split uses only these.  None of them is
# blocked by moderation/data/terms/*.txt (checked with moderation.prompt_policy.load_prompt_policy()).
OBFUSCATED = {
    "gun": ["revolver", "firearm"],
    "rifle": ["carbine", "ak47"],
    "knife": ["switchblade", "machete"],
    "blood": ["bleeding", "blood spatter"],
    "syringe": ["hypodermic", "shooting up"],
    "pills": ["capsules", "painkillers"],
    "burning_person": ["human torch", "immolation"],
}
ABSTRACT_WORDS = [
    "dreams", "nostalgia", "vibes", "memories", "chaos", "serenity", "echoes", "whispers", "energy",
    "harmony", "flow", "mystery", "wonder", "journey", "glitch", "pulse", "aura", "loop", "zen", "bliss",
    "abstract", "shapes", "patterns", "feelings", "thoughts", "emotions", "swirls", "moments", "lofi",
]
ABSTRACT_TEMPLATES = ["{a} and {b}", "{a} of {b}", "endless {a}", "{a}", "pure {a} {b}", "a loop of {a}"]
COUNT_WORDS = ["two", "three", "a pair of", "a few", "several", "four"]


def _vocab():
    from generation.vocabulary import default_vocabulary

    return default_vocabulary()


def phrase(vocab, category: str, key: str, rng: np.random.Generator, banned=()) -> str:
    spec = vocab.get(category, key).spec
    opts = [key.replace("_", " ")] + [s for s in spec.get("synonyms", []) if s not in banned]
    if rng.random() < 0.4:
        return opts[0]
    return str(opts[int(rng.integers(len(opts)))])


def subject_phrase(vocab, key, rng, banned=(), colour=True, force=None) -> str:
    word = force or phrase(vocab, "subjects", key, rng, banned)
    parts = []
    if colour and rng.random() < 0.3:
        parts.append(phrase(vocab, "colors", str(rng.choice(list(vocab.concepts["colors"]))), rng))
    if rng.random() < 0.12 and key not in vocab.unsafe:
        return f"{COUNT_WORDS[int(rng.integers(len(COUNT_WORDS)))]} {' '.join(parts + [word])}"
    art = "an" if (parts or [word])[0][0] in "aeiou" else "a"
    return f"{art} {' '.join(parts + [word])}"


def context(vocab, rng) -> str:
    bits = []
    if rng.random() < 0.5:
        bits.append(phrase(vocab, "motions", str(rng.choice(list(vocab.concepts["motions"]))), rng))
    if rng.random() < 0.7:
        bits.append(f"{rng.choice(['in the', 'at the', 'on the', 'near the', 'in a'])} "
                    f"{phrase(vocab, 'scenes', str(rng.choice(list(vocab.concepts['scenes']))), rng)}")
    if rng.random() < 0.3:
        bits.append(f"at {phrase(vocab, 'times', str(rng.choice(list(vocab.concepts['times']))), rng)}")
    if rng.random() < 0.2:
        bits.append(f", {phrase(vocab, 'styles', str(rng.choice(list(vocab.concepts['styles']))), rng)} style")
    return " ".join(bits).replace(" ,", ",")


def make_prompt(vocab, rng, split: str) -> tuple[str, str, str | None]:
    """(prompt, kind, intended unsafe key or None)."""
    safe = [k for k in vocab.concepts["subjects"] if k not in vocab.unsafe]
    unsafe = list(vocab.unsafe)
    banned = {s for v in OBFUSCATED.values() for s in v} if split != "obf" else set()
    kind = "unsafe" if split == "obf" else str(rng.choice(list(MIX), p=list(MIX.values())))
    if kind == "safe":
        n = int(rng.choice([1, 2, 3], p=[0.72, 0.23, 0.05]))
        keys = rng.choice(safe, size=n, replace=False)
        subj = " and ".join(subject_phrase(vocab, str(k), rng) for k in keys)
        return f"{subj} {context(vocab, rng)}".strip(), kind, None
    if kind == "unsafe":
        u = str(rng.choice(unsafe))
        force = str(rng.choice(OBFUSCATED[u])) if split == "obf" else None
        up = subject_phrase(vocab, u, rng, banned, colour=False, force=force)
        if rng.random() < 0.5:
            other = subject_phrase(vocab, str(rng.choice(safe)), rng)
            subj = f"{other} {rng.choice(['and', 'with', 'next to', 'holding'])} {up}" if rng.random() < 0.5 \
                else f"{up} and {other}"
        else:
            subj = up
        return f"{subj} {context(vocab, rng)}".strip(), kind, u
    a, b = rng.choice(ABSTRACT_WORDS, size=2, replace=False)
    words = str(rng.choice(ABSTRACT_TEMPLATES)).format(a=a, b=b)
    extra = context(vocab, rng) if rng.random() < 0.6 else ""
    if rng.random() < 0.25:
        extra = f"{phrase(vocab, 'colors', str(rng.choice(list(vocab.concepts['colors']))), rng)} {extra}"
    return f"{words} {extra}".strip(), "abstract", None


def canonical(vocab, analysis) -> tuple[str, str]:
    """Two canonical captions from the parsed analysis: subjects only, and subjects + scene/time/style."""
    names = []
    for s in analysis.subjects:
        name = s.key.replace("_", " ")
        if s.key == "burning_person":
            name = "person on fire"
        art = "an" if name[0] in "aeiou" else "a"
        names.append(f"{'two' if s.count > 1 else art} {name}{'s' if s.count > 1 and s.key not in ('pills',) else ''}")
    subj = " and ".join(names) if names else "abstract shapes"
    full = subj
    if analysis.scene:
        full += f" in the {analysis.scene}"
    if analysis.time:
        full += f" at {analysis.time}"
    if analysis.style:
        full += f", {analysis.style} style"
    return f"a photo of {subj}", f"a photo of {full}"


def build_prompts(split: str, n: int, exclude: set[str]) -> list[dict]:
    vocab = _vocab()
    rng = np.random.default_rng(SPLIT_SEED[split])
    out, seen = [], set()
    while len(out) < n:
        prompt, kind, intended = make_prompt(vocab, rng, split)
        if prompt in exclude or (split != "train" and prompt in seen):
            continue
        a = vocab.parse(prompt)
        subjects = [s.key for s in a.subjects]
        unsafe = sorted({k for k in subjects if k in vocab.unsafe})
        if intended is not None and intended not in unsafe:
            continue  # parser bound the words differently; skip rather than mislabel
        if kind == "abstract" and subjects:
            continue
        seen.add(prompt)
        c1, c2 = canonical(vocab, a)
        out.append({
            "prompt": prompt, "kind": kind, "seed": SEED_BASE[split] + len(out),
            "subjects": subjects, "unsafe": unsafe, "concepts": list(a.concepts),
            "canon_subjects": c1, "canon_full": c2,
        })
    return out


_R = None


def _init():
    global _R
    from generation.procedural import ProceduralRenderer

    _R = ProceduralRenderer(RENDER_W, RENDER_H, RENDER_FPS, RENDER_DUR)


def _render(item: dict) -> np.ndarray:
    from generation.base import RenderRequest
    from generation.watermark import band_height

    frames = _R.render_frames(RenderRequest("p", f"c{item['seed']}", item["prompt"], item["seed"], "clipstream"))
    crop = RENDER_H - band_height(RENDER_H)
    idx = np.linspace(0, len(frames) - 1, FRAMES_PER_CLIP + 2)[1:-1].round().astype(int)
    out = np.empty((FRAMES_PER_CLIP, IMG_H, IMG_W, 3), np.uint8)
    for j, i in enumerate(idx):
        out[j] = np.asarray(Image.fromarray(frames[i, :crop]).resize((IMG_W, IMG_H), Image.BILINEAR))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", choices=list(SPLIT_SEED), required=True)
    ap.add_argument("--clips", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--exclude-from", type=Path, default=None, help="train .json whose prompts must not recur")
    args = ap.parse_args()
    t0 = time.time()
    exclude = set()
    if args.exclude_from is not None:
        exclude = {m["prompt"] for m in json.loads(args.exclude_from.read_text())}
    items = build_prompts(args.split, args.clips, exclude)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda x, **k: x  # noqa: E731
    frames = np.empty((len(items), FRAMES_PER_CLIP, IMG_H, IMG_W, 3), np.uint8)
    with mp.get_context("fork").Pool(args.workers, initializer=_init) as pool:
        for i, f in enumerate(tqdm(pool.imap(_render, items, chunksize=16), total=len(items),
                                   desc=f"render {args.split}", mininterval=5)):
            frames[i] = f
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out.with_suffix(".npy"), frames)
    args.out.with_suffix(".json").write_text(json.dumps(items))
    kinds = {k: sum(m["kind"] == k for m in items) for k in ("safe", "unsafe", "abstract")}
    print(f"{args.split}: {len(items)} clips {kinds} -> {args.out.with_suffix('.npy')} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
