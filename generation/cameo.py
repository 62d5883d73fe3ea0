"""Cameo likeness sprites for the procedural renderer.

A cast person appears as a round portrait cut from the likeness image they
registered, framed in a ring whose colour comes from their handle, with their
@handle on a tag below, so viewers can tell who was cast (with consent). The
sprite then moves like any other actor. The image file is checked against the
sha256 that consent was given for: a swapped file is refused, not rendered.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from generation.base import CameoLikeness, GenerationError
from generation.watermark import clean_handle, load_font

#: Decoding limit for a likeness file (the API stores ≤ 1024 px WebP; this is a backstop).
MAX_LIKENESS_PIXELS = 4096 * 4096


def load_likeness(cameo: CameoLikeness) -> Image.Image:
    """The likeness image as RGB, after checking its bytes against the consented sha256."""
    try:
        raw = Path(cameo.image_path).read_bytes()
    except OSError as e:
        raise GenerationError(f"likeness image for @{cameo.handle} is unavailable: {e}") from e
    digest = hashlib.sha256(raw).hexdigest()
    if digest != cameo.sha256:
        raise GenerationError(f"likeness image for @{cameo.handle} does not match the image consent was given for")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > MAX_LIKENESS_PIXELS:
                raise GenerationError(f"likeness image for @{cameo.handle} is too large ({img.width}x{img.height})")
            return img.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise GenerationError(f"likeness image for @{cameo.handle} cannot be decoded: {e}") from e


def _ring_colour(handle: str) -> tuple[int, int, int, int]:
    h = hashlib.sha256(handle.lower().encode()).digest()
    # Bright, saturated: keep one channel high, one low.
    hi, mid, lo = 235, 90 + h[1] % 120, 40 + h[2] % 50
    order = h[0] % 6
    rgb = [(hi, mid, lo), (hi, lo, mid), (mid, hi, lo), (lo, hi, mid), (mid, lo, hi), (lo, mid, hi)][order]
    return (*rgb, 255)


def likeness_sprite(image: Image.Image, size_px: int, handle: str) -> Image.Image:
    """A round, ringed portrait of ``size_px`` with an @handle tag under it (RGBA)."""
    size_px = max(24, int(size_px))
    ring = max(2, size_px // 18)
    face = ImageOps.fit(image, (size_px - 2 * ring, size_px - 2 * ring), Image.Resampling.LANCZOS, centering=(0.5, 0.4))
    mask = Image.new("L", face.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, face.width - 1, face.height - 1), fill=255)

    font = load_font(max(9, size_px // 7))
    tag = "@" + clean_handle(handle)
    draw_probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = draw_probe.textbbox((0, 0), tag, font=font)
    tag_w, tag_h = int(right - left) + 10, int(bottom - top) + 6
    width = max(size_px, tag_w)
    sprite = Image.new("RGBA", (width, size_px + tag_h + 2), (0, 0, 0, 0))
    draw = ImageDraw.Draw(sprite)
    x0 = (width - size_px) // 2
    colour = _ring_colour(handle)
    draw.ellipse((x0, 0, x0 + size_px - 1, size_px - 1), fill=colour)
    sprite.paste(face, (x0 + ring, ring), mask)
    tx = (width - tag_w) // 2
    ty = size_px + 2
    draw.rounded_rectangle((tx, ty, tx + tag_w, ty + tag_h), radius=tag_h // 2, fill=(20, 20, 30, 210))
    draw.text((tx + 5 - left, ty + 3 - top), tag, font=font, fill=(255, 255, 255, 255))
    return sprite
