"""Every row of the README's coercion table, sent by a real client and read back from PostgreSQL.

One client tracks one event per row (``properties={"row": <row>, "value": <value>}``), then shuts down;
each test reads what the real server stored in ``events.properties -> 'value'`` (jsonb, after the
server's ``JSON.parse`` and drizzle's ``JSON.stringify``: what a user of Serla would see). Timestamps
are read from ``events.timestamp`` (``timestamp without time zone``, UTC).

Choices named here: the README says non-string keys become ``str(key)``; for ``None``, ``bool``,
``int`` and ``float`` keys the encoder writes their JSON spelling (``"null"``, ``"true"``, ``"1"``,
``"1.5"``), as ``json.dumps`` does, and that is what these tests hold it to. An int too long for Python
to print (over 4,300 digits) is ``null`` as the table says; every other int beyond +-(2^53-1) is stored
as its exact decimal string (issue 11, item 7).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import pathlib
import sys
import types
import uuid
from collections import UserList
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from serla import Serla

from .conftest import PROJECTS, RealServer

UTC = dt.timezone.utc
PLUS_2 = dt.timezone(dt.timedelta(hours=2))


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Pair(enum.Enum):
    ONE_TWO = (1, 2)


@dataclasses.dataclass
class Inner:
    when: dt.date
    tags: frozenset[str]


@dataclasses.dataclass
class Order:
    id: int
    total: decimal.Decimal
    inner: Inner


class Account(pydantic.BaseModel):
    id: int
    name: str
    joined: dt.datetime
    scores: list[int]


class ArrayLike:
    """What the encoder takes from numpy: any object with ``tolist()`` (numpy itself is not a dependency)."""

    def tolist(self) -> list[list[int]]:
        return [[1, 2], [3, 4]]


class Printable:
    def __str__(self) -> str:
        return "printable-object"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(levels - 1):
        value = {"d": value}
    return value


def _cycle_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"a": 1}
    d["self"] = d
    return d


def _cycle_list() -> list[Any]:
    items: list[Any] = [1]
    items.append(items)
    return items


_DIGIT_LIMIT = getattr(sys, "get_int_max_str_digits", lambda: 4300)() or 4300
HUGE = 10 ** (_DIGIT_LIMIT + 10)  # more digits than Python will print

# row -> (value sent, value stored). Values compare as Python sees the stored jsonb (json.loads).
ROWS: dict[str, tuple[Any, Any]] = {
    "datetime_aware": (
        dt.datetime(2024, 1, 15, 12, 30, 0, 123456, tzinfo=PLUS_2),
        "2024-01-15T10:30:00.123Z",
    ),
    "datetime_naive_is_utc": (dt.datetime(2024, 1, 15, 10, 30, 0, 999999), "2024-01-15T10:30:00.999Z"),
    "date": (dt.date(2024, 1, 15), "2024-01-15"),
    "time": (dt.time(10, 30, 5), "10:30:05"),
    "timedelta": (dt.timedelta(minutes=1, seconds=30, milliseconds=500), 90.5),
    "decimal": (decimal.Decimal("12.50"), 12.5),
    "decimal_nan": (decimal.Decimal("NaN"), None),
    "decimal_infinity": (decimal.Decimal("-Infinity"), None),
    "float_nan": (float("nan"), None),
    "float_inf": (float("inf"), None),
    "float_minus_inf": ([1.5, float("-inf")], [1.5, None]),
    "int_max_safe": (2**53 - 1, 2**53 - 1),
    "int_min_safe": (-(2**53 - 1), -(2**53 - 1)),
    "int_2_53_plus_1": (2**53 + 1, "9007199254740993"),
    "int_minus_2_53_plus_1": (-(2**53 + 1), "-9007199254740993"),
    "int_2_64_nested": ({"ids": [2**64, 7]}, {"ids": ["18446744073709551616", 7]}),
    "int_401_digits": (10**400 + 1, str(10**400 + 1)),
    "int_unprintable": (HUGE, None),
    "uuid": (uuid.UUID("12345678-1234-5678-1234-567812345678"), "12345678-1234-5678-1234-567812345678"),
    "path": (pathlib.PurePosixPath("/var/log/app.log"), "/var/log/app.log"),
    "enum": (Color.RED, "red"),
    "int_enum": (Level.HIGH, 3),
    "enum_tuple_value": (Pair.ONE_TWO, [1, 2]),
    "set_sorted": ({3, 1, 2}, [1, 2, 3]),
    "frozenset_sorted": (frozenset({"b", "a"}), ["a", "b"]),
    "set_unorderable": ({1, "a"}, None),  # any order: checked as a multiset below
    "tuple": ((1, "two", None), [1, "two", None]),
    "bytes_utf8": (b"caf\xc3\xa9", "café"),
    "bytes_invalid": (b"ok\xff", "ok\ufffd"),
    "bytearray": (bytearray(b"abc"), "abc"),
    "dataclass": (
        Order(7, decimal.Decimal("9.99"), Inner(dt.date(2024, 2, 29), frozenset({"y", "x"}))),
        {"id": 7, "total": 9.99, "inner": {"when": "2024-02-29", "tags": ["x", "y"]}},
    ),
    "pydantic_model": (
        Account(id=1, name="Ada", joined=dt.datetime(2024, 1, 15, 10, 30, tzinfo=UTC), scores=[1, 2]),
        {"id": 1, "name": "Ada", "joined": "2024-01-15T10:30:00Z", "scores": [1, 2]},
    ),
    "array_like_tolist": (ArrayLike(), [[1, 2], [3, 4]]),
    "mapping": (types.MappingProxyType({"a": 1}), {"a": 1}),
    "sequence": (UserList([1, 2]), [1, 2]),
    "range": (range(3), [0, 1, 2]),
    "non_str_keys": (
        {2: "int", 1.5: "float", None: "none", True: "bool", (1, 2): "tuple", Color.RED: "enum"},
        {"2": "int", "1.5": "float", "null": "none", "true": "bool", "(1, 2)": "tuple", "Color.RED": "enum"},
    ),
    "nul_char": ("a\x00b\x00", "ab"),
    "nul_in_key": ({"k\x00ey": 1}, {"key": 1}),
    "lone_surrogate": ("x\ud800y", "x\ufffdy"),
    "surrogate_pair_joined": ("\ud83d\ude00", "\U0001f600"),
    "lone_surrogate_in_key": ({"k\udfff": 1}, {"k\ufffd": 1}),
    "cycle_dict": (_cycle_dict(), {"a": 1, "self": "<cycle>"}),
    "cycle_list": (_cycle_list(), [1, "<cycle>"]),
    "depth_41": (_nested(41), None),  # shape checked below
    "depth_10_kept": (_nested(10), _nested(10)),
    "other_object": (Printable(), "printable-object"),
    "unprintable_object": (Unprintable(), "<unprintable Unprintable>"),
    "unicode_kept": ("naïve ☃ 日本 \U0001f600", "naïve ☃ 日本 \U0001f600"),
}

# timestamp= argument -> the stored events.timestamp (UTC, milliseconds)
TIMESTAMPS: dict[str, tuple[Any, str]] = {
    "aware_datetime": (
        dt.datetime(2024, 1, 15, 12, 30, 0, 123456, tzinfo=PLUS_2),
        "2024-01-15T10:30:00.123Z",
    ),
    "naive_datetime_is_utc": (dt.datetime(2024, 1, 15, 10, 30, 0, 123456), "2024-01-15T10:30:00.123Z"),
    "date_is_midnight_utc": (dt.date(2024, 1, 15), "2024-01-15T00:00:00.000Z"),
    "iso_z": ("2024-01-15T10:30:00Z", "2024-01-15T10:30:00.000Z"),
    "iso_offset": ("2024-01-15T12:30:00.5+02:00", "2024-01-15T10:30:00.500Z"),
    "iso_negative_offset": ("2024-01-15T05:30:00-0500", "2024-01-15T10:30:00.000Z"),
    "iso_naive_is_utc": ("2024-01-15T10:30:00.123456", "2024-01-15T10:30:00.123Z"),
    "iso_date_only": ("2024-01-15", "2024-01-15T00:00:00.000Z"),
    "epoch_int": (1705314600, "2024-01-15T10:30:00.000Z"),
    "epoch_float": (1705314600.25, "2024-01-15T10:30:00.250Z"),
    "epoch_zero": (0, "1970-01-01T00:00:00.000Z"),
}

# timestamps the SDK refuses (track() returns False; nothing reaches the server)
BAD_TIMESTAMPS: dict[str, Any] = {
    "before_1970": dt.datetime(1969, 12, 31, 23, 59, 59),
    "after_2100": "2101-01-01T00:00:00Z",
    "unreadable": "yesterday",
    "nan_epoch": float("nan"),
}


@dataclasses.dataclass
class Sent:
    token: str
    accepted: dict[str, bool]
    stats: dict[str, Any]
    values: dict[str, Any]
    stamps: dict[str, str]


@pytest.fixture(scope="module")
def sent(realserver: RealServer) -> Iterator[Sent]:
    token = "coerce" + uuid.uuid4().hex[:12]
    client = Serla(realserver.keys["max"], host=realserver.host, flush_on_exit=False)
    accepted: dict[str, bool] = {}
    for row, (value, _) in ROWS.items():
        accepted["value:" + row] = client.track("coercion_row", token, {"row": row, "value": value})
    for row, (stamp, _) in TIMESTAMPS.items():
        accepted["ts:" + row] = client.track("coercion_timestamp", token, {"row": row}, timestamp=stamp)
    for row, stamp in BAD_TIMESTAMPS.items():
        accepted["bad:" + row] = client.track("coercion_bad_timestamp", token, {"row": row}, timestamp=stamp)
    assert client.shutdown(timeout=90), client.stats()
    stats = client.stats()
    rows = realserver.sql(
        "select name, properties->>'row' as row, properties->'value' as value,"
        ' to_char(timestamp, \'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\') as ts'
        f" from events where project_id = '{PROJECTS['max']}' and distinct_id = '{token}'"
    )
    values = {r["row"]: r["value"] for r in rows if r["name"] == "coercion_row"}
    stamps = {r["row"]: r["ts"] for r in rows if r["name"] == "coercion_timestamp"}
    assert not [r for r in rows if r["name"] == "coercion_bad_timestamp"]
    assert len(rows) == len(ROWS) + len(TIMESTAMPS), "an event was stored twice or lost"
    yield Sent(token, accepted, stats, values, stamps)


def test_every_row_was_accepted_and_delivered(sent: Sent) -> None:
    assert all(ok for key, ok in sent.accepted.items() if not key.startswith("bad:")), sent.accepted
    assert sent.stats["sent"] == len(ROWS) + len(TIMESTAMPS)
    dropped = {reason: n for reason, n in sent.stats["dropped"].items() if n}
    assert dropped == {"invalid_call": len(BAD_TIMESTAMPS)}


@pytest.mark.parametrize("row", [r for r in ROWS if r not in ("set_unorderable", "depth_41")])
def test_value_is_stored_as_documented(sent: Sent, row: str) -> None:
    assert row in sent.values, f"no stored event for {row}"
    assert sent.values[row] == ROWS[row][1]
    assert type(sent.values[row]) is type(ROWS[row][1]) or ROWS[row][1] is None


def test_big_ints_are_exact_strings_not_rounded_numbers(sent: Sent) -> None:
    # The server's JSON.parse would turn 2^53+1 into 9007199254740992: only a string keeps it exact.
    assert sent.values["int_2_53_plus_1"] == "9007199254740993"
    assert int(sent.values["int_401_digits"]) == 10**400 + 1


def test_unorderable_set_keeps_every_item(sent: Sent) -> None:
    stored = sent.values["set_unorderable"]
    assert isinstance(stored, list)
    assert sorted(stored, key=repr) == sorted([1, "a"], key=repr)


def test_nesting_deeper_than_32_is_cut_with_a_marker(sent: Sent) -> None:
    node: Any = sent.values["depth_41"]
    levels = 0
    while isinstance(node, dict):
        assert list(node) in (["d"], ["leaf"]), node
        node = node.get("d", node.get("leaf"))
        levels += 1
    # Cut at the documented depth (counted from the properties object or from the value: within 2
    # levels of 32), and the cut is marked, never silently dropped or sent whole (41 levels).
    assert node == "<max depth>"
    assert 30 <= levels <= 32, levels


@pytest.mark.parametrize("row", list(TIMESTAMPS))
def test_timestamp_is_stored_in_utc(sent: Sent, row: str) -> None:
    assert sent.stamps.get(row) == TIMESTAMPS[row][1]


@pytest.mark.parametrize("row", list(BAD_TIMESTAMPS))
def test_unusable_timestamp_is_refused_by_track(sent: Sent, row: str) -> None:
    assert sent.accepted["bad:" + row] is False
