"""The visible "AI-generated · @creator" watermark.

Every frame (and therefore the poster and the sampled frames) carries the
label: the clip may be downloaded and re-shared without our metadata, and the
label is what travels with the pixels.  The band is precomputed once per
(size, handle) and blended into all frames in one vectorised numpy step.
"""

from __future__ import annotations

import functools
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PREFIX = "AI-generated"
SEPARATOR = " \u00b7 "
FONT_PATH = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
#: Peak opacity of the dark band (0..255): dark enough for white text on snow, light enough to see through.
BAND_ALPHA = 150
MAX_HANDLE_CHARS = 30

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@functools.lru_cache(maxsize=8)
def load_font(size: int) -> Font:
    """DejaVu when installed (it has the middle dot); Pillow's bundled font otherwise, so rendering never fails."""
    try:
        return ImageFont.truetype(str(FONT_PATH), size)
    except OSError:
        return ImageFont.load_default(size=size)


def clean_handle(handle: str) -> str:
    """Handles are user data: drop control/format characters (e.g. RTL overrides) and a stray leading '@'.

    Otherwise a handle could visually spoof the label or render as '@@name'.
    """
    text = "".join(ch for ch in handle if unicodedata.category(ch)[0] not in ("C", "Z") or ch == " ")
    text = text.strip().lstrip("@").strip()
    if len(text) > MAX_HANDLE_CHARS:
        text = text[: MAX_HANDLE_CHARS - 1] + "\u2026"
    return text


def watermark_text(handle: str) -> str:
    cleaned = clean_handle(handle)
    return f"{PREFIX}{SEPARATOR}@{cleaned}" if cleaned else PREFIX


def band_height(height: int) -> int:
    return max(18, round(height * 0.075))


def _text_width(font: Font, text: str) -> float:
    return float(font.getlength(text))


@functools.lru_cache(maxsize=64)
def watermark_layer(width: int, height: int, handle: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (colour, alpha) for the bottom band: shapes (band, W, 3) and (band, W, 1), both uint16."""
    band = band_height(height)
    font_size = max(9, round(height * 0.031))
    font = load_font(font_size)
    text = watermark_text(handle)
    cleaned = clean_handle(handle)
    # Long handles get ellipsised rather than overflowing the frame edge.
    while _text_width(font, text) > width * 0.94 and len(cleaned) > 1:
        cleaned = cleaned[:-2] + "\u2026"
        text = f"{PREFIX}{SEPARATOR}@{cleaned}"

    ramp = np.full(band, BAND_ALPHA, np.float32)
    fade = max(1, band // 3)
    ramp[:fade] = BAND_ALPHA * (np.arange(1, fade + 1, dtype=np.float32) / (fade + 1))
    layer = Image.new("RGBA", (width, band), (0, 0, 0, 0))
    alpha_rows = np.repeat(np.rint(ramp)[:, None], width, axis=1).astype(np.uint8)
    layer.putalpha(Image.fromarray(alpha_rows, "L"))

    text_layer = Image.new("RGBA", (width, band), (0, 0, 0, 0))
    draw = ImageDraw.Draw(text_layer)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (width - (right - left)) / 2 - left
    y = fade + (band - fade - (bottom - top)) / 2 - top
    draw.text((x + 1, y + 1), text, font=font, fill=(0, 0, 0, 160))
    draw.text((x, y), text, font=font, fill=(255, 255, 255, 245))
    combined = np.asarray(Image.alpha_composite(layer, text_layer)).astype(np.uint16)
    color = combined[..., :3].copy()
    alpha = combined[..., 3:4].copy()
    color.setflags(write=False)
    alpha.setflags(write=False)
    return color, alpha


def apply_watermark(frames: np.ndarray, handle: str) -> np.ndarray:
    """Blend the watermark into ``frames`` in place; accepts one (H, W, 3) frame or a (N, H, W, 3) stack."""
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3:
        raise ValueError("frames must be uint8 with shape (H, W, 3) or (N, H, W, 3)")
    height, width = frames.shape[-3], frames.shape[-2]
    color, alpha = watermark_layer(width, height, handle)
    region = frames[..., height - color.shape[0] :, :, :]
    blended = (region.astype(np.uint16) * (255 - alpha) + color * alpha + 127) // 255
    region[...] = blended.astype(np.uint8)
    return frames
