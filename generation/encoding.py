"""Writing clips to disk: H.264 MP4, JPEG stills, frame sampling, hashing.

Encoder settings are chosen for browser playback (H.264 + yuv420p +
faststart so the moov atom comes first and playback starts before the whole
file arrives, BT.709 tagged so browsers don't guess the colour matrix) and for
reproducibility, which makes the sha256 a meaningful content id:

* ``threads=1``: frame-threaded x264 output depends on thread scheduling.
* ``mbtree=0``: x264's macroblock-tree rate control (its SIMD propagate path)
  produced different bytes for identical frames depending on heap state in
  this build (measured: 6 different files from 6 encodes in one process).
  Disabling it makes the output stable at the cost of ~25 % larger files at
  the same CRF; ``no-asm`` would also fix it but is ~3.5x slower.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Colorspace
from PIL import Image

from generation.base import RenderedClip

MP4_MIME_TYPE = "video/mp4"
X264_OPTIONS: dict[str, str] = {"crf": "23", "preset": "veryfast", "threads": "1", "x264-params": "mbtree=0"}
#: AVCOL_* value 1 (BT.709) for matrix, primaries and transfer; range 1 is limited ("MPEG") range.
BT709 = 1
LIMITED_RANGE = 1
CONTAINER_OPTIONS: dict[str, str] = {"movflags": "+faststart"}
JPEG_QUALITY = 88


def encode_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    """Encode an (N, H, W, 3) uint8 RGB stack as H.264/yuv420p MP4."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError("frames must be a uint8 array of shape (N, H, W, 3)")
    count, height, width, _ = frames.shape
    if count == 0:
        raise ValueError("cannot encode an empty clip")
    with av.open(str(path), mode="w", format="mp4", options=dict(CONTAINER_OPTIONS)) as container:
        stream = container.add_stream("libx264", rate=fps, options=dict(X264_OPTIONS))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.colorspace = BT709
        stream.codec_context.color_primaries = BT709
        stream.codec_context.color_trc = BT709
        stream.codec_context.color_range = LIMITED_RANGE
        for index in range(count):
            rgb = av.VideoFrame.from_ndarray(frames[index], format="rgb24")
            frame = rgb.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_jpeg(frame: np.ndarray, path: Path, quality: int = JPEG_QUALITY) -> None:
    Image.fromarray(frame, "RGB").save(path, format="JPEG", quality=quality, optimize=False)


def sample_frame_indices(frame_count: int, fps: int, per_second: int = 1) -> tuple[int, ...]:
    """At least ``per_second`` samples in every second, plus the first and last frame.

    Moderation and thumbnails look at these, so the ends of the clip must be
    covered: a bad last frame is as visible as a bad first one.
    """
    if frame_count <= 0:
        raise ValueError("frame_count must be positive")
    step = max(1, fps // max(1, per_second))
    indices = set(range(0, frame_count, step))
    indices.add(frame_count - 1)
    return tuple(sorted(indices))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_clip(
    frames: np.ndarray,
    out_dir: Path,
    fps: int,
    *,
    clip_id: str,
    generator: str,
    generator_version: str,
    concepts: tuple[str, ...],
) -> RenderedClip:
    """Write a finished (watermarked) frame stack as the files every backend produces:
    clip.mp4, poster.jpg (the middle frame) and frames/NNN.jpg (the safety filter's samples)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frame_count, height, width = frames.shape[0], frames.shape[1], frames.shape[2]
    video_path = out_dir / "clip.mp4"
    encode_mp4(frames, video_path, fps)
    poster_path = out_dir / "poster.jpg"
    write_jpeg(frames[frame_count // 2], poster_path)
    frames_dir = out_dir / "frames"
    frames_dir.mkdir(exist_ok=True)
    indices = sample_frame_indices(frame_count, fps)
    frame_paths: list[Path] = []
    for n, index in enumerate(indices):
        path = frames_dir / f"{n:03d}.jpg"
        write_jpeg(frames[index], path)
        frame_paths.append(path)
    return RenderedClip(
        clip_id=clip_id,
        video_path=video_path,
        poster_path=poster_path,
        frame_paths=tuple(frame_paths),
        frame_indices=indices,
        width=width,
        height=height,
        fps=fps,
        frame_count=frame_count,
        duration_s=frame_count / fps,
        mime_type=MP4_MIME_TYPE,
        video_sha256=sha256_file(video_path),
        generator=generator,
        generator_version=generator_version,
        concepts=concepts,
    )
