"""Visual styles ('neon', 'pastel', 'vintage', 'noir'): a colour grade applied to finished frames.

A style is data -- a ``grade`` object in the vocabulary's ``styles`` section --
made of a few classic grading operations.  They are applied in a fixed order
so that the result is a pure function of the frames and the spec:

1. a radial ``vignette`` that darkens the corners (of the backdrop: see :class:`Grade`);
2. an affine colour mix (``saturation`` then ``duotone``/``duotone_amount``);
3. per-channel tone curves (``gamma``, ``contrast``, ``wash``, ``lift``,
   ``tint``/``tint_amount``) folded into one 256-entry lookup table per
   channel, so they cost a single ``np.take`` however many are used.

Everything is numpy on fixed inputs, so grading keeps renders byte-identical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

from generation.color import parse_hex

#: grade key -> (minimum, maximum) for the numeric parameters.
GRADE_NUMBERS: dict[str, tuple[float, float]] = {
    "saturation": (0.0, 3.0),
    "duotone_amount": (0.0, 1.0),
    "gamma": (0.3, 3.0),
    "contrast": (0.3, 3.0),
    "wash": (0.0, 1.0),
    "lift": (0.0, 0.5),
    "tint_amount": (0.0, 1.0),
    "vignette": (0.0, 1.0),
}
GRADE_KEYS: frozenset[str] = frozenset({*GRADE_NUMBERS, "duotone", "tint"})

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def validate_style(spec: Mapping[str, Any]) -> None:
    """Reject grades the renderer could not apply, at vocabulary load time."""
    grade = spec.get("grade")
    if not isinstance(grade, dict) or not grade:
        raise ValueError("a style needs a non-empty 'grade' object")
    unknown = set(grade) - GRADE_KEYS
    if unknown:
        raise ValueError(f"unknown grade keys {sorted(unknown)}; known: {sorted(GRADE_KEYS)}")
    for key, (lo, hi) in GRADE_NUMBERS.items():
        if key in grade:
            value = grade[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"grade {key!r} must be a number")
            if not lo <= value <= hi:
                raise ValueError(f"grade {key!r} must be between {lo:g} and {hi:g}, got {value}")
    if "duotone" in grade:
        stops = grade["duotone"]
        if not isinstance(stops, list) or len(stops) != 2:
            raise ValueError("grade 'duotone' must be two '#rrggbb' colours [shadows, highlights]")
        for stop in stops:
            parse_hex(stop)
    if "tint" in grade:
        parse_hex(grade["tint"])


def _rgb(value: str) -> np.ndarray:
    return np.array(parse_hex(value)[:3], dtype=np.float64) / 255.0


def colour_matrix(grade: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The channel-mixing part of a grade as ``out = M @ rgb + b`` on 0..1 values."""
    matrix = np.eye(3)
    offset = np.zeros(3)
    s = float(grade.get("saturation", 1.0))
    if s != 1.0:
        # x' = l + s (x - l), with l the Rec. 601 luma of x
        matrix = s * np.eye(3) + (1.0 - s) * np.tile(_LUMA, (3, 1))
    if "duotone" in grade:
        a = float(grade.get("duotone_amount", 1.0))
        lo, hi = (_rgb(c) for c in grade["duotone"])
        luma_row = _LUMA @ matrix  # luma of the already-saturated colour, as a row over input rgb
        duo = np.outer(hi - lo, luma_row)
        matrix = (1.0 - a) * matrix + a * duo
        offset = (1.0 - a) * offset + a * lo
    return matrix, offset


def tone_luts(grade: Mapping[str, Any]) -> np.ndarray:
    """Per-channel tone curves as a (3, 256) uint8 lookup table."""
    x = np.tile(np.linspace(0.0, 1.0, 256), (3, 1))
    gamma = float(grade.get("gamma", 1.0))
    if gamma != 1.0:
        x = x**gamma
    contrast = float(grade.get("contrast", 1.0))
    if contrast != 1.0:
        x = (x - 0.5) * contrast + 0.5
    x = np.clip(x, 0.0, 1.0)
    wash = float(grade.get("wash", 0.0))
    if wash:
        x = x + (1.0 - x) * wash
    lift = float(grade.get("lift", 0.0))
    if lift:
        x = lift + x * (1.0 - lift)
    if "tint" in grade:
        a = float(grade.get("tint_amount", 0.3))
        x = x * ((1.0 - a) + a * _rgb(grade["tint"]))[:, None]
    return np.asarray(np.clip(np.rint(x * 255.0), 0, 255), dtype=np.uint8)


def vignette_mask(height: int, width: int, strength: float) -> np.ndarray:
    """(H, W, 1) multiplier: 1 in the middle, ``1 - strength`` in the far corners."""
    ys = (np.arange(height, dtype=np.float64) + 0.5) / height * 2.0 - 1.0
    xs = (np.arange(width, dtype=np.float64) + 0.5) / width * 2.0 - 1.0
    r2 = (ys[:, None] ** 2 + xs[None, :] ** 2) / 2.0
    return np.asarray(1.0 - strength * r2**1.5, dtype=np.float32)[:, :, None]


class Grade:
    """A style's grade prepared for one frame size; cheap to apply per frame.

    The per-frame work runs in Pillow's C loops (an affine ``convert`` matrix
    and a ``point`` lookup table) on the frame the compositor already holds,
    which is much faster than the same maths on interleaved numpy arrays and
    exactly reproducible.  The vignette is spatial, so it is multiplied into
    the static backdrop once instead of into every frame.
    """

    def __init__(self, spec: Mapping[str, Any], width: int, height: int) -> None:
        grade = spec["grade"]
        matrix, offset = colour_matrix(grade)
        self.mix = not (np.allclose(matrix, np.eye(3)) and not offset.any())
        # Pillow's matrix works on 0..255 values: out = M @ rgb + 255 b.
        self.affine = tuple(float(v) for row in np.hstack([matrix, offset[:, None] * 255.0]) for v in row)
        self.lut: list[int] = tone_luts(grade).reshape(-1).tolist()
        strength = float(grade.get("vignette", 0.0))
        self.mask = vignette_mask(height, width, strength) if strength else None

    def backdrop(self, rgb: np.ndarray) -> np.ndarray:
        """The static backdrop with the vignette applied (a copy; the input is left alone)."""
        if self.mask is None:
            return rgb
        return np.asarray(np.rint(rgb.astype(np.float32) * self.mask), dtype=np.uint8)

    def __call__(self, image: Image.Image) -> Image.Image:
        """Colour-mix and tone-map one composed RGB frame."""
        if self.mix:
            image = image.convert("RGB", self.affine)
        return image.point(self.lut)


def apply_style(frames: np.ndarray, spec: Mapping[str, Any]) -> None:
    """Grade already-composed (N, H, W, 3) uint8 frames in place (vignette included)."""
    grade = Grade(spec, frames.shape[2], frames.shape[1])
    for f in range(frames.shape[0]):
        frames[f] = np.asarray(grade(Image.fromarray(grade.backdrop(frames[f]), "RGB")))
