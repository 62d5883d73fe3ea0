"""Clip generation backends.

Stream processors call :func:`build_generator` with the configured backend
name and then only use the :class:`Generator` protocol, so backends are
swappable by configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from generation.base import CameoLikeness, GenerationError, Generator, RenderedClip, RenderRequest, UnsupportedRequest
from generation.procedural import ProceduralRenderer


def _diffusers(**kwargs: Any) -> Generator:
    # torch and diffusers load only when this backend is chosen.
    from generation.diffusers_backend import DiffusersGenerator

    return DiffusersGenerator(**kwargs)


_BACKENDS: dict[str, Callable[..., Generator]] = {
    "procedural": ProceduralRenderer,
    "diffusers": _diffusers,
}


def build_generator(backend: str, **kwargs: Any) -> Generator:
    """Resolve a configured backend name; unknown names fail loudly rather than silently falling back.

    Bad keyword arguments surface as the backend's own ValueError/TypeError:
    that is a configuration bug, not a failed clip.
    """
    key = backend.strip().lower() if isinstance(backend, str) else None
    factory = _BACKENDS.get(key) if key is not None else None
    if factory is None:
        known = ", ".join(sorted(_BACKENDS))
        raise GenerationError(f"unknown generation backend {backend!r}; available backends: {known}")
    return factory(**kwargs)


__all__ = [
    "CameoLikeness",
    "GenerationError",
    "Generator",
    "ProceduralRenderer",
    "RenderRequest",
    "RenderedClip",
    "UnsupportedRequest",
    "build_generator",
]
