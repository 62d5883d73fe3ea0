"""Cameo restrictions: a likeness owner's free text ("no political content, nothing
scary") turned into checks on prompt text, with the prompt policy's machinery.

A restriction is read phrase by phrase (split on commas, semicolons, full stops, "and",
"or"). A phrase naming one of the topics in ``data/restrictions/topics.json`` by a
trigger word ("political", "horror") selects that topic's term list; a topic can also
pull in a category of the prompt policy (``policy_category``), so "no violence" refuses
the policy's violence terms *and* the milder fights-and-weapons list a cameo owner has
in mind. Words of a phrase that select no topic are matched literally ("no clowns" →
"clowns"), so nothing an owner wrote is silently ignored.

The compiled restriction is a :class:`moderation.prompt_policy.PromptPolicy` whose
categories all block, so matching is the policy's own: whole words after the same
normalisation (confusables, leetspeak, letter spacing), with the policy's allow list.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from moderation.normalization import load_normalizer
from moderation.prompt_policy import (
    DEFAULT_POLICY_DIR,
    PolicyReason,
    PromptPolicy,
    load_prompt_policy,
    read_term_file,
)

RESTRICTIONS_DIR = Path(__file__).parent / "data" / "restrictions"
MAX_RESTRICTIONS_CHARS = 500
#: Literal words shorter than this are too likely to be noise ("it", "us").
MIN_LITERAL_CHARS = 3
_PHRASE_SPLIT = re.compile(r"[,;.\n/]+|\b(?:and|or|nor|but)\b", re.IGNORECASE)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    triggers: frozenset[str]
    terms: tuple[str, ...]


@dataclass(frozen=True)
class RestrictionRules:
    """What a restriction text was read as; shown to the owner so they can check it."""

    text: str
    topics: tuple[str, ...] = ()
    literals: tuple[str, ...] = ()
    policy: PromptPolicy | None = field(default=None, compare=False, repr=False)

    @property
    def empty(self) -> bool:
        return not self.topics and not self.literals

    def violations(self, prompt: str) -> tuple[PolicyReason, ...]:
        """Reasons the prompt breaks these restrictions (empty when it does not)."""
        if self.policy is None:
            return ()
        return self.policy.check(prompt).reasons

    def describe(self) -> list[str]:
        return [f"topic: {t}" for t in self.topics] + [f"word: {w}" for w in self.literals]


class RestrictionCompiler:
    def __init__(self, directory: Path = RESTRICTIONS_DIR, policy_dir: Path | None = None) -> None:
        data = json.loads((directory / "topics.json").read_text(encoding="utf-8"))
        self.version = str(data["version"])
        self.normalizer = load_normalizer(Path(policy_dir or DEFAULT_POLICY_DIR))
        base = load_prompt_policy(policy_dir)
        self._allow = base.allow_phrases
        self.stopwords = frozenset(self._norm_word(w) for w in data.get("stopwords", []))
        topics: list[TopicSpec] = []
        for name, spec in data["topics"].items():
            terms: list[str] = []
            category = spec.get("policy_category")
            if category is not None:
                if category not in base.terms:
                    raise ValueError(f"restriction topic {name!r}: unknown policy category {category!r}")
                terms.extend(base.terms[category])
            own = directory / "topics" / f"{spec.get('extra', name)}.txt"
            if own.is_file():
                terms.extend(t for t in read_term_file(own) if t not in terms)
            if not terms:
                raise ValueError(f"restriction topic {name!r} has no terms (no {own} and no policy_category)")
            triggers = frozenset(self._norm_word(t) for t in spec["triggers"])
            topics.append(TopicSpec(name=name, triggers=triggers, terms=tuple(terms)))
        self.topics: Mapping[str, TopicSpec] = {t.name: t for t in topics}

    def _norm_word(self, word: str) -> str:
        return " ".join(self.normalizer.raw_words(word))

    def compile(self, text: str) -> RestrictionRules:
        if len(text) > MAX_RESTRICTIONS_CHARS:
            raise ValueError(f"restrictions are at most {MAX_RESTRICTIONS_CHARS} characters")
        selected: list[str] = []
        literals: list[str] = []
        for phrase in _PHRASE_SPLIT.split(text):
            words = [w for w in self.normalizer.raw_words(phrase) if w not in self.stopwords]
            if not words:
                continue
            hits = [t.name for t in self.topics.values() if any(w in t.triggers for w in words)]
            for name in hits:
                if name not in selected:
                    selected.append(name)
            if hits:
                # A phrase that named a topic ("no political content") is read as that topic;
                # its other words are only filler around the trigger.
                continue
            for word in words:
                if len(word) >= MIN_LITERAL_CHARS and word not in literals:
                    literals.append(word)
        # "no hats" also refuses "a hat", and "no clown" refuses "clowns".
        terms_for_literals = []
        for word in literals:
            for form in (word, word[:-1] if word.endswith("s") and len(word) > MIN_LITERAL_CHARS else word + "s"):
                if form not in terms_for_literals:
                    terms_for_literals.append(form)
        if not selected and not literals:
            return RestrictionRules(text=text)
        categories = {name: "block" for name in selected}
        terms: dict[str, Sequence[str]] = {name: self.topics[name].terms for name in selected}
        if literals:
            categories["restricted_words"] = "block"
            terms["restricted_words"] = terms_for_literals
        policy = PromptPolicy(
            version=self.version,
            category_actions=categories,  # type: ignore[arg-type]
            terms=terms,
            allow_phrases=self._allow,
            normalizer=self.normalizer,
        )
        return RestrictionRules(text=text, topics=tuple(selected), literals=tuple(literals), policy=policy)


@functools.lru_cache(maxsize=1)
def default_compiler() -> RestrictionCompiler:
    return RestrictionCompiler()


@functools.lru_cache(maxsize=1024)
def compile_restrictions(text: str) -> RestrictionRules:
    """Compile (and cache) an owner's restriction text with the shipped topic lists."""
    return default_compiler().compile(text)
