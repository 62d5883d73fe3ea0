"""Prompts from the generator's vocabulary, rendered into frames for training and testing.

Every item is a prompt the procedural renderer understands, with the truth taken from
what the renderer itself parsed (``Vocabulary.parse``), never from what the prompt
meant to say: a prompt whose unsafe word the parser bound differently is dropped
rather than mislabelled.

Splits draw from disjoint seed ranges and separate random streams, and the evaluation
splits leave out every prompt that occurs in training. The ``obf`` split words each
unsafe object only with synonyms that training captions never use and that the prompt
filter's term lists let through ("revolver", "hypodermic", "immolation", …): the frame
filter must catch what the text filter could not.

Training frames are rendered small (144×256, 2 s) for speed and squashed to the model's
input; evaluation clips are rendered exactly as in production (288×512, 12 fps, 3 s),
encoded to H.264, decoded and sampled by :func:`moderation.frame_filter.read_frames` at
the concept file's ``frames_per_second``.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from generation.vocabulary import Vocabulary, default_vocabulary

SPLIT_SEED = {"train": 1_000, "val": 1_500, "calib": 2_000, "test": 3_000, "obf": 4_000}
SEED_BASE = {"train": 0, "val": 5_000_000, "calib": 10_000_000, "test": 20_000_000, "obf": 30_000_000}
#: Share of safe subject prompts, prompts with an unsafe object, and abstract prompts.
MIX = {"safe": 0.62, "unsafe": 0.26, "abstract": 0.12}
#: Share of prompts with no scene, time or style, so the background is no shortcut.
BARE = 0.3
#: Unsafe synonyms kept out of training captions; the ``obf`` split uses only these.
#: None is in moderation/data/terms/*.txt (tests/moderation/test_frame_training.py checks).
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
]  # fmt: skip
ABSTRACT_TEMPLATES = ["{a} and {b}", "{a} of {b}", "endless {a}", "{a}", "pure {a} {b}", "a loop of {a}"]
#: What the captions of abstract prompts (no subject) show.
ABSTRACT_CAPTION = "abstract shapes"
COUNT_WORDS = ["two", "three", "a pair of", "a few", "several", "four"]
HANDLES = ["clipstream", "maya", "tom_k", "lucia.art", "dev42", "nightowl", "bo", "sunny_days", "x_y_z"]

TRAIN_SIZE = (144, 256)  # width, height of training renders
TRAIN_FPS, TRAIN_SECONDS = 12, 2.0


def subject_name(key: str) -> str:
    """The plain-English name of a subject key, as concept prompts and captions use it."""
    return {"burning_person": "person on fire"}.get(key, key.replace("_", " "))


def caption_noun(key: str) -> str:
    """One of a subject as training captions name it ("a rifle", "an owl")."""
    name = subject_name(key)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def compositions(vocab: Vocabulary, concepts: Sequence[str]) -> dict[str, Any]:
    """The concept file's ``compositions`` for ``concepts`` (vocabulary subjects, the
    special-care ones too): each beside every safe subject, in every scene and in every
    style, and abstract shapes (what abstract prompts are captioned as) in every scene
    and style, worded as training captions."""
    return {
        "nouns": {c: caption_noun(c) for c in concepts},
        "others": [caption_noun(k) for k in subjects(vocab) if k not in vocab.unsafe],
        "scenes": list(vocab.concepts["scenes"]),
        "styles": list(vocab.concepts["styles"]),
        "alone": [ABSTRACT_CAPTION],
    }


def label_names(vocab: Vocabulary) -> list[str]:
    """Everything a training frame is labelled with: subjects, scenes, times, styles, abstract."""
    names = [f"subject:{k}" for k in subjects(vocab)]
    for category in ("scenes", "times", "styles"):
        names += [f"{category[:-1]}:{k}" for k in vocab.concepts[category]]
    return [*names, "abstract"]


def subjects(vocab: Vocabulary) -> list[str]:
    return list(vocab.concepts["subjects"])


@dataclass
class Item:
    prompt: str
    kind: str  # safe | unsafe | abstract
    seed: int
    creator: str
    subjects: list[str]
    unsafe: list[str]
    labels: list[str]
    captions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _phrase(vocab: Vocabulary, category: str, key: str, rng: np.random.Generator, banned: set[str]) -> str:
    spec = vocab.get(category, key).spec
    # A banned word inside a longer synonym ("immolation" in "self immolation") is banned too.
    options = [key.replace("_", " ")] + [
        s for s in spec.get("synonyms", []) if not any(f" {b} " in f" {s} " for b in banned)
    ]
    if rng.random() < 0.4:
        return options[0]
    return str(options[int(rng.integers(len(options)))])


def _subject_phrase(
    vocab: Vocabulary, key: str, rng: np.random.Generator, banned: set[str], colour: bool = True, force: str = ""
) -> str:
    word = force or _phrase(vocab, "subjects", key, rng, banned)
    parts = []
    if colour and rng.random() < 0.3:
        parts.append(_phrase(vocab, "colors", str(rng.choice(list(vocab.concepts["colors"]))), rng, banned))
    if rng.random() < 0.12 and key not in vocab.unsafe:
        return f"{COUNT_WORDS[int(rng.integers(len(COUNT_WORDS)))]} {' '.join([*parts, word])}"
    article = "an" if [*parts, word][0][0] in "aeiou" else "a"
    return f"{article} {' '.join([*parts, word])}"


def _context(vocab: Vocabulary, rng: np.random.Generator, banned: set[str]) -> str:
    def pick(category: str) -> str:
        return _phrase(vocab, category, str(rng.choice(list(vocab.concepts[category]))), rng, banned)

    bits = []
    if rng.random() < 0.5:
        bits.append(pick("motions"))
    if rng.random() < BARE:
        return " ".join(bits)
    if rng.random() < 0.8:
        where = str(rng.choice(["in the", "at the", "on the", "near the", "in a"]))
        bits.append(f"{where} {pick('scenes')}")
    if rng.random() < 0.3:
        bits.append(f"at {pick('times')}")
    if rng.random() < 0.2:
        bits.append(f", {pick('styles')} style")
    return " ".join(bits).replace(" ,", ",")


def training_mix(unsafe_share: float) -> dict[str, float]:
    """:data:`MIX` with another share of unsafe prompts (the abstract share kept)."""
    if not 0.0 < unsafe_share < 1.0 - MIX["abstract"]:
        raise ValueError(f"unsafe share must be in (0, {1.0 - MIX['abstract']:.2f}), not {unsafe_share}")
    return {"safe": 1.0 - MIX["abstract"] - unsafe_share, "unsafe": unsafe_share, "abstract": MIX["abstract"]}


def make_prompt(
    vocab: Vocabulary, rng: np.random.Generator, split: str, mix: dict[str, float] | None = None
) -> tuple[str, str, str | None]:
    """(prompt, kind, the unsafe subject it is meant to show or None)."""
    mix = mix or MIX
    safe = [k for k in subjects(vocab) if k not in vocab.unsafe]
    unsafe = sorted(vocab.unsafe)
    banned = {s for words in OBFUSCATED.values() for s in words} if split != "obf" else set()
    kind = "unsafe" if split == "obf" else str(rng.choice(list(mix), p=list(mix.values())))
    if kind == "safe":
        n = int(rng.choice([1, 2, 3], p=[0.72, 0.23, 0.05]))
        keys = rng.choice(safe, size=n, replace=False)
        subject = " and ".join(_subject_phrase(vocab, str(k), rng, banned) for k in keys)
        return f"{subject} {_context(vocab, rng, banned)}".strip(), kind, None
    if kind == "unsafe":
        key = str(rng.choice(unsafe))
        force = str(rng.choice(OBFUSCATED[key])) if split == "obf" else ""
        bad = _subject_phrase(vocab, key, rng, banned, colour=False, force=force)
        if rng.random() < 0.5:
            other = _subject_phrase(vocab, str(rng.choice(safe)), rng, banned)
            joiner = str(rng.choice(["and", "with", "next to", "holding"]))
            subject = f"{other} {joiner} {bad}" if rng.random() < 0.5 else f"{bad} and {other}"
        else:
            subject = bad
        return f"{subject} {_context(vocab, rng, banned)}".strip(), kind, key
    a, b = rng.choice(ABSTRACT_WORDS, size=2, replace=False)
    words = str(rng.choice(ABSTRACT_TEMPLATES)).format(a=a, b=b)
    extra = _context(vocab, rng, banned) if rng.random() < 0.6 else ""
    if rng.random() < 0.25:
        extra = f"{_phrase(vocab, 'colors', str(rng.choice(list(vocab.concepts['colors']))), rng, banned)} {extra}"
    return f"{words} {extra}".strip(), "abstract", None


def canonical_captions(vocab: Vocabulary, prompt: str) -> tuple[list[str], list[str], list[str]]:
    """(subject keys, labels, two canonical captions) of what the renderer parsed."""
    analysis = vocab.parse(prompt)
    keys = [s.key for s in analysis.subjects]
    names = []
    for s in analysis.subjects:
        name = subject_name(s.key)
        names.append(f"two {name}{'' if name.endswith('s') else 's'}" if s.count > 1 else caption_noun(s.key))
    what = " and ".join(names) if names else ABSTRACT_CAPTION
    full = what
    labels = [f"subject:{k}" for k in dict.fromkeys(keys)] or ["abstract"]
    if analysis.scene:
        full += f" in the {analysis.scene}"
        labels.append(f"scene:{analysis.scene}")
    if analysis.time:
        full += f" at {analysis.time}"
        labels.append(f"time:{analysis.time}")
    if analysis.style:
        full += f", {analysis.style} style"
        labels.append(f"style:{analysis.style}")
    return keys, labels, [f"a photo of {what}", f"a photo of {full}"]


def build_items(
    split: str,
    n: int,
    exclude: Iterable[str] = (),
    vocab: Vocabulary | None = None,
    mix: dict[str, float] | None = None,
) -> list[Item]:
    """``n`` items of ``split``; ``mix`` (training only) changes the share of each kind,
    evaluation splits keep :data:`MIX`."""
    vocab = vocab or default_vocabulary()
    excluded = set(exclude)
    rng = np.random.default_rng(SPLIT_SEED[split])
    out: list[Item] = []
    seen: set[str] = set()
    while len(out) < n:
        prompt, kind, intended = make_prompt(vocab, rng, split, mix)
        if prompt in excluded or (split != "train" and prompt in seen):
            continue
        keys, labels, captions = canonical_captions(vocab, prompt)
        bad = sorted({k for k in keys if k in vocab.unsafe})
        if intended is not None and intended not in bad:
            continue  # the parser bound the words differently: skip rather than mislabel
        if kind == "abstract" and keys:
            continue
        if kind == "safe" and bad:
            continue
        seen.add(prompt)
        creator = HANDLES[int(rng.integers(len(HANDLES)))]
        out.append(Item(prompt, kind, SEED_BASE[split] + len(out), creator, keys, bad, labels, captions))
    return out


def training_prompts(model: str | Path, vocab: Vocabulary | None = None) -> set[str]:
    """The prompts a model folder was trained on, rebuilt from its ``training.json``
    (clip count and unsafe share), for evaluation splits to leave out. A model not
    trained here (no record) saw none of them: nothing is left out."""
    import json

    record = Path(model) / "training.json"
    if not record.is_file():
        return set()
    args = json.loads(record.read_text())["args"]
    mix = training_mix(args["unsafe_share"]) if "unsafe_share" in args else MIX
    return {it.prompt for it in build_items("train", int(args["clips"]), vocab=vocab, mix=mix)}


# ---------------------------------------------------------------------------- rendering
_worker: dict[str, Any] = {}


def _init_train(size: int, frames_per_clip: int) -> None:
    from generation.procedural import ProceduralRenderer

    _worker.update(
        renderer=ProceduralRenderer(*TRAIN_SIZE, TRAIN_FPS, TRAIN_SECONDS), size=size, frames=frames_per_clip
    )


def _render_train(item: Item) -> np.ndarray:
    from generation.base import RenderRequest

    renderer, size, k = _worker["renderer"], _worker["size"], _worker["frames"]
    frames = renderer.render_frames(RenderRequest("train", f"c{item.seed}", item.prompt, item.seed, item.creator))
    picks = np.linspace(0, len(frames) - 1, k).round().astype(int)
    # The same resize the model's preprocessing does (open_clip "squash", bicubic).
    return np.stack(
        [np.asarray(Image.fromarray(frames[i]).resize((size, size), Image.Resampling.BICUBIC)) for i in picks]
    )


def render_training_frames(
    items: Sequence[Item], size: int, frames_per_clip: int, workers: int = 2, desc: str = "render"
) -> np.ndarray:
    """(len(items), frames_per_clip, size, size, 3) uint8, spread evenly over each clip."""
    from tqdm import tqdm

    out = np.empty((len(items), frames_per_clip, size, size, 3), np.uint8)
    with mp.get_context("fork").Pool(workers, initializer=_init_train, initargs=(size, frames_per_clip)) as pool:
        done = pool.imap(_render_train, items, chunksize=16)
        for i, frames in enumerate(tqdm(done, total=len(items), desc=desc, mininterval=5)):
            out[i] = frames
    return out


def production_inputs(
    renderer: Any, request: Any, transforms: Sequence[Callable[[Image.Image], Any]], per_second: int = 1
) -> list[Any]:
    """Production's path up to the model, for one clip: render ``request``, encode it to
    H.264, decode the frames the filter samples (:func:`~moderation.frame_filter.read_frames`
    at ``per_second``, what ``scan_video`` reads) and preprocess them with each of
    ``transforms`` (decoded frames do not cross process boundaries; tensors do)."""
    from generation.encoding import encode_mp4
    from moderation.frame_filter import read_frames, to_inputs

    frames = renderer.render_frames(request)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        encode_mp4(frames, path, renderer.fps)
        sampled = read_frames(path, per_second)
        return [to_inputs(sampled, transform) for transform in transforms]


def _init_production(transforms: Sequence[Callable[[Image.Image], Any]], half: bool, per_second: int) -> None:
    from generation.procedural import ProceduralRenderer

    _worker.update(renderer=ProceduralRenderer(), transforms=tuple(transforms), half=half, per_second=per_second)


def _render_production(item: Item) -> list[Any]:
    from generation.base import RenderRequest

    request = RenderRequest("eval", f"c{item.seed}", item.prompt, item.seed, item.creator)
    out = production_inputs(_worker["renderer"], request, _worker["transforms"], _worker["per_second"])
    return [x.half() for x in out] if _worker["half"] else out


def _render_production_many(
    items: Sequence[Item],
    transforms: Sequence[Callable[[Image.Image], Any]],
    workers: int,
    desc: str,
    half: bool = False,
    per_second: int = 1,
) -> list[list[Any]]:
    """Per item, one input tensor per transform, from a single render of the clip."""
    from tqdm import tqdm

    torch_threads = _torch_threads(1)
    try:
        ctx = mp.get_context("fork")
        init = (tuple(transforms), half, per_second)
        with ctx.Pool(workers, initializer=_init_production, initargs=init) as pool:
            done = pool.imap(_render_production, items, chunksize=8)
            return list(tqdm(done, total=len(items), desc=desc, mininterval=5))
    finally:
        _torch_threads(torch_threads)


def render_production_inputs(
    items: Sequence[Item],
    transform: Callable[[Image.Image], Any],
    workers: int = 2,
    desc: str = "render",
    per_second: int = 1,
) -> list[Any]:
    """Per item, the model inputs of the frames the filter samples (``per_second`` plus
    the first and last) from the clip as production renders, encodes and decodes it (a
    tensor of shape (frames, 3, H, W))."""
    return [x[0] for x in _render_production_many(items, (transform,), workers, desc, per_second=per_second)]


def items_digest(items: Sequence[Item], salt: str = "") -> str:
    """12 hex digits that change whenever the items (or ``salt``) do: cache keys."""
    import hashlib

    digest = hashlib.sha256(salt.encode())
    for it in items:
        digest.update(f"{it.seed}\x00{it.prompt}\x00{it.creator}\n".encode())
    return digest.hexdigest()[:12]


def cached_production_inputs(
    items: Sequence[Item],
    transform: Callable[[Image.Image], Any],
    folder: Path | None,
    workers: int = 2,
    desc: str = "render",
    per_second: int = 1,
) -> list[Any]:
    """:func:`render_production_inputs`, kept in ``folder`` (float16) under a digest of
    the items and the preprocessing, so evaluating new weights of the same input size
    renders nothing; a changed split or transform renders afresh."""
    import torch

    if folder is None:
        return render_production_inputs(items, transform, workers, desc, per_second)
    path = inputs_path(items, transform, folder, desc, per_second)
    if path.is_file():
        print(f"inputs from {path}")
        return [x.float() for x in torch.load(path)]
    inputs = render_production_inputs(items, transform, workers, desc, per_second)
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    torch.save([x.half() for x in inputs], partial)
    partial.replace(path)  # whole or absent, for runs that share the folder
    return inputs


def inputs_path(
    items: Sequence[Item], transform: Callable[[Image.Image], Any], folder: Path, desc: str, per_second: int = 1
) -> Path:
    from moderation.frame_filter import INPUTS_VERSION

    salt = f"{INPUTS_VERSION}\x00{transform!r}\x00{per_second}"
    return folder / f"inputs-{desc.replace(' ', '-')}-{len(items)}-{items_digest(items, salt)}.pt"


def prerender_production_inputs(
    items: Sequence[Item],
    transforms: Sequence[Callable[[Image.Image], Any]],
    folder: Path,
    workers: int = 2,
    desc: str = "render",
    per_second: int = 1,
) -> list[Path]:
    """Fill ``folder`` with what :func:`cached_production_inputs` would keep for each of
    ``transforms`` (models of several input sizes), rendering each clip once for all of
    them; transforms already kept are skipped. Returns the files."""
    import torch

    paths = [inputs_path(items, t, folder, desc, per_second) for t in transforms]
    todo = [i for i, path in enumerate(paths) if not path.is_file()]
    if todo:
        rendered = _render_production_many(items, [transforms[i] for i in todo], workers, desc, True, per_second)
        folder.mkdir(parents=True, exist_ok=True)
        for j, i in enumerate(todo):
            partial = paths[i].with_suffix(".part")
            torch.save([x[j] for x in rendered], partial)
            partial.replace(paths[i])  # whole or absent: a reader never sees half a file
    return paths


def _torch_threads(n: int) -> int:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    return before
