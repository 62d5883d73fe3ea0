"""Checks the moderation worker runs on a generated clip before it may be published.

There is no visual classifier yet (a CLIP frame filter comes later), so a clip is published only
when everything that *can* be checked without one holds:

``prompt_policy``
    the prompt, re-checked against the *current* policy (a term list may have changed since the
    prompt was accepted); ``review`` or ``block`` fails the check: a clip can't wait for review
    here, so it is blocked (fail closed).
``media_integrity``
    sha256 of the file equals the hash the generator recorded.
``media_decode``
    PyAV opens the file, it has exactly one video stream, the codec is h264, and every frame
    decodes with FFmpeg's strict error detection (``err_detect=explode``), so corrupt data fails
    instead of being concealed.
``media_format``
    width and height match, the frame count matches within one frame, the frame rate matches
    (within half a frame per second), the duration is at most ``max_duration_s``.

Moderation fails closed: any exception while checking (missing file, corrupt file, a broken
policy object) becomes a failed check carrying the exception text, and the verdict is ``block``.
:func:`check_generated_clip` never raises for bad media.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av

from moderation.prompt_policy import PromptPolicy

__all__ = ["CheckResult", "ClipExpectations", "ClipVerdict", "check_generated_clip"]

EXPECTED_CODEC = "h264"
FRAME_COUNT_TOLERANCE = 1
FPS_TOLERANCE = 0.5
# Duration estimates from container/stream metadata differ from frames/fps by rounding only.
DURATION_EPSILON_S = 1e-3
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CheckResult:
    name: str  # "prompt_policy", "media_integrity", "media_decode", "media_format"
    passed: bool
    detail: str  # readable: what was checked and what was found
    scores: tuple[tuple[str, float], ...] = ()  # frame_safety: (concept, the clip's score: its best window of frames)


@dataclass(frozen=True)
class ClipVerdict:
    action: Literal["publish", "flag", "block"]
    checks: tuple[CheckResult, ...]

    @property
    def reasons(self) -> tuple[str, ...]:
        """Details of the failed checks (empty when published)."""
        return tuple(c.detail for c in self.checks if not c.passed)


@dataclass(frozen=True)
class ClipExpectations:
    width: int
    height: int
    frame_count: int
    fps: int
    video_sha256: str
    max_duration_s: float = 10.0


@dataclass(frozen=True)
class _Probe:
    """What decoding found; the format check compares it with the expectations."""

    width: int
    height: int
    frames: int
    fps: float | None
    duration_s: float | None
    codec: str
    pix_fmt: str | None
    container: str
    stopped_early: bool


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _guarded(name: str, what: str, fn: Callable[[], CheckResult]) -> CheckResult:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - fail closed: any error is a failed check, never a crash
        return CheckResult(name, False, f"{what} failed with {_error_text(exc)}")


def _check_prompt(prompt: str, policy: PromptPolicy) -> CheckResult:
    decision = policy.check(prompt)
    if decision.allowed:
        return CheckResult("prompt_policy", True, f"prompt allowed by policy {decision.policy_version}")
    reasons = "; ".join(r.as_text() for r in decision.reasons) or "no reason given"
    return CheckResult(
        "prompt_policy",
        False,
        f"prompt re-check under policy {decision.policy_version}: {decision.action} ({reasons})",
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_integrity(path: Path, expected: ClipExpectations) -> CheckResult:
    want = str(expected.video_sha256).strip().lower()
    if not _SHA256_HEX.match(want):
        return CheckResult("media_integrity", False, f"expected sha256 is not 64 hex digits: {expected.video_sha256!r}")
    if not path.is_file():  # also keeps a FIFO or device path from blocking the worker
        return CheckResult("media_integrity", False, f"no regular file at {path}")
    got = _sha256(path)
    if got != want:
        return CheckResult("media_integrity", False, f"sha256 of {path.name} is {got}, the generator recorded {want}")
    return CheckResult("media_integrity", True, f"sha256 {got} matches the generator's record")


def _rate(stream: av.video.stream.VideoStream) -> Fraction | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return Fraction(rate)
    return None


def _decode(path: Path, expected: ClipExpectations, keep: list[Any] | None = None) -> tuple[CheckResult, _Probe | None]:
    if not path.is_file():
        return CheckResult("media_decode", False, f"no file at {path}"), None
    with av.open(str(path)) as container:
        video = container.streams.video
        if len(video) != 1:
            return CheckResult("media_decode", False, f"expected one video stream, found {len(video)}"), None
        stream = video[0]
        codec = stream.codec_context.name
        if codec != EXPECTED_CODEC:
            # Not decoded at all: an unexpected codec is refused, not parsed.
            return CheckResult("media_decode", False, f"video codec is {codec}, expected {EXPECTED_CODEC}"), None
        stream.codec_context.options = {"err_detect": "explode"}  # corrupt data raises instead of being concealed
        limit = max(expected.frame_count, 0) + FRAME_COUNT_TOLERANCE + 1
        frames = 0
        sizes: set[tuple[int, int]] = set()
        first_time = last_time = None
        stopped_early = False
        for frame in container.decode(stream):
            if keep is not None:
                keep.append(frame)
            frames += 1
            sizes.add((frame.width, frame.height))
            if frame.time is not None:
                first_time = frame.time if first_time is None else min(first_time, frame.time)
                last_time = frame.time if last_time is None else max(last_time, frame.time)
            if frames > limit:
                stopped_early = True  # more frames than could pass; don't decode an arbitrarily long file
                break
        if frames == 0:
            return CheckResult("media_decode", False, "the video stream decoded to no frames"), None
        if len(sizes) != 1:
            return CheckResult("media_decode", False, f"frame size changes within the clip: {sorted(sizes)}"), None
        (width, height) = sizes.pop()

        rate = _rate(stream)
        estimates: list[float] = []
        if stream.duration and stream.time_base:
            estimates.append(float(stream.duration * stream.time_base))
        if container.duration:
            estimates.append(container.duration / av.time_base)
        if rate:
            estimates.append(frames / float(rate))
            if first_time is not None and last_time is not None:
                estimates.append(last_time - first_time + 1 / float(rate))
        estimates = [e for e in estimates if math.isfinite(e)]
        probe = _Probe(
            width=width,
            height=height,
            frames=frames,
            fps=float(rate) if rate else None,
            duration_s=max(estimates) if estimates else None,
            codec=codec,
            pix_fmt=stream.codec_context.pix_fmt,
            container=container.format.name,
            stopped_early=stopped_early,
        )
    summary = f"{codec} {probe.pix_fmt} {width}x{height} in {probe.container}"
    if stopped_early:
        return (
            CheckResult("media_decode", False, f"{summary}: stopped after {frames} frames, more than expected"),
            probe,
        )
    return CheckResult("media_decode", True, f"{summary}: all {frames} frames decoded"), probe


def _check_format(probe: _Probe | None, expected: ClipExpectations) -> CheckResult:
    if probe is None:
        return CheckResult("media_format", False, "format not checked: the file did not decode")
    problems: list[str] = []
    if (probe.width, probe.height) != (expected.width, expected.height):
        problems.append(f"size {probe.width}x{probe.height}, expected {expected.width}x{expected.height}")
    frames = f"{probe.frames}+" if probe.stopped_early else str(probe.frames)
    if probe.stopped_early or abs(probe.frames - expected.frame_count) > FRAME_COUNT_TOLERANCE:
        problems.append(f"{frames} frames, expected {expected.frame_count} (±{FRAME_COUNT_TOLERANCE})")
    if probe.fps is None:
        problems.append("frame rate unknown")
    elif abs(probe.fps - expected.fps) > FPS_TOLERANCE:
        problems.append(f"{probe.fps:g} fps, expected {expected.fps}")
    if probe.duration_s is None:
        problems.append("duration unknown")
    elif probe.duration_s > expected.max_duration_s + DURATION_EPSILON_S:
        problems.append(f"duration {probe.duration_s:.3f} s, longer than {expected.max_duration_s:g} s")
    if problems:
        return CheckResult("media_format", False, "format mismatch: " + "; ".join(problems))
    duration = f"{probe.duration_s:.3f}" if probe.duration_s is not None else "?"
    return CheckResult(
        "media_format",
        True,
        f"{probe.width}x{probe.height}, {frames} frames at {probe.fps:g} fps, {duration} s",
    )


def check_generated_clip(
    prompt: str, video_path: Path, expected: ClipExpectations, policy: PromptPolicy, keep: list[Any] | None = None
) -> ClipVerdict:
    """Run every check (all of them, so the verdict lists every problem) and decide.
    ``keep``: a list that receives every decoded frame, for the frame filter (use them
    only when the verdict is publish: a failed decode leaves some)."""
    checks = [_guarded("prompt_policy", "prompt re-check", lambda: _check_prompt(prompt, policy))]
    probe: _Probe | None = None
    try:
        path = Path(video_path)
    except TypeError as exc:
        not_a_path = f"video_path {video_path!r} is not a path ({_error_text(exc)})"
        checks.append(CheckResult("media_integrity", False, not_a_path))
        decode_result = CheckResult("media_decode", False, not_a_path)
    else:
        checks.append(_guarded("media_integrity", f"hashing {path}", lambda: _check_integrity(path, expected)))
        try:
            decode_result, probe = _decode(path, expected, keep)
        except Exception as exc:  # noqa: BLE001 - fail closed
            decode_result = CheckResult("media_decode", False, f"decoding {path} failed with {_error_text(exc)}")
    checks.append(decode_result)
    checks.append(_guarded("media_format", "format check", lambda: _check_format(probe, expected)))
    action: Literal["publish", "block"] = "publish" if all(c.passed for c in checks) else "block"
    return ClipVerdict(action=action, checks=tuple(checks))
