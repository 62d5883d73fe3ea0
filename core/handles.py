"""Handle syntax and look-alike folding, shared by the API and the cameo checks."""

from __future__ import annotations

import re

HANDLE_RE = re.compile(r"^[A-Za-z0-9_]{3,30}$")
_SEQUENCES = (("rn", "m"), ("vv", "w"), ("cl", "d"))
_CHARS = str.maketrans({"0": "o", "1": "l", "i": "l", "5": "s", "3": "e", "4": "a", "8": "b"})


def handle_skeleton(handle: str) -> str:
    """Fold look-alike spellings together (keep in step with migration 0002)."""
    s = handle.lower().replace("_", "")
    for seq, rep in _SEQUENCES:
        s = s.replace(seq, rep)
    return s.translate(_CHARS)
