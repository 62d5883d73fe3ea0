"""Text normalisation for moderation: undo the usual tricks used to slip words past a term list.

A prompt goes through, in order:

1. removal of invisible characters (every Unicode format character ``Cf`` such as zero-width
   spaces/joiners, soft hyphens, BOM, bidi controls; plus a few blank "letters" listed in data),
2. Unicode NFKC (fullwidth ``ｋｉｌｌ``, mathematical ``𝐤𝐢𝐥𝐥``, circled ``ⓚ``, ligatures ...),
3. confusables: Cyrillic/Greek/Latin look-alikes mapped to Latin (``кіll`` -> ``kill``),
4. casefold, then diacritics removed (NFKD, combining marks dropped: ``kíll`` -> ``kill``),
5. tokenisation into words; ``!`` and ``|`` count as letters only between word characters,
6. letter-spaced words joined: a run of three or more one-character tokens becomes one word
   (``k i l l``, ``k.i.l.l``, ``k-i-l-l`` -> ``kill``); as any gap in such a run may be a word
   boundary, every stretch of it is tried as a word (``a k i l l him`` still matches ``kill him``),
7. leetspeak, only in tokens that also contain a letter (``k1ll``, ``$ex``, ``r4pe``), so that
   plain numbers such as ``15 year old`` keep their digits,
8. letters repeated more than twice collapsed (``kiiiill`` -> ``kiill``).

:func:`Normalizer.normalize` returns the canonical form (steps 1-8, one space between words).
:func:`Normalizer.tokens` keeps, for every word, the set of spellings a term may match: the word
without leetspeak, every leetspeak reading (``1`` is ``i`` or ``l``) and, where letters were
repeated more than twice, those runs shortened to one or to two letters (``kiiiill`` matches
``kill``; a genuine double letter such as in ``rapper`` is never shortened, so it can't turn into
``raper``). Matching whole tokens is what gives word boundaries: ``grape`` never matches ``rape``.

The tables (confusables, leetspeak, extra invisible characters) are data:
``moderation/data/normalization.json``.
"""

from __future__ import annotations

import functools
import itertools
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"
NORMALIZATION_FILE = "normalization.json"

# Caps on how many spellings one token may expand to (leetspeak readings x shortened runs).
_MAX_LEET_COMBINATIONS = 16
_MAX_RUN_COMBINATIONS = 16
_MIN_JOINED_SINGLES = 3
# Longest stretch of a letter-spaced run tried as a word of its own (see Normalizer._token).
_MAX_SPACED_WORD = 40


@dataclass(frozen=True)
class Token:
    """One word of a normalised text.

    ``raw``: after character clean-up, before leetspeak and run collapsing (what term lists are
    compared with when they contain digits, e.g. ``1488``); ``canonical``: the form shown in
    :func:`normalize_text`; ``variants``: every spelling a term token may equal; ``spaced``: the
    word was written letter by letter (``k i l l``).
    """

    raw: str
    canonical: str
    variants: frozenset[str]
    spaced: bool = False


@dataclass(frozen=True)
class NormalizationTables:
    confusables: Mapping[str, str]
    leet: Mapping[str, tuple[str, ...]]
    leet_inner_only: frozenset[str]
    invisible: frozenset[str]

    @classmethod
    def from_file(cls, path: Path) -> NormalizationTables:
        data = json.loads(path.read_text(encoding="utf-8"))
        confusables = {str(k): str(v) for k, v in data.get("confusables", {}).items()}
        leet: dict[str, tuple[str, ...]] = {}
        for k, v in data.get("leet", {}).items():
            options = (v,) if isinstance(v, str) else tuple(v)
            if len(k) != 1 or not options or not all(isinstance(o, str) and o for o in options):
                raise ValueError(f"{path}: bad leet entry {k!r}: {v!r}")
            leet[k] = options
        inner = frozenset(data.get("leet_inner_only", ()))
        if not inner <= set(leet):
            raise ValueError(f"{path}: leet_inner_only lists symbols missing from leet")
        for k in leet:
            if k.isalpha():
                raise ValueError(f"{path}: leet key {k!r} is a letter")
        return cls(confusables, leet, inner, frozenset(data.get("invisible", ())))


def _run_lengths(word: str) -> list[tuple[str, int]]:
    return [(ch, len(list(group))) for ch, group in itertools.groupby(word)]


def _collapse(word: str, keep: int) -> str:
    """Letters repeated more than twice shortened to ``keep`` copies; everything else unchanged."""
    return "".join(ch * (keep if n > 2 and ch.isalpha() else n) for ch, n in _run_lengths(word))


def _run_variants(word: str) -> set[str]:
    """``word`` with each run of 3+ equal letters shortened to one or to two copies."""
    runs = _run_lengths(word)
    long_runs = [i for i, (ch, n) in enumerate(runs) if n > 2 and ch.isalpha()]
    if not long_runs:
        return {word}
    if 2 ** len(long_runs) > _MAX_RUN_COMBINATIONS:
        return {word, _collapse(word, 1), _collapse(word, 2)}
    out = {word}
    for keeps in itertools.product((1, 2), repeat=len(long_runs)):
        chosen = dict(zip(long_runs, keeps, strict=True))
        out.add("".join(ch * chosen.get(i, n) for i, (ch, n) in enumerate(runs)))
    return out


class Normalizer:
    """Normalises text with one set of :class:`NormalizationTables`."""

    def __init__(self, tables: NormalizationTables) -> None:
        self.tables = tables
        self._confusables = str.maketrans(dict(tables.confusables))
        self._symbols = frozenset(k for k in tables.leet if not k.isalnum())

    # -- characters ---------------------------------------------------------------------------
    def clean(self, text: str) -> str:
        """Steps 1-4: invisible characters, NFKC, confusables, casefold, diacritics."""
        previous = None
        # A second round settles the rare characters whose casefold or decomposition yields
        # something that the earlier steps would have changed (keeps normalisation idempotent).
        for _ in range(3):
            if text == previous:
                break
            previous = text
            text = self._clean_once(text)
        return text

    def _clean_once(self, text: str) -> str:
        invisible = self.tables.invisible
        text = "".join(c for c in text if c not in invisible and unicodedata.category(c) != "Cf")
        text = unicodedata.normalize("NFKC", text)
        text = text.translate(self._confusables).casefold()
        text = unicodedata.normalize("NFKD", text)
        text = "".join(c for c in text if unicodedata.category(c) not in ("Mn", "Me"))
        text = text.translate(self._confusables)
        text = unicodedata.normalize("NFC", text)
        return "".join(c for c in text if c not in invisible and unicodedata.category(c) != "Cf")

    # -- words --------------------------------------------------------------------------------
    @staticmethod
    def _is_word_char(c: str) -> bool:
        return c.isalnum() or unicodedata.category(c) == "Mc"

    def _split(self, cleaned: str) -> list[str]:
        """Runs of word characters and leetspeak symbols; inner-only symbols trimmed off the ends."""
        words: list[str] = []
        current: list[str] = []
        for c in [*cleaned, " "]:
            if self._is_word_char(c) or c in self._symbols:
                current.append(c)
                continue
            if current:
                word = "".join(current)
                inner = self.tables.leet_inner_only
                while word and word[0] in inner:
                    word = word[1:]
                while word and word[-1] in inner:
                    word = word[:-1]
                if word:
                    words.append(word)
                current = []
        return words

    @staticmethod
    def _join_letter_spaced(words: Sequence[str]) -> list[tuple[str, bool]]:
        """Runs of at least three one-character words become one word: ``k i l l`` -> ``kill``.

        Returns ``(word, spaced)`` pairs; ``spaced`` marks a word joined from single letters.
        """
        out: list[tuple[str, bool]] = []
        i = 0
        while i < len(words):
            j = i
            while j < len(words) and len(words[j]) == 1:
                j += 1
            if j - i >= _MIN_JOINED_SINGLES:
                out.append(("".join(words[i:j]), True))
                i = j
            else:
                out.append((words[i], False))
                i += 1
        return out

    def _leet_readings(self, word: str) -> list[str]:
        """Leetspeak readings of ``word``, canonical one first; none if it has no letter."""
        leet = self.tables.leet
        positions = [i for i, c in enumerate(word) if c in leet]
        if not positions or not any(c.isalpha() for c in word):
            return []
        option_lists = [leet[word[i]] for i in positions]
        combos: list[tuple[str, ...]]
        total = 1
        for options in option_lists:
            total *= len(options)
        if total <= _MAX_LEET_COMBINATIONS:
            combos = list(itertools.product(*option_lists))
        else:  # canonical reading, plus each alternative applied everywhere it is possible
            width = max(len(o) for o in option_lists)
            combos = [tuple(o[min(k, len(o) - 1)] for o in option_lists) for k in range(width)]
        readings: list[str] = []
        for combo in combos:
            chars = list(word)
            for pos, replacement in zip(positions, combo, strict=True):
                chars[pos] = replacement
            reading = "".join(chars)
            if reading not in readings:
                readings.append(reading)
        return readings

    def _token(self, raw: str, spaced: bool = False) -> Token:
        readings = self._leet_readings(raw)
        canonical = _collapse(readings[0] if readings else raw, 2)
        variants: set[str] = set()
        for spelling in [raw, *readings]:
            variants |= _run_variants(spelling)
        variants.add(canonical)
        if spaced:
            # Letter by letter, every gap may be a word boundary: "a k i l l him" hides "kill"
            # inside "akill", so every stretch of the joined letters is a candidate word.
            variants |= {
                v[i : i + n]
                for v in tuple(variants)
                for n in range(_MIN_JOINED_SINGLES, _MAX_SPACED_WORD + 1)
                for i in range(len(v) - n + 1)
            }
        return Token(raw=raw, canonical=canonical, variants=frozenset(variants), spaced=spaced)

    def raw_words(self, text: str) -> list[str]:
        """Steps 1-6: the words a term list entry is made of (no leetspeak, no run collapsing)."""
        return [w for w, _ in self._join_letter_spaced(self._split(self.clean(text)))]

    def tokens(self, text: str) -> list[Token]:
        return [self._token(w, spaced) for w, spaced in self._join_letter_spaced(self._split(self.clean(text)))]

    def normalize(self, text: str) -> str:
        return " ".join(t.canonical for t in self.tokens(text))


@functools.lru_cache(maxsize=16)
def load_normalizer(directory: Path | None = None) -> Normalizer:
    """The normaliser for a data directory: its ``normalization.json``, else the default tables."""
    path = (directory or DEFAULT_DATA_DIR) / NORMALIZATION_FILE
    if not path.is_file():
        path = DEFAULT_DATA_DIR / NORMALIZATION_FILE
    return Normalizer(NormalizationTables.from_file(path))


def normalize_text(text: str) -> str:
    """Canonical normalised form of ``text`` with the default tables (see the module docstring)."""
    return load_normalizer(None).normalize(text)
