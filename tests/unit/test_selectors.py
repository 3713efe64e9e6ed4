"""Label selectors: kubectl ``-l`` parsing, Kubernetes matching semantics, errors.

The CLI's ``-l`` flag and bundle targets both end up as a ``LabelSelector``;
a selector that parses differently from kubectl, or matches differently from
Kubernetes, sends a bundle to the wrong clusters.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from protocol.errors import InvalidNameError, SelectorError
from protocol.selectors import (
    LabelSelector,
    Operator,
    Requirement,
    any_matches,
    format_selector,
    parse_labels,
    parse_selector,
    validate_label_key,
    validate_label_value,
)

KEYS = ["env", "region", "tier", "example.com/team"]
VALUES = ["prod", "dev", "us", "eu-west_1", "a.b"]


def req(key: str, op: Operator, *values: str) -> Requirement:
    return Requirement(key=key, operator=op, values=values)


# --- parsing kubectl syntax ------------------------------------------------------------


def test_parse_the_documented_example() -> None:
    selector = parse_selector("env=prod,region notin (us),!canary,tier")

    assert selector == LabelSelector(
        match_labels={"env": "prod"},
        match_expressions=(
            req("region", Operator.NOT_IN, "us"),
            req("canary", Operator.DOES_NOT_EXIST),
            req("tier", Operator.EXISTS),
        ),
    )


def test_double_equals_means_equals() -> None:
    assert parse_selector("env==prod") == parse_selector("env=prod")
    assert parse_selector("env==prod").match_labels == {"env": "prod"}


def test_not_equals_is_notin_and_matches_when_key_is_absent() -> None:
    selector = parse_selector("env!=prod")

    assert selector.match_expressions == (req("env", Operator.NOT_IN, "prod"),)
    assert selector.matches({})
    assert selector.matches({"env": "dev"})
    assert not selector.matches({"env": "prod"})


def test_in_with_several_values() -> None:
    selector = parse_selector("region in (us,eu)")

    assert selector.match_expressions == (req("region", Operator.IN, "us", "eu"),)
    assert selector.matches({"region": "us"})
    assert selector.matches({"region": "eu"})
    assert not selector.matches({"region": "ap"})
    assert not selector.matches({})


def test_whitespace_around_terms_operators_and_values_is_ignored() -> None:
    spaced = parse_selector("  env = prod ,region  notin ( us , eu ) , ! canary ,  tier  ")

    assert spaced == parse_selector("env=prod,region notin (us,eu),!canary,tier")


def test_set_operator_needs_no_space_before_parenthesis() -> None:
    assert parse_selector("region in(us)") == parse_selector("region in (us)")


def test_prefixed_keys_and_empty_values_parse() -> None:
    selector = parse_selector("example.com/team=core,env=")

    assert selector.match_labels == {"example.com/team": "core", "env": ""}
    assert selector.matches({"example.com/team": "core", "env": ""})
    assert not selector.matches({"example.com/team": "core"})


@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_empty_string_is_the_empty_selector_that_matches_everything(text: str) -> None:
    selector = parse_selector(text)

    assert selector == LabelSelector()
    assert selector.is_empty()
    assert selector.matches({})
    assert selector.matches({"env": "prod", "anything": "else"})


def test_the_same_key_with_two_values_matches_nothing() -> None:
    # Every term must hold; kubectl gives the same (empty) answer.
    selector = parse_selector("env=prod,env=dev")

    assert not selector.matches({"env": "prod"})
    assert not selector.matches({"env": "dev"})


def test_repeating_a_term_is_harmless() -> None:
    assert parse_selector("env=prod,env=prod").matches({"env": "prod"})


# --- matching ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requirement", "labels", "expected"),
    [
        (req("env", Operator.IN, "prod", "dev"), {"env": "prod"}, True),
        (req("env", Operator.IN, "prod", "dev"), {"env": "qa"}, False),
        (req("env", Operator.IN, "prod"), {}, False),
        (req("env", Operator.IN, "prod"), {"other": "prod"}, False),
        (req("env", Operator.NOT_IN, "prod"), {"env": "prod"}, False),
        (req("env", Operator.NOT_IN, "prod"), {"env": "dev"}, True),
        (req("env", Operator.NOT_IN, "prod"), {}, True),
        (req("env", Operator.EXISTS), {"env": ""}, True),
        (req("env", Operator.EXISTS), {"other": "x"}, False),
        (req("env", Operator.DOES_NOT_EXIST), {}, True),
        (req("env", Operator.DOES_NOT_EXIST), {"env": ""}, False),
    ],
)
def test_requirement_operators(
    requirement: Requirement, labels: dict[str, str], expected: bool
) -> None:
    assert requirement.matches(labels) is expected
    assert LabelSelector(match_expressions=(requirement,)).matches(labels) is expected


def test_match_labels_need_every_pair_present_and_equal() -> None:
    selector = LabelSelector(match_labels={"env": "prod", "tier": "edge"})

    assert selector.matches({"env": "prod", "tier": "edge", "extra": "x"})
    assert not selector.matches({"env": "prod"})
    assert not selector.matches({"env": "prod", "tier": "core"})


def test_match_labels_and_expressions_are_anded() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"env": "prod"},
            "matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}],
        }
    )

    assert selector.matches({"env": "prod"})
    assert not selector.matches({"env": "prod", "canary": "true"})
    assert not selector.matches({"env": "dev"})


def test_keys_and_mentioned_values() -> None:
    selector = parse_selector("env=prod,region in (us,eu),!canary,tier notin (edge)")

    assert selector.keys() == {"env", "region", "canary", "tier"}
    assert selector.mentioned_values() == {
        "env": {"prod"},
        "region": {"us", "eu"},
        "canary": set(),
        "tier": {"edge"},
    }


def test_any_matches() -> None:
    selectors = [parse_selector("env=prod"), parse_selector("tier=edge")]

    assert any_matches(selectors, {"tier": "edge"})
    assert not any_matches(selectors, {"env": "dev"})
    assert not any_matches([], {"env": "prod"})


# --- round trip -------------------------------------------------------------------------


def test_str_of_a_selector_is_kubectl_syntax() -> None:
    selector = parse_selector("tier,env=prod,region notin (us,eu),!canary,zone in (a)")

    assert str(selector) == "env=prod,tier,region notin (us,eu),!canary,zone in (a)"


keys = st.sampled_from(KEYS)
values = st.sampled_from(VALUES)
requirements = st.one_of(
    st.builds(
        Requirement,
        key=keys,
        operator=st.sampled_from([Operator.IN, Operator.NOT_IN]),
        values=st.lists(values, min_size=1, max_size=3).map(tuple),
    ),
    st.builds(
        Requirement,
        key=keys,
        operator=st.sampled_from([Operator.EXISTS, Operator.DOES_NOT_EXIST]),
    ),
)
selectors = st.builds(
    LabelSelector,
    match_labels=st.dictionaries(keys, st.one_of(values, st.just("")), max_size=3),
    match_expressions=st.lists(requirements, max_size=4).map(tuple),
)
label_sets = st.dictionaries(keys, st.sampled_from([*VALUES, "", "other"]), max_size=4)


@settings(max_examples=150)
@given(selectors)
def test_format_then_parse_gives_back_the_same_selector(selector: LabelSelector) -> None:
    assert parse_selector(format_selector(selector)) == selector


def test_not_equal_to_the_empty_value_survives_a_round_trip() -> None:
    selector = parse_selector("env!=")

    assert parse_selector(format_selector(selector)) == selector


@pytest.mark.parametrize(
    "requirement",
    [req("env", Operator.IN, ""), req("env", Operator.NOT_IN, "", "a")],
    ids=["in-empty", "notin-empty-and-a"],
)
def test_the_empty_value_in_a_set_survives_a_round_trip(requirement: Requirement) -> None:
    selector = LabelSelector(match_expressions=(requirement,))

    assert parse_selector(format_selector(selector)) == selector


def _oracle(term: tuple[str, str, tuple[str, ...]], labels: dict[str, str]) -> bool:
    """kubectl's meaning of one term, written out independently of the parser."""
    key, op, vals = term
    if op in ("=", "=="):
        return labels.get(key) == vals[0]
    if op == "!=":
        return labels.get(key) != vals[0]
    if op == "in":
        return key in labels and labels[key] in vals
    if op == "notin":
        return key not in labels or labels[key] not in vals
    if op == "exists":
        return key in labels
    return key not in labels


def _render(term: tuple[str, str, tuple[str, ...]]) -> str:
    key, op, vals = term
    if op in ("=", "==", "!="):
        return f"{key} {op} {vals[0]}"
    if op in ("in", "notin"):
        return f"{key} {op} ({', '.join(vals)})"
    return key if op == "exists" else f"!{key}"


terms = st.tuples(
    keys,
    st.sampled_from(["=", "==", "!=", "in", "notin", "exists", "!"]),
    st.lists(values, min_size=1, max_size=3).map(tuple),
)


@settings(max_examples=150)
@given(st.lists(terms, min_size=1, max_size=4), label_sets)
def test_parsed_selectors_match_as_kubectl_does(
    selector_terms: list[tuple[str, str, tuple[str, ...]]], labels: dict[str, str]
) -> None:
    text = ",".join(_render(t) for t in selector_terms)

    expected = all(_oracle(t, labels) for t in selector_terms)

    assert parse_selector(text).matches(labels) is expected


# --- errors -----------------------------------------------------------------------------


def test_unknown_operator_in_a_structured_requirement_names_it() -> None:
    with pytest.raises(ValidationError, match="Contains"):
        LabelSelector.model_validate(
            {"matchExpressions": [{"key": "env", "operator": "Contains", "values": ["p"]}]}
        )


def test_operator_spelling_is_case_sensitive() -> None:
    with pytest.raises(ValidationError, match="'in'"):
        Requirement.model_validate({"key": "env", "operator": "in", "values": ["prod"]})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"key": "env", "operator": "In"}, "needs values"),
        ({"key": "env", "operator": "NotIn", "values": []}, "needs values"),
        ({"key": "env", "operator": "Exists", "values": ["prod"]}, "takes no values"),
        ({"key": "env", "operator": "DoesNotExist", "values": ["x"]}, "takes no values"),
    ],
)
def test_values_must_fit_the_operator(payload: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Requirement.model_validate(payload)


def test_misspelt_selector_field_is_rejected_rather_than_matching_everything() -> None:
    with pytest.raises(ValidationError, match="matchLabel"):
        LabelSelector.model_validate({"matchLabel": {"env": "prod"}})


def test_invalid_label_in_structured_selector_is_rejected() -> None:
    with pytest.raises(ValidationError, match="'-env'"):
        LabelSelector.model_validate({"matchLabels": {"-env": "prod"}})
    with pytest.raises(ValidationError, match="'pr od'"):
        LabelSelector.model_validate({"matchLabels": {"env": "pr od"}})
    with pytest.raises(ValidationError, match="'bad key'"):
        LabelSelector.model_validate(
            {"matchExpressions": [{"key": "bad key", "operator": "Exists"}]}
        )


@pytest.mark.parametrize(
    ("text", "offending"),
    [
        ("region in (us,eu", "unbalanced '('"),
        ("region in us,eu)", "unbalanced ')'"),
        ("env=prod)", "unbalanced ')'"),
        ("env=prod,,tier", "empty term"),
        ("env=prod,", "empty term"),
        (",env=prod", "empty term"),
        ("env=prod=x", "'env=prod=x'"),
        ("region=us west", "'region=us west'"),
        ("env ~ prod", "'env ~ prod'"),
        ("region IN (us)", "'region IN (us)'"),
        ("!", "'!'"),
        ("-env=prod", "'-env'"),
        ("env=-prod", "'-prod'"),
        ("Bad_Prefix/env=prod", "'Bad_Prefix/env'"),
        ("region in (us,-eu)", "'-eu'"),
        (f"{'k' * 64}=v", "k" * 64),
        (f"env={'v' * 64}", "v" * 64),
    ],
)
def test_selector_errors_name_the_offending_text(text: str, offending: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_selector(text)

    assert offending in str(info.value)
    assert info.value.selector == text


def test_longest_allowed_key_and_value_parse() -> None:
    selector = parse_selector(f"{'a' * 253}/{'k' * 63}={'v' * 63}")

    assert selector.match_labels == {f"{'a' * 253}/{'k' * 63}": "v" * 63}


@pytest.mark.parametrize("key", ["env", "a", "example.com/env", "a_b.c-d", "A1"])
def test_valid_label_keys(key: str) -> None:
    assert validate_label_key(key) == key


@pytest.mark.parametrize(
    "key", ["", "-env", "env-", "_env", "e nv", "example.com/", "/env", "EXAMPLE.com/env", "a/b/c"]
)
def test_invalid_label_keys(key: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_label_key(key)

    assert info.value.value == key


@pytest.mark.parametrize("value", ["-prod", "prod-", "pr od", "pr/od", "*", "v" * 64])
def test_invalid_label_values(value: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_label_value("env", value)

    assert info.value.value == value
    assert "env" in str(info.value)


@pytest.mark.parametrize(("key", "value"), [("env\n", "prod"), ("env", "prod\n")])
def test_trailing_newline_is_not_a_valid_label(key: str, value: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_label_key(key)
        validate_label_value(key, value)
    with pytest.raises(ValidationError):
        LabelSelector(match_labels={key: value})


# --- parse_labels -----------------------------------------------------------------------


def test_parse_labels() -> None:
    assert parse_labels("env=prod, region = eu ,example.com/team=core,empty=") == {
        "env": "prod",
        "region": "eu",
        "example.com/team": "core",
        "empty": "",
    }


@pytest.mark.parametrize("text", ["", "  "])
def test_parse_labels_of_nothing_is_no_labels(text: str) -> None:
    assert parse_labels(text) == {}


@pytest.mark.parametrize(
    ("text", "field", "offending"),
    [
        ("env", "labels", "env"),
        ("env=prod,,tier=edge", "labels", ""),
        ("env=prod,tier", "labels", "tier"),
        ("-env=prod", "label key", "-env"),
        ("=prod", "label key", ""),
        ("env=pr od", "label env", "pr od"),
        ("env=prod=x", "label env", "prod=x"),
    ],
)
def test_parse_labels_errors(text: str, field: str, offending: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        parse_labels(text)

    assert info.value.field == field
    assert info.value.value.strip() == offending
    assert repr(offending) in str(info.value)


def test_empty_parentheses_are_the_empty_value_as_in_kubernetes() -> None:
    selector = parse_selector("region in ()")

    assert selector.matches({"region": ""})
    assert not selector.matches({"region": "eu"})
    assert not selector.matches({})
