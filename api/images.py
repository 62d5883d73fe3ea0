"""Validation and normalisation of user-uploaded images (avatars; later cameo reference images).

Untrusted bytes go in, a small, metadata-free WebP comes out, or :class:`ImageRejected` is raised with a
reason a person can read. The format is decided by decoding the bytes with Pillow, never by a file name
or a declared content type, and only JPEG, PNG and WebP decoders are ever run on the input.

Defences, in order:

1. size: empty input and input over ``max_bytes`` are refused before any parsing;
2. format: :func:`PIL.Image.open` is restricted to the JPEG, PNG and WebP plugins; anything else is refused,
   naming what it looked like (GIF, HEIC, PDF, HTML…) from its magic bytes alone;
3. dimensions: the declared width and height are checked against ``max_pixels``, ``min_side`` and
   ``max_side`` before any pixel data is decoded (for WebP even before Pillow opens it, because libwebp
   allocates its canvas at open). Pillow's own global ``Image.MAX_IMAGE_PIXELS`` is neither relied on
   nor changed; when it fires first, its error (or its warning, where warnings are errors) is a rejection;
4. full decode: every pixel is decoded, so truncated or corrupt files are refused
   (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off);
5. normalisation: EXIF orientation applied, colours converted to sRGB when an ICC profile is embedded,
   RGB or RGBA (alpha only when the image really has transparent pixels), optional centre square crop,
   downscale, and re-encoding as WebP from a fresh pixel buffer, so no EXIF, GPS, XMP, ICC or text chunk
   can survive.

This module is synchronous and CPU-bound (tens to a few hundred milliseconds for a large photo): call it
from a worker thread (``run_in_threadpool``), not on the event loop.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
from dataclasses import dataclass

from PIL import ExifTags, Image, UnidentifiedImageError

from core.errors import ClipstreamError

try:  # colour management is optional: without LittleCMS, embedded profiles are simply dropped
    from PIL import ImageCms
except ImportError:  # pragma: no cover - Pillow wheels ship with LittleCMS
    ImageCms = None  # type: ignore[assignment]

MAX_IMAGE_BYTES = 5 * 1024 * 1024
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})

OUTPUT_MIME_TYPE = "image/webp"
OUTPUT_QUALITY = 85
_WEBP_MAX_SIDE = 16383  # the largest side a WebP file can have
_MIB = 1024 * 1024

# Pillow names a multi-picture JPEG (some cameras and phones) "MPO"; it is a JPEG whose first frame we use.
_FORMAT_ALIASES = {"MPO": "JPEG"}
_FORMAT_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}

# What Pillow's EXIF/XMP parsing raises on malformed metadata.
# (Warning: Pillow warns about corrupt EXIF, and where warnings are errors that is raised.)
_METADATA_ERRORS = (SyntaxError, ValueError, TypeError, KeyError, IndexError, OSError, EOFError, struct.error, Warning)

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageRejected(ClipstreamError):
    """Readable reason, e.g. 'image is 7.2 MB; the limit is 5 MB' or 'not a JPEG, PNG or WebP image (found GIF)'."""


@dataclass(frozen=True)
class NormalizedImage:
    data: bytes  # re-encoded WebP (quality 85), metadata (EXIF/GPS, XMP, ICC, text chunks) stripped
    width: int
    height: int
    mime_type: str  # "image/webp"
    sha256: str  # hex digest of `data`


def normalize_image(
    raw: bytes,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    min_side: int = 64,
    max_side: int = 4096,
    max_pixels: int = 24_000_000,
    output_max_side: int = 1024,
    square: bool = False,
) -> NormalizedImage:
    """Validate an uploaded JPEG, PNG or WebP image and re-encode it as a clean WebP.

    ``min_side``, ``max_side`` and ``max_pixels`` apply to the image as stored (before orientation, crop
    or downscale). ``square=True`` centre-crops to the shorter side (avatars). The result's longest side is
    at most ``output_max_side``; smaller images are never upscaled.

    Animated WebP and PNG (APNG) images are accepted, but only their first frame is kept (for an APNG, the
    default image that non-animating viewers show). The same holds for a multi-picture JPEG (MPO).

    Raises :class:`ImageRejected` for every kind of bad input, chained to Pillow's error where there is one.
    Raises :class:`ValueError` only for inconsistent arguments (a programming error, not bad input).
    """
    _check_arguments(max_bytes, min_side, max_side, max_pixels, output_max_side)
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"raw must be bytes, not {type(raw).__name__}")
    raw = bytes(raw)

    if not raw:
        raise ImageRejected("image is empty")
    if len(raw) > max_bytes:
        raise ImageRejected(
            f"image is {_megabytes(len(raw), above=max_bytes)} MB; the limit is {_megabytes(max_bytes)} MB"
        )

    if _is_webp(raw):
        # libwebp allocates the whole canvas when Pillow opens the file, so check the header first.
        size = _webp_canvas_size(raw)
        if size is None:
            raise ImageRejected("damaged WebP image: its dimensions cannot be read")
        _check_dimensions(*size, min_side=min_side, max_side=max_side, max_pixels=max_pixels)

    img = _open(raw)
    try:
        fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "")
        if fmt not in ALLOWED_FORMATS:  # cannot happen with formats= restricted; a guard for Pillow changes
            raise ImageRejected(f"not a JPEG, PNG or WebP image (found {img.format or 'unknown format'})")
        width, height = img.size
        _check_dimensions(width, height, min_side=min_side, max_side=max_side, max_pixels=max_pixels)

        if fmt == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the result will be downscaled anyway.
            # It still reads the whole file, so truncation is still detected.
            img.draft(None, (output_max_side, output_max_side))
        _load(img, _FORMAT_NAMES[fmt])
        icc_profile = img.info.get("icc_profile")
        orientation = _orientation(img)
        out = _normalise(img, icc_profile, orientation, output_max_side=output_max_side, square=square)
    finally:
        img.close()

    buf = io.BytesIO()
    out.save(buf, format="WEBP", quality=OUTPUT_QUALITY, method=4)
    data = buf.getvalue()
    return NormalizedImage(
        data=data,
        width=out.width,
        height=out.height,
        mime_type=OUTPUT_MIME_TYPE,
        sha256=hashlib.sha256(data).hexdigest(),
    )


# --- steps -------------------------------------------------------------------------------------------------


def _check_arguments(max_bytes: int, min_side: int, max_side: int, max_pixels: int, output_max_side: int) -> None:
    if max_bytes <= 0 or max_pixels <= 0 or min_side <= 0:
        raise ValueError("max_bytes, max_pixels and min_side must be positive")
    if min_side > max_side:
        raise ValueError(f"min_side ({min_side}) is larger than max_side ({max_side})")
    if not 1 <= output_max_side <= _WEBP_MAX_SIDE:
        raise ValueError(f"output_max_side must be between 1 and {_WEBP_MAX_SIDE}")


def _open(raw: bytes) -> Image.Image:
    """Identify the image with the allowed decoders only; reads headers, decodes no pixels."""
    try:
        return Image.open(io.BytesIO(raw), formats=sorted(ALLOWED_FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected(f"image has too many pixels and may be a decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        found = _sniff(raw)
        if found in _FORMAT_NAMES.values():  # right signature, but the header does not parse
            raise ImageRejected(f"damaged {found} image: it cannot be read") from e
        raise ImageRejected(f"not a JPEG, PNG or WebP image (found {found})") from e
    except MemoryError:
        raise
    except Exception as e:  # a header parser failing on hostile input (OSError, ValueError…): reject, never 500
        found = _sniff(raw)
        what = found if found in _FORMAT_NAMES.values() else "or unsupported"
        raise ImageRejected(f"damaged {what} image: it cannot be read ({e or type(e).__name__})") from e


def _load(img: Image.Image, fmt_name: str) -> None:
    """Decode every pixel of the first frame; truncated or corrupt data is a rejection."""
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageRejected(f"image has too many pixels and may be a decompression bomb ({e})") from e
    except MemoryError:
        raise
    except Exception as e:  # OSError (truncated), SyntaxError, EOFError, ValueError, struct.error, zlib.error…
        raise ImageRejected(f"damaged or truncated {fmt_name} image: {e or type(e).__name__}") from e


def _check_dimensions(width: int, height: int, *, min_side: int, max_side: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageRejected(
            f"image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:g} megapixels"
        )
    if max(width, height) > max_side:
        raise ImageRejected(f"image is {width}x{height} pixels; the longest side may be at most {max_side}")
    if min(width, height) < min_side:
        raise ImageRejected(f"image is {width}x{height} pixels; each side must be at least {min_side}")


def _orientation(img: Image.Image) -> int:
    """The EXIF (or XMP) orientation, read leniently: unreadable metadata means 'as stored'."""
    try:
        value = img.getexif().get(ExifTags.Base.Orientation, 1)
    except _METADATA_ERRORS:  # malformed EXIF is common and harmless: the pixels are fine, metadata is dropped
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _normalise(
    img: Image.Image, icc_profile: bytes | None, orientation: int, *, output_max_side: int, square: bool
) -> Image.Image:
    """Loaded image → oriented, cropped, downscaled sRGB RGB/RGBA image with no metadata."""
    alpha = img.has_transparency_data
    target = "RGBA" if alpha else "RGB"

    # Work in a mode that resizes correctly and that LittleCMS understands: RGB, RGBA, L or CMYK.
    if img.mode.startswith("I"):  # 16-bit greyscale PNG: scale to 8 bits instead of clipping at 255
        img = img.convert("I").point(lambda v: v * (1 / 257)).convert("L")
        alpha = False
        target = "RGB"
    elif alpha and img.mode != "RGBA":  # P, PA, LA, or L/RGB with a tRNS colour key
        img = img.convert("RGBA")
    elif img.mode not in ("RGB", "RGBA", "L", "CMYK"):  # 1, P without transparency, YCbCr, LAB…
        img = img.convert(target)

    if orientation in _TRANSPOSE:
        img = img.transpose(_TRANSPOSE[orientation])

    if square and img.width != img.height:
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side))

    longest = max(img.size)
    if longest > output_max_side:
        scale = output_max_side / longest
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)

    img = _to_srgb(img, icc_profile, target)
    if img.mode != target:
        img = img.convert(target)
    if target == "RGBA" and img.getchannel("A").getextrema() == (255, 255):
        img = img.convert("RGB")  # declared alpha but every pixel is opaque

    # A fresh image from raw pixels: nothing from the source's info (EXIF, XMP, ICC, text) comes along.
    return Image.frombytes(img.mode, img.size, img.tobytes())


def _to_srgb(img: Image.Image, icc_profile: bytes | None, target: str) -> Image.Image:
    """Convert pixels from the embedded ICC profile to sRGB, so that dropping the profile keeps the colours.

    A profile that is unusable (corrupt, or for another colour space than the pixels) is ignored and the
    pixels are taken as sRGB, which is what a browser does with an untagged image.
    """
    if not icc_profile or ImageCms is None or img.mode not in ("RGB", "RGBA", "L", "CMYK"):
        return img
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        converted = ImageCms.profileToProfile(img, source, _srgb_profile(), outputMode=target)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError, struct.error):
        return img
    if converted is None:  # pragma: no cover - only with inPlace=True
        return img
    if target == "RGBA" and img.mode == "RGBA":
        converted.putalpha(img.getchannel("A"))  # make sure alpha is carried over unchanged
    return converted


_SRGB: ImageCms.ImageCmsProfile | None = None


def _srgb_profile() -> ImageCms.ImageCmsProfile:
    global _SRGB
    if _SRGB is None:
        _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _SRGB


# --- header sniffing (no decoding) ---------------------------------------------------------------------------


def _is_webp(raw: bytes) -> bool:
    return raw[:4] == b"RIFF" and raw[8:12] == b"WEBP"


def _webp_canvas_size(raw: bytes) -> tuple[int, int] | None:
    """Width and height from a WebP header (simple lossy, lossless, or extended), or None if unreadable."""
    chunk = raw[12:16]
    if chunk == b"VP8 " and len(raw) >= 30 and raw[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(raw[26:28], "little") & 0x3FFF, int.from_bytes(raw[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(raw) >= 25 and raw[20] == 0x2F:
        bits = int.from_bytes(raw[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(raw) >= 30:
        return int.from_bytes(raw[24:27], "little") + 1, int.from_bytes(raw[27:30], "little") + 1
    return None


_ISOBMFF_BRANDS = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"heim": "HEIC",
    b"heis": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
    b"qt  ": "a QuickTime video",
    b"jxl ": "JPEG XL",
}

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"%!PS", "PostScript"),
    (b"8BPS", "a Photoshop document"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
    (b"\x1a\x45\xdf\xa3", "a WebM/Matroska video"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "an executable"),
)


def _sniff(raw: bytes) -> str:
    """A short, human name for what the bytes look like, for error messages only (never for acceptance)."""
    if _is_webp(raw):
        return "WebP"
    if raw[:4] == b"RIFF":
        return {b"AVI ": "an AVI video", b"WAVE": "a WAV audio file"}.get(raw[8:12], "a RIFF file")
    if raw[4:8] == b"ftyp":
        return _ISOBMFF_BRANDS.get(raw[8:12], "an MP4 video")
    if raw[:2] == b"BM" and len(raw) >= 18 and int.from_bytes(raw[14:18], "little") in (12, 40, 52, 56, 64, 108, 124):
        return "BMP"
    for magic, name in _MAGIC:
        if raw.startswith(magic):
            return name
    head = raw[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<script")):
        return "HTML"
    if head.startswith(b"<?xml"):
        return "XML"
    chunk = raw[:1024]
    try:
        text = chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(chunk) - 3:  # not merely a multi-byte character cut at the end of the sample
            return "unrecognised data"
        text = chunk[: e.start].decode("utf-8")
    return "text" if all(c.isprintable() or c.isspace() for c in text) else "unrecognised data"


def _megabytes(n: int, *, above: int | None = None) -> str:
    value = round(n / _MIB, 1)
    if above is not None and value <= above / _MIB:  # never print '5.0 MB' for something just over a 5 MB limit
        value = math.ceil(n / _MIB * 10) / 10
    return f"{value:.1f}".removesuffix(".0")
