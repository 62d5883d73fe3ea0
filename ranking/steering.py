"""Steerable ranking: "more cats and beaches, less horror" → vectors the feed can use.

The text is split into clauses; a clause that starts with a "less" word ("less", "fewer",
"no", "not", "without", "stop", "avoid", "don't show", "hide") asks for less of its
phrases, any other clause for more. Phrases within a clause are split on "and", "&",
"/" and commas, and each is embedded with the CLIP text tower ("a photo of {phrase}",
the way the clips' concepts are embedded) so it lands in the same space as the clip
embeddings the index holds. The normalised mean of each side is what the feed uses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from ranking.feed import Steering

MAX_TEXT = 300
LESS_WORDS = (
    "don't show", "dont show", "do not show", "less", "fewer", "no", "not", "without", "stop", "avoid", "hide",
)  # fmt: skip
MORE_WORDS = ("show me", "give me", "i want", "i like", "more", "lots of", "plenty of", "some")
_CLAUSE = re.compile(r"[;.!?\n]|,\s*(?=(?:" + "|".join(re.escape(w) for w in LESS_WORDS + MORE_WORDS) + r")\b)|\bbut\b")
_ITEM = re.compile(r",|&|/|\band\b|\bor\b|\bplus\b")
_FILLER = re.compile(r"^(?:of|the|a|an|any|some|videos? of|clips? of)\s+")


class SteeringError(ValueError):
    """Steering text the feed cannot use (too long, or nothing in it to steer by)."""


def parse(text: str) -> tuple[list[str], list[str]]:
    """(phrases to see more of, phrases to see less of)."""
    if len(text) > MAX_TEXT:
        raise SteeringError(f"steering text is {len(text)} characters; at most {MAX_TEXT}")
    more: list[str] = []
    less: list[str] = []
    for clause in _CLAUSE.split(text.lower()):
        clause = clause.strip(" ,:-")
        if not clause:
            continue
        target = more
        for word in LESS_WORDS:
            if clause == word or clause.startswith(word + " "):
                target, clause = less, clause[len(word) :].strip()
                break
        else:
            for word in MORE_WORDS:
                if clause.startswith(word + " "):
                    clause = clause[len(word) :].strip()
                    break
        for item in _ITEM.split(clause):
            item = item.strip(" ,.")
            while True:
                stripped = _FILLER.sub("", item)
                if stripped == item:
                    break
                item = stripped
            if item and item not in target:
                target.append(item)
    return more, less


def steering_for(text: str, embed_texts: Callable[[Sequence[str]], np.ndarray]) -> Steering:
    """Embed the parsed phrases with ``embed_texts`` (normalised rows, one per text)."""
    more, less = parse(text)
    if not more and not less:
        raise SteeringError("say what you want more or less of, e.g. 'more cats and beaches, less horror'")

    def side(phrases: list[str]) -> np.ndarray | None:
        if not phrases:
            return None
        vecs = np.asarray(embed_texts([f"a photo of {p}" for p in phrases]), np.float32)
        mean = vecs.mean(axis=0)
        norm = float(np.linalg.norm(mean))
        return None if norm < 1e-6 else (mean / norm).astype(np.float32)

    return Steering(text=text, more=side(more), less=side(less), more_phrases=tuple(more), less_phrases=tuple(less))
