"""Sprite rasterisation from vocabulary data.

A sprite is described in the vocabulary as a list of vector primitives in a
normalised ``[-1, 1]`` box (y grows downwards, like Pillow).  Keeping sprites
as data means new subjects are JSON edits; keeping the primitive set small
means every sprite renders identically on every machine (no font or SVG
stack involved).  New sprite *kinds* (e.g. emoji glyphs) register a
rasteriser in :data:`SPRITE_KINDS` and a validator in :data:`SPRITE_VALIDATORS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from generation.color import RGBA, darker, lighter, parse_hex

#: Supersampling factor: ImageDraw does not antialias shapes, so draw big and shrink.
SUPERSAMPLE = 4

SHAPE_TYPES: frozenset[str] = frozenset({"circle", "ellipse", "rect", "polygon", "line", "arc", "pie", "star"})

Point = tuple[float, float]


# --------------------------------------------------------------------------- validation
def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _need_nums(shape: Mapping[str, Any], name: str, count: int | tuple[int, ...]) -> None:
    value = shape.get(name)
    counts = (count,) if isinstance(count, int) else count
    if _is_num(value) and 1 in counts:
        return
    if not isinstance(value, list) or len(value) not in counts or not all(_is_num(v) for v in value):
        raise ValueError(f"shape {shape.get('type')!r} needs {name!r} as {' or '.join(map(str, counts))} numbers")


def _need_points(shape: Mapping[str, Any], minimum: int) -> None:
    points = shape.get("points")
    if (
        not isinstance(points, list)
        or len(points) < minimum
        or not all(isinstance(p, list) and len(p) == 2 and all(_is_num(v) for v in p) for p in points)
    ):
        raise ValueError(f"shape {shape.get('type')!r} needs 'points' as a list of >= {minimum} [x, y] pairs")


def _check_color_ref(ref: Any, roles: Mapping[str, Any]) -> None:
    if ref is None or ref == "none":
        return
    if not isinstance(ref, str):
        raise ValueError(f"colour reference {ref!r} must be a string")
    if ref.startswith("#"):
        parse_hex(ref)
        return
    role = ref.split(".", 1)[0]
    suffix = ref.split(".", 1)[1] if "." in ref else None
    if role not in roles:
        raise ValueError(f"colour role {role!r} is not defined in the sprite's colors")
    if suffix not in (None, "dark", "light"):
        raise ValueError(f"colour reference {ref!r}: only '.dark' and '.light' variants exist")


def _validate_shapes(spec: Mapping[str, Any]) -> None:
    colors = spec.get("colors", {})
    if not isinstance(colors, dict):
        raise ValueError("sprite colors must be an object of role -> '#hex'")
    for value in colors.values():
        parse_hex(value)
    tint = spec.get("tint", "body")
    if tint is not None and tint not in colors:
        raise ValueError(f"tint role {tint!r} is not in the sprite's colors")
    shapes = spec.get("shapes")
    if not isinstance(shapes, list) or not shapes:
        raise ValueError("a 'shapes' sprite needs a non-empty 'shapes' list")
    for shape in shapes:
        if not isinstance(shape, dict) or shape.get("type") not in SHAPE_TYPES:
            raise ValueError(f"shape {shape!r} must be an object with type in {sorted(SHAPE_TYPES)}")
        kind = shape["type"]
        if kind == "circle":
            _need_nums(shape, "c", 2)
            _need_nums(shape, "r", 1)
        elif kind in ("ellipse", "arc", "pie"):
            _need_nums(shape, "c", 2)
            _need_nums(shape, "r", (1, 2))
            if kind != "ellipse":
                _need_nums(shape, "start", 1)
                _need_nums(shape, "end", 1)
        elif kind == "rect":
            _need_nums(shape, "box", 4)
        elif kind == "polygon":
            _need_points(shape, 3)
        elif kind == "line":
            _need_points(shape, 2)
        elif kind == "star":
            _need_nums(shape, "c", 2)
            _need_nums(shape, "r", 2)
        for key in ("width", "radius", "rotate"):
            if key in shape and not _is_num(shape[key]):
                raise ValueError(f"shape {kind!r}: {key!r} must be a number")
        _check_color_ref(shape.get("fill"), colors)
        _check_color_ref(shape.get("outline"), colors)
        if kind in ("line", "arc") and shape.get("fill") in (None, "none"):
            raise ValueError(f"shape {kind!r} needs a 'fill' colour")


SPRITE_VALIDATORS: dict[str, Callable[[Mapping[str, Any]], None]] = {"shapes": _validate_shapes}


def validate_sprite(spec: Any) -> None:
    """Reject sprites the rasteriser could not draw, at vocabulary load time."""
    if not isinstance(spec, dict):
        raise ValueError("sprite must be an object with a 'kind'")
    validator = SPRITE_VALIDATORS.get(spec.get("kind"))  # type: ignore[arg-type]
    if validator is None:
        raise ValueError(f"sprite kind {spec.get('kind')!r} is not one of {sorted(SPRITE_VALIDATORS)}")
    validator(spec)


# --------------------------------------------------------------------------- drawing
class _Canvas:
    """Maps normalised sprite coordinates to supersampled pixels and handles translucent fills."""

    def __init__(self, size_px: int, palette: Mapping[str, RGBA]) -> None:
        self.size = size_px
        self.half = size_px / 2.0
        self.image = Image.new("RGBA", (size_px, size_px), (0, 0, 0, 0))
        self.palette = palette

    def px(self, x: float, y: float) -> Point:
        return ((x + 1.0) * self.half, (y + 1.0) * self.half)

    def length(self, v: float) -> float:
        return v * self.half

    def color(self, ref: Any) -> RGBA | None:
        if ref is None or ref == "none":
            return None
        if ref.startswith("#"):
            return parse_hex(ref)
        role, _, variant = ref.partition(".")
        base = self.palette[role]
        if variant == "dark":
            return darker(base)
        if variant == "light":
            return lighter(base)
        return base

    def draw(self, fill: RGBA | None, outline: RGBA | None, paint: Callable[[ImageDraw.ImageDraw], None]) -> None:
        """ImageDraw replaces RGBA pixels instead of blending, so translucent paint goes through a layer."""
        translucent = (fill is not None and fill[3] < 255) or (outline is not None and outline[3] < 255)
        if not translucent:
            paint(ImageDraw.Draw(self.image))
            return
        layer = Image.new("RGBA", self.image.size, (0, 0, 0, 0))
        paint(ImageDraw.Draw(layer))
        self.image = Image.alpha_composite(self.image, layer)


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, rotate_deg: float, steps: int = 72) -> list[Point]:
    rot = math.radians(rotate_deg)
    cos_r, sin_r = math.cos(rot), math.sin(rot)
    points = []
    for i in range(steps):
        a = 2.0 * math.pi * i / steps
        x, y = rx * math.cos(a), ry * math.sin(a)
        points.append((cx + x * cos_r - y * sin_r, cy + x * sin_r + y * cos_r))
    return points


def _star_points(cx: float, cy: float, outer: float, inner: float, count: int, rotate_deg: float) -> list[Point]:
    points = []
    for i in range(count * 2):
        a = math.radians(rotate_deg) + math.pi * i / count
        r = outer if i % 2 == 0 else inner
        points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return points


def _pair(value: Any) -> tuple[float, float]:
    if isinstance(value, list):
        return (float(value[0]), float(value[1] if len(value) > 1 else value[0]))
    return (float(value), float(value))


def _draw_shape(canvas: _Canvas, shape: Mapping[str, Any], mirror: bool) -> None:
    sx = -1.0 if mirror else 1.0
    kind = shape["type"]
    fill = canvas.color(shape.get("fill"))
    outline = canvas.color(shape.get("outline"))
    width = max(1, round(canvas.length(float(shape.get("width", 0.03))))) if (outline or kind in ("line", "arc")) else 0
    rotate = float(shape.get("rotate", 0.0)) * sx

    def poly(points: Sequence[Point]) -> list[Point]:
        return [canvas.px(x * sx, y) for x, y in points]

    if kind in ("circle", "ellipse"):
        cx, cy = shape["c"]
        rx, ry = _pair(shape["r"])
        if rotate:
            pts = poly(_ellipse_points(cx, cy, rx, ry, rotate))
            canvas.draw(fill, outline, lambda d: d.polygon(pts, fill=fill, outline=outline, width=width))
        else:
            x0, y0 = canvas.px(cx * sx - rx, cy - ry)
            x1, y1 = canvas.px(cx * sx + rx, cy + ry)
            canvas.draw(fill, outline, lambda d: d.ellipse((x0, y0, x1, y1), fill=fill, outline=outline, width=width))
    elif kind == "rect":
        bx0, by0, bx1, by1 = shape["box"]
        xs = sorted((bx0 * sx, bx1 * sx))
        x0, y0 = canvas.px(xs[0], min(by0, by1))
        x1, y1 = canvas.px(xs[1], max(by0, by1))
        radius = min(canvas.length(float(shape.get("radius", 0.0))), (x1 - x0) / 2, (y1 - y0) / 2)
        canvas.draw(
            fill,
            outline,
            lambda d: d.rounded_rectangle((x0, y0, x1, y1), radius=radius, fill=fill, outline=outline, width=width),
        )
    elif kind == "polygon":
        pts = poly([(p[0], p[1]) for p in shape["points"]])
        canvas.draw(fill, outline, lambda d: d.polygon(pts, fill=fill, outline=outline, width=width))
    elif kind == "star":
        cx, cy = shape["c"]
        outer, inner = shape["r"]
        pts = poly(_star_points(cx, cy, outer, inner, int(shape.get("points", 5)), float(shape.get("rotate", -90.0))))
        canvas.draw(fill, outline, lambda d: d.polygon(pts, fill=fill, outline=outline, width=width))
    elif kind == "line":
        pts = poly([(p[0], p[1]) for p in shape["points"]])
        radius = width / 2.0

        def paint_line(d: ImageDraw.ImageDraw) -> None:
            d.line(pts, fill=fill, width=width, joint="curve")
            if shape.get("cap", "round") == "round":
                for x, y in (pts[0], pts[-1]):
                    d.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)

        canvas.draw(fill, None, paint_line)
    elif kind in ("arc", "pie"):
        cx, cy = shape["c"]
        rx, ry = _pair(shape["r"])
        start, end = float(shape["start"]), float(shape["end"])
        if mirror:
            start, end = 180.0 - end, 180.0 - start
        x0, y0 = canvas.px(cx * sx - rx, cy - ry)
        x1, y1 = canvas.px(cx * sx + rx, cy + ry)
        if kind == "arc":
            canvas.draw(fill, None, lambda d: d.arc((x0, y0, x1, y1), start, end, fill=fill, width=width))
        else:
            canvas.draw(
                fill,
                outline,
                lambda d: d.pieslice((x0, y0, x1, y1), start, end, fill=fill, outline=outline, width=width),
            )


def resolve_palette(spec: Mapping[str, Any], tint: RGBA | None = None) -> dict[str, RGBA]:
    palette = {role: parse_hex(value) for role, value in spec.get("colors", {}).items()}
    role = spec.get("tint", "body")
    if tint is not None and role is not None:
        palette[role] = (tint[0], tint[1], tint[2], palette[role][3])
    return palette


def _render_shapes(spec: Mapping[str, Any], size_px: int, palette: Mapping[str, RGBA]) -> Image.Image:
    canvas = _Canvas(size_px * SUPERSAMPLE, palette)
    for shape in spec["shapes"]:
        _draw_shape(canvas, shape, mirror=False)
        if shape.get("mirror"):
            _draw_shape(canvas, shape, mirror=True)
    # Premultiply before shrinking, otherwise transparent black bleeds into the edges.
    return canvas.image.convert("RGBa").reduce(SUPERSAMPLE).convert("RGBA")


SPRITE_KINDS: dict[str, Callable[[Mapping[str, Any], int, Mapping[str, RGBA]], Image.Image]] = {
    "shapes": _render_shapes,
}


def add_outline(image: Image.Image, color: RGBA, width: int) -> Image.Image:
    """A sticker-style silhouette outline keeps sprites legible on any backdrop colour."""
    if width <= 0:
        return image
    padded = Image.new("RGBA", (image.width + 2 * width, image.height + 2 * width), (0, 0, 0, 0))
    padded.paste(image, (width, width))
    alpha = padded.getchannel("A")
    grown = alpha.filter(ImageFilter.MaxFilter(2 * width + 1))
    if color[3] < 255:
        grown = grown.point(lambda v: v * color[3] // 255)
    border = Image.new("RGBA", padded.size, (color[0], color[1], color[2], 255))
    border.putalpha(grown)
    return Image.alpha_composite(border, padded)


def render_sprite(
    spec: Mapping[str, Any],
    size_px: int,
    tint: RGBA | None = None,
    outline: RGBA | None = None,
    outline_px: int = 0,
) -> Image.Image:
    """Rasterise a sprite into an RGBA image cropped to its content.

    ``size_px`` is the side of the square the normalised box maps to, so
    relative sizes between subjects stay as authored in the data.
    """
    size_px = max(8, int(size_px))
    image = SPRITE_KINDS[spec["kind"]](spec, size_px, resolve_palette(spec, tint))
    if outline is not None and outline_px > 0:
        image = add_outline(image, outline, outline_px)
    bbox = image.getchannel("A").getbbox()
    if bbox is None:
        raise ValueError("sprite rendered empty")
    return image.crop(bbox)
