"""The embedded default generation backend: a procedural CPU renderer.

It exists so the whole platform works end to end with no GPU and no model
weights: prompts become short, recognisable, deterministic cartoon clips.
Everything random is drawn from a numpy Generator seeded from
sha256(prompt, seed), so a clip can always be re-rendered bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from core.handles import strip_mentions
from generation.base import GenerationError, RenderedClip, RenderRequest
from generation.cameo import likeness_sprite, load_likeness
from generation.color import RGBA, darker, lighter, mix, parse_hex
from generation.encoding import package_clip
from generation.motion import CROSSING_TRAJECTORIES, Pose, compute_pose
from generation.scenery import (
    Backdrop,
    ParticleContext,
    ParticleLayer,
    build_backdrop,
    build_particles,
    resolve_style,
)
from generation.sprites import render_sprite
from generation.styles import Grade
from generation.vocabulary import PromptAnalysis, Vocabulary, default_vocabulary
from generation.watermark import apply_watermark

GENERATOR_NAME = "procedural"
# Bumped when the same prompt and seed render differently (vocabulary 2: new subjects, styles, unsafe objects).
GENERATOR_VERSION = "procedural-2"

#: Beyond this many sprites a 288 px wide frame turns into noise.
MAX_ACTORS = 6
#: People a clip can cast (cameos), and their portrait's width as a fraction of the frame.
MAX_CAMEOS = 2
CAMEO_SIZE = 0.34
#: Aspect ratio tolerance around 9:16 (so 480x854-style sizes are accepted).
ASPECT_TOLERANCE = 0.02
MIN_WIDTH, MAX_WIDTH = 144, 1080
MIN_FPS, MAX_FPS = 12, 24
MIN_DURATION_S, MAX_DURATION_S = 2.0, 6.0

_LIGHT_OUTLINE: RGBA = (246, 244, 255, 240)
_DARK_OUTLINE: RGBA = (28, 26, 44, 235)


def seed_entropy(prompt: str, seed: int) -> int:
    """128 bits of sha256(prompt, seed): stable across processes and Python versions, unlike hash()."""
    digest = hashlib.sha256(f"{prompt}\x1f{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


def _hex(c: RGBA) -> str:
    return "#{:02x}{:02x}{:02x}".format(*c[:3])


@dataclass
class _Actor:
    """One sprite instance with its whole animation resolved to per-frame arrays."""

    sprite: Image.Image  # RGBa (premultiplied) so resizes and rotations don't fringe
    mirrored: Image.Image
    x: np.ndarray
    cy: np.ndarray
    angle: np.ndarray
    sx: np.ndarray
    sy: np.ndarray
    flip: np.ndarray
    shadow: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None  # x, y, rx, alpha
    depth: int


def _validate_dimensions(width: int, height: int, fps: int, duration_s: float) -> None:
    for name, value in (("width", width), ("height", height), ("fps", fps)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if not isinstance(duration_s, (int, float)) or isinstance(duration_s, bool) or not math.isfinite(duration_s):
        raise ValueError(f"duration_s must be a number of seconds, got {duration_s!r}")
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p H.264, got {width}x{height}")
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"width must be between {MIN_WIDTH} and {MAX_WIDTH} pixels, got {width}")
    if height <= width or abs(width / height - 9 / 16) > ASPECT_TOLERANCE:
        raise ValueError(f"clips are vertical 9:16; {width}x{height} has aspect {width / height:.3f}, expected ~0.5625")
    if not MIN_FPS <= fps <= MAX_FPS:
        raise ValueError(f"fps must be between {MIN_FPS} and {MAX_FPS}, got {fps}")
    if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
        raise ValueError(
            f"duration_s must be between {MIN_DURATION_S:g} and {MAX_DURATION_S:g} seconds, got {duration_s}"
        )


class ProceduralRenderer:
    """Implements :class:`generation.base.Generator` on the CPU with numpy + Pillow + PyAV."""

    name = GENERATOR_NAME
    version = GENERATOR_VERSION

    def __init__(
        self,
        width: int = 288,
        height: int = 512,
        fps: int = 12,
        duration_s: float = 3.0,
        vocabulary_path: Path | None = None,
    ) -> None:
        _validate_dimensions(width, height, fps, duration_s)
        self.width = width
        self.height = height
        self.fps = fps
        self.frame_count = max(1, round(fps * float(duration_s)))
        #: The real duration once rounded to whole frames; this is what the file contains.
        self.duration_s = self.frame_count / fps
        self.vocabulary: Vocabulary = (
            Vocabulary.from_path(Path(vocabulary_path)) if vocabulary_path is not None else default_vocabulary()
        )

    # ------------------------------------------------------------------ public API
    def analyse(self, prompt: str) -> PromptAnalysis:
        return self.vocabulary.parse(strip_mentions(prompt))

    def render_frames(self, request: RenderRequest) -> np.ndarray:
        """All frames as (frame_count, height, width, 3) uint8; a pure function of prompt, seed and creator."""
        frames, _ = self._render(request)
        return frames

    def generate(self, requests: Sequence[RenderRequest], out_dirs: Sequence[Path]) -> list[RenderedClip]:
        if len(requests) != len(out_dirs):
            raise ValueError(f"got {len(requests)} requests but {len(out_dirs)} output directories")
        clips: list[RenderedClip] = []
        for request, out_dir in zip(requests, out_dirs, strict=True):
            clip_id = getattr(request, "clip_id", "<unknown>")
            try:
                clips.append(self._generate_one(request, Path(out_dir)))
            except GenerationError:
                raise
            except Exception as exc:
                raise GenerationError(f"procedural render failed for clip_id={clip_id!r}: {exc}") from exc
        return clips

    # ------------------------------------------------------------------ generate
    def _check_request(self, request: RenderRequest) -> None:
        if not isinstance(request.clip_id, str) or not request.clip_id:
            raise GenerationError(f"clip_id must be a non-empty string, got {request.clip_id!r}")
        if not isinstance(request.prompt, str):
            raise GenerationError(f"clip_id={request.clip_id!r}: prompt must be a string")
        if not isinstance(request.seed, int) or isinstance(request.seed, bool):
            raise GenerationError(f"clip_id={request.clip_id!r}: seed must be an integer, got {request.seed!r}")
        if not isinstance(request.creator_handle, str):
            raise GenerationError(f"clip_id={request.clip_id!r}: creator_handle must be a string")

    def _generate_one(self, request: RenderRequest, out_dir: Path) -> RenderedClip:
        self._check_request(request)
        frames, analysis = self._render(request)
        return package_clip(
            frames,
            out_dir,
            self.fps,
            clip_id=request.clip_id,
            generator=self.name,
            generator_version=self.version,
            concepts=analysis.concepts,
        )

    # ------------------------------------------------------------------ rendering
    def sketch(self, request: RenderRequest) -> np.ndarray:
        """The clip's first frame without the watermark: the scene, subjects and cast of the
        prompt, for an image-to-video model to animate (see generation.diffusers_backend)."""
        self._check_request(request)
        frames, _ = self._render(request, watermark=False)
        return frames[0]

    def _render(self, request: RenderRequest, watermark: bool = True) -> tuple[np.ndarray, PromptAnalysis]:
        analysis = self.vocabulary.parse(strip_mentions(request.prompt))
        cast = [(c.handle, load_likeness(c)) for c in request.cameos[:MAX_CAMEOS]]
        root = np.random.default_rng(seed_entropy(request.prompt, request.seed))
        # Independent streams per concern: adding a particle layer must not reshuffle sprite placement.
        palette_rng, scene_rng, particle_rng, actor_rng = root.spawn(4)

        palette = self._palette(analysis, palette_rng)
        scene = self._scene_spec(analysis, palette)
        time = self.vocabulary.get("times", analysis.time).spec if analysis.time else None
        style = resolve_style(scene, time)
        backdrop = build_backdrop(style, self.width, self.height, scene_rng)
        particles = build_particles(
            style.particles,
            ParticleContext(
                width=self.width,
                height=self.height,
                frame_count=self.frame_count,
                duration_s=self.duration_s,
                rng=particle_rng,
                backdrop=backdrop,
                palette=tuple(palette),
                tint=style.tint,
            ),
        )
        actors = self._actors(analysis, backdrop, palette, actor_rng, cast)
        grade = None
        if analysis.style is not None:
            grade = Grade(self.vocabulary.get("styles", analysis.style).spec, self.width, self.height)
        # Graded before the watermark so the creator credit stays legible in every style.
        frames = self._compose(backdrop, particles, actors, grade)
        if watermark:
            apply_watermark(frames, request.creator_handle)
        return frames, analysis

    def _palette(self, analysis: PromptAnalysis, rng: np.random.Generator) -> list[RGBA]:
        """Seeded palette for abstract clips; a colour the prompt names but no subject claims takes over."""
        palettes = self.vocabulary.palettes
        palette = list(palettes[int(rng.integers(len(palettes)))])
        if analysis.free_colors:
            named = [parse_hex(self.vocabulary.get("colors", key).spec["rgb"]) for key in analysis.free_colors]
            base = named[0]
            palette = [
                *named,
                lighter(base, 0.35),
                darker(base, 0.3),
                mix(base, palette[0], 0.5),
                *palette[len(named) :],
            ]
        return palette

    def _scene_spec(self, analysis: PromptAnalysis, palette: Sequence[RGBA]) -> Mapping[str, Any]:
        key = analysis.scene
        if key is None and analysis.time is not None:
            key = self.vocabulary.defaults["scene_for_time"]
        if key is not None:
            return self.vocabulary.get("scenes", key).spec
        top, middle, bottom = darker(palette[0], 0.45), mix(palette[0], palette[1], 0.5), lighter(palette[1], 0.15)
        return {
            "sky": [_hex(top), _hex(middle), _hex(bottom)],
            "horizon": 1.0,
            "ground": None,
            "outdoor": False,
            "particles": [
                {"kind": "bokeh", "colors": "palette", "count": 12},
                {"kind": "sparkles", "count": 14, "layer": "back"},
            ],
        }

    def _actors(
        self,
        analysis: PromptAnalysis,
        backdrop: Backdrop,
        palette: Sequence[RGBA],
        rng: np.random.Generator,
        cast: Sequence[tuple[str, Image.Image]] = (),
    ) -> list[_Actor]:
        vocab = self.vocabulary
        W, H = self.width, self.height
        outline = _LIGHT_OUTLINE if backdrop.luma < 0.42 else _DARK_OUTLINE
        outline_px = max(1, round(W / 150))

        # (sprite spec or likeness, size fraction, tint, motion key, facing)
        wanted: list[tuple[Mapping[str, Any] | tuple[str, Image.Image], float, RGBA | None, str, str | None]] = []
        # The people cast come first: they are the stars, and never dropped by MAX_ACTORS.
        cameo_motion = analysis.motions[0] if analysis.motions else vocab.defaults["cameo_motion"]
        for handle, image in cast:
            wanted.append(((handle, image), CAMEO_SIZE, None, cameo_motion, None))
        for mention in analysis.subjects:
            subject = vocab.get("subjects", mention.key).spec
            tint = parse_hex(vocab.get("colors", mention.color).spec["rgb"]) if mention.color else None
            motion = mention.motion or subject.get("default_motion") or vocab.defaults["motion"]
            if (
                mention.motion is None
                and backdrop.ground_px is None
                and vocab.get("motions", motion).spec.get("grounded")
            ):
                # Nothing to stand on (space, open sky): an unspecified pose floats instead of hovering on a shadow.
                motion = vocab.defaults["airborne_motion"]
            variants = [parse_hex(c) for c in subject.get("variants", [])]
            for copy in range(mention.count):
                # A crowd of identical clones looks like a rendering bug; later copies take the data's variants.
                copy_tint = tint
                if tint is None and copy > 0 and variants:
                    copy_tint = variants[(copy - 1) % len(variants)]
                wanted.append((subject["sprite"], float(subject["size"]), copy_tint, motion, subject.get("facing")))
        if len(wanted) == len(cast):
            count = int(rng.integers(3, 6)) - len(cast)
            motion = analysis.motions[0] if analysis.motions else str(rng.choice(vocab.abstract_motions))
            for i in range(count):
                shape = vocab.abstract_sprites[int(rng.integers(len(vocab.abstract_sprites)))]
                wanted.append((shape, float(rng.uniform(0.2, 0.32)), palette[i % len(palette)], motion, None))
        wanted = wanted[:MAX_ACTORS]

        n = len(wanted)
        crowd = 1.0 if n == 1 else 0.86 if n == 2 else 0.74 if n == 3 else 0.64
        baseline = backdrop.ground_px if backdrop.ground_px is not None else 0.7 * H
        actors: list[_Actor] = []
        for i, (sprite_spec, size, tint, motion_key, facing) in enumerate(wanted):
            motion = vocab.get("motions", motion_key).spec
            grounded = bool(motion.get("grounded", False))
            depth = (i % 2) if (grounded and n > 1) else 0
            size_px = size * W * crowd * (0.88 if depth else 1.0)
            if isinstance(sprite_spec, tuple):
                sprite = likeness_sprite(sprite_spec[1], round(size_px), sprite_spec[0])
            else:
                sprite = render_sprite(sprite_spec, round(size_px), tint=tint, outline=outline, outline_px=outline_px)
            w0, h0 = sprite.size

            wraps = motion["trajectory"] in CROSSING_TRAJECTORIES
            phase = (i / n + float(rng.uniform(0, 0.4 / n))) if wraps else float(rng.random())
            pose: Pose = compute_pose(
                motion["trajectory"], self.frame_count, self.duration_s, phase, motion.get("params", {})
            )
            ax = W * (i + 0.5) / n + float(rng.uniform(-0.03, 0.03)) * W
            if pose.wrap_x is not None:
                x = -w0 / 2 + pose.wrap_x * (W + w0)
            else:
                x = ax + pose.dx * W

            if grounded:
                bottom = baseline - depth * 0.035 * H + pose.dy * W
                cy = bottom - h0 * pose.sy / 2
            else:
                lo, hi = motion.get("band", [0.3, 0.65])
                ay = H * (lo + (hi - lo) * ((i + float(rng.uniform(0.25, 0.75))) / n))
                if pose.wrap_y is not None:
                    cy = H + h0 / 2 - pose.wrap_y * (H + h0) + pose.dy * W
                else:
                    cy = ay + pose.dy * W

            if facing == "right" and motion.get("face_velocity", False):
                flip = (np.roll(x, -1) - x) < 0
            else:
                flip = np.zeros(self.frame_count, dtype=bool)

            shadow = None
            if grounded and backdrop.ground_px is not None:
                lift = np.clip(-pose.dy * W / max(h0 * 0.6, 1.0), 0.0, 1.0)
                shadow = (
                    x.astype(np.float64),
                    np.full(self.frame_count, baseline - depth * 0.035 * H),
                    0.42 * w0 * (1.0 - 0.45 * lift),
                    np.rint(80 * (1.0 - 0.6 * lift)).astype(int),
                )
            premultiplied = sprite.convert("RGBa")
            actors.append(
                _Actor(
                    sprite=premultiplied,
                    mirrored=premultiplied.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                    x=np.asarray(x, dtype=np.float64),
                    cy=np.asarray(cy, dtype=np.float64),
                    angle=pose.angle,
                    sx=pose.sx,
                    sy=pose.sy,
                    flip=flip,
                    shadow=shadow,
                    depth=depth,
                )
            )
        # Far row first so nearer sprites overlap it.
        actors.sort(key=lambda a: -a.depth)
        return actors

    def _compose(
        self,
        backdrop: Backdrop,
        particles: Sequence[ParticleLayer],
        actors: Sequence[_Actor],
        grade: Grade | None = None,
    ) -> np.ndarray:
        frames = np.empty((self.frame_count, self.height, self.width, 3), dtype=np.uint8)
        base = Image.fromarray(grade.backdrop(backdrop.image) if grade is not None else backdrop.image, "RGB")
        back = [p for p in particles if p.layer == "back"]
        front = [p for p in particles if p.layer != "back"]
        for f in range(self.frame_count):
            frame = base.copy()
            draw = ImageDraw.Draw(frame, "RGBA")
            for layer in back:
                layer.draw(draw, f)
            for actor in actors:
                if actor.shadow is not None:
                    sx, sy, rx, alpha = actor.shadow
                    ry = max(1.5, rx[f] * 0.18)
                    draw.ellipse((sx[f] - rx[f], sy[f] - ry, sx[f] + rx[f], sy[f] + ry), fill=(0, 0, 0, int(alpha[f])))
            for actor in actors:
                self._paste_actor(frame, actor, f)
            for layer in front:
                layer.draw(draw, f)
            if grade is not None:
                frame = grade(frame)
            frames[f] = np.asarray(frame)
        return frames

    @staticmethod
    def _paste_actor(frame: Image.Image, actor: _Actor, f: int) -> None:
        image = actor.mirrored if actor.flip[f] else actor.sprite
        sx, sy, angle = float(actor.sx[f]), float(actor.sy[f]), float(actor.angle[f])
        if abs(sx - 1.0) > 0.005 or abs(sy - 1.0) > 0.005:
            size = (max(1, round(image.width * sx)), max(1, round(image.height * sy)))
            image = image.resize(size, Image.Resampling.BILINEAR)
        if abs(angle) > 0.3:
            image = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        rgba = image.convert("RGBA")
        left = round(float(actor.x[f]) - rgba.width / 2)
        top = round(float(actor.cy[f]) - rgba.height / 2)
        frame.paste(rgba, (left, top), rgba)
