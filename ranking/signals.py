"""How interactions move a user's taste vector.

A user's vector is a decayed sum of the embeddings of clips they reacted to, each
weighted by what the reaction says: likes and shares pull toward the clip, a full watch
pulls a little, a quick skip pushes away, "see less like this" and reports push hard.
The ranking worker applies :func:`apply` to every interaction as it happens; the feed
queries the index with the normalised vector (:func:`query_vector`).

Weights are data (:data:`DEFAULT_WEIGHTS`, overridable per deployment); the decay
makes recent taste count more than old taste, so a user who changes their mind is
followed within a few interactions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

#: Weight of each interaction kind; "view" is scaled by watch time (see :func:`weight`).
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "like": 1.0,
    "share": 1.2,
    "comment": 0.6,
    "unlike": -0.8,
    "skip": -0.5,
    "see_less": -1.5,
    "report": -2.0,
    "view": 0.6,
    "impression": 0.0,
    "uncomment": 0.0,
}
#: A view shorter than this share of the clip pushes away; longer pulls (loops cap at 2).
VIEW_NEUTRAL_FRACTION = 0.4
DECAY = 0.97
#: Below this norm a vector says nothing yet (a new user): the feed cold-starts.
COLD_NORM = 1e-3


@dataclass
class SignalWeights:
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    view_neutral_fraction: float = VIEW_NEUTRAL_FRACTION
    decay: float = DECAY

    def weight(self, kind: str, watch_ms: int | None = None, duration_ms: int | None = None) -> float:
        """How strongly one interaction pulls (> 0) or pushes (< 0)."""
        base = float(self.weights.get(kind, 0.0))
        if kind != "view":
            return base
        if not watch_ms or not duration_ms or duration_ms <= 0:
            return 0.0  # a view without watch time says nothing about taste
        fraction = min(watch_ms / duration_ms, 2.0)
        return base * (fraction - self.view_neutral_fraction) / (1.0 - self.view_neutral_fraction)


def apply(
    user: np.ndarray | None,
    clip: np.ndarray,
    kind: str,
    *,
    watch_ms: int | None = None,
    duration_ms: int | None = None,
    weights: SignalWeights | None = None,
) -> np.ndarray | None:
    """The user's new (unnormalised) vector after one interaction with ``clip``; None
    when the interaction carries no signal and the user had no vector yet."""
    weights = weights or SignalWeights()
    w = weights.weight(kind, watch_ms, duration_ms)
    if w == 0.0:  # an impression, a view without watch time: no vector arithmetic at all
        return None if user is None else np.asarray(user, np.float32)
    c = np.asarray(clip, np.float32)
    norm = float(np.linalg.norm(c))
    if norm == 0.0:
        return None if user is None else np.asarray(user, np.float32)
    c = c / norm
    base = np.zeros_like(c) if user is None else np.asarray(user, np.float32)
    return (weights.decay * base + w * c).astype(np.float32)


def query_vector(user: np.ndarray | None) -> np.ndarray | None:
    """The normalised taste vector the feed searches with, or None for a cold user."""
    if user is None:
        return None
    norm = float(np.linalg.norm(user))
    if norm < COLD_NORM:
        return None
    return (np.asarray(user, np.float32) / norm).astype(np.float32)
