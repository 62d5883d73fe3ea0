"""Prompt vocabulary: loading, validation and prompt parsing.

The vocabulary is data (``data/vocabulary.json``) rather than code so that it
can grow -- more subjects, emoji glyph sprites -- without touching the
renderer.  Everything is validated once at load time: a typo in the JSON
should fail the service at start-up, not in the middle of a render.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generation.color import RGBA, parse_hex
from generation.motion import TRAJECTORIES
from generation.scenery import PARTICLE_KINDS, PROP_KINDS, validate_layer_spec
from generation.sprites import validate_sprite
from generation.styles import validate_style

DEFAULT_VOCABULARY_PATH = Path(__file__).resolve().parent / "data" / "vocabulary.json"

#: Bumped when the JSON layout changes incompatibly, so an old renderer refuses new data loudly.
SUPPORTED_FORMAT = 1

CATEGORIES: tuple[str, ...] = ("subjects", "scenes", "times", "motions", "colors", "styles")

#: The data section holding clearly unsafe subjects (weapons, gore, drugs, ...).  Its entries are
#: parsed and rendered exactly like subjects, but live apart in the data and are flagged with
#: ``"unsafe": true`` and a ``safety_category`` so safety classifiers can be trained on real renders.
UNSAFE_SECTION = "unsafe"

#: The safety categories an unsafe subject may declare.
SAFETY_CATEGORIES: tuple[str, ...] = ("weapon", "gore", "drugs", "fire_on_person")

#: The most instances of one subject a prompt may ask for; beyond that the
#: sprites get too small to recognise on a 288 px wide clip.
MAX_COUNT = 5

_TOKEN_RE = re.compile(r"[^\W_]+", re.UNICODE)


class VocabularyError(ValueError):
    """A malformed vocabulary file; subclass of ValueError so callers validating config can catch one type."""


@dataclass(frozen=True)
class Concept:
    category: str
    key: str
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class Mention:
    """One recognised phrase, kept with its token position so words can be bound to their neighbours."""

    category: str
    key: str
    position: int
    plural: bool


@dataclass(frozen=True)
class SubjectMention:
    key: str
    count: int
    color: str | None
    motion: str | None


@dataclass(frozen=True)
class PromptAnalysis:
    concepts: tuple[str, ...]
    subjects: tuple[SubjectMention, ...]
    scene: str | None
    time: str | None
    motions: tuple[str, ...]
    colors: tuple[str, ...]
    #: colours that did not attach to a subject; they recolour the abstract palette instead.
    free_colors: tuple[str, ...] = field(default=())
    #: the visual style (colour grade) to apply, the first one the prompt names.
    style: str | None = None


def tokenize(text: str) -> list[str]:
    """Casefold and NFKC-normalise so 'Cat', 'CAT' and full-width letters all match."""
    normalised = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    normalised = re.sub(r"'s\b", "", normalised)
    return _TOKEN_RE.findall(normalised)


def singular_forms(word: str) -> list[str]:
    """Cheap English de-pluralisation; wrong guesses are harmless because they only ever hit the lexicon."""
    forms: list[str] = []
    if len(word) > 4 and word.endswith("ies"):
        forms.append(word[:-3] + "y")
    if len(word) > 4 and word.endswith("ves"):
        forms.extend((word[:-3] + "f", word[:-3] + "fe"))
    if len(word) > 3 and word.endswith("es"):
        forms.append(word[:-2])
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        forms.append(word[:-1])
    return forms


class Vocabulary:
    """Validated vocabulary plus a phrase lexicon for matching prompts."""

    def __init__(self, data: Mapping[str, Any], source: str = "<memory>") -> None:
        self.source = source
        self.raw = data
        self.version = str(data.get("version", "0"))
        self.concepts: dict[str, dict[str, Concept]] = {}
        self.numbers: dict[str, int] = {}
        #: unsafe subject key -> safety category ("weapon", "gore", ...).
        self.unsafe: dict[str, str] = {}
        self._lexicon: dict[tuple[str, ...], tuple[str, str, bool]] = {}
        self._max_phrase = 1
        self._load(data)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_path(cls, path: Path | None = None) -> Vocabulary:
        target = Path(path) if path is not None else DEFAULT_VOCABULARY_PATH
        try:
            data = json.loads(target.read_text(encoding="utf-8"))
        except OSError as exc:
            raise VocabularyError(f"cannot read vocabulary {target}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise VocabularyError(f"vocabulary {target} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise VocabularyError(f"vocabulary {target} must be a JSON object")
        return cls(data, source=str(target))

    def _fail(self, where: str, message: str) -> VocabularyError:
        return VocabularyError(f"{self.source}: {where}: {message}")

    def _load(self, data: Mapping[str, Any]) -> None:
        if data.get("format", SUPPORTED_FORMAT) != SUPPORTED_FORMAT:
            raise self._fail(
                "format", f"this renderer reads vocabulary format {SUPPORTED_FORMAT}, got {data.get('format')!r}"
            )
        unsafe_entries = data.get(UNSAFE_SECTION, {})
        if not isinstance(unsafe_entries, dict):
            raise self._fail(UNSAFE_SECTION, "must be an object of unsafe subjects")
        owner: dict[str, str] = {}
        for section in (*CATEGORIES, UNSAFE_SECTION):
            entries = data.get(section) if section != UNSAFE_SECTION else unsafe_entries
            if not isinstance(entries, dict) or (not entries and section != UNSAFE_SECTION):
                raise self._fail(section, "must be a non-empty object")
            # Concept keys are what RenderedClip.concepts reports, so they must be unambiguous.
            for key in entries:
                if key in owner:
                    raise self._fail(f"{section}.{key}", f"key also used in {owner[key]}; concept keys must be unique")
                owner[key] = section
        # (data section, concept category): unsafe subjects are subjects to the parser and renderer.
        sections = [(category, category) for category in CATEGORIES]
        sections.insert(1, (UNSAFE_SECTION, "subjects"))
        for section, category in sections:
            entries = data[section] if section != UNSAFE_SECTION else unsafe_entries
            self.concepts.setdefault(category, {})
            for key, spec in entries.items():
                where = f"{section}.{key}"
                if not isinstance(spec, dict):
                    raise self._fail(where, "must be an object")
                if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
                    raise self._fail(where, "keys must be lowercase identifiers")
                try:
                    self._validate_concept(category, spec)
                    self._validate_safety(section, spec)
                except VocabularyError:
                    raise
                except (ValueError, TypeError, KeyError) as exc:
                    raise self._fail(where, str(exc)) from exc
                self.concepts[category][key] = Concept(category, key, spec)
                if section == UNSAFE_SECTION:
                    self.unsafe[key] = str(spec["safety_category"])
                self._index(category, key, spec)

        numbers = data.get("numbers", {})
        if not isinstance(numbers, dict):
            raise self._fail("numbers", "must be an object of word -> count")
        for word, count in numbers.items():
            if not isinstance(count, int) or count < 1:
                raise self._fail(f"numbers.{word}", "count must be a positive integer")
            self.numbers[word.casefold()] = count

        defaults = data.get("defaults", {})
        if not isinstance(defaults, dict):
            raise self._fail("defaults", "must be an object")
        self.defaults: dict[str, str] = {str(k): str(v) for k, v in defaults.items()}
        for name, category in (
            ("motion", "motions"),
            ("airborne_motion", "motions"),
            ("cameo_motion", "motions"),
            ("scene_for_time", "scenes"),
        ):
            value = self.defaults.get(name)
            if value is None or value not in self.concepts[category]:
                raise self._fail(f"defaults.{name}", f"must name one of the {category}")

        abstract = data.get("abstract")
        if not isinstance(abstract, dict):
            raise self._fail("abstract", "must be an object with palettes, sprites and motions")
        palettes = abstract.get("palettes")
        if not isinstance(palettes, list) or not palettes:
            raise self._fail("abstract.palettes", "must be a non-empty list")
        self.palettes: list[list[RGBA]] = []
        for i, palette in enumerate(palettes):
            if not isinstance(palette, list) or len(palette) < 3:
                raise self._fail(f"abstract.palettes[{i}]", "needs at least 3 colours")
            try:
                self.palettes.append([parse_hex(c) for c in palette])
            except ValueError as exc:
                raise self._fail(f"abstract.palettes[{i}]", str(exc)) from exc
        sprites = abstract.get("sprites")
        if not isinstance(sprites, list) or not sprites:
            raise self._fail("abstract.sprites", "must be a non-empty list")
        for i, sprite in enumerate(sprites):
            try:
                validate_sprite(sprite)
            except (ValueError, TypeError, KeyError) as exc:
                raise self._fail(f"abstract.sprites[{i}]", str(exc)) from exc
        self.abstract_sprites: list[Mapping[str, Any]] = sprites
        self.abstract_motions: list[str] = list(abstract.get("motions", []))
        for motion in self.abstract_motions:
            if motion not in self.concepts["motions"]:
                raise self._fail("abstract.motions", f"unknown motion {motion!r}")

        for key, concept in self.concepts["subjects"].items():
            default_motion = concept.spec.get("default_motion")
            if default_motion is not None and default_motion not in self.concepts["motions"]:
                raise self._fail(f"subjects.{key}.default_motion", f"unknown motion {default_motion!r}")

    @staticmethod
    def _validate_safety(section: str, spec: Mapping[str, Any]) -> None:
        """Unsafe subjects must say so explicitly, and only they may: the flag must match the section."""
        if section == UNSAFE_SECTION:
            if spec.get("unsafe") is not True:
                raise ValueError(f'entries of the {UNSAFE_SECTION!r} section must carry "unsafe": true')
            if spec.get("safety_category") not in SAFETY_CATEGORIES:
                raise ValueError(f"safety_category must be one of {list(SAFETY_CATEGORIES)}")
        elif "unsafe" in spec or "safety_category" in spec:
            raise ValueError(f"unsafe concepts belong in the {UNSAFE_SECTION!r} section")

    def _validate_concept(self, category: str, spec: Mapping[str, Any]) -> None:
        synonyms = spec.get("synonyms", [])
        if not isinstance(synonyms, list) or not all(isinstance(s, str) and s.strip() for s in synonyms):
            raise ValueError("synonyms must be a list of non-empty strings")
        if category == "subjects":
            size = spec.get("size")
            if not isinstance(size, (int, float)) or not 0.1 <= size <= 0.8:
                raise ValueError("size must be a number between 0.1 and 0.8 (fraction of frame width)")
            variants = spec.get("variants", [])
            if not isinstance(variants, list):
                raise ValueError("variants must be a list of '#hex' colours")
            for variant in variants:
                parse_hex(variant)
            if spec.get("facing") not in (None, "right", "front"):
                raise ValueError("facing must be 'right', 'front' or absent")
            validate_sprite(spec.get("sprite"))
        elif category == "scenes":
            validate_layer_spec(spec, PROP_KINDS, PARTICLE_KINDS, scene=True)
        elif category == "times":
            validate_layer_spec(spec, PROP_KINDS, PARTICLE_KINDS, scene=False)
        elif category == "motions":
            trajectory = spec.get("trajectory")
            if trajectory not in TRAJECTORIES:
                raise ValueError(f"trajectory {trajectory!r} is not one of {sorted(TRAJECTORIES)}")
            if not isinstance(spec.get("params", {}), dict):
                raise ValueError("params must be an object")
            if not isinstance(spec.get("grounded", False), bool):
                raise ValueError("grounded must be true or false")
        elif category == "colors":
            rgb = spec.get("rgb")
            if not isinstance(rgb, str):
                raise ValueError("rgb must be a '#rrggbb' colour")
            parse_hex(rgb)
        elif category == "styles":
            validate_style(spec)

    def _index(self, category: str, key: str, spec: Mapping[str, Any]) -> None:
        phrases = [(key.replace("_", " "), False)]
        phrases += [(s, False) for s in spec.get("synonyms", [])]
        phrases += [(s, True) for s in spec.get("plurals", [])]
        for phrase, plural in phrases:
            tokens = tuple(tokenize(phrase))
            if not tokens:
                continue
            existing = self._lexicon.get(tokens)
            if existing is not None and existing[:2] != (category, key):
                raise self._fail(
                    f"{category}.{key}",
                    f"phrase {phrase!r} already means {existing[0]}.{existing[1]}",
                )
            self._lexicon[tokens] = (category, key, plural)
            self._max_phrase = max(self._max_phrase, len(tokens))

    # ------------------------------------------------------------------ lookups
    def get(self, category: str, key: str) -> Concept:
        return self.concepts[category][key]

    def __len__(self) -> int:
        return sum(len(v) for v in self.concepts.values())

    def safety_category(self, key: str) -> str | None:
        """The safety category of an unsafe concept key, or None for a safe (or unknown) one."""
        return self.unsafe.get(key)

    def unsafe_concepts(self, concepts: Sequence[str], category: str | None = None) -> tuple[str, ...]:
        """The unsafe keys among ``concepts`` in their order, optionally only those of one safety category."""
        if category is not None and category not in SAFETY_CATEGORIES:
            raise ValueError(f"unknown safety category {category!r}; known: {list(SAFETY_CATEGORIES)}")
        return tuple(
            dict.fromkeys(k for k in concepts if k in self.unsafe and (category is None or self.unsafe[k] == category))
        )

    def safety_categories(self, concepts: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Unsafe keys among ``concepts`` grouped by safety category, e.g. {'weapon': ('gun', 'knife')}."""
        grouped: dict[str, list[str]] = {}
        for key in self.unsafe_concepts(concepts):
            grouped.setdefault(self.unsafe[key], []).append(key)
        return {category: tuple(keys) for category, keys in grouped.items()}

    def _lookup(self, tokens: Sequence[str]) -> tuple[str, str, bool] | None:
        hit = self._lexicon.get(tuple(tokens))
        if hit is not None:
            return hit
        for form in singular_forms(tokens[-1]):
            hit = self._lexicon.get((*tokens[:-1], form))
            if hit is not None:
                return (hit[0], hit[1], True)
        return None

    def find_mentions(self, prompt: str) -> tuple[list[Mention], dict[int, int]]:
        """Greedy longest-phrase match, so 'outer space' wins over 'space' and 'hot dog' could beat 'dog'."""
        tokens = tokenize(prompt)
        mentions: list[Mention] = []
        numbers: dict[int, int] = {}
        i = 0
        while i < len(tokens):
            for length in range(min(self._max_phrase, len(tokens) - i), 0, -1):
                hit = self._lookup(tokens[i : i + length])
                if hit is not None:
                    mentions.append(Mention(hit[0], hit[1], i, hit[2]))
                    i += length
                    break
            else:
                word = tokens[i]
                if word in self.numbers:
                    numbers[i] = self.numbers[word]
                elif word.isdigit() and 1 <= int(word) <= 99:
                    numbers[i] = int(word)
                i += 1
        return mentions, numbers

    # ------------------------------------------------------------------ parsing
    def parse(self, prompt: str) -> PromptAnalysis:
        """Turn free text into the few decisions the renderer needs.

        Binding is deliberately simple and proximity-based ('a red car and a
        blue fish'); a language model is out of scope for a CPU fallback.
        """
        mentions, numbers = self.find_mentions(prompt)

        concepts: list[str] = []
        for m in mentions:
            if m.key not in concepts:
                concepts.append(m.key)

        subjects = [m for m in mentions if m.category == "subjects"]
        colors = [m for m in mentions if m.category == "colors"]
        motions = [m for m in mentions if m.category == "motions"]

        counts: dict[int, int] = {}
        for s in subjects:
            number = next((numbers[p] for p in range(s.position - 1, s.position - 4, -1) if p in numbers), None)
            if number is not None:
                counts[s.position] = min(number, MAX_COUNT)
            else:
                counts[s.position] = 2 if s.plural else 1

        color_of: dict[int, str] = {}
        free_colors: list[str] = []
        for c in colors:
            after = [s for s in subjects if 0 < s.position - c.position <= 3 and s.position not in color_of]
            before = [s for s in subjects if s.position < c.position and s.position not in color_of]
            if after:
                color_of[after[0].position] = c.key
            elif before:
                color_of[before[-1].position] = c.key
            elif c.key not in free_colors:
                free_colors.append(c.key)

        motion_of: dict[int, str] = {}
        distinct_motions = list(dict.fromkeys(m.key for m in motions))
        if len(distinct_motions) == 1:
            for s in subjects:
                motion_of[s.position] = distinct_motions[0]
        else:
            for m in motions:
                before = [s for s in subjects if s.position < m.position and s.position not in motion_of]
                after = [s for s in subjects if s.position > m.position and s.position not in motion_of]
                if before:
                    motion_of[before[-1].position] = m.key
                elif after:
                    motion_of[after[0].position] = m.key

        scene = next((m.key for m in mentions if m.category == "scenes"), None)
        time = next((m.key for m in mentions if m.category == "times"), None)
        style = next((m.key for m in mentions if m.category == "styles"), None)
        return PromptAnalysis(
            concepts=tuple(concepts),
            subjects=tuple(
                SubjectMention(s.key, counts[s.position], color_of.get(s.position), motion_of.get(s.position))
                for s in subjects
            ),
            scene=scene,
            time=time,
            motions=tuple(distinct_motions),
            colors=tuple(dict.fromkeys(c.key for c in colors)),
            free_colors=tuple(free_colors),
            style=style,
        )


_DEFAULT: Vocabulary | None = None


def default_vocabulary() -> Vocabulary:
    """Shared instance: parsing the JSON and validating every sprite is worth doing once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Vocabulary.from_path(DEFAULT_VOCABULARY_PATH)
    return _DEFAULT


def unsafe_concepts(
    concepts: Sequence[str], category: str | None = None, vocabulary: Vocabulary | None = None
) -> tuple[str, ...]:
    """Which recognised concepts (e.g. ``RenderedClip.concepts``) are unsafe, in their order.

    ``category`` narrows the answer to one safety category ("weapon", "gore",
    "drugs", "fire_on_person"); :meth:`Vocabulary.safety_categories` groups
    them by category instead.  Uses the default vocabulary unless given one.
    """
    vocab = vocabulary if vocabulary is not None else default_vocabulary()
    return vocab.unsafe_concepts(concepts, category)
