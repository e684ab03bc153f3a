"""The encoder: every value becomes JSON the Serla server accepts; timestamps become strict UTC ``Z``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import pathlib
import uuid
from decimal import Decimal
from typing import Any

import pytest

from serla._encode import encode, format_timestamp, parse_iso, sanitize, utc_now

UTC = dt.timezone.utc


def roundtrip(value: Any) -> Any:
    raw = encode({"v": value})
    text = raw.decode("utf-8")  # strict: fails on lone surrogates
    assert "\\u0000" not in text
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-finite {c}"))["v"]


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


@dataclasses.dataclass
class Point:
    x: int
    when: dt.date


class Model:
    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return {"mode": mode, "ok": True}


class Arrayish:
    def tolist(self) -> list[int]:
        return [1, 2]


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2024, 1, 15, 10, 30, 0, 123456), "2024-01-15T10:30:00.123Z"),
        (
            dt.datetime(2024, 1, 15, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            "2024-01-15T10:30:00.000Z",
        ),
        (dt.date(2024, 1, 15), "2024-01-15"),
        (dt.time(10, 30), "10:30:00"),
        (dt.timedelta(minutes=1, milliseconds=500), 60.5),
        (Decimal("12.50"), 12.5),
        (Decimal("NaN"), None),
        (float("nan"), None),
        (float("inf"), None),
        (-math.inf, None),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Color.RED, "red"),
        (Color.BLUE, 2),
        ({3, 1, 2}, [1, 2, 3]),
        (frozenset({"b", "a"}), ["a", "b"]),
        ((1, "a"), [1, "a"]),
        (b"caf\xc3\xa9\xff", "café\ufffd"),
        (bytearray(b"x"), "x"),
        (Point(1, dt.date(2024, 2, 29)), {"x": 1, "when": "2024-02-29"}),
        (Model(), {"mode": "json", "ok": True}),
        (Arrayish(), [1, 2]),
        (pathlib.PurePosixPath("/tmp/x"), "/tmp/x"),
        (ValueError("boom"), "ValueError: boom"),
        ("a\x00b", "ab"),
        ("\ud800x", "\ufffdx"),
        ("\ud83d\ude00", "\U0001f600"),
        ({1: "int key", None: "none", (1, 2): "tuple"}, {"1": "int key", "null": "none", "(1, 2)": "tuple"}),
        (BadStr(), "<unprintable BadStr>"),
        (object.__new__(type("Thing", (), {"__str__": lambda self: "thing!"})), "thing!"),
    ],
)
def test_coercions(value: Any, expected: Any) -> None:
    assert roundtrip(value) == expected


def test_cycles_and_depth_are_cut() -> None:
    d: dict[str, Any] = {"name": "x"}
    d["self"] = d
    lst: list[Any] = [1]
    lst.append(lst)
    assert roundtrip(d) == {"name": "x", "self": "<cycle>"}
    assert roundtrip(lst) == [1, "<cycle>"]
    deep: Any = "leaf"
    for _ in range(5000):
        deep = {"k": deep}
    out = roundtrip(deep)
    depth = 0
    while isinstance(out, dict):
        out = out["k"]
        depth += 1
    assert out == "<max depth>"
    assert depth < 40


def test_shared_object_is_not_a_cycle() -> None:
    shared = {"a": 1}
    assert roundtrip([shared, shared]) == [{"a": 1}, {"a": 1}]


def test_key_with_nul_and_surrogate_is_cleaned() -> None:
    assert roundtrip({"a\x00": 1, "\udc00": 2}) == {"a": 1, "\ufffd": 2}


def test_sanitize_never_raises_on_hostile_container() -> None:
    class Hostile(dict):  # type: ignore[type-arg]
        def items(self) -> Any:
            raise RuntimeError("nope")

    assert sanitize({"h": Hostile(a=1)})["h"] == "<unprintable Hostile>"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.datetime(2024, 1, 15, 10, 30), "2024-01-15T10:30:00.000Z"),
        (dt.datetime(2024, 1, 15, 10, 30, tzinfo=UTC), "2024-01-15T10:30:00.000Z"),
        (
            dt.datetime(2024, 1, 15, 5, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            "2024-01-15T10:30:00.000Z",
        ),
        (dt.date(2024, 2, 29), "2024-02-29T00:00:00.000Z"),
        ("2024-01-15T10:30:00Z", "2024-01-15T10:30:00.000Z"),
        ("2024-01-15T10:30:00.123456789Z", "2024-01-15T10:30:00.123Z"),
        ("2024-01-15T10:30Z", "2024-01-15T10:30:00.000Z"),
        ("2024-01-15T12:30:00+02:00", "2024-01-15T10:30:00.000Z"),
        ("2024-01-15T05:30:00-0500", "2024-01-15T10:30:00.000Z"),
        ("2024-01-15T10:30:00+00:00", "2024-01-15T10:30:00.000Z"),
        ("2024-01-15 10:30:00", "2024-01-15T10:30:00.000Z"),
        ("2024-01-15", "2024-01-15T00:00:00.000Z"),
        ("  2024-01-15T10:30:00z\n", "2024-01-15T10:30:00.000Z"),
        (1705314600, "2024-01-15T10:30:00.000Z"),
        (1705314600.5, "2024-01-15T10:30:00.500Z"),
        ("2023-02-29T00:00:00Z", None),
        ("2024-01-15T24:00:00Z", None),
        ("yesterday", None),
        ("", None),
        (dt.datetime(1969, 12, 31, 23, 59), None),
        (dt.datetime(2101, 1, 1), None),
        (1705314600000, None),  # milliseconds by mistake: year ~56000
        (float("nan"), None),
        (True, None),
        ([2024], None),
    ],
)
def test_format_timestamp(value: Any, expected: str | None) -> None:
    assert format_timestamp(value) == expected


def test_parse_iso_offsets() -> None:
    assert parse_iso("2024-01-15T00:30:00+01:00") == dt.datetime(2024, 1, 14, 23, 30, tzinfo=UTC)


def test_utcnow_uses_injected_clock_and_caches_the_second() -> None:
    times = iter([1705314600.0, 1705314600.999, 1705314601.25])
    now = utc_now(lambda: next(times))
    assert now() == "2024-01-15T10:30:00.000Z"
    assert now() == "2024-01-15T10:30:00.999Z"
    assert now() == "2024-01-15T10:30:01.250Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2**53 - 1, 2**53 - 1),
        (-(2**53 - 1), -(2**53 - 1)),
        (2**53, "9007199254740992"),
        (2**53 + 1, "9007199254740993"),
        (-(2**53) - 1, "-9007199254740993"),
        (10**400 + 7, str(10**400 + 7)),
        (1000000000000000, 1000000000000000),  # 16 digits but exact in a double: a number still
    ],
)
def test_integers_beyond_a_double_go_out_as_exact_decimal_strings(value: int, expected: Any) -> None:
    # The server parses numbers as doubles: 2**53 + 1 would be stored as 9007199254740992.
    assert json.loads(encode({"n": value, "nested": [{"n": value}]})) == {
        "n": expected,
        "nested": [{"n": expected}],
    }
    from serla._encode import encode_event

    event = json.loads(encode_event("e", "u", "2026-01-01T00:00:00.000Z", {"n": value}))
    assert event["properties"] == {"n": expected}


def test_a_plain_dict_deeper_than_32_levels_is_cut_on_the_fast_path_too() -> None:
    from serla._encode import encode_event

    deep: Any = "leaf"
    for _ in range(41):
        deep = {"d": deep}
    props = json.loads(encode_event("e", "u", "2026-01-01T00:00:00.000Z", {"deep": deep}))["properties"]
    depth = 0
    node = props["deep"]
    while isinstance(node, dict):
        node = node["d"]
        depth += 1
    assert node == "<max depth>"
    assert depth < 41


def test_strings_full_of_braces_and_digits_are_sent_unchanged() -> None:
    from serla._encode import encode_event

    props = {"s": "{" * 50 + "[" * 50, "card": "4111111111111111", "n": 12}
    assert json.loads(encode_event("e", "u", "2026-01-01T00:00:00.000Z", props))["properties"] == props
