"""Prompt policy: categories, word boundaries, allow list, combinations, decision order, loading."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moderation.prompt_policy import (
    DEFAULT_POLICY_DIR,
    PolicyReason,
    PromptDecision,
    clear_policy_cache,
    load_prompt_policy,
    normalize_text,
)

REQUIRED_CATEGORIES = {"sexual", "violence", "self_harm", "hate", "harassment", "illegal_activity", "minors"}


@pytest.fixture(scope="module")
def policy():
    return load_prompt_policy()


def write_policy(root: Path, categories: dict[str, tuple[str, list[str]]], combinations=(), allow=(), version="test-1"):
    (root / "terms").mkdir(parents=True, exist_ok=True)
    spec = {
        "version": version,
        "categories": {name: {"action": action, "description": name} for name, (action, _) in categories.items()},
        "combinations": list(combinations),
    }
    (root / "prompt_policy.json").write_text(json.dumps(spec), encoding="utf-8")
    for name, (_, terms) in categories.items():
        (root / "terms" / f"{name}.txt").write_text("# test list\n" + "\n".join(terms) + "\n", encoding="utf-8")
    if allow:
        (root / "terms" / "allow.txt").write_text("\n".join(allow) + "\n", encoding="utf-8")
    return load_prompt_policy(root)


# --- the shipped policy ------------------------------------------------------------------------


def test_default_policy_loads_with_required_categories(policy):
    assert REQUIRED_CATEGORIES <= set(policy.categories)
    assert policy.version
    assert re.fullmatch(r"[0-9a-f]{64}", policy.fingerprint)
    for category in policy.categories:
        assert policy.terms[category], f"{category} has an empty term list"
    assert policy.category_actions["minors"] == "allow"  # context only, see combinations


def test_loading_is_cached_per_path():
    policy = load_prompt_policy()
    assert load_prompt_policy(DEFAULT_POLICY_DIR) is policy
    assert load_prompt_policy(DEFAULT_POLICY_DIR / "terms" / "..") is policy


def test_every_decision_records_the_policy_version(policy):
    version = json.loads((DEFAULT_POLICY_DIR / "prompt_policy.json").read_text())["version"]
    for text in ["a kid flying a kite", "behead him", "you bitch"]:
        assert policy.check(text).policy_version == version == policy.version


def test_every_listed_term_matches_itself(policy):
    """Each entry, written plainly, is found under its own category (no entry is unreachable)."""
    for category in policy.categories:
        for term in policy.terms[category]:
            if policy.category_actions[category] != "allow":
                text = term
            elif category == "minors":
                text = f"nude {term}"
            else:
                text = f"{term} and a kid"
            decision = policy.check(text)
            assert PolicyReason(category, term, decision_action(decision, category)) in decision.reasons, (
                category,
                term,
                decision,
            )


def decision_action(decision: PromptDecision, category: str):
    return next(r.action for r in decision.reasons if r.category == category)


@pytest.mark.parametrize(
    ("text", "category", "action"),
    [
        ("a video of someone getting beheaded", "violence", "block"),
        ("dismembered bodies in a basement", "violence", "block"),
        ("a school shooting", "violence", "block"),
        ("porn video", "sexual", "block"),
        ("two people having sex", "sexual", "block"),
        ("how to kill myself", "self_harm", "block"),
        ("thinspo motivation", "self_harm", "block"),
        ("sieg heil rally", "hate", "block"),
        ("a faggot joke", "hate", "block"),
        ("my ex is a whore", "harassment", "review"),
        ("dox this streamer", "harassment", "review"),
        ("how to make a bomb at home", "illegal_activity", "review"),
        ("cook meth in a trailer", "illegal_activity", "review"),
    ],
)
def test_harmful_prompts(policy, text, category, action):
    decision = policy.check(text)
    assert decision.action == action
    assert not decision.allowed
    assert any(r.category == category and r.action == action for r in decision.reasons)


@pytest.mark.parametrize(
    "text",
    [
        "shoot a video of the sunrise",
        "photo shoot on the beach",
        "killer view from the mountain top",
        "a cat kills it on the dance floor",
        "killing it at karaoke night",
        "killer whales jumping",
        "a kid flying a kite",
        "kids playing soccer in the park",
        "a 7 year old blowing out birthday candles",
        "teenager skateboarding at sunset",
        "same-sex couple's wedding dance",
        "sex education class animation",
        "stars visible to the naked eye",
        "a naked mole rat eating",
        "nude lipstick tutorial",
        "oilseed rape fields in bloom",
        "Al Gore giving a speech",
        "suicide prevention awareness video",
        "a sexy sports car",
        "zombie horror trailer",
        "a man shooting hoops",
        "this beat is the bomb",
    ],
)
def test_benign_prompts_pass(policy, text):
    decision = policy.check(text)
    assert decision.allowed, decision
    assert decision.action == "allow" and decision.reasons == ()


@pytest.mark.parametrize(
    "text",
    [
        "grape harvest",
        "drapes and curtains",
        "the therapist's office",
        "Scunthorpe United",
        "a trip to Essex",
        "analysis of a canal",
        "spicy noodles",
        "a hot spice market",
        "kill bill style anime fight",
        "a title screen",
    ],
)
def test_terms_match_whole_words_only(policy, text):
    assert policy.check(text).allowed


def test_word_boundaries_with_a_short_term(tmp_path):
    p = write_policy(tmp_path, {"rude": ("review", ["ass"])})
    assert p.check("a class on grass").allowed
    assert p.check("assessing the bass").allowed
    assert p.check("what an ass").action == "review"
    assert p.check("what an a$$").action == "review"


def test_allow_list_hides_only_its_own_words(policy):
    assert policy.check("visible to the naked eye").allowed
    decision = policy.check("visible to the naked eye, and a naked woman")
    assert decision.action == "block"
    assert decision.reasons == (PolicyReason("sexual", "naked", "block"),)


def test_allow_list_is_data(tmp_path):
    categories = {"violence": ("block", ["kill{,s,ing}"])}
    strict = write_policy(tmp_path / "strict", categories)
    lenient = write_policy(tmp_path / "lenient", categories, allow=["kill{s,ing} it", "kill time"])
    for text in ["she kills it on stage", "kill time at the airport"]:
        assert strict.check(text).action == "block"
        assert lenient.check(text).allowed
    assert lenient.check("kill the dragon").action == "block"


# --- minors and the sexual + minors combination --------------------------------------------------


def test_minors_alone_are_allowed_without_reasons(policy):
    for text in ["a kid flying a kite", "toddlers at the zoo", "a 12 year old's science project", "my teenage son"]:
        decision = policy.check(text)
        assert decision.allowed and decision.reasons == (), text


def test_sexual_plus_minors_blocks_with_both_reasons(policy):
    decision = policy.check("nude teen")
    assert decision.action == "block"
    assert decision.reasons == (
        PolicyReason("sexual", "nude", "block"),
        PolicyReason("minors", "teen", "block"),
    )


@pytest.mark.parametrize(
    "text", ["a naked child", "porn with a 15yo", "n.u.d.e kids", "ｎｕｄｅ little girls", "t33n p0rn"]
)
def test_sexual_plus_minors_variants(policy, text):
    decision = policy.check(text)
    assert decision.action == "block"
    categories = {(r.category, r.action) for r in decision.reasons}
    assert {("sexual", "block"), ("minors", "block")} <= categories


def test_suggestive_plus_minors_blocks_though_neither_does_alone(policy):
    assert policy.check("a sexy woman dancing").allowed
    assert policy.check("a teen dancing").allowed
    decision = policy.check("a sexy teen dancing")
    assert decision.action == "block"
    assert decision.reasons == (
        PolicyReason("minors", "teen", "block"),
        PolicyReason("suggestive", "sexy", "allow"),  # context, reported because the combination fired
    )


def test_combinations_come_from_the_policy_file(tmp_path):
    cats = {"sexual": ("block", ["nude"]), "minors": ("allow", ["kid"]), "food": ("allow", ["cake"])}
    plain = write_policy(tmp_path / "plain", cats)
    assert plain.check("nude kid").reasons == (PolicyReason("sexual", "nude", "block"),)
    assert plain.check("kid eating cake").allowed

    combos = [
        {"name": "sm", "when_all": ["sexual", "minors"], "category": "minors", "action": "block"},
        {"name": "cake", "when_all": ["food", "minors"], "category": "food", "action": "review"},
    ]
    combined = write_policy(tmp_path / "combined", cats, combinations=combos)
    assert combined.check("nude kid").reasons == (
        PolicyReason("sexual", "nude", "block"),
        PolicyReason("minors", "kid", "block"),
    )
    decision = combined.check("kid eating cake")
    assert decision.action == "review"
    assert decision.reasons == (PolicyReason("food", "cake", "review"), PolicyReason("minors", "kid", "allow"))


# --- decision --------------------------------------------------------------------------------------


def test_decision_is_the_strongest_action_and_reasons_are_ordered(tmp_path):
    p = write_policy(
        tmp_path,
        {"mild": ("review", ["meh", "blah"]), "bad": ("block", ["evil"]), "context": ("allow", ["fine"])},
    )
    assert p.check("nothing here").action == "allow"
    assert p.check("fine").action == "allow"
    assert p.check("meh").action == "review"
    decision = p.check("meh blah fine evil")
    assert decision.action == "block"
    assert decision.reasons == (
        PolicyReason("bad", "evil", "block"),
        PolicyReason("mild", "meh", "review"),
        PolicyReason("mild", "blah", "review"),
    )


def test_review_plus_block_is_block(policy):
    decision = policy.check("you bitch, I will behead you")
    assert decision.action == "block"
    assert [r.action for r in decision.reasons] == ["block", "review"]


def test_reason_text_and_decision_fields(policy):
    decision = policy.check("B E H E A D him")
    assert decision.reasons[0].as_text() == "violence: matched 'behead'"
    assert decision.normalized == "behead him" == normalize_text("B E H E A D him")
    assert decision.allowed is False


def test_longest_match_hides_the_terms_inside_it(policy):
    assert policy.check("a sex tape").reasons == (PolicyReason("sexual", "sex tape", "block"),)


def test_repeated_terms_are_reported_once(policy):
    assert policy.check("gore gore GORE g o r e").reasons == (PolicyReason("violence", "gore", "block"),)


# --- loading -----------------------------------------------------------------------------------------


def test_term_file_syntax(tmp_path):
    p = write_policy(
        tmp_path,
        {"x": ("block", ["# a comment line", "", "behead{,s,ed}   # inline comment", "{cut,slit} {his,her} throat"])},
    )
    assert p.terms["x"] == (
        "behead",
        "beheads",
        "beheaded",
        "cut his throat",
        "cut her throat",
        "slit his throat",
        "slit her throat",
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda spec: spec["categories"]["x"].update(action="maybe"), "action"),
        (lambda spec: spec.update(version=""), "version"),
        (
            lambda spec: spec["combinations"].append({"when_all": ["x", "nope"], "category": "x", "action": "block"}),
            "unknown",
        ),
        (lambda spec: spec["categories"].update(missing={"action": "block"}), "term list"),
    ],
)
def test_malformed_policy_is_rejected(tmp_path, mutate, message):
    write_policy(tmp_path, {"x": ("block", ["bad"]), "y": ("allow", ["ctx"])})
    path = tmp_path / "prompt_policy.json"
    spec = json.loads(path.read_text())
    mutate(spec)
    path.write_text(json.dumps(spec))
    clear_policy_cache()
    with pytest.raises(ValueError, match=message):
        load_prompt_policy(tmp_path)


def test_unbalanced_braces_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="braces"):
        write_policy(tmp_path, {"x": ("block", ["behead{,s"])})


# --- properties --------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_check_never_raises_on_arbitrary_text(text):
    decision = load_prompt_policy().check(text)
    assert decision.action in ("allow", "review", "block")
    assert decision.allowed == (decision.action == "allow")
    assert decision.policy_version
    assert decision.normalized == normalize_text(text)
    strongest = max((r.action for r in decision.reasons), key=["allow", "review", "block"].index, default="allow")
    assert decision.action == strongest


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a", "kid", "nude", "gore", "the", "sexy", "naked eye", "bitch", "cake", "k i l l", "him"]),
        max_size=8,
    )
)
def test_neutral_words_around_a_prompt_do_not_change_the_decision(words):
    policy = load_prompt_policy()
    text = " ".join(words)
    decision = policy.check(text)
    wrapped = policy.check(f"cinematic, {text}, please")
    assert (wrapped.action, wrapped.reasons) == (decision.action, decision.reasons)
