"""Backdrops (sky, ground, static props) and animated particle layers.

The backdrop is static for a clip, so it is rendered once -- supersampled
for smooth edges -- and every frame starts from a copy of it.  Particles are
the only per-frame scenery; their positions for all frames are computed up
front with numpy and the frame loop only issues draw calls.

Props and particles are *kinds* implemented here and *parameterised* by the
vocabulary, so a new scene is usually a JSON edit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from generation.color import RGBA, darker, lighter, luminance, mix, parse_hex, with_alpha

#: Backdrop supersampling; props are mostly big silhouettes, 2x is plenty.
BACKDROP_SUPERSAMPLE = 2
#: Sizes in the data are tuned for this width and scaled for other sizes.
REFERENCE_WIDTH = 288.0

REGIONS = ("sky", "water", "ground", "full", "upper")


# =========================================================================== validation
def _check_colors(obj: Any, where: str) -> None:
    """Every '#...' string anywhere in a prop/particle spec must parse, whatever key holds it."""
    if isinstance(obj, str):
        if obj.startswith("#"):
            try:
                parse_hex(obj)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
    elif isinstance(obj, list):
        for item in obj:
            _check_colors(item, where)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _check_colors(value, f"{where}.{key}")


def _check_stops(value: Any, name: str, minimum: int) -> None:
    if not isinstance(value, list) or len(value) < minimum:
        raise ValueError(f"{name} must be a list of at least {minimum} '#hex' colours")
    for c in value:
        parse_hex(c)


def _check_fraction(spec: Mapping[str, Any], name: str, required: bool) -> None:
    value = spec.get(name)
    if value is None and not required:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction between 0 and 1")


def validate_layer_spec(
    spec: Mapping[str, Any],
    prop_kinds: Mapping[str, Any],
    particle_kinds: Mapping[str, Any],
    scene: bool,
) -> None:
    """Validate a scene or time-of-day entry of the vocabulary."""
    _check_stops(spec.get("sky"), "sky", 2)
    if scene:
        _check_fraction(spec, "horizon", True)
        if spec.get("ground") is not None:
            _check_stops(spec.get("ground"), "ground", 1)
            _check_fraction(spec, "ground_top", True)
        _check_fraction(spec, "ground_y", False)
        if not isinstance(spec.get("outdoor", False), bool):
            raise ValueError("outdoor must be true or false")
    else:
        tint = spec.get("tint", [1, 1, 1])
        if not isinstance(tint, list) or len(tint) != 3 or not all(isinstance(v, (int, float)) for v in tint):
            raise ValueError("tint must be three channel multipliers, e.g. [1.0, 0.8, 0.7]")
    for i, prop in enumerate(spec.get("props", [])):
        if not isinstance(prop, dict) or prop.get("kind") not in prop_kinds:
            kind = prop.get("kind") if isinstance(prop, dict) else prop
            raise ValueError(f"props[{i}] kind {kind!r} is not one of {sorted(prop_kinds)}")
        _check_colors(prop, f"props[{i}]")
    for i, particles in enumerate(spec.get("particles", [])):
        if not isinstance(particles, dict) or particles.get("kind") not in particle_kinds:
            kind = particles.get("kind") if isinstance(particles, dict) else particles
            raise ValueError(f"particles[{i}] kind {kind!r} is not one of {sorted(particle_kinds)}")
        if particles.get("region", "full") not in REGIONS:
            raise ValueError(f"particles[{i}] region must be one of {REGIONS}")
        _check_colors(particles, f"particles[{i}]")
    celestial = spec.get("celestial")
    if celestial is not None:
        if not isinstance(celestial, dict) or celestial.get("kind") not in ("sun", "moon"):
            raise ValueError("celestial must be an object with kind 'sun' or 'moon'")
        _check_colors(celestial, "celestial")


# =========================================================================== style
@dataclass(frozen=True)
class SceneStyle:
    """A scene with the time of day already applied; the only input the backdrop needs."""

    sky: tuple[RGBA, ...]
    horizon: float
    ground: tuple[RGBA, ...] | None
    ground_top: float
    ground_y: float | None
    props: tuple[Mapping[str, Any], ...]
    particles: tuple[Mapping[str, Any], ...]
    celestial: Mapping[str, Any] | None
    tint: tuple[float, float, float]
    lights: bool


def resolve_style(scene: Mapping[str, Any], time: Mapping[str, Any] | None) -> SceneStyle:
    """Outdoor scenes take the time's sky, sun/moon and lighting; indoor ones only a softened tint."""
    sky = tuple(parse_hex(c) for c in scene["sky"])
    ground = tuple(parse_hex(c) for c in scene["ground"]) if scene.get("ground") else None
    particles = list(scene.get("particles", []))
    celestial = scene.get("celestial")
    tint = (1.0, 1.0, 1.0)
    lights = bool(scene.get("lights", False))
    if time is not None:
        time_tint = tuple(float(v) for v in time.get("tint", [1, 1, 1]))
        lights = bool(time.get("lights", lights))
        if scene.get("outdoor", False):
            sky = tuple(parse_hex(c) for c in time["sky"])
            celestial = time.get("celestial", celestial)
            tint = (time_tint[0], time_tint[1], time_tint[2])
            particles += list(time.get("particles", []))
        else:
            r, g, b = (1.0 + (v - 1.0) * 0.45 for v in time_tint)
            tint = (r, g, b)
    horizon = float(scene.get("horizon", 1.0))
    return SceneStyle(
        sky=sky,
        horizon=horizon,
        ground=ground,
        ground_top=float(scene.get("ground_top", horizon)),
        ground_y=float(scene["ground_y"]) if scene.get("ground_y") is not None else None,
        props=tuple(scene.get("props", [])),
        particles=tuple(particles),
        celestial=celestial,
        tint=tint,
        lights=lights,
    )


# =========================================================================== gradients
def gradient_rows(stops: Sequence[RGBA], rows: int) -> np.ndarray:
    """Evenly spaced multi-stop vertical gradient, shape (rows, 3) float32."""
    if rows <= 0:
        return np.zeros((0, 3), np.float32)
    colors = np.array([c[:3] for c in stops], dtype=np.float32)
    if len(colors) == 1:
        return np.repeat(colors, rows, axis=0)
    pos = np.linspace(0.0, 1.0, len(colors))
    y = np.linspace(0.0, 1.0, rows)
    return np.stack([np.interp(y, pos, colors[:, ch]) for ch in range(3)], axis=1).astype(np.float32)


def sky_array(stops: Sequence[RGBA], width: int, height: int, horizon_px: int) -> np.ndarray:
    rows = gradient_rows(stops, max(horizon_px, 1))
    if horizon_px < height:
        rows = np.concatenate([rows, np.repeat(rows[-1:], height - len(rows), axis=0)])
    rows = rows[:height]
    return np.repeat(np.rint(rows)[:, None, :], width, axis=1).astype(np.uint8)


# =========================================================================== props
@dataclass
class PropContext:
    """What a prop painter may touch: the opaque world layer, the untinted lights layer, and the layout."""

    world: ImageDraw.ImageDraw
    lights: ImageDraw.ImageDraw
    width: int
    height: int
    horizon: float  # px
    ground_top: float  # px
    rng: np.random.Generator
    lights_on: bool
    scale: float  # px per reference px

    def y(self, fraction: float) -> float:
        return fraction * self.height

    def color(self, spec: Mapping[str, Any], key: str, default: str) -> RGBA:
        return parse_hex(spec.get(key, default))


def _prop_sea(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    y0 = ctx.y(spec["top"]) if "top" in spec else ctx.horizon
    y1 = ctx.y(spec.get("bottom", 1.0))
    stops = [parse_hex(c) for c in spec.get("colors", ["#1b6ca8", "#48cae4"])]
    rows = gradient_rows(stops, int(y1 - y0) + 1)
    for i, row in enumerate(rows):
        ctx.world.line([(0, y0 + i), (ctx.width, y0 + i)], fill=(int(row[0]), int(row[1]), int(row[2]), 255))
    wave = ctx.color(spec, "wave_color", "#ffffff")
    for _ in range(int(spec.get("waves", 26))):
        depth = ctx.rng.random()
        y = y0 + 4 * ctx.scale + depth**1.5 * (y1 - y0 - 8 * ctx.scale)
        length = (6 + 26 * depth) * ctx.scale
        x = ctx.rng.uniform(-length, ctx.width)
        ctx.world.line(
            [(x, y), (x + length, y)], fill=mix(stops[-1], wave, 0.55), width=max(1, round(ctx.scale * (1 + depth)))
        )


def _ridge(
    ctx: PropContext, base: float, amp: float, freq: float, phase: float, steps: int = 96
) -> list[tuple[float, float]]:
    xs = np.linspace(0, ctx.width, steps)
    u = xs / ctx.width
    ys = base - amp * (
        0.6 * np.sin(2 * math.pi * (freq * u + phase)) + 0.4 * np.sin(2 * math.pi * (2.3 * freq * u + 2 * phase))
    )
    return [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)] + [(ctx.width, ctx.height), (0, ctx.height)]


def _prop_hills(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    for layer in spec.get("layers", []):
        points = _ridge(
            ctx,
            ctx.y(layer.get("y", 0.7)),
            ctx.y(layer.get("amp", 0.03)),
            float(layer.get("freq", 1.2)),
            float(ctx.rng.random()),
        )
        ctx.world.polygon(points, fill=parse_hex(layer.get("color", "#74c69d")))


def _prop_mountains(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    base = ctx.y(spec.get("y", 0.7))
    color = ctx.color(spec, "color", "#5c677d")
    snow = parse_hex(spec["snow"]) if spec.get("snow") else None
    count = int(spec.get("count", 4))
    height = ctx.y(spec.get("height", 0.28))
    xs = (np.arange(count) + ctx.rng.uniform(0.1, 0.9, count)) / count * ctx.width * 1.2 - ctx.width * 0.1
    for x in xs:
        h = height * ctx.rng.uniform(0.65, 1.0)
        half = h * ctx.rng.uniform(0.9, 1.4)
        peak = (float(x), base - h)
        ctx.world.polygon([(x - half, base + 2), peak, (x + half, base + 2)], fill=color)
        ctx.world.polygon([peak, (x + half, base + 2), (x + half * 0.15, base + 2)], fill=darker(color, 0.18))
        if snow is not None:
            k = 0.3
            left = (x - half * k, base - h * (1 - k))
            right = (x + half * k, base - h * (1 - k))
            ctx.world.polygon(
                [peak, right, (x + half * 0.1, right[1] + h * 0.06), (x - half * 0.1, right[1] - h * 0.02), left],
                fill=snow,
            )


def _prop_skyline(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    base = ctx.y(spec.get("y", 0.82))
    color = ctx.color(spec, "color", "#2b2d42")
    lit = ctx.color(spec, "window", "#ffd166")
    unlit = ctx.color(spec, "window_off", "#8d99ae")
    rows = int(spec.get("layers", 2))
    for layer in range(rows):
        far = layer < rows - 1
        shade = lighter(color, 0.25) if far else color
        top_min = ctx.y(spec.get("min_height", 0.12)) * (1.3 if far else 1.0)
        top_max = ctx.y(spec.get("max_height", 0.34)) * (1.25 if far else 1.0)
        x = -ctx.rng.uniform(0, 20) * ctx.scale
        while x < ctx.width:
            w = ctx.rng.uniform(26, 58) * ctx.scale
            h = ctx.rng.uniform(top_min, top_max)
            top = base - h
            ctx.world.rectangle((x, top, x + w - 2 * ctx.scale, base + 4), fill=shade)
            if ctx.rng.random() < 0.3:
                ctx.world.rectangle((x + w * 0.4, top - 10 * ctx.scale, x + w * 0.46, top), fill=shade)
            if not far:
                win = 5 * ctx.scale
                gap = 5 * ctx.scale
                yy = top + gap
                while yy + win < base - gap:
                    xx = x + gap
                    while xx + win < x + w - gap:
                        on = ctx.rng.random() < (0.55 if ctx.lights_on else 0.0)
                        target = ctx.lights if on else ctx.world
                        target.rectangle((xx, yy, xx + win, yy + win * 1.3), fill=lit if on else mix(shade, unlit, 0.5))
                        xx += win + gap
                    yy += win * 1.3 + gap
            x += w


def _pine(draw: ImageDraw.ImageDraw, x: float, base: float, size: float, color: RGBA, snow: RGBA | None) -> None:
    draw.rectangle((x - size * 0.07, base - size * 0.25, x + size * 0.07, base), fill=darker(color, 0.45))
    for i in range(3):
        top = base - size * (0.55 + 0.32 * i)
        width = size * (0.42 - 0.09 * i)
        bottom = base - size * (0.2 + 0.3 * i)
        draw.polygon([(x - width, bottom), (x, top - size * 0.15), (x + width, bottom)], fill=color)
        if snow is not None:
            draw.polygon(
                [(x - width * 0.35, top + size * 0.05), (x, top - size * 0.15), (x + width * 0.35, top + size * 0.05)],
                fill=snow,
            )


def _prop_pines(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    snow = parse_hex(spec["snow"]) if spec.get("snow") else None
    for row in spec.get("rows", []):
        count = int(row.get("count", 7))
        color = parse_hex(row.get("color", "#2d6a4f"))
        base = ctx.y(row.get("y", 0.8))
        size = ctx.y(row.get("size", 0.12))
        xs = (np.arange(count) + ctx.rng.uniform(0.0, 1.0, count)) / count * ctx.width
        for x in xs:
            s = size * ctx.rng.uniform(0.8, 1.2)
            _pine(ctx.world, float(x), base + ctx.rng.uniform(-0.01, 0.01) * ctx.height, s, color, snow)


def _prop_cacti(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    color = ctx.color(spec, "color", "#2d6a4f")
    for x_frac, y_frac, size_frac in spec.get("items", [[0.15, 0.8, 0.12], [0.85, 0.76, 0.08]]):
        x, base, s = x_frac * ctx.width, ctx.y(y_frac), ctx.y(size_frac)
        w = s * 0.22
        ctx.world.rounded_rectangle((x - w / 2, base - s, x + w / 2, base), radius=w / 2, fill=color)
        ctx.world.rounded_rectangle(
            (x - w * 1.6, base - s * 0.75, x - w * 0.9, base - s * 0.35), radius=w * 0.35, fill=color
        )
        ctx.world.rectangle((x - w * 1.3, base - s * 0.45, x, base - s * 0.35), fill=color)
        ctx.world.rounded_rectangle(
            (x + w * 0.9, base - s * 0.9, x + w * 1.6, base - s * 0.5), radius=w * 0.35, fill=color
        )
        ctx.world.rectangle((x, base - s * 0.6, x + w * 1.3, base - s * 0.5), fill=color)


def _prop_seaweed(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    colors = [parse_hex(c) for c in spec.get("colors", ["#2d6a4f", "#40916c", "#52b788"])]
    base = ctx.y(spec.get("y", 0.95))
    for i in range(int(spec.get("count", 7))):
        x0 = ctx.rng.uniform(0, ctx.width)
        h = ctx.y(ctx.rng.uniform(0.12, 0.3))
        phase = ctx.rng.uniform(0, 2 * math.pi)
        ys = np.linspace(base, base - h, 14)
        xs = x0 + 8 * ctx.scale * np.sin(np.linspace(0, 3 * math.pi, 14) + phase)
        ctx.world.line(
            list(zip(xs.tolist(), ys.tolist(), strict=True)),
            fill=colors[i % len(colors)],
            width=round(7 * ctx.scale),
            joint="curve",
        )


def _prop_rays(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    color = ctx.color(spec, "color", "#ffffff28")
    for _ in range(int(spec.get("count", 4))):
        x = ctx.rng.uniform(0, ctx.width)
        w = ctx.rng.uniform(14, 34) * ctx.scale
        slant = ctx.rng.uniform(0.1, 0.35) * ctx.height
        ctx.lights.polygon(
            [(x, 0), (x + w, 0), (x + w * 2.2 + slant, ctx.height * 0.85), (x + slant, ctx.height * 0.85)], fill=color
        )


def _prop_planet(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    cx, cy = spec.get("x", 0.75) * ctx.width, ctx.y(spec.get("y", 0.22))
    r = spec.get("radius", 0.16) * ctx.width
    color = ctx.color(spec, "color", "#c77dff")
    ring = parse_hex(spec["ring"]) if spec.get("ring") else None
    ring_box = (cx - r * 1.8, cy - r * 0.5, cx + r * 1.8, cy + r * 0.5)
    width = max(2, round(r * 0.12))
    if ring is not None:
        ctx.world.arc(ring_box, 180, 360, fill=ring, width=width)
    ctx.world.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    ctx.world.chord((cx - r, cy - r, cx + r, cy + r), 300, 120, fill=darker(color, 0.2))
    ctx.world.ellipse((cx - r * 0.55, cy - r * 0.45, cx - r * 0.1, cy - r * 0.25), fill=lighter(color, 0.25))
    if ring is not None:
        ctx.world.arc(ring_box, 0, 180, fill=ring, width=width)


def _prop_spotlights(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    colors = [parse_hex(c) for c in spec.get("colors", ["#ff70a640", "#70d6ff40", "#ffd67040"])]
    floor = ctx.y(spec.get("y", 0.88))
    for i in range(int(spec.get("count", 3))):
        x = (i + 0.5) / int(spec.get("count", 3)) * ctx.width
        spread = ctx.rng.uniform(0.25, 0.45) * ctx.width
        lean = ctx.rng.uniform(-0.3, 0.3) * ctx.width
        ctx.lights.polygon(
            [
                (x - 4 * ctx.scale, 0),
                (x + 4 * ctx.scale, 0),
                (x + lean + spread / 2, floor),
                (x + lean - spread / 2, floor),
            ],
            fill=colors[i % len(colors)],
        )


def _prop_flowerbed(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    colors = [parse_hex(c) for c in spec.get("colors", ["#ff70a6", "#ffd670", "#ffffff"])]
    y0, y1 = ctx.y(spec.get("top", 0.8)), ctx.y(spec.get("bottom", 1.0))
    for _ in range(int(spec.get("count", 40))):
        depth = ctx.rng.random()
        x, y = ctx.rng.uniform(0, ctx.width), y0 + depth * (y1 - y0)
        r = (1.2 + 2.2 * depth) * ctx.scale
        ctx.world.ellipse((x - r, y - r, x + r, y + r), fill=colors[int(ctx.rng.integers(len(colors)))])


def _prop_palm(ctx: PropContext, spec: Mapping[str, Any]) -> None:
    x, base = spec.get("x", 0.14) * ctx.width, ctx.y(spec.get("y", 0.86))
    h = ctx.y(spec.get("height", 0.34))
    trunk = ctx.color(spec, "trunk", "#8d6346")
    leaf = ctx.color(spec, "leaf", "#2d6a4f")
    lean = spec.get("lean", 0.12) * ctx.width
    ts = np.linspace(0, 1, 10)
    xs = x + lean * ts**2
    ys = base - h * ts
    for i in range(9):
        w = (9 - 4 * ts[i]) * ctx.scale
        ctx.world.line(
            [(xs[i], ys[i]), (xs[i + 1], ys[i + 1])], fill=trunk if i % 2 == 0 else darker(trunk, 0.15), width=round(w)
        )
    top = (float(xs[-1]), float(ys[-1]))
    for angle in (-160, -125, -90, -55, -20, 15, 200):
        a = math.radians(angle)
        length = h * 0.42
        tip = (top[0] + math.cos(a) * length, top[1] + math.sin(a) * length * 0.6 + length * 0.25)
        mid = ((top[0] + tip[0]) / 2, (top[1] + tip[1]) / 2 - length * 0.18)
        normal = (-(tip[1] - top[1]) / length * 0.12 * length, (tip[0] - top[0]) / length * 0.12 * length)
        ctx.world.polygon(
            [top, (mid[0] + normal[0], mid[1] + normal[1]), tip, (mid[0] - normal[0], mid[1] - normal[1])], fill=leaf
        )


PropPainter = Callable[[PropContext, Mapping[str, Any]], None]

PROP_KINDS: dict[str, PropPainter] = {
    "sea": _prop_sea,
    "hills": _prop_hills,
    "mountains": _prop_mountains,
    "skyline": _prop_skyline,
    "pines": _prop_pines,
    "cacti": _prop_cacti,
    "seaweed": _prop_seaweed,
    "rays": _prop_rays,
    "planet": _prop_planet,
    "spotlights": _prop_spotlights,
    "flowerbed": _prop_flowerbed,
    "palm": _prop_palm,
}


# =========================================================================== backdrop
@dataclass(frozen=True)
class Backdrop:
    image: np.ndarray  # (H, W, 3) uint8
    #: True where scenery hides the sky; stars must not twinkle through buildings.
    occluded: np.ndarray  # (H, W) bool
    horizon_px: float
    ground_px: float | None
    #: Bottom of open water (beach sea band, or the whole lower frame for open ocean).
    water_bottom_px: float
    #: Mean luma, used to choose a sprite outline colour that contrasts.
    luma: float


def _draw_celestial(image: Image.Image, spec: Mapping[str, Any], width: int, height: int) -> None:
    draw = ImageDraw.Draw(image, "RGBA")
    cx, cy = spec.get("x", 0.72) * width, spec.get("y", 0.22) * height
    r = spec.get("radius", 0.09) * width
    color = parse_hex(spec.get("color", "#fff3b0"))
    glow = int(spec.get("glow", 40))
    # Many faint rings read as a soft halo; a few strong ones would band visibly.
    for k in np.linspace(3.2, 1.1, 10):
        rr = r * float(k)
        draw.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), fill=with_alpha(color, max(1, glow // 6)))
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    if spec.get("kind") == "moon":
        crater = darker(color, 0.12)
        for dx, dy, rr in ((-0.3, -0.2, 0.22), (0.25, 0.15, 0.3), (-0.1, 0.45, 0.15)):
            x, y, q = cx + dx * r, cy + dy * r, rr * r
            draw.ellipse((x - q, y - q, x + q, y + q), fill=crater)


def build_backdrop(style: SceneStyle, width: int, height: int, rng: np.random.Generator) -> Backdrop:
    """Render sky, sun/moon, ground and props once per clip."""
    horizon_px = style.horizon * height
    sky = Image.fromarray(sky_array(style.sky, width, height, round(horizon_px)), "RGB")
    if style.celestial is not None:
        # Drawn while the sky is still RGB: only then does an RGBA ImageDraw blend the translucent glow.
        _draw_celestial(sky, style.celestial, width, height)
    sky = sky.convert("RGBA")

    ss = BACKDROP_SUPERSAMPLE
    big_w, big_h = width * ss, height * ss
    world = Image.new("RGBA", (big_w, big_h), (0, 0, 0, 0))
    lights = Image.new("RGBA", (big_w, big_h), (0, 0, 0, 0))
    ground_top_px = style.ground_top * big_h
    if style.ground is not None:
        top = round(ground_top_px)
        rows = gradient_rows(style.ground, big_h - top)
        band = np.empty((big_h - top, big_w, 4), np.uint8)
        band[..., :3] = np.rint(rows)[:, None, :].astype(np.uint8)
        band[..., 3] = 255
        world.paste(Image.fromarray(band, "RGBA"), (0, top))
    ctx = PropContext(
        world=ImageDraw.Draw(world),
        lights=ImageDraw.Draw(lights),
        width=big_w,
        height=big_h,
        horizon=style.horizon * big_h,
        ground_top=ground_top_px,
        rng=rng,
        lights_on=style.lights,
        scale=big_w / REFERENCE_WIDTH,
    )
    for prop in style.props:
        PROP_KINDS[prop["kind"]](ctx, prop)

    world_small = world.convert("RGBa").reduce(ss).convert("RGBA")
    lights_small = lights.convert("RGBa").reduce(ss).convert("RGBA")
    world_px = np.asarray(world_small).astype(np.float32)
    if style.tint != (1.0, 1.0, 1.0):
        world_px[..., :3] *= np.array(style.tint, np.float32)
        # The sky gets a weaker tint so a night sky keeps its own authored colours.
        sky_px = np.asarray(sky).astype(np.float32)
        sky_px[..., :3] *= 1.0 + (np.array(style.tint, np.float32) - 1.0) * 0.25
        sky = Image.fromarray(np.clip(np.rint(sky_px), 0, 255).astype(np.uint8), "RGBA")
    world_small = Image.fromarray(np.clip(np.rint(world_px), 0, 255).astype(np.uint8), "RGBA")
    composed = Image.alpha_composite(Image.alpha_composite(sky, world_small), lights_small).convert("RGB")
    image = np.asarray(composed).copy()
    occluded = np.asarray(world_small)[..., 3] > 96
    ground_px = style.ground_y * height if style.ground_y is not None else None
    mean = image.reshape(-1, 3).mean(axis=0)
    luma = luminance((int(mean[0]), int(mean[1]), int(mean[2])))
    water_bottom = style.ground_top * height if style.ground is not None else float(height)
    return Backdrop(
        image=image,
        occluded=occluded,
        horizon_px=horizon_px,
        ground_px=ground_px,
        water_bottom_px=max(water_bottom, horizon_px),
        luma=luma,
    )


# =========================================================================== particles
@dataclass(frozen=True)
class ParticleContext:
    width: int
    height: int
    frame_count: int
    duration_s: float
    rng: np.random.Generator
    backdrop: Backdrop
    palette: tuple[RGBA, ...]
    #: The time-of-day tint, for particles that belong to the lit world (clouds at sunset turn peach).
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def tinted(self, color: RGBA) -> RGBA:
        return (
            min(255, round(color[0] * self.tint[0])),
            min(255, round(color[1] * self.tint[1])),
            min(255, round(color[2] * self.tint[2])),
            color[3],
        )

    @property
    def scale(self) -> float:
        return self.width / REFERENCE_WIDTH

    @property
    def t(self) -> np.ndarray:
        return np.arange(self.frame_count, dtype=np.float64) / self.frame_count

    def region(self, name: str) -> tuple[float, float]:
        b = self.backdrop
        ground = b.ground_px if b.ground_px is not None else self.height
        return {
            "sky": (0.0, b.horizon_px),
            "water": (b.horizon_px, b.water_bottom_px),
            "ground": (ground, float(self.height)),
            "full": (0.0, float(self.height)),
            "upper": (0.0, self.height * 0.5),
        }[name]


@dataclass
class ParticleLayer:
    """Pre-computed particle animation; ``draw`` is called once per frame with a blending ImageDraw."""

    layer: str
    draw: Callable[[ImageDraw.ImageDraw, int], None] = field(repr=False)


def _colors(spec: Mapping[str, Any], ctx: ParticleContext, default: Sequence[str]) -> list[RGBA]:
    if spec.get("colors") == "palette":
        return list(ctx.palette)
    return [parse_hex(c) for c in spec.get("colors", default)]


def _count(spec: Mapping[str, Any], default: int) -> int:
    return max(0, min(int(spec.get("count", default)), 400))


def _falling(
    ctx: ParticleContext, n: int, top: float, bottom: float, speeds: Sequence[int], margin: float, up: bool = False
) -> np.ndarray:
    """Whole laps per clip so the loop point matches, shape (n, frames)."""
    y0 = ctx.rng.random(n)
    laps = ctx.rng.choice(np.asarray(speeds), n)
    progress = np.mod(y0[:, None] + laps[:, None] * ctx.t[None, :], 1.0)
    if up:
        progress = 1.0 - progress
    return np.asarray(top - margin + progress * (bottom - top + 2 * margin), dtype=np.float64)


def _wobble(ctx: ParticleContext, n: int, amplitude: float) -> np.ndarray:
    k = ctx.rng.integers(1, 3, n)
    phase = ctx.rng.random(n)
    return np.asarray(
        amplitude * np.sin(2 * math.pi * (k[:, None] * ctx.t[None, :] + phase[:, None])), dtype=np.float64
    )


def _twinkle(ctx: ParticleContext, n: int, rates: Sequence[int]) -> np.ndarray:
    k = ctx.rng.choice(np.asarray(rates), n)
    phase = ctx.rng.random(n)
    wave = np.sin(2 * math.pi * (k[:, None] * ctx.t[None, :] + phase[:, None]))
    return np.asarray(0.5 + 0.5 * wave, dtype=np.float64)


def _p_stars(spec: Mapping[str, Any], ctx: ParticleContext) -> ParticleLayer:
    top, bottom = ctx.region(spec.get("region", "sky"))
    n = _count(spec, 60)
    xs = ctx.rng.uniform(0, ctx.width, n)
    ys = top + ctx.rng.random(n) ** 1.4 * (bottom - top)
    radius = ctx.rng.uniform(0.5, 1.5, n) * ctx.scale
    xi = np.clip(xs.astype(int), 0, ctx.width - 1)
    yi = np.clip(ys.astype(int), 0, ctx.height - 1)
    visible = ~ctx.backdrop.occluded[yi, xi]
    xs, ys, radius = xs[visible], ys[visible], radius[visible]
    alpha = np.rint(255 * (0.3 + 0.7 * _twinkle(ctx, len(xs), (1, 2, 3)))).astype(int)
    color = parse_hex(spec.get("color", "#ffffff"))
    big = radius > 1.25 * ctx.scale

    def draw(d: ImageDraw.ImageDraw, f: int) -> None:
        for i in range(len(xs)):
            x, y, r, a = xs[i], ys[i], radius[i], int(alpha[i, f])
            fill = (color[0], color[1], color[2], a)
            d.ellipse((x - r, y - r, x + r, y + r), fill=fill)
            if big[i] and a > 200:
                arm = r * 3.2
                d.line([(x - arm, y), (x + arm, y)], fill=(color[0], color[1], color[2], a // 2))
                d.line([(x, y - arm), (x, y + arm)], fill=(color[0], color[1], color[2], a // 2))

    return ParticleLayer(spec.get("layer", "back"), draw)


def _p_snow(spec: Mapping[str, Any], ctx: ParticleContext) -> ParticleLayer:
    top, bottom = ctx.region(spec.get("region", "full"))
    n = _count(spec, 70)
    radius = ctx.rng.uniform(1.0, 3.2, n) * ctx.scale
    ys = _falling(ctx, n, top, bottom, (1, 1, 2), 6 * ctx.scale)
    xs = ctx.rng.uniform(0, ctx.width, n)[:, None] + _wobble(ctx, n, 7 * ctx.scale)
    alpha = ctx.rng.integers(170, 256, n)
    color = parse_hex(spec.get("color", "#ffffff"))

    def draw(d: ImageDraw.ImageDraw, f: int) -> None:
        for i in range(n):
            x, y, r = xs[i, f], ys[i, f], radius[i]
            d.ellipse((x - r, y - r, x + r, y + r), fill=(color[0], color[1], color[2], int(alpha[i])))

    return ParticleLayer(spec.get("layer", "front"), draw)


def _p_rain(spec: Mapping[str, Any], ctx: ParticleContext) -> ParticleLayer:
    top, bottom = ctx.region(spec.get("region", "full"))
    n = _count(spec, 60)
    length = ctx.rng.uniform(9, 17, n) * ctx.scale
    ys = _falling(ctx, n, top, bottom, (4, 5, 6), 20 * ctx.scale)
    xs = ctx.rng.uniform(0, ctx.width * 1.1, n)
    color = parse_hex(spec.get("color", "#cfe3ff90"))
    width = max(1, round(ctx.scale))

    def draw(d: ImageDraw.ImageDraw, f: int) -> None:
        for i in range(n):
            x, y, ln = xs[i] - (ys[i, f] / ctx.height) * 0.1 * ctx.width, ys[i, f], length[i]
            d.line([(x, y), (x - ln * 0.22, y + ln)], fill=color, width=width)

    return ParticleLayer(spec.get("layer", "front"), draw)


def _p_bubbles(spec: Mapping[str, Any], ctx: ParticleContext) -> ParticleLayer:
    top, bottom = ctx.region(spec.get("region", "full"))
    n = _count(spec, 24)
    radius = ctx.rng.uniform(1.8, 6.0, n) * ctx.scale
    ys = _falling(ctx, n, top, bottom, (1, 1, 2), 8 * ctx.scale, up=True)
    xs = ctx.rng.uniform(0, ctx.width, n)[:, None] + _wobble(ctx, n, 4 * ctx.scale)
    color = parse_hex(spec.get("color", "#e0fbfc"))

    def draw(d: ImageDraw.ImageDraw, f: int) -> None:
        for i in range(n):
            x, y, r = xs[i, f], ys[i, f], radius[i]
            d.ellipse(
                (x - r, y - r, x + r, y + r),
                fill=with_alpha(color, 40),
                outline=with_alpha(color, 190),
                width=max(1, round(ctx.scale)),
            )
            h = r * 0.35
            d.ellipse(
                (x - r * 0.45 - h, y - r * 0.45 - h, x - r * 0.45 + h, y - r * 0.45 + h), fill=with_alpha(color, 220)
            )

    return ParticleLayer(spec.get("layer", "front"), draw)


def _p_confetti(spec: Mapping[str, Any], ctx: ParticleContext) -> ParticleLayer:
    top, bottom = ctx.region(spec.get("region", "full"))
    n = _count(spec, 50)
    colors = _colors(spec, ctx, ["#ff595e", "#ffca3a", "#8ac926", "#1982c4", "#6a4c93", "#ff70a6"])
    ys = _falling(ctx, n, top, bottom, (1, 2), 8 * ctx.scale)
    xs = ctx.rng.uniform(0, ctx.width, n)[:, None] + _wobble(ctx, n, 10 * ctx.scale)
    w = ctx.rng.uniform(2.5, 4.0, n) * ctx.scale
    h = ctx.rng.uniform(1.2, 2.2, n) * ctx.scale
    angle = ctx.rng.uniform(0, math.pi, n)
    flip = np.abs(
        np.cos(2 * math.pi * (ctx.rng.integers(2, 5, n)[:, None] * ctx.t[None, :] + ctx.rng.random(n)[:, None]))
    )
    pick = ctx.rng.integers(0, len(colors), n)
    cos_a, sin_a = np.cos(angle), np.sin(angle)

    def draw(d: ImageDraw.ImageDraw, f: int) -> None:
        for i in range(n):
            x, y = xs[i, f], ys[i, f]
            hw, hh = w[i], max(h[i] * flip[i, f], 0.4)
            c, s = cos_a[i], sin_a[i]
            pts = [
                (x + px * c - py * s, y + px * s + py * c) for px, py in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh))
            ]
            d.polygon(pts, fill=colors[pick[i]])

    return ParticleLayer(spec.get("layer", "front"), draw)


def _p_petals(spec: Mapping[str, Any], ctx: ParticleContext) -> ParticleLayer:
    top, bottom = ctx.region(spec.get("region", "full"))
    n = _count(spec, 24)
    colors = [ctx.tinted(c) for c in _colors(spec, ctx, ["#ffafcc", "#ffc8dd", "#ffffff"])]
    ys = _falling(ctx, n, top, bottom, (1,), 8 * ctx.scale)
    xs = ctx.rng.uniform(0, ctx.width, n)[:, None] + _wobble(ctx, n, 14 * ctx.scale)
    rx = ctx.rng.uniform(2.5, 4.5, n) * ctx.scale
    squash = 0.35 + 0.65 * _twinkle(ctx, n, (1, 2))
    pick = ctx.rng.integers(0, len(colors), n)

    def draw(d: ImageDraw.ImageDraw, f: int) -> None:
        for i in range(n):
            x, y, r = xs[i, f], ys[i, f], rx[i]
            ry = r * squash[i, f]
            d.ellipse((x - r, y - ry, x + r, y + ry), fill=colors[pick[i]])

    return ParticleLayer(spec.get("layer", "front"), draw)


def _p_fireflies(spec: Mapping[str, Any], ctx: ParticleContext) -> ParticleLayer:
    top, bottom = ctx.region(spec.get("region", "full"))
    n = _count(spec, 16)
    x0 = ctx.rng.uniform(0, ctx.width, n)
    y0 = ctx.rng.uniform(top, bottom, n)
    xs = x0[:, None] + _wobble(ctx, n, 14 * ctx.scale)
    ys = y0[:, None] + _wobble(ctx, n, 10 * ctx.scale)
    glow = _twinkle(ctx, n, (1, 2, 3))
    color = parse_hex(spec.get("color", "#fff3a0"))

    def draw(d: ImageDraw.ImageDraw, f: int) -> None:
        for i in range(n):
            x, y, g = xs[i, f], ys[i, f], glow[i, f]
            r = 5.0 * ctx.scale
            d.ellipse((x - r, y - r, x + r, y + r), fill=with_alpha(color, int(70 * g)))
            r = 1.6 * ctx.scale
            d.ellipse((x - r, y - r, x + r, y + r), fill=with_alpha(color, int(120 + 135 * g)))

    return ParticleLayer(spec.get("layer", "front"), draw)


def _p_sparkles(spec: Mapping[str, Any], ctx: ParticleContext) -> ParticleLayer:
    top, bottom = ctx.region(spec.get("region", "full"))
    n = _count(spec, 24)
    xs = ctx.rng.uniform(0, ctx.width, n)
    ys = ctx.rng.uniform(top, bottom, n)
    size = ctx.rng.uniform(2.0, 5.0, n) * ctx.scale
    strength = _twinkle(ctx, n, (2, 3, 4)) ** 3
    color = parse_hex(spec.get("color", "#ffffff"))

    def draw(d: ImageDraw.ImageDraw, f: int) -> None:
        for i in range(n):
            a = int(255 * strength[i, f])
            if a < 16:
                continue
            x, y, s = xs[i], ys[i], size[i] * (0.5 + 0.5 * strength[i, f])
            fill = with_alpha(color, a)
            d.line([(x - s, y), (x + s, y)], fill=fill)
            d.line([(x, y - s), (x, y + s)], fill=fill)

    return ParticleLayer(spec.get("layer", "front"), draw)


def _p_dust(spec: Mapping[str, Any], ctx: ParticleContext) -> ParticleLayer:
    top, bottom = ctx.region(spec.get("region", "full"))
    n = _count(spec, 30)
    speed = float(spec.get("speed", 14.0)) * ctx.scale  # px per second
    x0 = ctx.rng.uniform(0, ctx.width, n)
    xs = np.mod(
        x0[:, None] + speed * ctx.rng.uniform(0.6, 1.4, n)[:, None] * ctx.t[None, :] * ctx.duration_s, ctx.width
    )
    ys = ctx.rng.uniform(top, bottom, n)[:, None] + _wobble(ctx, n, 3 * ctx.scale)
    radius = ctx.rng.uniform(0.8, 1.8, n) * ctx.scale
    color = parse_hex(spec.get("color", "#ffffff80"))

    def draw(d: ImageDraw.ImageDraw, f: int) -> None:
        for i in range(n):
            x, y, r = xs[i, f], ys[i, f], radius[i]
            d.ellipse((x - r, y - r, x + r, y + r), fill=color)

    return ParticleLayer(spec.get("layer", "front"), draw)


def _p_clouds(spec: Mapping[str, Any], ctx: ParticleContext) -> ParticleLayer:
    top, bottom = ctx.region(spec.get("region", "upper"))
    n = _count(spec, 3)
    color = ctx.tinted(parse_hex(spec.get("color", "#ffffffe6")))
    speed = float(spec.get("speed", 8.0)) * ctx.scale
    sizes = ctx.rng.uniform(28, 52, n) * ctx.scale
    span = ctx.width + 4 * sizes.max(initial=0.0)
    x0 = ctx.rng.uniform(0, span, n)
    xs = np.mod(x0[:, None] + speed * ctx.t[None, :] * ctx.duration_s, span) - 2 * sizes.max(initial=0.0)
    ys = ctx.rng.uniform(top + 0.1 * (bottom - top), bottom - 0.2 * (bottom - top), n)
    puffs = [
        [(ctx.rng.uniform(-0.9, 0.9), ctx.rng.uniform(-0.3, 0.1), ctx.rng.uniform(0.35, 0.6)) for _ in range(5)]
        for _ in range(n)
    ]
    shade = darker(color, 0.06)

    def draw(d: ImageDraw.ImageDraw, f: int) -> None:
        for i in range(n):
            x, y, s = xs[i, f], ys[i], sizes[i]
            d.rounded_rectangle((x - s, y - s * 0.1, x + s, y + s * 0.3), radius=s * 0.2, fill=shade)
            for px, py, pr in puffs[i]:
                r = pr * s
                d.ellipse((x + px * s - r, y + py * s - r, x + px * s + r, y + py * s + r), fill=color)

    return ParticleLayer(spec.get("layer", "back"), draw)


def _p_bokeh(spec: Mapping[str, Any], ctx: ParticleContext) -> ParticleLayer:
    top, bottom = ctx.region(spec.get("region", "full"))
    n = _count(spec, 12)
    colors = _colors(spec, ctx, ["#ffffff"])
    x0 = ctx.rng.uniform(0, ctx.width, n)
    y0 = ctx.rng.uniform(top, bottom, n)
    xs = x0[:, None] + _wobble(ctx, n, 18 * ctx.scale)
    ys = y0[:, None] + _wobble(ctx, n, 22 * ctx.scale)
    radius = ctx.rng.uniform(10, 40, n) * ctx.scale
    alpha = ctx.rng.integers(30, 75, n)
    pick = ctx.rng.integers(0, len(colors), n)

    def draw(d: ImageDraw.ImageDraw, f: int) -> None:
        for i in range(n):
            x, y, r = xs[i, f], ys[i, f], radius[i]
            c = colors[pick[i]]
            d.ellipse((x - r, y - r, x + r, y + r), fill=with_alpha(lighter(c, 0.3), int(alpha[i])))

    return ParticleLayer(spec.get("layer", "back"), draw)


ParticleFactory = Callable[[Mapping[str, Any], ParticleContext], ParticleLayer]

PARTICLE_KINDS: dict[str, ParticleFactory] = {
    "stars": _p_stars,
    "snow": _p_snow,
    "rain": _p_rain,
    "bubbles": _p_bubbles,
    "confetti": _p_confetti,
    "petals": _p_petals,
    "fireflies": _p_fireflies,
    "sparkles": _p_sparkles,
    "dust": _p_dust,
    "clouds": _p_clouds,
    "bokeh": _p_bokeh,
}


def build_particles(specs: Sequence[Mapping[str, Any]], ctx: ParticleContext) -> list[ParticleLayer]:
    return [PARTICLE_KINDS[spec["kind"]](spec, ctx) for spec in specs]
