"""@handle rules: syntax, reserved words, case-insensitive and look-alike uniqueness.

Handles are ASCII letters, digits and underscores, so Unicode confusables (Cyrillic
'а' for 'a') are refused outright. Within ASCII, look-alikes remain: 'rn' reads as
'm', '0' as 'o', 'l'/'1'/'i' as each other. Each handle's *skeleton* folds those
together and must be unique, so @maya_rnakes cannot squat @maya_makes, and
@adm1n is as reserved as @admin.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from core.handles import HANDLE_RE, handle_skeleton

__all__ = ["HANDLE_RE", "handle_skeleton", "reserved_skeletons", "validate_handle"]


@lru_cache(maxsize=1)
def reserved_skeletons() -> frozenset[str]:
    path = Path(__file__).parent / "data" / "reserved_handles.txt"
    lines = (line.strip().lower() for line in path.read_text().splitlines())
    return frozenset(handle_skeleton(line) for line in lines if line and not line.startswith("#"))


def validate_handle(value: str) -> str:
    """The handle without '@', or ValueError saying what is wrong with it."""
    value = value.strip().removeprefix("@")
    if not value.isascii():
        raise ValueError("a handle uses only ASCII letters, digits and underscores (no look-alike characters)")
    if not HANDLE_RE.fullmatch(value):
        raise ValueError("a handle is 3–30 characters of letters, digits and underscores")
    if value.isdigit():
        raise ValueError("a handle cannot be only digits")
    if handle_skeleton(value) in reserved_skeletons():
        raise ValueError(f"the handle @{value} is reserved")
    return value
