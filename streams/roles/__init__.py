"""Worker roles. Each role is one Faust app (one consumer group) in its own process."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import faust

from core.settings import Settings

ROLES = ("generation", "moderation", "materializer", "ranking")


def registrar(role: str) -> Callable[[faust.App, Settings], object]:
    """The ``register(app, settings)`` of a role's module (imported only when used)."""
    if role not in ROLES:
        raise ValueError(f"unknown worker role {role!r}; known roles: {', '.join(ROLES)}")
    register: Callable[[faust.App, Settings], object] = importlib.import_module(f"streams.roles.{role}").register
    return register
