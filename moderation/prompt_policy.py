"""Rule-based prompt moderation on term lists kept as data files.

The policy lives in a directory (default ``moderation/data/``):

* ``prompt_policy.json``: ``version`` (recorded in every decision), ``categories`` (name ->
  ``action`` and ``description``) and ``combinations`` (see below);
* ``terms/<category>.txt``: one term or phrase per line, ``#`` comments, ``{a,b}`` alternatives;
* ``terms/allow.txt``: benign phrases ("shoot a video", "naked eye"), removed before matching;
* ``normalization.json`` (optional; the default tables are used when it is missing).

A category's ``action`` is ``block``, ``review`` or ``allow``. ``allow`` marks a *context*
category: its terms are matched but give no reason on their own (``minors``: "a kid flying a
kite" is fine). A combination such as::

    {"when_all": ["sexual", "minors"], "category": "minors", "action": "block"}

raises ``category``'s terms to ``action`` when every category in ``when_all`` matched, so
"nude teen" is blocked with two reasons: ``sexual`` (block) and ``minors`` (block). The terms of
the other categories of a combination that fired are reported too, with their own action:
"sexy teen" gives ``minors`` (block) and ``suggestive`` (allow), so the decision explains itself.

Text and terms are normalised the same way (:mod:`moderation.normalization`) and compared as
whole words, so "grape" does not match "rape" and "class" does not match "ass". The decision's
action is the strongest action among its reasons (block > review > allow).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from moderation.normalization import (
    DEFAULT_DATA_DIR,
    Normalizer,
    Token,
    load_normalizer,
    normalize_text,
)

__all__ = [
    "DEFAULT_POLICY_DIR",
    "Action",
    "Combination",
    "PolicyReason",
    "PromptDecision",
    "PromptPolicy",
    "clear_policy_cache",
    "load_prompt_policy",
    "normalize_text",
]

Action = Literal["allow", "review", "block"]

DEFAULT_POLICY_DIR = DEFAULT_DATA_DIR
POLICY_FILE = "prompt_policy.json"
TERMS_DIR = "terms"
ALLOW_LIST = "allow"

_SEVERITY: dict[str, int] = {"allow": 0, "review": 1, "block": 2}
_CATEGORY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_BRACES = re.compile(r"\{([^{}]*)\}")
# A multi-word term also matches its words written together ("#killyourself", or a
# letter-spaced "k i l l y o u r s e l f"), when that joined form is at least this long.
_MIN_JOINED_TERM = 5


def _strongest(actions: Iterator[str] | Sequence[str]) -> Action:
    return cast(Action, max(actions, key=_SEVERITY.__getitem__, default="allow"))


@dataclass(frozen=True)
class PolicyReason:
    category: str
    term: str  # the list entry that matched, as written in the list (after {a,b} expansion)
    action: Action  # what this category's rule (or a combination rule) says
    source: str = "terms"  # "terms" (these lists) or "classifier" (moderation.text_moderation)

    def as_text(self) -> str:
        if self.source != "terms":
            return f"{self.category}: {self.term}"
        return f"{self.category}: matched '{self.term}'"


@dataclass(frozen=True)
class PromptDecision:
    action: Action
    reasons: tuple[PolicyReason, ...]  # strongest first, then in order of appearance
    normalized: str  # normalize_text(prompt): the text the lists were matched against
    policy_version: str

    @property
    def allowed(self) -> bool:
        return self.action == "allow"


@dataclass(frozen=True)
class Combination:
    name: str
    when_all: tuple[str, ...]
    category: str
    action: Action
    description: str = ""


class _PhraseIndex:
    """Phrases (tuples of words) looked up by their first word; payload returned on a match."""

    def __init__(self) -> None:
        self._by_first: dict[str, list[tuple[tuple[str, ...], tuple[str, str]]]] = defaultdict(list)

    def add(self, words: tuple[str, ...], payload: tuple[str, str]) -> None:
        self._by_first[words[0]].append((words, payload))
        joined = "".join(words)
        if len(words) > 1 and len(joined) >= _MIN_JOINED_TERM:
            self._by_first[joined].append(((joined,), payload))

    def find(self, tokens: Sequence[Token], start: int, end: int) -> Iterator[tuple[int, int, tuple[str, str]]]:
        for i in range(start, end):
            for spelling in tokens[i].variants:
                for words, payload in self._by_first.get(spelling, ()):
                    stop = i + len(words)
                    if stop <= end and all(words[k] in tokens[i + k].variants for k in range(1, len(words))):
                        yield i, stop, payload


def _outermost(spans: Sequence[tuple[int, int, str, str]]) -> Iterator[tuple[int, str, str]]:
    """Matches not inside a longer match of the same category ("sex video" hides its "sex")."""
    by_category: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for start, stop, cat, term in spans:
        by_category[cat].append((start, -stop, term))
    for cat, items in by_category.items():
        items.sort()
        reach = -1  # furthest stop among earlier spans that differ from the current one
        group_reach = -1
        previous: tuple[int, int] | None = None
        for start, neg_stop, term in items:
            stop = -neg_stop
            if (start, stop) != previous:
                reach = max(reach, group_reach)
                group_reach = stop
                previous = (start, stop)
            if reach < stop:
                yield start, cat, term


def expand_alternatives(entry: str) -> list[str]:
    """``"kill{,s,ed} {him,her}"`` -> every combination, whitespace squeezed, empties dropped."""
    parts = _BRACES.split(entry)
    # parts alternate: literal, alternatives, literal, ...
    choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
    out: list[str] = []
    for combo in itertools.product(*choices):
        text = " ".join("".join(combo).split())
        if text and text not in out:
            out.append(text)
    return out


def read_term_file(path: Path) -> list[str]:
    """Entries of a term list: comments and blank lines skipped, ``{a,b}`` expanded."""
    entries: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if not line:
            continue
        expanded = expand_alternatives(line)
        if any("{" in e or "}" in e for e in expanded):
            raise ValueError(f"{path}: nested or unbalanced braces in {line!r}")
        for entry in expanded:
            if entry not in entries:
                entries.append(entry)
    return entries


class PromptPolicy:
    """A loaded policy; :meth:`check` is pure and thread-safe (nothing is mutated after load)."""

    version: str
    categories: tuple[str, ...]

    def __init__(
        self,
        version: str,
        category_actions: Mapping[str, Action],
        terms: Mapping[str, Sequence[str]],
        allow_phrases: Sequence[str] = (),
        combinations: Sequence[Combination] = (),
        normalizer: Normalizer | None = None,
        descriptions: Mapping[str, str] | None = None,
        fingerprint: str = "",
    ) -> None:
        if not version:
            raise ValueError("policy version must be a non-empty string")
        self.version = version
        self.categories = tuple(category_actions)
        self.category_actions: Mapping[str, Action] = dict(category_actions)
        self.descriptions: Mapping[str, str] = dict(descriptions or {})
        self.combinations: tuple[Combination, ...] = tuple(combinations)
        self.fingerprint = fingerprint  # sha256 over the policy file and every term list
        self._normalizer = normalizer or load_normalizer(None)
        for name, action in self.category_actions.items():
            if not _CATEGORY_NAME.match(name) or name == ALLOW_LIST:
                raise ValueError(f"bad category name {name!r}")
            if action not in _SEVERITY:
                raise ValueError(f"category {name!r}: action must be allow, review or block, not {action!r}")
        for combo in self.combinations:
            unknown = [c for c in (*combo.when_all, combo.category) if c not in self.category_actions]
            if unknown:
                raise ValueError(f"combination {combo.name!r} names unknown categories {unknown}")
            if combo.category not in combo.when_all:
                raise ValueError(f"combination {combo.name!r}: category must be one of when_all")
            if combo.action not in _SEVERITY or len(combo.when_all) < 2:
                raise ValueError(f"combination {combo.name!r}: needs an action and two or more categories")
        self.terms: Mapping[str, tuple[str, ...]] = {c: tuple(terms.get(c, ())) for c in self.categories}
        self.allow_phrases = tuple(allow_phrases)
        self._index = _PhraseIndex()
        for category, entries in self.terms.items():
            for entry in entries:
                self._index.add(self._words(entry, category), (category, entry))
        self._allow = _PhraseIndex()
        for phrase in self.allow_phrases:
            self._allow.add(self._words(phrase, ALLOW_LIST), (ALLOW_LIST, phrase))

    def _words(self, entry: str, where: str) -> tuple[str, ...]:
        words = tuple(self._normalizer.raw_words(entry))
        if not words:
            raise ValueError(f"{where}: entry {entry!r} is empty after normalisation")
        return words

    def normalize(self, text: str) -> str:
        return self._normalizer.normalize(text)

    def check(self, text: str) -> PromptDecision:
        if not isinstance(text, str):
            raise TypeError(f"prompt must be str, not {type(text).__name__}")
        tokens = self._normalizer.tokens(text)
        hidden = [False] * len(tokens)
        for start, stop, _ in self._allow.find(tokens, 0, len(tokens)):
            hidden[start:stop] = [True] * (stop - start)

        spans: list[tuple[int, int, str, str]] = []
        i = 0
        while i < len(tokens):  # match within each stretch of words not hidden by the allow list
            if hidden[i]:
                i += 1
                continue
            j = i
            while j < len(tokens) and not hidden[j]:
                j += 1
            spans.extend((start, stop, cat, term) for start, stop, (cat, term) in self._index.find(tokens, i, j))
            i = j

        first_seen: dict[tuple[str, str], int] = {}
        for start, cat, term in _outermost(spans):
            if first_seen.get((cat, term), start) >= start:
                first_seen[(cat, term)] = start

        matched = {category for category, _ in first_seen}
        effective: dict[str, Action] = dict(self.category_actions)
        in_combination: set[str] = set()
        for combo in self.combinations:
            if all(c in matched for c in combo.when_all):
                effective[combo.category] = _strongest([effective[combo.category], combo.action])
                in_combination.update(combo.when_all)

        order = {c: n for n, c in enumerate(self.categories)}
        found = sorted(
            ((-_SEVERITY[effective[cat]], pos, order[cat], cat, term) for (cat, term), pos in first_seen.items()),
        )
        reasons = tuple(
            PolicyReason(category=cat, term=term, action=effective[cat])
            for _, _, _, cat, term in found
            # context categories (action "allow") are reported only as part of a combination
            if effective[cat] != "allow" or cat in in_combination
        )
        return PromptDecision(
            action=_strongest([r.action for r in reasons]),
            reasons=reasons,
            normalized=" ".join(t.canonical for t in tokens),
            policy_version=self.version,
        )

    def __repr__(self) -> str:
        return f"PromptPolicy(version={self.version!r}, categories={self.categories!r})"


def _load(directory: Path) -> PromptPolicy:
    policy_path = directory / POLICY_FILE
    raw = policy_path.read_bytes()
    data = json.loads(raw)
    digest = hashlib.sha256(raw)
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise ValueError(f"{policy_path}: 'version' must be a non-empty string")
    categories = data.get("categories")
    if not isinstance(categories, dict) or not categories:
        raise ValueError(f"{policy_path}: 'categories' must be a non-empty object")
    actions: dict[str, Action] = {}
    descriptions: dict[str, str] = {}
    terms: dict[str, list[str]] = {}
    for name, spec in categories.items():
        if not isinstance(spec, dict):
            raise ValueError(f"{policy_path}: category {name!r} must be an object")
        action = spec.get("action")
        if action not in _SEVERITY:
            raise ValueError(f"{policy_path}: category {name!r}: action must be allow, review or block, not {action!r}")
        actions[name] = cast(Action, action)
        descriptions[name] = str(spec.get("description", ""))
        term_path = directory / TERMS_DIR / f"{name}.txt"
        if not term_path.is_file():
            raise ValueError(f"{policy_path}: category {name!r} has no term list at {term_path}")
        digest.update(b"\0" + name.encode() + b"\0" + term_path.read_bytes())
        terms[name] = read_term_file(term_path)
    allow_path = directory / TERMS_DIR / f"{ALLOW_LIST}.txt"
    allow: list[str] = []
    if allow_path.is_file():
        digest.update(b"\0allow\0" + allow_path.read_bytes())
        allow = read_term_file(allow_path)
    combinations = []
    for n, spec in enumerate(data.get("combinations", [])):
        when_all = spec.get("when_all")
        if not isinstance(when_all, list):
            raise ValueError(f"{policy_path}: combination {n} needs a 'when_all' list")
        combinations.append(
            Combination(
                name=str(spec.get("name", f"combination_{n}")),
                when_all=tuple(when_all),
                category=spec.get("category"),
                action=spec.get("action"),
                description=str(spec.get("description", "")),
            )
        )
    normalization_path = directory / "normalization.json"
    if normalization_path.is_file():
        digest.update(b"\0normalization\0" + normalization_path.read_bytes())
    return PromptPolicy(
        version=version,
        category_actions=actions,
        terms=terms,
        allow_phrases=allow,
        combinations=combinations,
        normalizer=load_normalizer(directory),
        descriptions=descriptions,
        fingerprint=digest.hexdigest(),
    )


@functools.lru_cache(maxsize=8)
def _load_cached(directory: Path) -> PromptPolicy:
    return _load(directory)


def load_prompt_policy(directory: Path | None = None) -> PromptPolicy:
    """Load (once per resolved path) the policy in ``directory``, default ``moderation/data/``.

    Raises ``ValueError``/``OSError`` on a malformed or incomplete policy: a broken policy must
    stop a worker at start-up, not silently allow everything. Call :func:`clear_policy_cache`
    to pick up edited files.
    """
    return _load_cached(Path(directory or DEFAULT_POLICY_DIR).resolve())


def clear_policy_cache() -> None:
    """Forget loaded policies (and normalisation tables): the next load reads the files again."""
    _load_cached.cache_clear()
    load_normalizer.cache_clear()
