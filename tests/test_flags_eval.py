"""The ported flag evaluation (``serla.devtools.flags``): the API document's vectors and the server's rules.

``tests/realserver/test_flags.py`` checks the same port against the real server's answers.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from serla.devtools.flags import (
    FlagDefinition,
    bucket,
    decode_properties,
    evaluate_all,
    evaluate_flag,
    parse_definition,
    parse_definitions,
    strict_equal,
)


def test_bucket_matches_the_documented_vectors() -> None:
    assert bucket("new-checkout", "user_123") == 53.71
    assert bucket("new-checkout:variant", "user_123") == 7.32
    assert bucket("button-color", "user_123") == 71.7
    assert bucket("button-color:variant", "user_123") == 17.58
    assert bucket("new-checkout", "") == 57.75


def test_the_documented_variant_example() -> None:
    flag = parse_definition(
        {
            "key": "button-color",
            "variants": [{"key": "control", "weight": 50}, {"key": "variant_a", "weight": 50}],
        }
    )
    assert evaluate_flag(flag, "user_123") == ("control", "rollout")


def test_order_disabled_then_conditions_then_rollout() -> None:
    cond = [{"type": "distinct_id_in", "values": ["u1"]}]
    assert evaluate_flag(parse_definition({"key": "f", "enabled": False, "conditions": cond}), "u1") == (
        False,
        "disabled",
    )
    assert evaluate_flag(
        parse_definition({"key": "f", "rollout_percentage": 0, "conditions": cond}), "u1"
    ) == (
        True,
        "condition_match",
    )
    assert evaluate_flag(parse_definition({"key": "f", "rollout_percentage": 0}), "u1") == (
        False,
        "rollout_excluded",
    )
    # new-checkout / user_123 is bucket 53.71: in at 54 %, out at 53 %.
    assert (
        evaluate_flag(parse_definition({"key": "new-checkout", "rollout_percentage": 54}), "user_123")[0]
        is True
    )
    assert (
        evaluate_flag(parse_definition({"key": "new-checkout", "rollout_percentage": 53}), "user_123")[0]
        is False
    )


def test_a_condition_match_gets_the_variant_too() -> None:
    flag = parse_definition(
        {
            "key": "button-color",
            "rollout_percentage": 0,
            "conditions": [{"type": "property_equals", "field": "plan", "value": "pro"}],
            "variants": [{"key": "control", "weight": 50}, {"key": "variant_a", "weight": 50}],
        }
    )
    assert evaluate_flag(flag, "user_123", {"plan": "pro"}) == ("control", "condition_match")
    assert evaluate_flag(flag, "user_123", {"plan": "free"}) == (False, "rollout_excluded")


def test_weights_below_100_fall_to_the_last_variant() -> None:
    flag = parse_definition(
        {"key": "button-color", "variants": [{"key": "a", "weight": 10}, {"key": "b", "weight": 5}]}
    )
    assert evaluate_flag(flag, "user_123")[0] == "b"  # variant bucket 17.58 is past 15


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1.0, True),
        (1, "1", False),
        (True, 1, False),
        (False, 0, False),
        (None, None, True),
        ({"a": 1}, {"a": 1}, False),
        ([1], [1], False),
        ("x", "x", True),
        (9007199254740993, 9007199254740992, True),  # both are the same double in JavaScript
        (10**400, float("inf"), True),
    ],
)
def test_strict_equal_is_javascripts(a: Any, b: Any, equal: bool) -> None:
    assert strict_equal(a, b) is equal
    assert strict_equal(b, a) is equal


def test_property_equals_without_value_matches_a_missing_property() -> None:
    flag = parse_definition(
        {"key": "f", "rollout_percentage": 0, "conditions": [{"type": "property_equals", "field": "plan"}]}
    )
    assert evaluate_flag(flag, "u", {})[0] is True  # undefined === undefined
    assert evaluate_flag(flag, "u", {"plan": None})[0] is False
    proto = parse_definition(
        {
            "key": "g",
            "rollout_percentage": 0,
            "conditions": [{"type": "property_equals", "field": "toString"}],
        }
    )
    assert evaluate_flag(proto, "u", {})[0] is False  # an inherited function is not undefined


def test_distinct_id_in_compares_strings_only() -> None:
    flag = parse_definition(
        {"key": "f", "rollout_percentage": 0, "conditions": [{"type": "distinct_id_in", "values": [7, "8"]}]}
    )
    assert evaluate_flag(flag, "7")[0] is False
    assert evaluate_flag(flag, "8")[0] is True


def test_a_malformed_flag_is_false_and_the_others_unaffected() -> None:
    broken = FlagDefinition(key="broken", rollout_percentage=0, conditions=("not an object",))  # type: ignore[arg-type]
    good = parse_definition({"key": "good"})
    assert evaluate_all([broken, good], "u") == {"broken": False, "good": True}


def _b64(value: Any, alphabet: str = "url") -> str:
    raw = json.dumps(value).encode()
    if alphabet == "url":
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return base64.b64encode(raw).decode()


def test_properties_decode_like_node() -> None:
    props = {"plan": "pro", "s": "~~~>>>???"}
    assert decode_properties(_b64(props)) == props
    assert decode_properties(_b64(props, "std")) == props
    assert decode_properties(None) == {}
    assert decode_properties("") == {}
    assert decode_properties("!!!") == {}
    assert decode_properties(base64.b64encode(b"NaN").decode()) == {}
    assert decode_properties(base64.b64encode(b"[1]").decode()) == [1]
    # A '+' that query parsing turned into a space is skipped: the value shifts and no longer parses.
    std = _b64(props, "std")
    assert "+" in std and decode_properties(std.replace("+", " ")) == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"key": "has space"},
        {"key": "x" * 101},
        {"key": "f", "enabled": "yes"},
        {"key": "f", "rollout_percentage": 101},
        {"key": "f", "rollout_percentage": 12.5},
        {"key": "f", "conditions": {"type": "distinct_id_in"}},
        {"key": "f", "conditions": [{"type": "distinct_id_in", "values": "u1"}]},
        {"key": "f", "conditions": [{"type": "property_equals"}]},
        {"key": "f", "variants": [{"key": "", "weight": 50}]},
        {"key": "f", "variants": [{"key": "a", "weight": "50"}]},
        "f",
    ],
)
def test_malformed_definitions_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_definition(bad)


def test_definitions_accept_both_spellings_and_refuse_duplicates() -> None:
    (flag,) = parse_definitions({"flags": [{"key": "f", "rolloutPercentage": 20}]})
    assert flag.rollout_percentage == 20 and flag.enabled is True
    with pytest.raises(ValueError, match="twice"):
        parse_definitions([{"key": "f"}, {"key": "f"}])
    assert parse_definition(flag.to_json()) == FlagDefinition("f", True, 20, (), (), "f")
