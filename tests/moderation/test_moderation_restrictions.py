"""Cameo restrictions: free text → topics and literal words → checks with the prompt
policy's normalisation."""

from __future__ import annotations

import pytest

from moderation.restrictions import RestrictionCompiler, compile_restrictions


@pytest.mark.parametrize(
    ("text", "topics", "literals"),
    [
        ("", (), ()),
        ("No political content", ("politics",), ()),
        ("nothing scary, no clowns or hats please", ("scary",), ("clowns", "hats")),
        ("Don't put me in anything violent; no alcohol.", ("violence", "alcohol"), ()),
        ("no sexy stuff and no religion", ("sexual", "religion"), ()),
        ("keep me away from brands", ("advertising",), ()),
    ],
)
def test_restriction_text_is_read_as_topics_and_words(
    text: str, topics: tuple[str, ...], literals: tuple[str, ...]
) -> None:
    rules = compile_restrictions(text)
    assert (rules.topics, rules.literals) == (topics, literals)
    assert rules.empty == (not topics and not literals)


@pytest.mark.parametrize(
    ("restriction", "prompt", "refused"),
    [
        ("no political content", "@maya waving at a presidential rally", True),
        ("no political content", "@maya waving at a beach party", False),
        ("no political content", "@maya as a p0litician", True),  # leetspeak
        ("no political content", "@maya as a p o l i t i c i a n", True),  # letter spacing
        ("no clowns", "@maya with a clown", True),  # singular of a plural restriction
        ("no clowns", "@maya with a crown", False),
        ("no hat", "@maya wearing hats", True),
        ("nothing scary", "@maya in a haunted castle", True),
        ("no violence", "@maya in a boxing match", True),  # stricter than the platform policy
        ("no violence", "@maya boxing up presents", True),  # conservative: the word is enough
        ("no alcohol", "@maya drinking lemonade", False),
        ("no alcohol", "@maya drinking beer at a bar", True),
        ("", "@maya at a presidential rally", False),
    ],
)
def test_violations(restriction: str, prompt: str, refused: bool) -> None:
    assert bool(compile_restrictions(restriction).violations(prompt)) is refused


def test_violations_name_the_topic_and_the_matched_term() -> None:
    (reason,) = compile_restrictions("no political content").violations("@maya at the election")
    assert (reason.category, reason.term, reason.action) == ("politics", "election", "block")


def test_restrictions_have_a_length_limit() -> None:
    with pytest.raises(ValueError, match="at most 500"):
        RestrictionCompiler().compile("no " + "x" * 600)


def test_every_topic_has_terms_and_triggers() -> None:
    compiler = RestrictionCompiler()
    for topic in compiler.topics.values():
        assert topic.terms and topic.triggers, topic.name
