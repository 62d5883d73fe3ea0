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


#: An @mention: "@" not preceded by a word character (so e-mail addresses are not
#: mentions), then everything up to whitespace.
MENTION = re.compile(r"(?<![\w@])@(\S+)")


def strip_mentions(text: str, replacement: str = "") -> str:
    """The text without its @handles: a handle names a person, not something to draw or
    judge ("@sunny_star" is not a star). ``replacement`` stands in for each one."""
    return " ".join(MENTION.sub(replacement, text).split())
