"""The CLIP frame safety filter: what a clip *shows*, whatever its prompt said.

A prompt filter reads words; a determined user finds words it does not know
("revolver", "human torch"). The renderer draws the object anyway, so the frames are
checked too, the way the Stable Diffusion safety checker does it:

* frames are sampled at the concept file's ``frames_per_second`` plus the first and
  last (:func:`generation.encoding.sample_frame_indices`) from the encoded video itself;
* an open_clip model embeds them in batches;
* each concept of ``moderation/data/frame_concepts.json`` is a set of text prompts whose
  mean embedding is compared with every frame; the clip's score for the concept is the
  maximum over the clip of the frame scores averaged over ``window_s`` seconds (a single
  frame when 0): the worst stretch of the clip decides, and a one-frame flicker of a
  safe scene does not; with ``softmax`` scoring a frame is judged against the ordinary
  things it could show instead, and with ``compositions`` against captions of each
  concept beside them too (:class:`Compositions`), so a small object next to a large
  subject is not drowned by it;
* a score at or above the concept's ``block`` threshold blocks the clip, at or above
  ``flag`` sends it to human review; *special-care* concepts (a child on screen) lower
  every unsafe threshold by ``adjustment`` for the frames they appear in.

The model is any open_clip architecture: a ``local-dir:`` folder (``open_clip_config.json``
plus weights; the project ships a small one trained on its own renders, see
:mod:`moderation.frame_training`) or a built-in name with a ``pretrained`` weights file,
for example ``ViT-B-32`` with OpenAI's weights copied onto the machine. Thresholds are
calibrated per model (``python -m moderation.frame_training.calibrate``), so the concept
file names the model it was calibrated for and the filter refuses to run a model with
thresholds meant for another.

The clip's embedding (the normalised mean of its frame embeddings) travels on
``clips.published`` for the ranking layer.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import av
import numpy as np
from PIL import Image

from generation.encoding import sample_frame_indices

if TYPE_CHECKING:
    from core.settings import FrameFilterSettings

log = logging.getLogger(__name__)

DATA = Path(__file__).parent / "data"
DEFAULT_MODEL_DIR = DATA / "frame_model"
DEFAULT_CONCEPTS = DATA / "frame_concepts.json"
#: A clip longer than this (frames) is not decoded further: generated clips are seconds long.
MAX_FRAMES = 24 * 60
#: The most frames per second a concept file may ask for (every frame of a 24 fps clip).
MAX_PER_SECOND = 24
#: The longest scoring window a concept file may ask for, in seconds.
MAX_WINDOW_S = 10.0

Action = Literal["publish", "flag", "block"]
_RANK: dict[str, int] = {"publish": 0, "flag": 1, "block": 2}


class FrameFilterError(RuntimeError):
    """The model or the concept file cannot be used (missing, mismatched, malformed)."""


# ---------------------------------------------------------------------------- concepts
@dataclass(frozen=True)
class Concept:
    name: str
    category: str
    prompts: tuple[str, ...]
    flag: float
    block: float | None = None


@dataclass(frozen=True)
class SpecialCare:
    name: str
    prompts: tuple[str, ...]
    threshold: float


#: The fields each template of :class:`Compositions` must use.
TEMPLATE_FIELDS = {
    "pair": ("a", "b"),
    "scene": ("a", "scene"),
    "style": ("a", "style"),
    "scene_style": ("a", "scene", "style"),
}


@dataclass(frozen=True)
class Compositions:
    """Captions of a concept beside ordinary things, as extra atoms of the softmax.

    A small object next to a large subject ("a dog holding a rifle") puts most of a
    frame's softmax mass on the subject: against "a dog" alone, "a rifle" gets little.
    With compositions the frame is also weighed against "a photo of a dog and a
    rifle", "a photo of a rifle in the forest"… (owned by the concept) and against
    "a photo of a dog and a cat", "a photo of a dog in the forest"… (references), the
    captions a model trained on such scenes has seen; a concept's score in a frame is
    the softmax share of every atom it owns. Each concept's ``nouns`` entry names it as
    captions do ("a rifle"); ``others`` are the ordinary subjects; ``scenes`` fill the
    ``scene`` template. Pairs are taken in both orders. A special-care concept with a
    noun (a child, also one of the ordinary subjects) owns every caption showing it, so
    "a photo of a child and a dog" still counts as a child on screen.

    Every noun also appears in each of ``styles`` ("a photo of a dog, noir style"), and
    ``alone`` are ordinary things the generator draws only by themselves ("abstract
    shapes"): never in pairs, but in every scene, style, and scene and style together.
    A noir or neon frame, or one of abstract shapes, then has the captions it was
    trained on to go to instead of lending its mass to a concept."""

    nouns: dict[str, str]
    others: tuple[str, ...]
    scenes: tuple[str, ...] = ()
    pair: str = "a photo of {a} and {b}"
    scene: str = "a photo of {a} in the {scene}"
    styles: tuple[str, ...] = ()
    alone: tuple[str, ...] = ()
    style: str = "a photo of {a}, {style} style"
    scene_style: str = "a photo of {a} in the {scene}, {style} style"

    def atoms(self, names: Sequence[str]) -> list[tuple[str, tuple[int, ...]]]:
        """(caption, owners) of every atom: the indices in ``names`` (concepts, then
        special-care concepts) of the named things the caption shows; none for a
        reference. Names without a noun (special care may have none) own no captions."""
        index = {self.nouns[n]: j for j, n in enumerate(names) if self.nouns.get(n)}
        others = list(self.others)
        nouns = [*[n for n in index if n not in self.others], *others]  # each noun once

        def owners(*parts: str) -> tuple[int, ...]:
            return tuple(sorted({index[p] for p in parts if p in index}))

        out: list[tuple[str, tuple[int, ...]]] = []
        for a in nouns:
            for b in nouns:
                if a != b and (a in others or b in others):  # never two concepts together
                    out.append((self.pair.format(a=a, b=b), owners(a, b)))
            out += [(self.scene.format(a=a, scene=sc), owners(a)) for sc in self.scenes]
        for a in [*nouns, *self.alone]:
            out += [(self.style.format(a=a, style=st), owners(a)) for st in self.styles]
        for a in self.alone:
            out += [(self.scene.format(a=a, scene=sc), ()) for sc in self.scenes]
            out += [(self.scene_style.format(a=a, scene=sc, style=st), ()) for sc in self.scenes for st in self.styles]
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Compositions:
        return cls(
            nouns={str(k): str(v) for k, v in raw["nouns"].items()},
            others=tuple(str(o) for o in raw["others"]),
            scenes=tuple(str(sc) for sc in raw.get("scenes", [])),
            pair=str(raw.get("pair", cls.pair)),
            scene=str(raw.get("scene", cls.scene)),
            styles=tuple(str(st) for st in raw.get("styles", [])),
            alone=tuple(str(a) for a in raw.get("alone", [])),
            style=str(raw.get("style", cls.style)),
            scene_style=str(raw.get("scene_style", cls.scene_style)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "pair": self.pair,
            "scene": self.scene,
            "nouns": dict(self.nouns),
            "others": list(self.others),
            "scenes": list(self.scenes),
            **({} if not self.styles else {"style": self.style, "styles": list(self.styles)}),
            **({} if not self.alone else {"scene_style": self.scene_style, "alone": list(self.alone)}),
        }


@dataclass(frozen=True)
class ConceptSet:
    """The contents of a frame concept file (see ``moderation/data/frame_concepts.json``)."""

    model: str
    concepts: tuple[Concept, ...]
    special_care: tuple[SpecialCare, ...] = ()
    adjustment: float = 0.0
    calibration: dict[str, Any] = field(default_factory=dict)
    about: str = ""
    #: ``cosine``: a concept's score is the cosine itself. ``softmax``: the share of the
    #: concept in a softmax over every concept, special-care concept and reference
    #: (ordinary things a frame may show), at the model's own temperature — a frame is
    #: judged against what else it could be, not against an absolute cosine.
    scoring: Literal["cosine", "softmax"] = "cosine"
    references: tuple[tuple[str, ...], ...] = ()
    #: Frames looked at per second of video, plus the first and last: the thresholds
    #: are the largest scores over that many frames, so they are calibrated for it.
    frames_per_second: int = 1
    #: A concept's score for the clip is the highest mean of its frame scores over any
    #: run of this many seconds of sampled frames (0: the highest single frame). A
    #: frame-long flicker of a safe scene then weighs less than an object in view.
    window_s: float = 0.0
    #: Softmax scoring only: concepts beside ordinary things, as extra atoms.
    compositions: Compositions | None = None
    #: Softmax scoring only: multiplies the model's own temperature (logit scale).
    temperature_scale: float = 1.0

    def __post_init__(self) -> None:
        # Here rather than in from_file: calibrate sets these from its command line.
        rate = self.frames_per_second
        if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= MAX_PER_SECOND:
            raise FrameFilterError(f"frames_per_second must be a whole number from 1 to {MAX_PER_SECOND}, not {rate!r}")
        if not 0.0 <= self.window_s <= MAX_WINDOW_S:  # NaN fails too
            raise FrameFilterError(f"window_s must be 0 to {MAX_WINDOW_S:g} seconds, not {self.window_s!r}")
        if not 0.01 <= self.temperature_scale <= 100.0:  # NaN fails too
            raise FrameFilterError(f"temperature_scale must be 0.01 to 100, not {self.temperature_scale!r}")
        if self.scoring != "softmax" and (self.compositions is not None or self.temperature_scale != 1.0):
            raise FrameFilterError("compositions and temperature_scale need scoring 'softmax'")
        if self.compositions is not None:
            missing = [c.name for c in self.concepts if not self.compositions.nouns.get(c.name)]
            if missing:
                raise FrameFilterError(f"compositions name no noun for concepts {missing}")
            for name, fields in TEMPLATE_FIELDS.items():
                template = getattr(self.compositions, name)
                try:
                    template.format(**dict.fromkeys(fields, ""))
                except (KeyError, IndexError, ValueError) as exc:
                    raise FrameFilterError(f"composition template {template!r} is unusable: {exc!r}") from exc

    def window_width(self, frames: int) -> int:
        """Frames in a window when a clip has ``frames`` sampled frames."""
        return min(self.window_frames, frames)

    @property
    def window_frames(self) -> int:
        """Sampled frames in a window (1: every frame on its own)."""
        return max(1, round(self.window_s * self.frames_per_second))

    @classmethod
    def from_file(cls, path: Path) -> ConceptSet:
        try:
            raw = json.loads(Path(path).read_text())
            concepts = tuple(
                Concept(
                    name=c["name"],
                    category=c["category"],
                    prompts=tuple(c["prompts"]),
                    flag=float(c["flag"]),
                    block=None if c.get("block") is None else float(c["block"]),
                )
                for c in raw["concepts"]
            )
            care = tuple(
                SpecialCare(s["name"], tuple(s["prompts"]), float(s["threshold"])) for s in raw.get("special_care", [])
            )
            result = cls(
                raw["model"],
                concepts,
                care,
                float(raw.get("adjustment", 0.0)),
                raw.get("calibration", {}),
                raw.get("about", ""),
                raw.get("scoring", "cosine"),
                tuple(tuple(r) for r in raw.get("references", [])),
                raw.get("frames_per_second", 1),
                float(raw.get("window_s", 0.0)),
                None if raw.get("compositions") is None else Compositions.from_json(raw["compositions"]),
                float(raw.get("temperature_scale", 1.0)),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FrameFilterError(f"frame concept file {path} is unusable: {exc!r}") from exc
        except FrameFilterError as exc:
            raise FrameFilterError(f"{path}: {exc}") from exc
        for c in result.concepts:
            if not c.prompts:
                raise FrameFilterError(f"{path}: concept {c.name!r} has no prompts")
            if c.block is not None and c.block < c.flag:
                raise FrameFilterError(f"{path}: concept {c.name!r} blocks below its flag threshold")
        if len({c.name for c in result.concepts}) != len(result.concepts):
            raise FrameFilterError(f"{path}: concept names repeat")
        if result.scoring not in ("cosine", "softmax"):
            raise FrameFilterError(f"{path}: scoring must be cosine or softmax, not {result.scoring!r}")
        if any(not r for r in result.references):
            raise FrameFilterError(f"{path}: an empty reference")
        return result

    def to_json(self) -> dict[str, Any]:
        return {
            "about": self.about,
            "model": self.model,
            "adjustment": self.adjustment,
            "concepts": [
                {"name": c.name, "category": c.category, "prompts": list(c.prompts), "flag": c.flag, "block": c.block}
                for c in self.concepts
            ],
            "special_care": [
                {"name": s.name, "prompts": list(s.prompts), "threshold": s.threshold} for s in self.special_care
            ],
            "scoring": self.scoring,
            "references": [list(r) for r in self.references],
            "frames_per_second": self.frames_per_second,
            "window_s": self.window_s,
            **({} if self.compositions is None else {"compositions": self.compositions.to_json()}),
            **({} if self.temperature_scale == 1.0 else {"temperature_scale": self.temperature_scale}),
            "calibration": self.calibration,
        }


# ---------------------------------------------------------------------------- frames
#: A frame as the filter takes it: a decoded video frame (PyAV), an image, or RGB pixels
#: (H, W, 3) uint8.
Frame = av.VideoFrame | Image.Image | np.ndarray


def read_frames(path: Path, per_second: int = 1) -> list[av.VideoFrame]:
    """The frames the filter looks at, decoded from the video file itself: at least
    ``per_second`` per second plus the first and last frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        decoded: list[av.VideoFrame] = []
        for frame in container.decode(stream):
            decoded.append(frame)
            if len(decoded) > MAX_FRAMES:
                raise FrameFilterError(f"{path}: more than {MAX_FRAMES} frames; not a generated clip")
        if not decoded:
            raise FrameFilterError(f"{path}: no frames decoded")
        return sample_frames(decoded, float(rate) if rate else None, per_second)


def sample_frames(decoded: Sequence[av.VideoFrame], fps: float | None, per_second: int = 1) -> list[av.VideoFrame]:
    """The frames the filter looks at among a clip's decoded frames (PyAV ``VideoFrame``):
    at least ``per_second`` per second plus the first and last. The moderation worker
    hands over the frames its clip checks decoded, so the file is decoded once."""
    if not decoded:
        raise FrameFilterError("no frames decoded")
    rate = max(1, round(fps)) if fps else 1
    return [decoded[i] for i in sample_frame_indices(len(decoded), rate, per_second)]


def as_image(frame: Frame) -> Image.Image:
    """A frame as an RGB PIL image."""
    if isinstance(frame, av.VideoFrame):
        return frame.to_image()
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    return Image.fromarray(np.asarray(frame, np.uint8))


#: Bumped when :func:`to_inputs` changes what the model sees (cached inputs go stale).
INPUTS_VERSION = "swscale-1"


def _squash_size(step: Any) -> tuple[int, int] | None:
    """(height, width) when ``step`` resizes to a fixed size, ignoring the aspect ratio
    (open_clip's "squash" mode, what the shipped model uses); None otherwise."""
    from torchvision import transforms as T

    if isinstance(step, T.Resize) and isinstance(step.size, (tuple, list)) and len(step.size) == 2:
        return int(step.size[0]), int(step.size[1])
    return None


def to_inputs(frames: Sequence[Frame], preprocess: Any) -> Any:
    """The model's input batch (N, 3, H, W) from ``frames`` and ``preprocess`` (the
    model's open_clip transforms).

    Decoded video frames, for a model whose preprocessing starts by squashing the frame
    to a fixed size, are scaled by FFmpeg's swscale (bicubic) straight from YUV to RGB at
    the model's size, then go through the rest of ``preprocess`` as a batch. Through PIL
    that was a full-size RGB conversion and a PIL resize per frame: 5 ms a clip, a third
    of what the model's forward pass costs, for pixels that differ by about one 255th
    on average (thresholds are calibrated, and the filter evaluated, on this path).
    Anything else (images, pixels, other transforms) goes through PIL and ``preprocess``
    frame by frame, as open_clip does."""
    import torch
    from open_clip.transform import MaybeConvertMode, MaybeToTensor
    from torchvision import transforms as T

    if not frames:
        raise FrameFilterError("no frames")
    steps = list(getattr(preprocess, "transforms", ()))
    size = _squash_size(steps[0]) if steps else None
    video = [f for f in frames if isinstance(f, av.VideoFrame)]
    if size is None or len(video) < len(frames):
        return torch.stack([preprocess(as_image(f)) for f in frames])
    height, width = size
    pixels = np.stack(
        [f.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray() for f in video]
    )
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    for step in steps[1:]:
        if isinstance(step, MaybeConvertMode):
            continue  # RGB already
        x = x.float().div_(255.0) if isinstance(step, (MaybeToTensor, T.ToTensor)) else step(x)
    return x


# ---------------------------------------------------------------------------- model
@dataclass
class ClipModel:
    """An open_clip model with its preprocessing and tokenizer, in eval mode."""

    name: str
    model: Any
    preprocess: Any
    tokenizer: Any
    device: str
    #: The image tower inference runs (:func:`inference_tower`); None: ``model.encode_image``.
    image_tower: Any = None
    #: Held around every forward pass: torch modules are not re-entrant across threads.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised text embeddings (N, D), one row per text."""
        import torch

        with self.lock, torch.no_grad():
            tokens = self.tokenizer(list(texts)).to(self.device)
            out = self.model.encode_text(tokens).float()
            return torch.nn.functional.normalize(out, dim=-1).cpu().numpy()

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[-1]) if hasattr(self.model, "text_projection") else -1

    def encode_image(self, x: Any) -> Any:
        """Unnormalised image features of preprocessed inputs (N, 3, H, W)."""
        return self.model.encode_image(x) if self.image_tower is None else self.image_tower(x)


def inference_tower(visual: Any, example: Any, tolerance: float = 1e-3) -> Any:
    """``visual`` (an open_clip image tower in eval mode) with every convolution's batch
    norm folded into the convolution's weights (``torch.fx``), or ``visual`` itself when
    there is nothing to fold or the tower cannot be traced. ModifiedResNet runs a batch
    norm after each of its convolutions: folded, the forward pass skips those passes over
    memory. The folded tower must agree with ``visual`` on ``example`` (inputs of the
    model's size) to ``tolerance`` (the largest difference of any feature), or it is not
    used."""
    import copy

    import torch
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in visual.modules()):
        return visual
    try:
        folded = fuse(copy.deepcopy(visual))
        with torch.no_grad():
            gap = float((folded(example) - visual(example)).abs().max())
    except Exception as exc:  # noqa: BLE001 — not traceable: the plain tower is correct, only slower
        log.warning("image tower not folded (%s: %s); running it as it is", type(exc).__name__, exc)
        return visual
    if not gap <= tolerance:
        log.warning("folded image tower differs by %.2g (> %.2g); running the plain one", gap, tolerance)
        return visual
    return folded


def _digest(path: Path) -> str:
    """The first 12 hex digits of the weights' sha256: thresholds belong to exact weights."""
    from generation.encoding import sha256_file

    return sha256_file(path)[:12]


def load_clip(
    model: str | Path, pretrained: str | Path | None = None, device: str = "cpu", optimize: bool = True
) -> ClipModel:
    """``model``: a folder with ``open_clip_config.json`` and weights, or an open_clip
    architecture name (``ViT-B-32``) with ``pretrained`` a local weights file. Nothing is
    downloaded: a name without a file is refused. ``optimize``: embed images with
    :func:`inference_tower` (batch norms folded away)."""
    import open_clip
    import torch

    path = Path(model)
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise FrameFilterError(f"{path} has no open_clip_config.json")
        checkpoints = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) + sorted(path.glob("*.pth"))
        if not checkpoints:
            raise FrameFilterError(f"{path} has no weights (*.safetensors, *.bin or *.pth)")
        name, weights = f"local-dir:{path}", None
        label = f"{path.name}@{_digest(checkpoints[0])}"
    else:
        if pretrained is None or not Path(pretrained).is_file():
            raise FrameFilterError(
                f"CLIP model {model!r} needs a local weights file "
                f"(MODERATION__FRAME_FILTER__PRETRAINED); got {pretrained!r}"
            )
        name, weights, label = str(model), str(pretrained), f"{model}@{_digest(Path(pretrained))}"
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights, device=device)
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:
        raise FrameFilterError(f"cannot load CLIP model {model!r}: {exc}") from exc
    net.eval()
    with torch.no_grad():
        for p in net.parameters():
            p.requires_grad_(False)
    tower = None
    if optimize and hasattr(net, "visual"):
        example = torch.stack([preprocess(Image.new("RGB", (96, 160), (90, 140, 200)))] * 2).to(device)
        example = example + 0.1 * torch.randn(example.shape, generator=torch.Generator().manual_seed(0)).to(device)
        tower = inference_tower(net.visual, example)
    return ClipModel(label, net, preprocess, tokenizer, device, tower)


# ---------------------------------------------------------------------------- verdicts
@dataclass(frozen=True)
class FrameVerdict:
    action: Action
    #: Concept name → the highest cosine over the frames.
    scores: dict[str, float]
    #: Concepts at or above a threshold, as "name (category) 0.312 ≥ flag 0.280 at frame 2".
    reasons: tuple[str, ...]
    #: The clip's embedding: the normalised mean of its frame embeddings.
    embedding: tuple[float, ...]
    frames: int
    model: str

    @property
    def detail(self) -> str:
        if not self.reasons:
            top = max(self.scores.items(), key=lambda kv: kv[1], default=("none", 0.0))
            return f"{self.frames} frames clear; highest {top[0]} {top[1]:.3f} ({self.model})"
        return f"{self.action}: " + "; ".join(self.reasons) + f" ({self.frames} frames, {self.model})"


class FrameFilter:
    """Scores clips against a :class:`ConceptSet` with a :class:`ClipModel`."""

    def __init__(self, clip: ClipModel, concepts: ConceptSet, batch_size: int = 32, check_model: bool = True) -> None:
        if check_model and concepts.model != clip.name:
            raise FrameFilterError(
                f"frame concepts were calibrated for model {concepts.model!r}, not {clip.name!r}: "
                "recalibrate with `python -m moderation.frame_training.calibrate`"
            )
        self.clip = clip
        self.concepts = concepts
        self.batch_size = batch_size
        self._lock = clip.lock  # one per model: whoever else uses it waits too
        groups = [c.prompts for c in concepts.concepts] + [s.prompts for s in concepts.special_care]
        self._pool = self.embed_texts_mean([*groups, *concepts.references])
        self._concept_vecs = self._pool[: len(concepts.concepts)]
        self._care_vecs = self._pool[len(concepts.concepts) : len(groups)]
        # Which atoms of the pool each concept and special-care concept owns: its own
        # prompts, and the compositions that show it.
        owners: list[tuple[int, ...]] = [(j,) for j in range(len(groups))]
        owners += [()] * len(concepts.references)
        if concepts.compositions is not None:
            names = [c.name for c in concepts.concepts] + [s.name for s in concepts.special_care]
            atoms = concepts.compositions.atoms(names)
            texts = [t for t, _ in atoms]
            vecs = [self.embed_texts(texts[i : i + 512]) for i in range(0, len(texts), 512)]
            self._pool = np.concatenate([self._pool, *vecs]).astype(np.float32)
            owners += [o for _, o in atoms]
        self._owned = np.zeros((len(owners), len(groups)), np.float32)
        for i, owned in enumerate(owners):
            self._owned[i, list(owned)] = 1.0
        scale = float(clip.model.logit_scale.exp().item()) if hasattr(clip.model, "logit_scale") else 100.0
        self._temperature = scale * concepts.temperature_scale

    def with_thresholds(self, concepts: ConceptSet) -> FrameFilter:
        """This filter judging by the thresholds of ``concepts``, which must differ from
        its own only in thresholds (and calibration notes): the text embeddings are
        shared, so refitting thresholds does not embed thousands of captions again."""
        mine, theirs = self.concepts, concepts
        same = (
            [(c.name, c.category, c.prompts) for c in mine.concepts]
            == [(c.name, c.category, c.prompts) for c in theirs.concepts]
            and [(s.name, s.prompts) for s in mine.special_care] == [(s.name, s.prompts) for s in theirs.special_care]
            and dataclasses.replace(mine, concepts=(), special_care=(), calibration={}, model="", about="")
            == dataclasses.replace(theirs, concepts=(), special_care=(), calibration={}, model="", about="")
        )
        if not same:
            raise FrameFilterError("with_thresholds: the concept files differ in more than thresholds")
        other = copy.copy(self)
        other.concepts = concepts
        return other

    # -- embeddings
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.clip.embed_texts(texts)

    def embed_texts_mean(self, groups: Sequence[Sequence[str]]) -> np.ndarray:
        """One normalised vector per group: the mean of its prompts' embeddings (prompt ensembling)."""
        flat = [t for g in groups for t in g]
        vecs = self.embed_texts(flat)
        out, i = [], 0
        for g in groups:
            v = vecs[i : i + len(g)].mean(axis=0)
            out.append(v / max(float(np.linalg.norm(v)), 1e-8))
            i += len(g)
        return np.asarray(out, np.float32)

    def embed_inputs(self, batch: Any) -> np.ndarray:
        """Normalised image embeddings of already preprocessed inputs (N, 3, H, W), in batches."""
        import torch

        outs = []
        with self._lock, torch.no_grad():
            for start in range(0, len(batch), self.batch_size):
                x = batch[start : start + self.batch_size].to(self.clip.device)
                y = self.clip.encode_image(x).float()
                outs.append(torch.nn.functional.normalize(y, dim=-1).cpu())
        return torch.cat(outs).numpy() if outs else np.zeros((0, self._concept_vecs.shape[1]), np.float32)

    def embed_frames(self, frames: Sequence[Frame]) -> np.ndarray:
        """Normalised embeddings (F, D) of decoded video frames or images."""
        return self.embed_inputs(to_inputs(frames, self.clip.preprocess))

    # -- decisions
    def frame_scores(self, frame_embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per frame: the score of every concept (F, C) and of every special-care
        concept (F, S), by the concept file's scoring."""
        sims = frame_embeddings @ self._pool.T
        if self.concepts.scoring == "softmax":
            z = self._temperature * sims
            z = np.exp(z - z.max(axis=1, keepdims=True))
            sims = z / z.sum(axis=1, keepdims=True)
            shares = (sims @ self._owned).astype(np.float32)
            return shares[:, : len(self._concept_vecs)], shares[:, len(self._concept_vecs) :]
        c, s = len(self._concept_vecs), len(self._care_vecs)
        return sims[:, :c].astype(np.float32), sims[:, c : c + s].astype(np.float32)

    def lowering(self, care: np.ndarray) -> np.ndarray:
        """Per frame, how much special care lowers every threshold (0 or the adjustment)."""
        if care.shape[1] == 0:
            return np.zeros(len(care), np.float32)
        thresholds = np.array([s.threshold for s in self.concepts.special_care], np.float32)
        return np.where((care >= thresholds).any(axis=1), self.concepts.adjustment, 0.0).astype(np.float32)

    def clip_scores(self, frame_embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per concept, over the best window of frames (:attr:`ConceptSet.window_frames`
        in a row): the score the thresholds apply to, special care included (C,); the
        score without it (C,); where that window starts (C,); whether special care
        lowered the thresholds in it (C,)."""
        sims, care = self.frame_scores(frame_embeddings)
        lowered = self.lowering(care)
        width = self.concepts.window_width(len(sims))
        windowed, cared = _window_means(sims + lowered[:, None], width), _window_means(lowered, width)
        start = windowed.argmax(axis=0)
        best = windowed[start, np.arange(sims.shape[1])]
        return best, best - cared[start], start, cared[start] > 0

    def judge(self, frame_embeddings: np.ndarray) -> FrameVerdict:
        """The verdict for one clip from its frames' normalised embeddings (F, D)."""
        if len(frame_embeddings) == 0:
            raise FrameFilterError("no frames to judge")
        margin, raw, start, cared = self.clip_scores(frame_embeddings)
        width = self.concepts.window_width(len(frame_embeddings))
        action: Action = "publish"
        reasons: list[str] = []
        scores: dict[str, float] = {}
        for j, c in enumerate(self.concepts.concepts):
            scores[c.name] = round(float(raw[j]), 4)
            first = int(start[j])
            where = f"at frame {first}" if width == 1 else f"over frames {first}–{first + width - 1}"
            for kind, threshold in (("block", c.block), ("flag", c.flag)):
                if threshold is not None and margin[j] >= threshold:
                    note = " with special care" if cared[j] else ""
                    reasons.append(f"{c.name} ({c.category}) {raw[j]:.3f} ≥ {kind} {threshold:.3f}{note} {where}")
                    if _RANK[kind] > _RANK[action]:
                        action = kind  # type: ignore[assignment]
                    break
        mean = frame_embeddings.mean(axis=0)
        mean = mean / max(float(np.linalg.norm(mean)), 1e-8)
        return FrameVerdict(
            action=action,
            scores=scores,
            reasons=tuple(reasons),
            embedding=tuple(round(float(x), 6) for x in mean),
            frames=len(frame_embeddings),
            model=self.clip.name,
        )

    def sample(self, decoded: Sequence[av.VideoFrame], fps: float | None) -> list[av.VideoFrame]:
        """The frames to judge among a clip's decoded frames, at the concept file's rate."""
        return sample_frames(decoded, fps, self.concepts.frames_per_second)

    def scan_frames(self, frames: Sequence[Frame]) -> FrameVerdict:
        return self.judge(self.embed_frames(frames))

    def scan_video(self, path: Path) -> FrameVerdict:
        return self.scan_frames(read_frames(Path(path), self.concepts.frames_per_second))


def _window_means(x: np.ndarray, width: int) -> np.ndarray:
    """Means of ``width`` consecutive rows of ``x`` (one row per window start)."""
    if width <= 1:
        return x
    total = np.cumsum(x, axis=0, dtype=np.float64)
    padded = np.concatenate([np.zeros((1, *x.shape[1:])), total])
    return ((padded[width:] - padded[:-width]) / width).astype(np.float32)


def _clip_key(model: str | Path | None, pretrained: str | Path | None) -> tuple[str, str | None]:
    """The model and weights as the caches below key them (the shipped model by default)."""
    return str(model or DEFAULT_MODEL_DIR), None if pretrained is None else str(pretrained)


@lru_cache(maxsize=4)
def _cached_clip(model: str, pretrained: str | None, device: str, optimize: bool) -> ClipModel:
    return load_clip(model, pretrained, device, optimize)


@lru_cache(maxsize=4)
def _cached(
    model: str, pretrained: str | None, concepts: str, device: str, batch_size: int, optimize: bool
) -> FrameFilter:
    clip = _cached_clip(model, pretrained, device, optimize)
    return FrameFilter(clip, ConceptSet.from_file(Path(concepts)), batch_size=batch_size)


def frame_filter_for(options: FrameFilterSettings) -> FrameFilter:
    """The filter the settings ask for (``MODERATION__FRAME_FILTER__*``)."""
    return load_frame_filter(
        options.model, options.pretrained, options.concepts, options.device, options.batch_size, options.optimize
    )


def clip_model_for(options: FrameFilterSettings) -> ClipModel:
    """The filter's model alone, shared with the filter in this process, for what only
    needs its text tower (steering the feed): the concept file's thousands of captions
    are embedded only by whoever judges frames."""
    return _cached_clip(*_clip_key(options.model, options.pretrained), options.device, options.optimize)


def load_frame_filter(
    model: str | Path | None = None,
    pretrained: str | Path | None = None,
    concepts: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    optimize: bool = True,
) -> FrameFilter:
    """The filter for these settings, loaded once per process (models are costly to build)."""
    return _cached(
        *_clip_key(model, pretrained),
        str(concepts or DEFAULT_CONCEPTS),
        device,
        batch_size,
        optimize,
    )
