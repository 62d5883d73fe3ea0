"""Validation and normalisation of uploaded images; every test image is built in memory."""

from __future__ import annotations

import hashlib
import io
import struct
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms, PngImagePlugin

from api.images import (
    ALLOWED_FORMATS,
    MAX_IMAGE_BYTES,
    ImageRejected,
    NormalizedImage,
    normalize_image,
)
from core.errors import ClipstreamError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


# --- builders ----------------------------------------------------------------------------------------------


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def noisy(size: tuple[int, int] = (256, 192), mode: str = "RGB") -> Image.Image:
    """An image that does not compress away, so truncating its file really cuts pixel data."""
    bands = [Image.effect_noise(size, 80) for _ in range(len(mode))]
    return Image.merge(mode, bands)


def decode(result: NormalizedImage) -> Image.Image:
    img = Image.open(io.BytesIO(result.data))
    img.load()
    return img


def px(img: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def close_to(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking 1-bit PNG header declaring any size, with one row of pixel data: a few dozen bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + (width + 7) // 8))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def webp_declaring(width: int, height: int) -> bytes:
    """An extended (VP8X) WebP header declaring a canvas of any size, followed by a tiny real frame."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    frame = encode(Image.new("RGB", (64, 64)), "WEBP")[12:]  # the VP8 chunk of a small image
    body = b"WEBP" + vp8x + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def exif_with(orientation: int | None = None, gps: bool = False) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Clipstream Test Camera"  # Make
    exif[0x0110] = "Model X"  # Model
    if orientation is not None:
        exif[0x0112] = orientation
    if gps:
        exif[0x8825] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}  # GPSInfo
    return exif.tobytes()


def rgb_profile_with_swapped_red_and_green() -> bytes:
    """A minimal ICC v2 matrix/TRC RGB profile whose red and green colorants are sRGB's green and red."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \x00\x00\x00\x00" + s15(x) + s15(y) + s15(z)

    curve = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, int(2.2 * 256)) + b"\x00\x00"
    tags = [
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.3851, 0.7169, 0.0971)),  # sRGB green
        (b"gXYZ", xyz(0.4361, 0.2225, 0.0139)),  # sRGB red
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for sig, payload in tags:
        table += sig + struct.pack(">II", offset + len(data), len(payload))
        data += payload + b"\x00" * (-len(payload) % 4)
    size = offset + len(data)
    header = struct.pack(">I", size) + b"\x00" * 4 + b"\x02\x10\x00\x00" + b"mntrRGB XYZ " + b"\x00" * 12 + b"acsp"
    header += b"\x00" * 28 + s15(0.9642) + s15(1.0) + s15(0.8249)
    header += b"\x00" * (128 - len(header))
    return header + table + data


# --- accepted input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_each_allowed_format_is_normalised_to_webp(fmt: str) -> None:
    raw = encode(noisy((320, 240)), fmt)
    result = normalize_image(raw)
    assert result.mime_type == "image/webp"
    assert (result.width, result.height) == (320, 240)
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()
    out = decode(result)
    assert out.format == "WEBP"
    assert out.size == (320, 240)
    assert out.mode == "RGB"
    assert fmt in ALLOWED_FORMATS


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_transparency_is_kept(fmt: str) -> None:
    img = Image.new("RGBA", (100, 100), (255, 0, 0, 0))
    img.paste((0, 255, 0, 255), (0, 0, 50, 50))
    out = decode(normalize_image(encode(img, fmt)))
    assert out.mode == "RGBA"
    assert px(out, (10, 10))[3] == 255
    assert close_to(px(out, (10, 10))[:3], GREEN)
    assert px(out, (90, 90))[3] == 0


def test_palette_png_with_transparent_index_keeps_alpha() -> None:
    img = Image.new("RGB", (80, 80), RED)
    img.paste(BLUE, (0, 0, 40, 80))
    pal = img.quantize(colors=2)
    transparent = pal.getpixel((0, 0))
    out = decode(normalize_image(encode(pal, "PNG", transparency=transparent)))
    assert out.mode == "RGBA"
    assert px(out, (5, 5))[3] == 0
    assert px(out, (75, 5))[3] == 255


def test_fully_opaque_alpha_channel_is_dropped() -> None:
    out = decode(normalize_image(encode(Image.new("RGBA", (80, 80), (*RED, 255)), "PNG")))
    assert out.mode == "RGB"


@pytest.mark.parametrize("mode", ["L", "1", "P", "LA", "CMYK"])
def test_other_pixel_modes_become_rgb_or_rgba(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = decode(normalize_image(encode(Image.new(mode, (80, 80)), fmt)))
    assert out.mode == ("RGBA" if mode == "LA" else "RGB")


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    img = Image.new("I;16", (80, 80), 32768)  # mid grey in 16 bits; clipping would make it white
    out = decode(normalize_image(encode(img, "PNG")))
    assert 100 < px(out, (40, 40))[0] < 156


def test_exif_orientation_is_applied() -> None:
    stored = Image.new("RGB", (200, 100), RED)  # landscape as stored: red left half, blue right half
    stored.paste(BLUE, (100, 0, 200, 100))
    raw = encode(stored, "JPEG", exif=exif_with(orientation=6), quality=95)  # 6: display rotated 90° clockwise
    result = normalize_image(raw)
    assert (result.width, result.height) == (100, 200)
    out = decode(result)
    assert close_to(px(out, (50, 20)), RED)
    assert close_to(px(out, (50, 180)), BLUE)
    assert 0x0112 not in out.getexif()


def corrupt_exif_with_orientation_6() -> bytes:
    """EXIF whose Make tag points past the end of the data (Pillow warns and skips it) plus Orientation 6."""
    entries = struct.pack("<HHII", 0x0112, 3, 1, 6) + struct.pack("<HHII", 0x010F, 2, 100, 5000)
    return b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 2) + entries + struct.pack("<I", 0)


def test_corrupt_exif_still_applies_a_readable_orientation() -> None:
    raw = encode(Image.new("RGB", (200, 100)), "JPEG", exif=corrupt_exif_with_orientation_6())
    with pytest.warns(UserWarning, match="Tag data larger than file"):
        result = normalize_image(raw)
    assert (result.width, result.height) == (100, 200)


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_corrupt_exif_where_warnings_are_errors(fmt: str) -> None:
    raw = encode(Image.new("RGB", (200, 100)), fmt, exif=corrupt_exif_with_orientation_6())
    try:
        result = normalize_image(raw)
    except ImageRejected as e:  # Pillow's JPEG plugin reads EXIF while opening, so its warning is fatal there
        assert fmt == "JPEG"
        assert str(e).startswith("damaged JPEG image")
    else:  # elsewhere the orientation is read by us, leniently: unreadable means 'as stored'
        assert (result.width, result.height) == (200, 100)


def test_metadata_is_stripped() -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "secret comment")
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cases = [
        encode(noisy((120, 120)), "JPEG", exif=exif_with(gps=True), icc_profile=srgb),
        encode(noisy((120, 120)), "PNG", exif=exif_with(gps=True), pnginfo=text),
        encode(noisy((120, 120)), "WEBP", exif=exif_with(gps=True), xmp=b"<x:xmpmeta>secret xmp</x:xmpmeta>"),
    ]
    for raw in cases:
        assert Image.open(io.BytesIO(raw)).getexif(), "the input really carries EXIF"
        result = normalize_image(raw)
        out = decode(result)
        assert not out.getexif()
        assert not {"exif", "icc_profile", "xmp", "Comment"} & out.info.keys()
        for marker in (b"Exif", b"GPS", b"Clipstream Test Camera", b"ICCP", b"XMP", b"secret"):
            assert marker not in result.data


def test_embedded_icc_profile_is_converted_to_srgb() -> None:
    img = Image.new("RGB", (80, 80), RED)
    out = decode(normalize_image(encode(img, "PNG", icc_profile=rgb_profile_with_swapped_red_and_green())))
    assert close_to(px(out, (40, 40)), GREEN, tolerance=60)
    assert "icc_profile" not in out.info


def test_unusable_icc_profile_is_ignored() -> None:
    out = decode(normalize_image(encode(Image.new("RGB", (80, 80), RED), "JPEG", icc_profile=b"not a profile" * 10)))
    assert close_to(px(out, (40, 40)), RED)


def test_square_crop_keeps_the_centre() -> None:
    img = Image.new("RGB", (300, 200), GREEN)
    img.paste(RED, (0, 0, 50, 200))
    img.paste(BLUE, (250, 0, 300, 200))
    result = normalize_image(encode(img, "PNG"), square=True)
    assert (result.width, result.height) == (200, 200)
    out = decode(result)
    for xy in [(2, 2), (197, 2), (2, 197), (197, 197), (100, 100)]:
        assert close_to(px(out, xy), GREEN), xy


def test_square_crop_of_portrait_image() -> None:
    result = normalize_image(encode(Image.new("RGB", (100, 400)), "PNG"), square=True)
    assert (result.width, result.height) == (100, 100)


def test_downscale_to_output_max_side() -> None:
    result = normalize_image(encode(Image.new("RGB", (2000, 1000), RED), "JPEG"))
    assert (result.width, result.height) == (1024, 512)
    result = normalize_image(encode(noisy((600, 900)), "PNG"), output_max_side=300, square=True)
    assert (result.width, result.height) == (300, 300)


def test_small_images_are_not_upscaled() -> None:
    result = normalize_image(encode(noisy((100, 80)), "WEBP"))
    assert (result.width, result.height) == (100, 80)


def test_animated_images_keep_their_first_frame() -> None:
    frames = [Image.new("RGB", (80, 80), c) for c in (RED, GREEN, BLUE)]
    for fmt in ("PNG", "WEBP"):
        raw = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        assert getattr(Image.open(io.BytesIO(raw)), "n_frames", 1) == 3
        out = decode(normalize_image(raw))
        assert getattr(out, "n_frames", 1) == 1
        assert close_to(px(out, (40, 40)), RED)


# --- size limits -------------------------------------------------------------------------------------------


def test_empty_input_is_rejected() -> None:
    with pytest.raises(ImageRejected, match="empty"):
        normalize_image(b"")


def test_oversize_input_is_rejected_before_decoding() -> None:
    with pytest.raises(ImageRejected, match=r"^image is 7\.2 MB; the limit is 5 MB$"):
        normalize_image(b"\xff\xd8\xff" + b"\x00" * int(7.2 * 1024 * 1024))
    with pytest.raises(ImageRejected, match=r"^image is 5\.1 MB; the limit is 5 MB$"):
        normalize_image(b"\x00" * (MAX_IMAGE_BYTES + 1))


def test_max_bytes_is_configurable() -> None:
    raw = encode(noisy((100, 100)), "PNG")
    assert normalize_image(raw, max_bytes=len(raw)).width == 100
    with pytest.raises(ImageRejected, match="the limit is"):
        normalize_image(raw, max_bytes=len(raw) - 1)


def test_too_small_sides_are_rejected() -> None:
    with pytest.raises(ImageRejected, match=r"32x32 pixels; each side must be at least 64"):
        normalize_image(encode(Image.new("RGB", (32, 32)), "PNG"))
    with pytest.raises(ImageRejected, match="at least 64"):
        normalize_image(encode(Image.new("RGB", (500, 10)), "JPEG"))
    assert normalize_image(encode(Image.new("RGB", (32, 32)), "PNG"), min_side=16).width == 32


def test_too_large_sides_are_rejected() -> None:
    with pytest.raises(ImageRejected, match=r"5000x100 pixels; the longest side may be at most 4096"):
        normalize_image(encode(Image.new("L", (5000, 100)), "PNG"))
    with pytest.raises(ImageRejected, match="at most 4096"):
        normalize_image(png_declaring(100, 4097))


def test_pixel_count_is_checked_before_decoding() -> None:
    # The header declares 25 Mpx but carries one row of data: decoding would fail as truncated instead.
    with pytest.raises(ImageRejected, match=r"5000x5000 pixels \(25\.0 megapixels\); the limit is 24 megapixels"):
        normalize_image(png_declaring(5000, 5000), max_side=10_000)
    with pytest.raises(ImageRejected, match="megapixels"):
        normalize_image(encode(Image.new("L", (2000, 2000)), "PNG"), max_pixels=1_000_000)


@pytest.mark.parametrize("bomb", [png_declaring(30_000, 30_000), webp_declaring(16_000, 16_000)])
def test_decompression_bomb_is_rejected_quickly(bomb: bytes) -> None:
    assert len(bomb) < 1000
    started = time.perf_counter()
    with pytest.raises(ImageRejected, match="pixels"):
        normalize_image(bomb, max_side=50_000, max_pixels=24_000_000)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("bomb", [png_declaring(30_000, 30_000), webp_declaring(16_000, 16_000)])
def test_decompression_bomb_is_rejected_without_pillows_global_limit(
    bomb: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # as some other library in the process might do
    started = time.perf_counter()
    with pytest.raises(ImageRejected, match="megapixels"):
        normalize_image(bomb, max_side=50_000)
    assert time.perf_counter() - started < 1.0


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_pillows_bomb_warning_as_error_is_a_rejection() -> None:
    # 100 Mpx is over Pillow's warning threshold (~89 Mpx) but allowed by our own (generous) limits here.
    with pytest.raises(ImageRejected, match="decompression bomb"):
        normalize_image(png_declaring(10_000, 10_000), max_side=20_000, max_pixels=200_000_000)


# --- wrong formats and damaged files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "found"),
    [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("ICO", "ICO"), ("PDF", "PDF"), ("PPM", "unrecognised data")],
)
def test_other_image_formats_are_rejected(fmt: str, found: str) -> None:
    raw = encode(Image.new("RGB", (128, 128), RED), fmt)
    with pytest.raises(ImageRejected, match=rf"^not a JPEG, PNG or WebP image \(found {found}\)$"):
        normalize_image(raw)


@pytest.mark.parametrize(
    ("raw", "found"),
    [
        (b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", "HTML"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"/>', "SVG"),
        (b"<svg onload=alert(1)></svg>", "SVG"),
        (b"just some text that was renamed to avatar.png\n", "text"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2mp41" + b"\x00" * 64, "an MP4 video"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64, "HEIC"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64, "AVIF"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "PDF"),
        (bytes(range(256)) * 4, "unrecognised data"),
    ],
)
def test_non_images_are_rejected(raw: bytes, found: str) -> None:
    with pytest.raises(ImageRejected, match=rf"^not a JPEG, PNG or WebP image \(found {found}\)$"):
        normalize_image(raw)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_are_rejected(fmt: str) -> None:
    raw = encode(noisy((256, 256)), fmt)
    for cut in (0.5, 0.9):
        with pytest.raises(ImageRejected, match=r"damaged|truncated"):
            normalize_image(raw[: int(len(raw) * cut)])


def test_damaged_header_is_named() -> None:
    raw = bytearray(encode(noisy((100, 100)), "PNG"))
    raw[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    with pytest.raises(ImageRejected, match=r"^damaged PNG image"):
        normalize_image(bytes(raw))


def test_rejections_are_clipstream_errors() -> None:
    with pytest.raises(ClipstreamError):
        normalize_image(b"GIF89a")


def test_inconsistent_arguments_are_programming_errors() -> None:
    raw = encode(noisy((100, 100)), "PNG")
    with pytest.raises(ValueError):
        normalize_image(raw, min_side=500, max_side=100)
    with pytest.raises(ValueError):
        normalize_image(raw, output_max_side=0)


# --- fuzzing -----------------------------------------------------------------------------------------------

_SEEDS = [
    encode(noisy((64, 64)), "JPEG"),
    encode(noisy((64, 64)), "JPEG", progressive=True, exif=exif_with(orientation=3, gps=True)),
    encode(noisy((64, 64), "RGBA"), "PNG"),
    encode(noisy((64, 64)), "WEBP"),
    encode(noisy((64, 64), "RGBA"), "WEBP", lossless=True),
]


def _accepts_or_rejects(raw: bytes) -> None:
    try:
        result = normalize_image(raw)
    except ImageRejected as e:
        assert str(e)
    else:
        assert result.data[:4] == b"RIFF"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_image_rejected(raw: bytes) -> None:
    _accepts_or_rejects(raw)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(_SEEDS),
    st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), min_size=1, max_size=8),
    st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0)),
)
def test_corrupted_images_raise_only_image_rejected(
    seed: bytes, edits: list[tuple[int, int]], keep: float | None
) -> None:
    raw = bytearray(seed)
    for position, value in edits:
        raw[position % len(raw)] = value
    if keep is not None:
        raw = raw[: int(len(raw) * keep)]
    _accepts_or_rejects(bytes(raw))
