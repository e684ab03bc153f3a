"""Property-based tests of the encoder: any Python value in ``properties`` becomes JSON the server accepts.

"Accepts" is decided by the server module itself: each encoded event is wrapped in a batch and handed to
:meth:`SerlaServer.handle` (the same request handling the HTTP loop uses: strict JSON parsing that refuses
``NaN``, the zod-like validation, the database's refusal of NUL and lone surrogates), which must answer
201. The runs are derandomized (a fixed seed per test) and small, so they are fast and reproducible.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import fractions
import json
import math
import pathlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reliability_support import Clients

from serla import Serla
from serla._encode import MAX_DEPTH, encode, encode_event, format_timestamp, sanitize
from serla.devtools.server import BATCH_PATH, IDENTIFY_PATH, RecordedRequest, SerlaServer, is_valid_timestamp
from serla.devtools.validation import parse_json, stored_properties

pytestmark = pytest.mark.timeout(120)

PROFILE = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
TS = "2024-01-15T10:30:00.123Z"


# -- odd values ---------------------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    ODD = float("nan")
    NESTED = ("a", 1)


class Level(enum.IntEnum):
    LOW = 1


@dataclasses.dataclass
class Point:
    x: Any
    y: Any = None


class BadStr:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class NotAStr:
    def __str__(self) -> Any:
        return 42


class BadMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("cannot iterate")

    def __len__(self) -> int:
        raise RuntimeError("no len")


class BadDump:
    def model_dump(self, **kwargs: Any) -> Any:
        raise ValueError("pydantic says no")


class ToList:
    def tolist(self) -> Any:
        return [1.5, float("nan"), "\x00"]


class NanFloat(float):
    pass


class WeirdStr(str):
    def __str__(self) -> str:
        return "weird"


class BadKey:
    def __hash__(self) -> int:
        return 1

    def __str__(self) -> str:
        raise RuntimeError("key without a name")


def cyclic_list() -> list[Any]:
    a: list[Any] = [1]
    a.append(a)
    return a


def cyclic_dict() -> dict[str, Any]:
    d: dict[str, Any] = {"k": 1}
    d["self"] = d
    d["list"] = [d, {"again": d}]
    return d


def cyclic_dataclass() -> Point:
    p = Point(1)
    p.y = p
    return p


def deep(n: int) -> Any:
    value: Any = "bottom"
    for i in range(n):
        value = [value] if i % 2 else {"d": value}
    return value


@dataclasses.dataclass(frozen=True)
class Special:
    """A hostile value, made fresh inside the test (hypothesis never has to ``repr`` the value itself)."""

    label: str
    make: Callable[[], Any]

    def __repr__(self) -> str:
        return f"<{self.label}>"


def materialize(value: Any) -> Any:
    """Replace every :class:`Special` in a generated structure with the value it makes."""
    if isinstance(value, Special):
        return value.make()
    if isinstance(value, list):
        return [materialize(v) for v in value]
    if isinstance(value, tuple):
        return tuple(materialize(v) for v in value)
    if isinstance(value, dict):
        return {k: materialize(v) for k, v in value.items()}
    if isinstance(value, Point):
        return Point(materialize(value.x), materialize(value.y))
    return value


SPECIALS = [
    Special("str() raises", BadStr),
    Special("str() returns an int", NotAStr),
    Special("Mapping that cannot be read", BadMapping),
    Special("model_dump() raises", BadDump),
    Special("tolist()", ToList),
    Special("float subclass NaN", lambda: NanFloat("nan")),
    Special("str subclass with NUL", lambda: WeirdStr("x\x00y")),
    Special("Enum", lambda: Color.RED),
    Special("Enum of NaN", lambda: Color.ODD),
    Special("Enum of a tuple", lambda: Color.NESTED),
    Special("IntEnum", lambda: Level.LOW),
    Special("object()", object),
    Special("exception with NUL", lambda: ValueError("bad \x00 thing")),
    Special("path", lambda: pathlib.PurePosixPath("/tmp/x")),
    Special("range", lambda: range(3)),
    Special("memoryview", lambda: memoryview(b"\xff\xfeabc")),
    Special("unorderable set", lambda: {1, "a", None, 2.5}),
    Special("frozenset of bytes", lambda: frozenset({b"x", b"\xff"})),
    Special("Decimal NaN", lambda: decimal.Decimal("NaN")),
    Special("Decimal sNaN", lambda: decimal.Decimal("sNaN")),
    Special("Decimal -Infinity", lambda: decimal.Decimal("-Infinity")),
    Special("Decimal 1e999", lambda: decimal.Decimal("1e999")),
    Special("Fraction", lambda: fractions.Fraction(1, 3)),
    Special("complex NaN", lambda: complex(1, float("nan"))),
    Special("int past the int->str digit limit", lambda: 10**5000),
    Special("400-digit int", lambda: -(10**400)),
    Special(
        "datetime that overflows in UTC",
        lambda: dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=5))),
    ),
    Special(
        "datetime at the end of time",
        lambda: dt.datetime(9999, 12, 31, 23, 59, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    ),
    Special("aware time", lambda: dt.time(10, 30, tzinfo=dt.timezone.utc)),
    Special("negative timedelta", lambda: dt.timedelta(days=-1, microseconds=1)),
    Special("UUID", lambda: uuid.UUID(int=0)),
    Special(
        "mixed keys", lambda: {1: "int key", "1": "str key", None: 0, 2.5: 1, float("nan"): 2, (1, 2): 3}
    ),
    Special("bool keys", lambda: {True: 4, False: 5}),
    Special("key whose str() raises", lambda: {BadKey(): 1}),
    Special("bad keys", lambda: {"\ud800": "lone surrogate key", "\x00": "nul key"}),
    Special("dataclass of odd values", lambda: Point(x=float("inf"), y=[b"\x00"])),
    Special("cyclic list", cyclic_list),
    Special("cyclic dict", cyclic_dict),
    Special("cyclic dataclass", cyclic_dataclass),
    Special("5,000 levels deep", lambda: deep(5_000)),
    Special("just past MAX_DEPTH", lambda: deep(MAX_DEPTH + 3)),
]
ALL_SPECIALS = Special("all of the above", lambda: [s.make() for s in SPECIALS])

unicode_text = st.text(st.characters(exclude_categories=()), max_size=12)  # surrogates and NUL included
nasty_text = st.sampled_from(
    ["\x00", "\ud800", "a\udfffb", "\ud83d\ude00", "\ud83d", "\x00\x00", "", "\\u0000"]
)
offsets = st.timedeltas(
    min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59)
)
timezones = st.none() | st.builds(dt.timezone, offsets)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.builds(NanFloat, st.floats()),
    unicode_text,
    nasty_text,
    st.binary(max_size=12),
    st.builds(bytearray, st.binary(max_size=6)),
    st.datetimes(timezones=timezones),
    st.dates(),
    st.times(timezones=timezones),
    st.timedeltas(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.uuids(),
    st.fractions(),
    st.complex_numbers(allow_nan=True),
    st.sampled_from(SPECIALS),
)
keys = st.one_of(
    unicode_text,
    nasty_text,
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.tuples(st.integers(), unicode_text),
    st.uuids(),
    st.builds(BadKey),
)
hashables = st.one_of(
    st.integers(), unicode_text, st.none(), st.binary(max_size=4), st.floats(allow_nan=True)
)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(keys, children, max_size=4),
        st.frozensets(hashables, max_size=4),
        st.sets(hashables, max_size=4),
        st.builds(Point, children, children),
    )


values = st.recursive(scalars, _extend, max_leaves=12)
property_dicts = st.dictionaries(keys, values, max_size=5)


# -- what the server would say -------------------------------------------------------------------------------


def _no_constants(token: str) -> Any:
    raise ValueError(f"non-standard JSON token {token}")


def strict_loads(data: bytes) -> Any:
    """``json.loads`` as strict as the server: UTF-8 only, no NaN/Infinity tokens."""
    return json.loads(data.decode("utf-8"), parse_constant=_no_constants)


def server_answer(path: str, body: bytes) -> int:
    """The status the server's own request handling gives this body (no socket involved)."""
    srv = SerlaServer(max_recorded_requests=1)
    request = RecordedRequest(
        method="POST", path=path, headers={"authorization": "Bearer sk_live_x"}, body=body
    )
    response = srv.handle(request)
    assert response is not None
    return response.status


def json_clean(value: Any) -> None:
    """Assert that a decoded JSON value holds no NUL, no lone surrogate and no non-finite number."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            assert "\x00" not in item
            item.encode("utf-8")  # raises on a lone surrogate
        elif isinstance(item, float):
            assert math.isfinite(item)
        elif isinstance(item, dict):
            for k, v in item.items():
                stack.extend((k, v))
        elif isinstance(item, list):
            stack.extend(item)
        else:
            assert item is None or isinstance(item, (bool, int))


# -- the properties ------------------------------------------------------------------------------------------


@PROFILE
@given(values)
@example(ALL_SPECIALS)
def test_any_property_value_encodes_to_json_the_server_accepts(value: Any) -> None:
    value = materialize(value)
    data = encode({"v": value})  # never raises
    assert isinstance(data, bytes)
    decoded = strict_loads(data)
    json_clean(decoded)
    assert set(decoded) == {"v"}
    event = encode_event("prop_test", "user", TS, {"v": value})
    status = server_answer(BATCH_PATH, b'{"events":[' + event + b"]}")
    assert status == 201
    # The hand-written envelope of the hot path agrees with the generic encoder on the same event.
    whole = {"name": "prop_test", "distinctId": "user", "timestamp": TS, "properties": {"v": value}}
    assert strict_loads(event) == strict_loads(encode(whole))


@PROFILE
@given(values)
@example(ALL_SPECIALS)
def test_the_encoded_form_is_a_fixed_point(value: Any) -> None:
    value = materialize(value)
    once = strict_loads(encode(value))
    assert strict_loads(encode(once)) == once
    assert sanitize(once) == once


@PROFILE
@given(property_dicts)
def test_identify_properties_are_accepted_too(props: dict[Any, Any]) -> None:
    props = materialize(props)
    body = encode({"distinctId": "user", "properties": props})
    assert server_answer(IDENTIFY_PATH, body) == 200


@PROFILE
@given(
    st.one_of(
        st.datetimes(timezones=timezones),
        st.dates(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**70), max_value=2**70),
        unicode_text,
        st.datetimes(min_value=dt.datetime(1969, 1, 1), max_value=dt.datetime(2102, 1, 1)).map(
            lambda d: d.isoformat()
        ),
        st.datetimes(timezones=st.builds(dt.timezone, offsets)).map(lambda d: d.isoformat()),
    )
)
@example(float("nan"))
@example("2024-02-30T00:00:00Z")
@example("2024-01-15 10:30:00+05:30")
def test_any_timestamp_is_refused_locally_or_valid_for_the_server(value: Any) -> None:
    out = format_timestamp(value)
    assert out is None or is_valid_timestamp(out)


# -- end to end: a real client and the real server over HTTP ------------------------------------------------


@pytest.fixture(scope="module")
def e2e() -> Iterator[tuple[SerlaServer, Serla]]:
    clients = Clients()
    with SerlaServer() as srv:
        yield srv, clients(srv.url, flush_interval_seconds=60, batch_size=100)
        for c in clients.made:
            c.shutdown(1)


@settings(PROFILE, max_examples=25)
@given(st.lists(property_dicts, min_size=1, max_size=8))
def test_any_properties_tracked_by_a_real_client_arrive(
    e2e: tuple[SerlaServer, Serla], batch: list[Any]
) -> None:
    check_round_trip(e2e, materialize(batch))


def test_every_hostile_value_tracked_by_a_real_client_arrives(e2e: tuple[SerlaServer, Serla]) -> None:
    check_round_trip(e2e, [{s.label: s.make()} for s in SPECIALS] + [{"all": ALL_SPECIALS.make()}])


def as_stored(body: bytes) -> Any:
    """What the real server stores of an encoded event: read as JavaScript reads JSON (integers beyond
    +-(2^53-1) rounded, ``1e400`` as null), a top-level ``__proto__`` property dropped."""
    event = strict_loads(body)
    parsed = parse_json(body)
    assert isinstance(parsed, dict)
    event["properties"] = stored_properties(parsed["properties"], deep=True)
    return event


def check_round_trip(e2e: tuple[SerlaServer, Serla], batch: list[Any]) -> None:
    """Track each dict of ``batch`` through the real client; the server must store exactly their encoding."""
    srv, client = e2e
    srv.clear()
    for i, props in enumerate(batch):
        assert client.track(f"e2e_{i}", "user", props) is True
    assert client.flush(10) is True
    stored = srv.events
    assert [e["name"] for e in stored] == [f"e2e_{i}" for i in range(len(batch))]
    for i, (event, props) in enumerate(zip(stored, batch)):
        sent = {
            "name": f"e2e_{i}",
            "distinctId": "user",
            "timestamp": event["timestamp"],
            "properties": props,
        }
        assert event == as_stored(encode(sent))
    assert client.stats()["dropped"] == {}
