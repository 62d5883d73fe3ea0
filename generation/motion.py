"""Motion trajectories, vectorised over all frames of a clip.

Each trajectory is a pure function of normalised clip time ``t`` in [0, 1)
so that a whole clip's animation is a handful of numpy expressions instead of
per-frame Python.  Rates are given per second in the vocabulary and rounded to
whole cycles per clip, which makes every clip loop seamlessly -- short
vertical video is usually watched on repeat.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

FloatArray = np.ndarray


@dataclass(frozen=True)
class Pose:
    """Per-frame placement of one sprite relative to its anchor.

    Offsets are fractions of the frame *width* on both axes so circular
    paths stay circular on a 9:16 canvas.  ``wrap_x``/``wrap_y`` (progress in
    [0, 1)) replace the anchor for motions that cross the whole frame.
    """

    dx: FloatArray
    dy: FloatArray
    angle: FloatArray
    sx: FloatArray
    sy: FloatArray
    wrap_x: FloatArray | None = None
    wrap_y: FloatArray | None = None


def cycles(rate_per_s: float, duration_s: float) -> int:
    return max(1, round(rate_per_s * duration_s))


def _p(params: Mapping[str, float], name: str, default: float) -> float:
    return float(params.get(name, default))


def _ones(t: FloatArray) -> FloatArray:
    return np.ones_like(t)


def _tilt(vx: FloatArray, vy: FloatArray, limit: float) -> FloatArray:
    """Nose-up/nose-down tilt that stays correct after the sprite is mirrored to face its velocity."""
    angle = np.degrees(np.arctan2(-vy, np.abs(vx) + 1e-9)) * np.where(vx < 0, -1.0, 1.0)
    return np.asarray(np.clip(angle, -limit, limit), dtype=np.float64)


def _velocity(x: FloatArray) -> FloatArray:
    return np.asarray(np.roll(x, -1) - x, dtype=np.float64)


def idle(t: FloatArray, duration: float, phase: float, params: Mapping[str, float]) -> Pose:
    """A slow 'breathing' squash so a subject with no verb still feels alive."""
    k = cycles(_p(params, "rate", 0.7), duration)
    wave = np.sin(2 * math.pi * (k * t + phase))
    sy = 1.0 + _p(params, "squash", 0.035) * wave
    return Pose(
        dx=np.zeros_like(t),
        dy=np.zeros_like(t),
        angle=_p(params, "tilt", 2.0) * np.sin(2 * math.pi * (k * t + phase) + 0.7),
        sx=1.0 / np.sqrt(sy),
        sy=sy,
    )


def sway(t: FloatArray, duration: float, phase: float, params: Mapping[str, float]) -> Pose:
    """Dancing: side-to-side sway with a bounce on every beat and a lean into the sway."""
    beats = cycles(_p(params, "rate", 1.0), duration)
    a = 2 * math.pi * (beats * t + phase)
    bounce = np.abs(np.sin(a))
    squash = 1.0 - _p(params, "squash", 0.08) * (1.0 - bounce) ** 4
    return Pose(
        dx=_p(params, "amplitude", 0.12) * np.sin(a),
        dy=-_p(params, "bounce", 0.06) * bounce,
        angle=-_p(params, "tilt", 14.0) * np.sin(a),
        sx=1.0 / np.sqrt(squash),
        sy=squash,
    )


def walk(t: FloatArray, duration: float, phase: float, params: Mapping[str, float]) -> Pose:
    """Walking/running/driving: cross the frame left to right, bobbing on each step."""
    laps = cycles(_p(params, "laps", 0.34), duration)
    steps = cycles(_p(params, "steps", 2.5), duration)
    step = np.abs(np.sin(2 * math.pi * (steps * t + phase)))
    return Pose(
        dx=np.zeros_like(t),
        dy=-_p(params, "bob", 0.025) * step,
        angle=-_p(params, "lean", 0.0) + _p(params, "wobble", 4.0) * np.sin(2 * math.pi * (steps * t + phase)),
        sx=_ones(t),
        sy=_ones(t),
        wrap_x=np.mod(laps * t + phase, 1.0),
    )


def spin(t: FloatArray, duration: float, phase: float, params: Mapping[str, float]) -> Pose:
    """Whole turns per clip, so the loop point is invisible."""
    turns = cycles(_p(params, "rate", 0.67), duration)
    direction = -1.0 if phase >= 0.5 else 1.0
    hop = cycles(_p(params, "hop_rate", 1.0), duration)
    return Pose(
        dx=np.zeros_like(t),
        dy=-_p(params, "hop", 0.03) * np.abs(np.sin(2 * math.pi * (hop * t + phase))),
        angle=direction * 360.0 * turns * t,
        sx=_ones(t),
        sy=_ones(t),
    )


def fly(t: FloatArray, duration: float, phase: float, params: Mapping[str, float]) -> Pose:
    """Figure-of-eight loop with a wing-beat squash; the sprite turns to face where it goes."""
    k = cycles(_p(params, "rate", 0.34), duration)
    flaps = cycles(_p(params, "flap_rate", 3.0), duration)
    a = 2 * math.pi * (k * t + phase)
    dx = _p(params, "width", 0.3) * np.sin(a)
    dy = _p(params, "height", 0.12) * np.sin(2 * a)
    sy = 1.0 + _p(params, "flap", 0.1) * np.sin(2 * math.pi * flaps * t)
    return Pose(dx=dx, dy=dy, angle=_tilt(_velocity(dx), _velocity(dy), 25.0), sx=_ones(t), sy=sy)


def jump(t: FloatArray, duration: float, phase: float, params: Mapping[str, float]) -> Pose:
    """Hops on a sine arch with squash on landing and a slight stretch in the air."""
    hops = cycles(_p(params, "rate", 1.0), duration)
    h = np.abs(np.sin(math.pi * (hops * t + phase)))
    landing = np.exp(-((h / 0.18) ** 2))
    sy = 1.0 - _p(params, "squash", 0.22) * landing + 0.06 * h
    return Pose(
        dx=np.zeros_like(t),
        dy=-_p(params, "height", 0.32) * h,
        angle=np.zeros_like(t),
        sx=1.0 / np.sqrt(sy),
        sy=sy,
    )


def drift(t: FloatArray, duration: float, phase: float, params: Mapping[str, float]) -> Pose:
    """Floating: slow, incommensurate bobbing and rocking that never looks mechanical."""
    k1 = cycles(_p(params, "rate", 0.34), duration)
    k2 = k1 + 1
    a1 = 2 * math.pi * (k1 * t + phase)
    a2 = 2 * math.pi * (k2 * t + 2 * phase)
    return Pose(
        dx=_p(params, "sway", 0.04) * np.sin(a1),
        dy=_p(params, "bob", 0.05) * np.sin(a2),
        angle=_p(params, "rock", 6.0) * np.sin(a1 + 1.0),
        sx=_ones(t),
        sy=_ones(t),
    )


def swim(t: FloatArray, duration: float, phase: float, params: Mapping[str, float]) -> Pose:
    """Cross the frame on a gentle wave, pitching with the wave like a fish."""
    laps = cycles(_p(params, "laps", 0.34), duration)
    waves = cycles(_p(params, "wave_rate", 0.67), duration)
    a = 2 * math.pi * (waves * t + phase)
    amp = _p(params, "wave", 0.06)
    dy = amp * np.sin(a)
    # derivative of the wave against horizontal speed gives the pitch
    slope = amp * np.cos(a) * waves / max(laps, 1)
    return Pose(
        dx=np.zeros_like(t),
        dy=dy,
        angle=np.clip(np.degrees(np.arctan(-slope * 2 * math.pi / 1.3)), -20, 20),
        sx=1.0 + 0.04 * np.sin(4 * a),
        sy=_ones(t),
        wrap_x=np.mod(laps * t + phase, 1.0),
    )


def rise(t: FloatArray, duration: float, phase: float, params: Mapping[str, float]) -> Pose:
    """Balloons and rockets: travel bottom to top and come back round, swaying sideways."""
    laps = cycles(_p(params, "laps", 0.34), duration)
    k = cycles(_p(params, "sway_rate", 0.67), duration)
    a = 2 * math.pi * (k * t + phase)
    return Pose(
        dx=_p(params, "sway", 0.05) * np.sin(a),
        dy=np.zeros_like(t),
        angle=_p(params, "rock", 5.0) * np.cos(a),
        sx=_ones(t),
        sy=_ones(t),
        wrap_y=np.mod(laps * t + phase, 1.0),
    )


Trajectory = Callable[[FloatArray, float, float, Mapping[str, float]], Pose]

TRAJECTORIES: dict[str, Trajectory] = {
    "idle": idle,
    "sway": sway,
    "walk": walk,
    "spin": spin,
    "fly": fly,
    "jump": jump,
    "drift": drift,
    "swim": swim,
    "rise": rise,
}


#: Trajectories that carry the sprite across the whole frame; instances of these are
#: spread out by phase rather than by anchor, or they would travel in a clump.
CROSSING_TRAJECTORIES: frozenset[str] = frozenset({"walk", "swim", "rise"})


def compute_pose(name: str, frame_count: int, duration_s: float, phase: float, params: Mapping[str, float]) -> Pose:
    t = np.arange(frame_count, dtype=np.float64) / frame_count
    return TRAJECTORIES[name](t, duration_s, phase, params)
