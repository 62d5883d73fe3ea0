"""Normalisation tricks: each one a prompt writer might use to slip a listed word through."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moderation.normalization import load_normalizer
from moderation.prompt_policy import load_prompt_policy, normalize_text


@pytest.fixture(scope="module")
def policy():
    return load_prompt_policy()


def blocked_for(policy, text: str, category: str) -> bool:
    decision = policy.check(text)
    return decision.action == "block" and any(r.category == category for r in decision.reasons)


# --- Unicode: NFKC, casefold, invisible characters, diacritics, confusables -----------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ＫＩＬＬ ｈｉｍ", "kill him"),  # fullwidth
        ("𝐤𝐢𝐥𝐥 𝐡𝐢𝐦", "kill him"),  # mathematical bold
        ("ⓚⓘⓛⓛ him", "kill him"),  # circled
        ("KILL HIM", "kill him"),  # casefold
        ("Straße", "strasse"),
    ],
)
def test_nfkc_and_casefold(text, expected, policy):
    assert normalize_text(text) == expected
    if "him" in expected:
        assert blocked_for(policy, text, "violence")


@pytest.mark.parametrize("invisible", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e", "\u3164"])
def test_invisible_characters_are_removed(invisible, policy):
    text = invisible.join("kill") + " him"
    assert normalize_text(text) == "kill him"
    assert blocked_for(policy, text, "violence")


@pytest.mark.parametrize(
    ("text", "expected"), [("kíll hïm", "kill him"), ("nüdé", "nude"), ("pôrñ", "porn"), ("k̷i̷l̷l̷", "kill")]
)
def test_diacritics_and_combining_marks_are_removed(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected", "category"),
    [
        ("кіll him", "kill him", "violence"),  # Cyrillic к, і
        ("роrn", "porn", "sexual"),  # Cyrillic р, о
        ("ΡΟRN", "porn", "sexual"),  # Greek capital rho, omicron
        ("nυdе", "nude", "sexual"),  # Greek upsilon, Cyrillic е
        ("ѕех", "sex", "sexual"),  # Cyrillic ѕ, е, х
        ("bеhеаd", "behead", "violence"),  # Cyrillic е, а
    ],
)
def test_confusable_letters_map_to_latin(text, expected, category, policy):
    assert normalize_text(text) == expected
    assert blocked_for(policy, text, category)


def test_confusable_table_is_data_and_non_ascii():
    tables = load_normalizer(None).tables
    assert len(tables.confusables) >= 40
    assert all(not k.isascii() and v.isascii() for k, v in tables.confusables.items())


# --- leetspeak ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p0rn", "porn"),  # 0 -> o
        ("k1ll", "kill"),  # 1 -> i
        ("nud3", "nude"),  # 3 -> e
        ("r4pe", "rape"),  # 4 -> a
        ("5ex", "sex"),  # 5 -> s
        ("7or7ure", "torture"),  # 7 -> t
        ("r@pe", "rape"),  # @ -> a
        ("$ex", "sex"),  # $ -> s
        ("k!ll", "kill"),  # ! between letters -> i
    ],
)
def test_leetspeak(text, expected):
    assert normalize_text(text) == expected


def test_one_also_reads_as_l(policy):
    assert blocked_for(policy, "ki11 him", "violence")  # 1 -> l
    assert blocked_for(policy, "n1gg3r", "hate")


def test_numbers_and_punctuation_are_not_leetspeak(policy):
    assert normalize_text("15 year old") == "15 year old"
    assert normalize_text("wow! 100 $") == "wow 100 $"
    assert blocked_for(policy, "nude 15 year old", "minors")


# --- repeated letters --------------------------------------------------------------------------


def test_repeated_letters_collapse_to_two():
    assert normalize_text("kiiiill") == "kiill"
    assert normalize_text("pooooorn") == "poorn"
    assert normalize_text("cool") == "cool"


@pytest.mark.parametrize(
    ("text", "category"),
    [("kiiiill him", "violence"), ("killlll him", "violence"), ("pooooorn", "sexual"), ("seeeexxx", "sexual")],
)
def test_stretched_words_match_single_letter_form(text, category, policy):
    assert blocked_for(policy, text, category)


def test_genuine_double_letters_are_not_shortened(policy):
    # "rapped" must not be read as "raped": only runs longer than two are shortened.
    assert policy.check("the rapper rapped about his day").allowed


# --- letter-spaced words -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["k i l l him", "k.i.l.l him", "k-i-l-l him", "k_i_l_l him", "k . i . l . l him", "k*i*l*l him"]
)
def test_letter_spaced_words_are_joined(text, policy):
    assert normalize_text(text) == "kill him"
    assert blocked_for(policy, text, "violence")


def test_letter_spaced_phrase_and_hashtag_match_multiword_terms(policy):
    assert blocked_for(policy, "k i l l y o u r s e l f", "self_harm")
    assert blocked_for(policy, "#killyourself", "self_harm")


def test_short_single_letter_runs_are_left_alone():
    assert normalize_text("plan a b") == "plan a b"
    assert normalize_text("a i generated") == "a i generated"


def test_tricks_combine(policy):
    text = "Ｋ\u200b. 1 . l . l   h!m"  # fullwidth, zero-width space, spacing, leet, inner "!"
    assert normalize_text(text) == "kill him"
    assert blocked_for(policy, text, "violence")
    assert blocked_for(policy, "р 0 r n", "sexual")  # Cyrillic р, leet 0, letter-spaced


# --- properties --------------------------------------------------------------------------------

tricky_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(
            [*"kilxsexporn 013457@$!|.-_*", "\u200b", "\u00ad", "к", "і", "ο", "é", "\u0301", "Ｋ", "ß", "İ"]
        ),
        st.characters(),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(tricky_text)
def test_normalize_is_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once


@settings(max_examples=200, deadline=None)
@given(tricky_text)
def test_normalized_text_has_no_invisible_or_combining_characters(text):
    out = normalize_text(text)
    assert not any(unicodedata.category(c) in ("Cf", "Mn", "Me") for c in out)
    assert out == out.strip() and "  " not in out


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=12),
    st.sampled_from([" ", ".", "-", "_", " . "]),
)
def test_spacing_out_a_word_does_not_change_it(word, sep):
    assert normalize_text(sep.join(word)) == normalize_text(word)


def test_any_stretch_of_a_letter_spaced_run_is_a_word(policy):
    # Joining "a k i l l" gives "akill": the gaps were all word boundaries, so "kill" still counts.
    assert blocked_for(policy, "a k i l l him", "violence")
    assert blocked_for(policy, "i w a n t t o d i e", "self_harm")
    assert policy.check("U S A flag").allowed
