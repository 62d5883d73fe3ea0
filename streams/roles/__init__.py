"""Worker roles. Each role is one Faust app (one consumer group) in its own process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust

from core.settings import Settings

ROLES = ("generation", "moderation", "materializer")


def registrar(role: str) -> Callable[[faust.App, Settings], Any]:
    if role == "generation":
        from streams.roles.generation import register
    elif role == "moderation":
        from streams.roles.moderation import register
    elif role == "materializer":
        from streams.roles.materializer import register
    else:
        raise ValueError(f"unknown worker role {role!r}; known roles: {', '.join(ROLES)}")
    return register
