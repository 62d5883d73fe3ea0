"""Colour helpers shared by the vocabulary loader and the drawing code.

Colours live in the vocabulary as ``#rrggbb`` / ``#rrggbbaa`` strings so that
people editing the data never have to think in tuples; everything downstream
works with plain RGBA integer tuples because that is what Pillow wants.
"""

from __future__ import annotations

import colorsys

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]


def parse_hex(value: str) -> RGBA:
    """Accept only the two hex spellings we document, so typos fail loudly at load time."""
    if not isinstance(value, str) or not value.startswith("#") or len(value) not in (7, 9):
        raise ValueError(f"colour {value!r} must look like '#rrggbb' or '#rrggbbaa'")
    try:
        parts = [int(value[i : i + 2], 16) for i in range(1, len(value), 2)]
    except ValueError:
        raise ValueError(f"colour {value!r} is not valid hex") from None
    if len(parts) == 3:
        parts.append(255)
    return (parts[0], parts[1], parts[2], parts[3])


def mix(a: RGBA, b: RGBA, amount: float) -> RGBA:
    """Linear blend; used to derive shades so a recoloured sprite keeps its shading."""
    k = min(max(amount, 0.0), 1.0)
    return (
        round(a[0] + (b[0] - a[0]) * k),
        round(a[1] + (b[1] - a[1]) * k),
        round(a[2] + (b[2] - a[2]) * k),
        round(a[3] + (b[3] - a[3]) * k),
    )


BLACK: RGBA = (0, 0, 0, 255)
WHITE: RGBA = (255, 255, 255, 255)


def darker(c: RGBA, amount: float = 0.35) -> RGBA:
    """Shade towards black but keep alpha, so translucent parts stay translucent."""
    m = mix(c, BLACK, amount)
    return (m[0], m[1], m[2], c[3])


def lighter(c: RGBA, amount: float = 0.35) -> RGBA:
    """Tint towards white but keep alpha, mirroring :func:`darker`."""
    m = mix(c, WHITE, amount)
    return (m[0], m[1], m[2], c[3])


def with_alpha(c: RGBA, alpha: int) -> RGBA:
    return (c[0], c[1], c[2], max(0, min(255, int(alpha))))


def luminance(c: RGBA | RGB) -> float:
    """Rec. 601 luma in 0..1; good enough to pick a contrasting outline colour."""
    return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255.0


def hsv(h: float, s: float, v: float, alpha: int = 255) -> RGBA:
    """Seeded palettes are generated in HSV because evenly spaced hues look pleasant."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255), alpha)


def to_hsv(c: RGBA) -> tuple[float, float, float]:
    return colorsys.rgb_to_hsv(c[0] / 255.0, c[1] / 255.0, c[2] / 255.0)
