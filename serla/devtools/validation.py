"""Validation of request bodies, the way the real server's zod schemas and its database judge them.

One module per concern: :mod:`serla.devtools.server` routes and answers, :mod:`serla.devtools.store`
keeps, and this module decides what is valid and exactly what is stored:

* :func:`parse_json` reads a body like the routes' ``request.json()`` (JavaScript's ``JSON.parse``): every
  number is an IEEE double, so integers beyond +-(2^53-1) are rounded and ``1e400`` is ``Infinity``, and
  nesting has no depth limit (Python's own parser stops near 1,000 levels; a 2,000-level body is valid);
* :func:`validate_event`, :func:`validate_batch` and :func:`validate_identify` report zod-like issues, in
  the order zod reports them;
* :func:`db_rejects_event` applies the rules that make PostgreSQL fail (a 500) after validation passed;
* :func:`stored_event` and :func:`stored_properties` turn a valid event into what the real server stores:
  the timestamp cut to milliseconds (``new Date(ts).toISOString()``), ``Infinity`` stored as ``null``
  (``JSON.stringify``), a top-level ``__proto__`` property dropped (zod's ``z.record`` skips it).

Only the standard library is used.
"""

from __future__ import annotations

import calendar
import json
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any, Final

__all__ = [
    "MALFORMED",
    "MAX_BATCH_EVENTS",
    "MAX_IDENTIFY_DISTINCT_ID",
    "MISSING",
    "SESSION_ID_RE",
    "db_rejects_event",
    "dumps",
    "has_bad_chars",
    "is_valid_timestamp",
    "parse_json",
    "stored_event",
    "stored_properties",
    "stored_timestamp",
    "timestamp_epoch",
    "validate_batch",
    "validate_event",
    "validate_identify",
]

MAX_BATCH_EVENTS: Final = 100
MAX_IDENTIFY_DISTINCT_ID: Final = 256  # UTF-16 code units
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_MAX_SAFE_INTEGER: Final = 2**53 - 1

# SERLA_API.md section 3. ``[0-9]`` rather than ``\d`` (which matches any Unicode digit), and the pattern is
# used with ``fullmatch`` because ``$`` would accept a trailing newline.
TIMESTAMP_PATTERN: Final = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?Z"
)
_TIMESTAMP_RE: Final = re.compile(TIMESTAMP_PATTERN)
SESSION_ID_RE: Final = re.compile(r"[0-9a-fA-F]{32}")
# NUL and UTF-16 surrogates: the real database rejects both (an unpaired surrogate is the only way a
# surrogate can appear in a ``str`` produced by ``json.loads``; proper pairs are combined).
_DB_BAD_CHARS_RE: Final = re.compile(r"[\x00\ud800-\udfff]")
_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Bodies that may hold a number JavaScript reads differently from Python: a long run of digits (an integer
# beyond 2^53, or one so long it is Infinity) or an exponent of three digits (``1e400``). Found with
# ``bytes.translate`` and substring search, which are ~40x faster than a regular expression here.
_NUMBER_SHAPE: Final = bytes(
    ord("0")
    if chr(b).isdigit() and b < 128
    else ord("e")
    if b in b"eE"
    else ord("+")
    if b == ord("+")
    else 46
    for b in range(256)
)
_SIXTEEN_DIGITS: Final = b"0" * 16

# Event schema, in the real schema's key order so issues come out in the same order zod reports them.
EVENT_STRING_FIELDS: Final = (
    "distinctId",
    "sessionId",
    "pageUrl",
    "pagePath",
    "pageTitle",
    "referrer",
)
EVENT_NUMBER_FIELDS: Final = ("clickX", "clickY")
EVENT_FIELDS: Final = frozenset(
    {"name", "properties", "timestamp", "elementSelector", *EVENT_STRING_FIELDS, *EVENT_NUMBER_FIELDS}
)


class _Missing:
    """Marker for an absent JSON field (zod's ``undefined``)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


class _Malformed:
    """Marker for a request body that is not valid JSON."""

    def __repr__(self) -> str:
        return "MALFORMED"


MALFORMED: Final = _Malformed()


# --------------------------------------------------------------------------------------------------------
# JSON as JavaScript reads and writes it


def _js_int(text: str) -> Any:
    """An integer literal as ``JSON.parse`` reads it: a double, kept as a Python int when it is integral."""
    if len(text) < 16:
        return int(text)
    value = float(text)  # correctly rounded; ``inf`` for a literal beyond the double range
    if not math.isfinite(value):
        return value
    if abs(value) <= _MAX_SAFE_INTEGER:
        return int(text)
    # The shortest decimal that round-trips (what JSON.stringify writes and PostgreSQL keeps), e.g.
    # 2^53+1 -> 9007199254740992, 10^25+1 -> 1e+25 -> 10000000000000000000000000.
    return int(Decimal(repr(value)))


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON token {token}")


def parse_json(body: bytes) -> Any:
    """Parse a body like the real server's ``request.json()``.

    UTF-8 with replacement characters, a leading BOM stripped, ``NaN``/``Infinity`` tokens refused,
    integers read as doubles (see the module docstring), any nesting depth.

    Args:
        body: The raw request body.

    Returns:
        The value, or :data:`MALFORMED` for an empty or invalid body.
    """
    text = body.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    hook = _js_int if _SIXTEEN_DIGITS in body.translate(_NUMBER_SHAPE) else None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_int=hook)
    except RecursionError:
        pass
    except ValueError:
        return MALFORMED
    try:
        return _DeepParser(text).parse()
    except ValueError:
        return MALFORMED


_WS: Final = re.compile(r"[ \t\n\r]*")
_NUMBER_RE: Final = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")


class _DeepParser:
    """A JSON parser with an explicit stack, for bodies nested deeper than Python's recursion limit."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _skip(self) -> None:
        match = _WS.match(self.text, self.pos)
        self.pos = match.end() if match else self.pos

    def _fail(self) -> ValueError:
        return ValueError(f"invalid JSON at {self.pos}")

    def _scalar(self) -> Any:
        text, pos = self.text, self.pos
        char = text[pos : pos + 1]
        if char == '"':
            value, self.pos = scanstring(text, pos + 1, True)
            return value
        for word, value in (("true", True), ("false", False), ("null", None)):
            if text.startswith(word, pos):
                self.pos = pos + len(word)
                return value
        match = _NUMBER_RE.match(text, pos)
        if match is None:
            raise self._fail()
        self.pos = match.end()
        integer, frac, exp = match.groups()
        if frac or exp:
            return float(match.group())
        return _js_int(integer)

    def parse(self) -> Any:
        """Parse the whole text.

        Returns:
            The value.

        Raises:
            ValueError: If the text is not one valid JSON value.
        """
        text = self.text
        # Each frame: [container, pending key or None]
        stack: list[list[Any]] = []
        result: Any = MISSING
        self._skip()
        while True:
            char = text[self.pos : self.pos + 1]
            # Read a value (or open a container).
            if char == "{":
                self.pos += 1
                self._skip()
                if text[self.pos : self.pos + 1] == "}":
                    self.pos += 1
                    value: Any = {}
                else:
                    stack.append([{}, self._key()])
                    continue
            elif char == "[":
                self.pos += 1
                self._skip()
                if text[self.pos : self.pos + 1] == "]":
                    self.pos += 1
                    value = []
                else:
                    stack.append([[], None])
                    continue
            else:
                value = self._scalar()
            # Attach the value, closing every container that ends here.
            while True:
                if not stack:
                    self._skip()
                    if self.pos != len(text):
                        raise self._fail()
                    result = value
                    return result
                frame = stack[-1]
                container = frame[0]
                if type(container) is dict:
                    container[frame[1]] = value
                else:
                    container.append(value)
                self._skip()
                char = text[self.pos : self.pos + 1]
                self.pos += 1
                if char == ",":
                    self._skip()
                    if type(container) is dict:
                        frame[1] = self._key()
                    break
                if char == ("}" if type(container) is dict else "]"):
                    stack.pop()
                    value = container
                    continue
                self.pos -= 1
                raise self._fail()

    def _key(self) -> str:
        text = self.text
        if text[self.pos : self.pos + 1] != '"':
            raise self._fail()
        key, self.pos = scanstring(text, self.pos + 1, True)
        self._skip()
        if text[self.pos : self.pos + 1] != ":":
            raise self._fail()
        self.pos += 1
        self._skip()
        return str(key)


def dumps(value: Any, *, ensure_ascii: bool = False) -> str:
    """Compact JSON of a stored value, at any nesting depth (the C encoder stops near 1,000 levels).

    Args:
        value: A JSON value (dicts with string keys, lists, strings, numbers, booleans, ``None``).
        ensure_ascii: Escape non-ASCII characters (and lone surrogates) as ``\\uXXXX``.

    Returns:
        The JSON text. Non-finite floats are written as ``null`` (as ``JSON.stringify`` does).
    """
    try:
        return json.dumps(value, ensure_ascii=ensure_ascii, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        pass
    except ValueError:  # a non-finite float
        value = _finite(value)
        try:
            return json.dumps(value, ensure_ascii=ensure_ascii, separators=(",", ":"), allow_nan=False)
        except RecursionError:
            pass
    return _deep_dumps(value, ensure_ascii)


def _scalar_text(value: Any, encode: Any) -> str:
    if type(value) is float and not math.isfinite(value):
        return "null"
    return str(encode(value))


def _deep_dumps(value: Any, ensure_ascii: bool) -> str:
    encode = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=(",", ":")).encode
    out: list[str] = []
    # The stack holds values to write, or literal text (close brackets, separators) as ``(text,)``.
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is tuple:
            out.append(item[0])
        elif kind is dict:
            out.append("{")
            stack.append(("}",))
            entries = list(item.items())
            for index in range(len(entries) - 1, -1, -1):
                key, child = entries[index]
                stack.append(child)
                stack.append((("," if index else "") + encode(str(key)) + ":",))
        elif kind is list:
            out.append("[")
            stack.append(("]",))
            for index in range(len(item) - 1, -1, -1):
                stack.append(item[index])
                if index:
                    stack.append((",",))
        else:
            out.append(_scalar_text(item, encode))
    return "".join(out)


def _finite(value: Any) -> Any:
    """Replace non-finite floats with ``None`` everywhere inside ``value`` (iteratively; returns a copy)."""
    return _map_leaves(value, lambda leaf: None if type(leaf) is float and not math.isfinite(leaf) else leaf)


def _map_leaves(value: Any, fix: Any) -> Any:
    """Copy a JSON value, applying ``fix`` to every scalar, without recursion."""
    if type(value) not in (dict, list):
        return fix(value)
    root: Any = {} if type(value) is dict else []
    stack: list[tuple[Any, Any]] = [(value, root)]
    while stack:
        source, target = stack.pop()
        items = source.items() if type(source) is dict else enumerate(source)
        for key, child in items:
            kind = type(child)
            if kind is dict or kind is list:
                copy: Any = {} if kind is dict else []
                stack.append((child, copy))
                child = copy
            else:
                child = fix(child)
            if type(target) is dict:
                target[key] = child
            else:
                target.append(child)
    return root


# --------------------------------------------------------------------------------------------------------
# Validation (zod-like issues)


def _received(value: Any) -> str:
    """Name a JSON value's type the way zod's messages do."""
    if value is MISSING:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def type_issue(expected: str, value: Any, path: Sequence[str | int]) -> dict[str, Any]:
    """A zod ``invalid_type`` issue.

    Args:
        expected: The expected type's zod name (``"string"``, ``"object"``, ``"record"``...).
        value: The value received.
        path: Where it is in the body.

    Returns:
        The issue, as zod reports it.
    """
    issue: dict[str, Any] = {"expected": expected, "code": "invalid_type"}
    if type(value) is float and not math.isfinite(value):
        issue["received"] = "Infinity"  # zod's $ZodNumber names a non-finite number (either sign)
    issue["path"] = list(path)
    issue["message"] = f"Invalid input: expected {expected}, received {_received(value)}"
    return issue


def too_small(
    origin: str, minimum: int, path: Sequence[str | int], message: str | None = None
) -> dict[str, Any]:
    """A zod ``too_small`` issue (``origin`` is ``"string"`` or ``"array"``).

    Args:
        origin: What was too small.
        minimum: The inclusive minimum.
        path: Where it is in the body.
        message: The schema's own message (``z.string().min(1, "...")``), else zod's default.

    Returns:
        The issue, as zod reports it.
    """
    return _size_issue("too_small", "minimum", minimum, origin, path, message)


def too_big(
    origin: str, maximum: int, path: Sequence[str | int], message: str | None = None
) -> dict[str, Any]:
    """A zod ``too_big`` issue (``origin`` is ``"string"`` or ``"array"``).

    Args:
        origin: What was too big.
        maximum: The inclusive maximum.
        path: Where it is in the body.
        message: The schema's own message (``z.string().max(256, "...")``), else zod's default.

    Returns:
        The issue, as zod reports it.
    """
    return _size_issue("too_big", "maximum", maximum, origin, path, message)


def _size_issue(
    code: str, bound_key: str, bound: int, origin: str, path: Sequence[str | int], message: str | None
) -> dict[str, Any]:
    """The issue of :func:`too_small` (``bound_key`` ``"minimum"``) or :func:`too_big` (``"maximum"``)."""
    if message is None:
        unit = "items" if origin == "array" else "characters"
        words = "Too small" if code == "too_small" else "Too big"
        sign = ">=" if code == "too_small" else "<="
        message = f"{words}: expected {origin} to have {sign}{bound} {unit}"
    return {
        "origin": origin,
        "code": code,
        bound_key: bound,
        "inclusive": True,
        "path": list(path),
        "message": message,
    }


def format_issue(path: Sequence[str | int]) -> dict[str, Any]:
    """A zod ``invalid_format`` issue of ``z.string().datetime()``.

    Args:
        path: Where the timestamp is in the body.

    Returns:
        The issue, as zod reports it.
    """
    return {
        "origin": "string",
        "code": "invalid_format",
        "format": "datetime",
        "pattern": _ZOD_DATETIME_PATTERN,
        "path": list(path),
        "message": "Invalid ISO datetime",
    }


# The pattern zod puts in an ``invalid_format`` issue for ``z.string().datetime()``.
_ZOD_DATETIME_PATTERN: Final = (
    r"/^(?:(?:\d\d[2468][048]|\d\d[13579][26]|\d\d0[48]|[02468][048]00|[13579][26]00)-02-29|"
    r"\d{4}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12]\d|3[01])|(?:0[469]|11)-(?:0[1-9]|[12]\d|30)|"
    r"(?:02)-(?:0[1-9]|1\d|2[0-8])))T(?:(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?(?:Z))$/"
)


def is_valid_timestamp(value: str) -> bool:
    """Tell whether a string passes the server's timestamp validation (SERLA_API.md section 3).

    Args:
        value: The candidate timestamp.

    Returns:
        ``True`` for ``YYYY-MM-DDTHH:MM[:SS[.fraction]]Z`` with a real calendar date and time.
    """
    match = _TIMESTAMP_RE.fullmatch(value)
    if match is None:
        return False
    year_s, month_s, day_s, hour_s, minute_s, second_s, _ = match.groups()
    month = int(month_s)
    day = int(day_s)
    if not 1 <= month <= 12 or day < 1:
        return False
    days = _DAYS_IN_MONTH[month - 1]
    if month == 2:
        year = int(year_s)
        if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
            days = 29
    if day > days or int(hour_s) > 23 or int(minute_s) > 59:
        return False
    return second_s is None or int(second_s) <= 59


def stored_timestamp(value: str) -> str:
    """What the real server stores for a valid timestamp: ``new Date(value).toISOString()``.

    Seconds are filled in and the fraction is cut (not rounded) to milliseconds:
    ``2024-01-15T10:30Z`` -> ``2024-01-15T10:30:00.000Z``, ``.123456789Z`` -> ``.123Z``.

    Args:
        value: A timestamp for which :func:`is_valid_timestamp` is true.

    Returns:
        The stored form.
    """
    match = _TIMESTAMP_RE.fullmatch(value)
    if match is None:  # pragma: no cover - callers validate first
        return value
    year, month, day, hour, minute, second, fraction = match.groups()
    millis = ((fraction or "") + "000")[:3]
    return f"{year}-{month}-{day}T{hour}:{minute}:{second or '00'}.{millis}Z"


def timestamp_epoch(stored: str) -> float:
    """Seconds since the epoch of a timestamp in :func:`stored_timestamp`'s form.

    Args:
        stored: ``YYYY-MM-DDTHH:MM:SS.mmmZ``.

    Returns:
        The POSIX time.
    """
    seconds = calendar.timegm(
        (
            int(stored[0:4]),
            int(stored[5:7]),
            int(stored[8:10]),
            int(stored[11:13]),
            int(stored[14:16]),
            int(stored[17:19]),
            0,
            0,
            0,
        )
    )
    return seconds + int(stored[20:23]) / 1000


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(value))


def validate_event(obj: Any, prefix: tuple[str | int, ...], issues: list[dict[str, Any]]) -> dict[str, Any]:
    """Validate one event object; append issues and return its known fields.

    Args:
        obj: The parsed event.
        prefix: Its path in the body (``()`` for ``POST /events``, ``("events", i)`` in a batch).
        issues: Where issues are appended.

    Returns:
        The event's known fields as sent (meaningful only when no issue was added).
    """
    if type(obj) is not dict:
        issues.append(type_issue("object", obj, prefix))
        return {}
    clean: dict[str, Any] = {}
    name = obj.get("name", MISSING)
    if type(name) is not str:
        issues.append(type_issue("string", name, (*prefix, "name")))
    elif not name:
        issues.append(too_small("string", 1, (*prefix, "name"), "Event name is required"))
    clean["name"] = name
    if len(obj) == 1:  # fast path: only ``name``
        return clean
    if "properties" in obj:
        props = obj["properties"]
        # ``null`` passes validation; it is the database that rejects it (see db_rejects_event).
        if props is not None and type(props) is not dict:
            issues.append(type_issue("record", props, (*prefix, "properties")))
        clean["properties"] = props
    if "timestamp" in obj:
        stamp = obj["timestamp"]
        if stamp is not None:
            if type(stamp) is not str:
                issues.append(type_issue("string", stamp, (*prefix, "timestamp")))
            elif not is_valid_timestamp(stamp):
                issues.append(format_issue((*prefix, "timestamp")))
        clean["timestamp"] = stamp
    for key in EVENT_STRING_FIELDS:
        if key in obj:
            value = obj[key]
            if value is not None and type(value) is not str:
                issues.append(type_issue("string", value, (*prefix, key)))
            clean[key] = value
    for key in EVENT_NUMBER_FIELDS:
        if key in obj:
            value = obj[key]
            if value is not None and not _is_number(value):
                issues.append(type_issue("number", value, (*prefix, key)))
            clean[key] = value
    if "elementSelector" in obj:
        value = obj["elementSelector"]
        if value is not None and type(value) is not str:
            issues.append(type_issue("string", value, (*prefix, "elementSelector")))
        clean["elementSelector"] = value
    return clean


def validate_batch(body: Any, issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate a ``POST /events/batch`` body; append issues and return the events' known fields.

    Args:
        body: The parsed body.
        issues: Where issues are appended.

    Returns:
        One dict per event (meaningful only when no issue was added).
    """
    if type(body) is not dict:
        issues.append(type_issue("object", body, ()))
        return []
    events = body.get("events", MISSING)
    if type(events) is not list:
        issues.append(type_issue("array", events, ("events",)))
        return []
    clean = [validate_event(event, ("events", index), issues) for index, event in enumerate(events)]
    if not events:
        issues.append(too_small("array", 1, ("events",)))
    elif len(events) > MAX_BATCH_EVENTS:
        issues.append(too_big("array", MAX_BATCH_EVENTS, ("events",)))
    return clean


def utf16_len(value: str) -> int:
    """Length in UTF-16 code units (JavaScript's ``.length``).

    Args:
        value: The string.

    Returns:
        Its length as JavaScript counts it.
    """
    return len(value.encode("utf-16-le", "surrogatepass")) // 2


def validate_identify(body: Any, issues: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Validate a ``POST /identify`` body; append issues.

    Args:
        body: The parsed body.
        issues: Where issues are appended.

    Returns:
        ``(distinct_id, properties)`` as sent (meaningful only when no issue was added).
    """
    if type(body) is not dict:
        issues.append(type_issue("object", body, ()))
        return "", {}
    distinct_id = body.get("distinctId", MISSING)
    if type(distinct_id) is not str:
        issues.append(type_issue("string", distinct_id, ("distinctId",)))
        distinct_id = ""
    elif not distinct_id:
        issues.append(too_small("string", 1, ("distinctId",), "distinctId is required"))
    elif (
        len(distinct_id) > MAX_IDENTIFY_DISTINCT_ID // 2 and utf16_len(distinct_id) > MAX_IDENTIFY_DISTINCT_ID
    ):
        issues.append(
            too_big(
                "string",
                MAX_IDENTIFY_DISTINCT_ID,
                ("distinctId",),
                f"distinctId must be {MAX_IDENTIFY_DISTINCT_ID} characters or fewer",
            )
        )
    props = body.get("properties", MISSING)
    if props is MISSING:
        props = {}
    elif type(props) is not dict:
        issues.append(type_issue("record", props, ("properties",)))
        props = {}
    return distinct_id, props


# --------------------------------------------------------------------------------------------------------
# The database's extra rules, and what is stored


def has_bad_chars(value: Any) -> bool:
    """Tell whether NUL or an unpaired surrogate occurs in any string or key inside ``value``.

    Args:
        value: A JSON value.

    Returns:
        ``True`` if PostgreSQL would refuse the value.
    """
    search = _DB_BAD_CHARS_RE.search
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if search(item):
                return True
        elif kind is dict:
            for key, child in item.items():
                if search(key):
                    return True
                stack.append(child)
        elif kind is list:
            stack.extend(item)
    return False


MAX_STORED_DEPTH: Final = 4100
"""How deep ``properties`` may nest before the real server's ``JSON.stringify`` overflows its stack (500).

Measured on the real server (Node 20): 4,100 levels of arrays store, 4,101 fail; objects fail from 4,104.
The local servers refuse from 4,101 for both (never accepting what the real server refuses)."""


def may_be_too_deep(body: bytes) -> bool:
    """Tell whether a body has enough brackets to nest deeper than :data:`MAX_STORED_DEPTH`.

    Args:
        body: The raw body.

    Returns:
        ``False`` when :func:`too_deep` can be skipped.
    """
    return body.count(b"[") + body.count(b"{") > MAX_STORED_DEPTH


def too_deep(value: Any) -> bool:
    """Tell whether a value nests deeper than :data:`MAX_STORED_DEPTH` (counting ``value`` itself).

    Args:
        value: A JSON value.

    Returns:
        ``True`` if the real server fails to store it.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_STORED_DEPTH:
            return True
        if type(item) is dict:
            stack.extend((child, depth + 1) for child in item.values() if type(child) in (dict, list))
        elif type(item) is list:
            stack.extend((child, depth + 1) for child in item if type(child) in (dict, list))
    return False


def db_rejects_event(event: Mapping[str, Any], check_chars: bool) -> bool:
    """Apply the rules that make the real database fail (a 500) for an event that passed validation.

    ``properties: null`` (a NOT NULL column), ``clickX``/``clickY`` that are not 32-bit integers, the year
    0000 (valid for JavaScript, not for PostgreSQL), and NUL or lone surrogates anywhere.

    Args:
        event: The event's known fields as sent.
        check_chars: Look for NUL and lone surrogates (only possible when the body has ``\\u`` escapes).

    Returns:
        ``True`` if the real server answers 500.
    """
    if "properties" in event and event["properties"] is None:
        return True
    for key in EVENT_NUMBER_FIELDS:
        value = event.get(key)
        if value is not None:
            if type(value) is float:
                if not value.is_integer():
                    return True
                value = int(value)
            if not _INT32_MIN <= value <= _INT32_MAX:
                return True
    stamp = event.get("timestamp")
    if type(stamp) is str and stamp.startswith("0000"):
        return True
    if check_chars:
        for key, value in event.items():
            # An invalid sessionId is replaced by a random one before the insert, so it can't break it.
            if key != "sessionId" and has_bad_chars(value):
                return True
    return False


def stored_properties(props: Mapping[str, Any], *, deep: bool) -> dict[str, Any]:
    """What the real server stores for a ``properties`` record.

    A top-level ``__proto__`` key is dropped (zod's ``z.record`` skips it); with ``deep``, non-finite
    numbers anywhere inside become ``null`` (``JSON.stringify(Infinity)``).

    Args:
        props: The record as parsed by :func:`parse_json`.
        deep: Whether the body may hold a non-finite number (skips a walk when it can't).

    Returns:
        A dict (``props`` itself when nothing changes).
    """
    result: Any = props
    if "__proto__" in result:
        result = {k: v for k, v in result.items() if k != "__proto__"}
    if deep:
        result = _finite(result)
    return dict(result) if result is props and type(result) is not dict else result


def may_hold_huge_numbers(body: bytes) -> bool:
    """Tell whether a body may hold a number beyond the double range (``1e400``, a 400-digit integer).

    Args:
        body: The raw body.

    Returns:
        ``False`` when no value can be non-finite, so :func:`stored_properties` can skip its walk.
    """
    shape = body.translate(_NUMBER_SHAPE)
    return b"0e000" in shape or b"0e+000" in shape or _SIXTEEN_DIGITS in shape


def stored_event(clean: Mapping[str, Any], session_id: str, *, deep: bool) -> dict[str, Any]:
    """The event's fields as the real server stores them.

    Absent fields stay absent (the server fills ``properties`` with ``{}`` and ``timestamp`` with the
    receive time; :class:`~serla.devtools.store.StoredEvent` does not, so tests see what was sent). Present
    ones are changed as the real server changes them: the timestamp cut to milliseconds, ``properties``
    through :func:`stored_properties`, a ``sessionId`` replaced by the one the event was filed under.

    Args:
        clean: The event's known fields as validated.
        session_id: The session the event is filed under.
        deep: As for :func:`stored_properties`.

    Returns:
        A new dict.
    """
    data = dict(clean)
    stamp = data.get("timestamp")
    # Fast path: the SDK's own form (``.mmmZ``) is stored unchanged.
    if type(stamp) is str and not (len(stamp) == 24 and stamp[19] == "." and stamp[23] == "Z"):
        data["timestamp"] = stored_timestamp(stamp)
    props = data.get("properties")
    if type(props) is dict:
        data["properties"] = stored_properties(props, deep=deep)
    if "sessionId" in data and data["sessionId"] is not None:
        data["sessionId"] = session_id
    return data
