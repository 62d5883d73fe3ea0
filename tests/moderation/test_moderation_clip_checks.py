"""Clip checks on real tiny mp4 files written with PyAV (libx264, yuv420p)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moderation.clip_checks import CheckResult, ClipExpectations, ClipVerdict, check_generated_clip
from moderation.prompt_policy import DEFAULT_POLICY_DIR, load_prompt_policy

WIDTH, HEIGHT, FRAMES, FPS = 64, 112, 16, 8
CHECK_NAMES = ("prompt_policy", "media_integrity", "media_decode", "media_format")
PROMPT = "a cat surfing a wave at sunset"


def write_clip(
    path: Path, *, frames=FRAMES, width=WIDTH, height=HEIGHT, fps=FPS, codec="libx264", faststart=False, seed=0
) -> Path:
    """Seeded random noise, encoded for real: the same bytes as a generator would hand over."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast"}
        for _ in range(frames):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def expect(path: Path, **changes) -> ClipExpectations:
    base = ClipExpectations(width=WIDTH, height=HEIGHT, frame_count=FRAMES, fps=FPS, video_sha256=sha256(path))
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def policy():
    return load_prompt_policy()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def clip(clip_dir) -> Path:
    return write_clip(clip_dir / "clip.mp4")


def failed(verdict: ClipVerdict) -> set[str]:
    return {c.name for c in verdict.checks if not c.passed}


def check(verdict: ClipVerdict, name: str) -> CheckResult:
    return next(c for c in verdict.checks if c.name == name)


def test_good_clip_is_published(clip, policy):
    verdict = check_generated_clip(PROMPT, clip, expect(clip), policy)
    assert verdict.action == "publish", verdict
    assert tuple(c.name for c in verdict.checks) == CHECK_NAMES
    assert all(c.passed and c.detail for c in verdict.checks)
    assert verdict.reasons == ()
    assert "16 frames" in check(verdict, "media_decode").detail
    assert "h264" in check(verdict, "media_decode").detail
    assert f"{WIDTH}x{HEIGHT}" in check(verdict, "media_format").detail


def test_wrong_sha_blocks(clip, policy):
    verdict = check_generated_clip(PROMPT, clip, expect(clip, video_sha256="0" * 64), policy)
    assert verdict.action == "block"
    assert failed(verdict) == {"media_integrity"}
    assert "sha256" in verdict.reasons[0]


def test_malformed_expected_sha_blocks(clip, policy):
    verdict = check_generated_clip(PROMPT, clip, expect(clip, video_sha256="not-a-hash"), policy)
    assert verdict.action == "block" and failed(verdict) == {"media_integrity"}


def test_uppercase_expected_sha_is_accepted(clip, policy):
    verdict = check_generated_clip(PROMPT, clip, expect(clip, video_sha256=sha256(clip).upper()), policy)
    assert verdict.action == "publish"


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_file_blocks_even_with_matching_hash(clip_dir, policy, faststart):
    full = write_clip(clip_dir / f"full-{faststart}.mp4", faststart=faststart)
    truncated = clip_dir / f"truncated-{faststart}.mp4"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    # The hash is the truncated file's own: only decoding can tell that it is broken.
    verdict = check_generated_clip(PROMPT, truncated, expect(truncated), policy)
    assert verdict.action == "block"
    assert "media_decode" in failed(verdict)
    assert "media_format" in failed(verdict)
    assert "media_integrity" not in failed(verdict)


def test_corrupted_frame_data_blocks_even_with_matching_hash(clip, clip_dir, policy):
    data = bytearray(clip.read_bytes())
    for offset in range(len(data) // 4, len(data) // 2, 997):  # flip bits inside the frame data
        data[offset] ^= 0xFF
    corrupt = clip_dir / "corrupt.mp4"
    corrupt.write_bytes(bytes(data))
    verdict = check_generated_clip(PROMPT, corrupt, expect(corrupt), policy)
    assert verdict.action == "block"
    assert "media_decode" in failed(verdict)
    assert "Error" in check(verdict, "media_decode").detail  # the exception text is kept


def test_missing_file_blocks(tmp_path, policy):
    missing = tmp_path / "nope.mp4"
    verdict = check_generated_clip(PROMPT, missing, ClipExpectations(WIDTH, HEIGHT, FRAMES, FPS, "0" * 64), policy)
    assert verdict.action == "block"
    assert failed(verdict) == {"media_integrity", "media_decode", "media_format"}
    assert "no regular file" in check(verdict, "media_integrity").detail
    assert str(missing) in check(verdict, "media_decode").detail
    assert all(reason for reason in verdict.reasons)


def test_unreadable_file_fails_closed_with_the_exception_text(clip, policy, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("disk says no")

    expected = expect(clip)
    monkeypatch.setattr(Path, "open", refuse)
    verdict = check_generated_clip(PROMPT, clip, expected, policy)
    assert verdict.action == "block"
    assert "PermissionError: disk says no" in check(verdict, "media_integrity").detail


def test_not_a_path_and_fifo_block_without_raising_or_hanging(tmp_path, policy):
    expected = ClipExpectations(WIDTH, HEIGHT, FRAMES, FPS, "0" * 64)
    verdict = check_generated_clip(PROMPT, None, expected, policy)  # type: ignore[arg-type]
    assert verdict.action == "block"
    assert failed(verdict) == {"media_integrity", "media_decode", "media_format"}
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    assert check_generated_clip(PROMPT, fifo, expected, policy).action == "block"


def test_empty_and_garbage_files_block(tmp_path, policy):
    for name, content in [("empty.mp4", b""), ("text.mp4", b"this is not a video\n" * 50)]:
        path = tmp_path / name
        path.write_bytes(content)
        verdict = check_generated_clip(PROMPT, path, expect(path), policy)
        assert verdict.action == "block" and "media_decode" in failed(verdict), name


def test_directory_instead_of_file_blocks(tmp_path, policy):
    verdict = check_generated_clip(PROMPT, tmp_path, ClipExpectations(WIDTH, HEIGHT, FRAMES, FPS, "0" * 64), policy)
    assert verdict.action == "block"


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"width": 112, "height": 64}, "size 64x112"),
        ({"width": 128}, "size"),
        ({"frame_count": FRAMES + 2}, "frames"),
        ({"frame_count": FRAMES - 2}, "frames"),
        ({"fps": 24}, "fps"),
        ({"max_duration_s": 1.0}, "duration"),
    ],
)
def test_format_mismatch_blocks(clip, policy, changes, needle):
    verdict = check_generated_clip(PROMPT, clip, expect(clip, **changes), policy)
    assert verdict.action == "block"
    assert failed(verdict) == {"media_format"}
    assert needle in check(verdict, "media_format").detail


@pytest.mark.parametrize("frame_count", [FRAMES - 1, FRAMES + 1])
def test_frame_count_within_one_passes(clip, policy, frame_count):
    assert check_generated_clip(PROMPT, clip, expect(clip, frame_count=frame_count), policy).action == "publish"


def test_duration_at_the_limit_passes(clip, policy):
    assert check_generated_clip(PROMPT, clip, expect(clip, max_duration_s=FRAMES / FPS), policy).action == "publish"


def test_longer_file_than_expected_is_not_decoded_to_the_end(clip_dir, policy):
    long_clip = write_clip(clip_dir / "long.mp4", frames=60)
    verdict = check_generated_clip(PROMPT, long_clip, expect(long_clip), policy)
    assert verdict.action == "block"
    assert {"media_decode", "media_format"} <= failed(verdict)
    assert "stopped after" in check(verdict, "media_decode").detail


def test_other_codec_blocks(clip_dir, policy):
    mpeg4 = write_clip(clip_dir / "mpeg4.mp4", codec="mpeg4")
    verdict = check_generated_clip(PROMPT, mpeg4, expect(mpeg4), policy)
    assert verdict.action == "block"
    assert "mpeg4" in check(verdict, "media_decode").detail


@pytest.mark.parametrize(("prompt", "policy_action"), [("behead him", "block"), ("you bitch", "review")])
def test_prompt_no_longer_allowed_blocks(clip, policy, prompt, policy_action):
    verdict = check_generated_clip(prompt, clip, expect(clip), policy)
    assert verdict.action == "block"
    assert failed(verdict) == {"prompt_policy"}
    detail = check(verdict, "prompt_policy").detail
    assert policy_action in detail and policy.version in detail


def test_policy_that_changed_since_acceptance(clip, tmp_path):
    shutil.copytree(DEFAULT_POLICY_DIR, tmp_path / "policy")
    with (tmp_path / "policy" / "terms" / "violence.txt").open("a", encoding="utf-8") as f:
        f.write("surfing a wave\n")
    stricter = load_prompt_policy(tmp_path / "policy")
    assert check_generated_clip(PROMPT, clip, expect(clip), load_prompt_policy()).action == "publish"
    verdict = check_generated_clip(PROMPT, clip, expect(clip), stricter)
    assert verdict.action == "block" and failed(verdict) == {"prompt_policy"}


def test_broken_policy_object_fails_closed(clip):
    class Broken:
        def check(self, text):
            raise RuntimeError("term list unavailable")

    verdict = check_generated_clip(PROMPT, clip, expect(clip), Broken())  # type: ignore[arg-type]
    assert verdict.action == "block"
    assert "RuntimeError: term list unavailable" in check(verdict, "prompt_policy").detail


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise_and_never_publish(policy, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        path.write_bytes(data)
        verdict = check_generated_clip(PROMPT, path, expect(path), policy)
    assert verdict.action == "block"
    assert verdict.reasons


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=90_000), st.integers(min_value=1, max_value=255))
def test_single_corrupted_byte_never_raises(policy, clip, position, xor):
    data = bytearray(clip.read_bytes())
    data[position % len(data)] ^= xor
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.mp4"
        path.write_bytes(bytes(data))
        verdict = check_generated_clip(PROMPT, path, expect(clip), policy)  # the generator's (original) hash
    assert verdict.action == "block"
    assert "media_integrity" in failed(verdict)
