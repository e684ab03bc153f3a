"""A local Serla ingest server that follows the real server's wire contract.

The server speaks the contract in ``SERLA_API.md`` (sections 1, 2, 4, 6.1, 6.2 and 6.3) over real HTTP/1.1
with keep-alive: the same routes, status codes, JSON bodies, validation ``details`` and the payloads that
pass validation but fail in the real database with a 500. It has three users:

* the SDK's test-suite, which runs it on ``127.0.0.1`` instead of mocking HTTP;
* the benchmarks, which push large volumes of events through it;
* ``serla dev``, which adds a persistent :class:`Store` and a web page on top
  (see :meth:`SerlaServer.add_route`).

On top of the contract it records every request (:attr:`SerlaServer.requests`) and every stored event
(:attr:`SerlaServer.events`, :attr:`SerlaServer.stored`), and it can inject faults (:class:`Fault`) such as
error statuses, delays, dropped connections and "stored, then the response was lost".

Only the standard library is used. Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import selectors
import socket
import socketserver
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol, Union, cast
from urllib.parse import parse_qs, urlsplit

from serla._version import __version__
from serla.devtools.flags import FlagRoute

__all__ = [
    "BATCH_PATH",
    "EVENTS_PATH",
    "IDENTIFY_PATH",
    "Fault",
    "MemoryStore",
    "RecordedRequest",
    "Response",
    "SerlaServer",
    "Store",
    "StoredEvent",
    "is_valid_timestamp",
    "serve",
]

BATCH_PATH: Final = "/api/v1/events/batch"
EVENTS_PATH: Final = "/api/v1/events"
IDENTIFY_PATH: Final = "/api/v1/identify"
_INGEST_PATHS: Final = frozenset({BATCH_PATH, EVENTS_PATH, IDENTIFY_PATH})

MAX_BATCH_EVENTS: Final = 100
MAX_IDENTIFY_DISTINCT_ID: Final = 256  # UTF-16 code units
RATE_LIMIT_WINDOW: Final = 60.0  # seconds, fixed windows (SERLA_API.md section 4.1)
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1

_CORS_HEADERS: Final[Mapping[str, str]] = {"Access-Control-Allow-Origin": "*"}
_PREFLIGHT_HEADERS: Final[Mapping[str, str]] = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Idempotency-Key",
    "Access-Control-Max-Age": "86400",
}
_JSON_TYPE: Final = "application/json"
_TEXT_TYPE: Final = "text/plain; charset=utf-8"
# What Vercel answers for a body over its 4.5 MB cap: plain text, not Serla JSON.
_VERCEL_413_BODY: Final = b"Request Entity Too Large\n\nFUNCTION_PAYLOAD_TOO_LARGE\n"
_QUOTA_MESSAGE: Final = "Monthly event limit of 25,000 exceeded. Please upgrade your plan."

# SERLA_API.md section 3. ``[0-9]`` rather than ``\d`` (which matches any Unicode digit), and the pattern is
# used with ``fullmatch`` because ``$`` would accept a trailing newline.
_TIMESTAMP_PATTERN: Final = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]+)?)?Z"
)
_TIMESTAMP_RE: Final = re.compile(_TIMESTAMP_PATTERN)
_SESSION_ID_RE: Final = re.compile(r"[0-9a-fA-F]{32}")
# NUL and UTF-16 surrogates: the real database rejects both (an unpaired surrogate is the only way a
# surrogate can appear in a ``str`` produced by ``json.loads``; proper pairs are combined).
_DB_BAD_CHARS_RE: Final = re.compile(r"[\x00\ud800-\udfff]")
# Hex digit -> the same digit with the two RFC 4122 variant bits set (10xx).
_UUID_VARIANT: Final[Mapping[str, str]] = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}
_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# Event schema, in the real schema's key order so issues come out in the same order zod reports them.
_EVENT_STRING_FIELDS: Final = (
    "distinctId",
    "sessionId",
    "pageUrl",
    "pagePath",
    "pageTitle",
    "referrer",
)
_EVENT_NUMBER_FIELDS: Final = ("clickX", "clickY")
_EVENT_FIELDS: Final = frozenset(
    {"name", "properties", "timestamp", "elementSelector", *_EVENT_STRING_FIELDS, *_EVENT_NUMBER_FIELDS}
)

FaultBody = Union[bytes, str, Mapping[str, Any], Sequence[Any], None]
"""What :attr:`Fault.body` accepts: raw bytes, text, or a JSON-serialisable object."""


class _Missing:
    """Marker for an absent JSON field (zod's ``undefined``)."""


_MISSING: Final = _Missing()


class _Malformed:
    """Marker for a request body that is not valid JSON."""


_MALFORMED: Final = _Malformed()


# --------------------------------------------------------------------------------------------------------
# Public records


@dataclass
class RecordedRequest:
    """One HTTP request the server received, including rejected ones.

    The server appends the record when the request arrives (``status`` is ``0`` then) and sets ``status``
    just before it writes the response, so once a client has its response the record is complete.

    Attributes:
        method: The HTTP method, e.g. ``"POST"``.
        path: The request path without the query string, e.g. ``"/api/v1/events/batch"``.
        headers: Request headers with lower-case names. Values are stripped of surrounding spaces and tabs
            (as the real server's fetch ``Headers`` does); repeated headers are joined with ``", "``.
        body: The raw request body.
        status: The status code sent, or ``0`` if no response was sent (the connection was dropped by a
            fault, or the request is still being handled).
        idempotency_key: The ``X-Idempotency-Key`` header, or ``None`` when absent or empty.
        event_count: How many events the body carries: the length of ``events`` for a parseable batch,
            ``1`` for a JSON object sent to ``/api/v1/events``, otherwise ``0``. It does not depend on
            whether the events were stored.
        query: The raw query string without the ``?`` (``""`` when there is none).
        fault: The fault applied to this request, if any.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    idempotency_key: str | None = None
    event_count: int = 0
    query: str = ""
    fault: Fault | None = None

    def json(self) -> Any:
        """Parse the body as JSON.

        Returns:
            The decoded JSON value.

        Raises:
            ValueError: If the body is not valid JSON.
        """
        return json.loads(self.body.decode("utf-8"))


@dataclass
class StoredEvent:
    """An event the server accepted and stored, with server-side metadata. Treat it as read-only.

    (Not a frozen dataclass only because frozen ones are about 3x slower to create.)

    Attributes:
        data: The event's known fields exactly as the client sent them (unknown fields are dropped, absent
            fields stay absent: no default ``properties`` or ``timestamp`` is filled in). This is what
            :attr:`SerlaServer.events` returns.
        idempotency_key: The request's ``X-Idempotency-Key`` header, or ``None``.
        position: The event's index in its request (always ``0`` for ``POST /api/v1/events``).
        user_agent: The request's ``User-Agent`` header (``""`` when absent).
        event_id: The UUID the server assigned.
        session_id: The session the event was filed under: the client's ``sessionId`` if it is 32 hex
            characters, otherwise a fresh random one (as the real server does).
        endpoint: The path the event arrived on.
        received_at: Wall-clock receive time (``time.time()``).
        api_key: The API key that authenticated the request.
    """

    data: dict[str, Any]
    idempotency_key: str | None
    position: int
    user_agent: str
    event_id: str = ""
    session_id: str = ""
    endpoint: str = BATCH_PATH
    received_at: float = 0.0
    api_key: str = ""


@dataclass(frozen=True)
class Response:
    """An HTTP response produced by a route.

    Attributes:
        status: The status code.
        body: The response body. ``Content-Length`` is computed by the server; don't set it.
        headers: Extra response headers.
    """

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fault:
    """A fault to inject into request handling, for reliability tests.

    At most one of ``status``, ``close_connection``, ``store_then_drop`` and ``hang`` may be set. A fault
    with none of them (only ``delay``) delays the request and then handles it normally.

    Attributes:
        status: Answer with this status, ``headers`` and ``body`` instead of processing the request. Nothing
            is stored.
        body: The body for ``status``. ``None`` picks a realistic default: Serla JSON for the codes the
            application sends (``429`` is the per-minute body when ``headers`` has ``Retry-After`` and the
            monthly-quota body otherwise), plain text for ``413`` (like Vercel's cap) and for
            ``502``/``503``/``504`` (like a gateway). ``bytes`` and ``str`` are sent as ``text/plain``
            unless ``headers`` sets ``Content-Type``; mappings and sequences are sent as JSON.
        headers: Extra response headers for ``status``.
        delay: Seconds to wait before acting (``0`` means no delay). :meth:`SerlaServer.stop` interrupts
            the wait, and the connection is then dropped without a response.
        close_connection: Close the connection without any response (a lost connection). Nothing is stored.
        store_then_drop: Process and store the request normally, then close the connection without
            responding ("the response was lost after the server stored the batch").
        hang: Never answer; the connection is closed when the server stops.
        path: Only requests to this exact path (no query string) consume the fault; ``None`` matches any.
    """

    status: int | None = None
    body: FaultBody = None
    headers: Mapping[str, str] | None = None
    delay: float = 0.0
    close_connection: bool = False
    store_then_drop: bool = False
    hang: bool = False
    path: str | None = None

    def __post_init__(self) -> None:
        """Reject contradictory faults.

        Raises:
            ValueError: If more than one action is set, ``delay`` is negative, or ``status`` is out of range.
        """
        actions = (self.status is not None) + self.close_connection + self.store_then_drop + self.hang
        if actions > 1:
            raise ValueError("set at most one of status, close_connection, store_then_drop and hang")
        if self.delay < 0 or not math.isfinite(self.delay):
            raise ValueError(f"delay must be a finite number >= 0, got {self.delay!r}")
        if self.status is not None and not 200 <= self.status <= 599:
            raise ValueError(f"status must be in 200..599, got {self.status!r}")


# --------------------------------------------------------------------------------------------------------
# Storage


class Store(Protocol):
    """Where the server keeps events and identities.

    :class:`SerlaServer` serialises every call under its own lock, so an implementation doesn't need to be
    thread-safe, but its methods run on the server's connection threads (not the thread that created it).
    """

    def add_events(self, events: Sequence[StoredEvent]) -> None:
        """Append accepted events, in arrival order.

        Args:
            events: The events of one request.
        """
        ...

    def events(self) -> list[StoredEvent]:
        """Return every stored event in arrival order.

        Returns:
            A new list; the caller may keep it.
        """
        ...

    def event_count(self) -> int:
        """Return how many events are stored.

        Returns:
            The number of stored events.
        """
        ...

    def find_idempotency_key(self, key: str) -> StoredEvent | None:
        """Find the first event stored under an ``X-Idempotency-Key``.

        Args:
            key: A non-empty idempotency key.

        Returns:
            The first event stored with that key, or ``None``.
        """
        ...

    def identify(self, distinct_id: str, properties: Mapping[str, Any]) -> str:
        """Upsert a person and shallow-merge ``properties`` into theirs.

        Args:
            distinct_id: The person's distinct ID.
            properties: Properties to merge: sent keys overwrite, other keys are kept.

        Returns:
            The person's identity ID (a UUID string, stable for a distinct ID).
        """
        ...

    def identities(self) -> dict[str, dict[str, Any]]:
        """Return every person's merged properties.

        Returns:
            A new dict mapping distinct ID to a copy of the merged properties.
        """
        ...

    def clear(self) -> None:
        """Forget all events, identities and idempotency keys."""
        ...


class MemoryStore:
    """A :class:`Store` that keeps everything in process memory. Not thread-safe on its own."""

    def __init__(self) -> None:
        """Create an empty store."""
        self._events: list[StoredEvent] = []
        self._by_key: dict[str, StoredEvent] = {}
        self._people: dict[str, tuple[str, dict[str, Any]]] = {}

    def add_events(self, events: Sequence[StoredEvent]) -> None:
        """Append accepted events, in arrival order.

        Args:
            events: The events of one request.
        """
        self._events.extend(events)
        for event in events:
            key = event.idempotency_key
            if key and key not in self._by_key:
                self._by_key[key] = event

    def events(self) -> list[StoredEvent]:
        """Return every stored event in arrival order.

        Returns:
            A new list; the caller may keep it.
        """
        return list(self._events)

    def event_count(self) -> int:
        """Return how many events are stored.

        Returns:
            The number of stored events.
        """
        return len(self._events)

    def find_idempotency_key(self, key: str) -> StoredEvent | None:
        """Find the first event stored under an ``X-Idempotency-Key``.

        Args:
            key: A non-empty idempotency key.

        Returns:
            The first event stored with that key, or ``None``.
        """
        return self._by_key.get(key)

    def identify(self, distinct_id: str, properties: Mapping[str, Any]) -> str:
        """Upsert a person and shallow-merge ``properties`` into theirs.

        Args:
            distinct_id: The person's distinct ID.
            properties: Properties to merge: sent keys overwrite, other keys are kept.

        Returns:
            The person's identity ID (a UUID string, stable for a distinct ID).
        """
        person = self._people.get(distinct_id)
        if person is None:
            person = (str(uuid.uuid4()), {})
            self._people[distinct_id] = person
        person[1].update(properties)
        return person[0]

    def identities(self) -> dict[str, dict[str, Any]]:
        """Return every person's merged properties.

        Returns:
            A new dict mapping distinct ID to a copy of the merged properties.
        """
        return {distinct_id: dict(props) for distinct_id, (_, props) in self._people.items()}

    def clear(self) -> None:
        """Forget all events, identities and idempotency keys."""
        self._events.clear()
        self._by_key.clear()
        self._people.clear()


# --------------------------------------------------------------------------------------------------------
# Validation (zod-like issues) and the database's extra rules


def _received(value: Any) -> str:
    """Name a JSON value's type the way zod's messages do."""
    if value is _MISSING:
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


def _type_issue(expected: str, value: Any, path: Sequence[str | int]) -> dict[str, Any]:
    return {
        "expected": expected,
        "code": "invalid_type",
        "path": list(path),
        "message": f"Invalid input: expected {expected}, received {_received(value)}",
    }


def _too_small(origin: str, minimum: int, path: Sequence[str | int]) -> dict[str, Any]:
    unit = "items" if origin == "array" else "characters"
    return {
        "origin": origin,
        "code": "too_small",
        "minimum": minimum,
        "inclusive": True,
        "path": list(path),
        "message": f"Too small: expected {origin} to have >={minimum} {unit}",
    }


def _too_big(origin: str, maximum: int, path: Sequence[str | int]) -> dict[str, Any]:
    unit = "items" if origin == "array" else "characters"
    return {
        "origin": origin,
        "code": "too_big",
        "maximum": maximum,
        "inclusive": True,
        "path": list(path),
        "message": f"Too big: expected {origin} to have <={maximum} {unit}",
    }


def _format_issue(path: Sequence[str | int]) -> dict[str, Any]:
    return {
        "origin": "string",
        "code": "invalid_format",
        "format": "datetime",
        "pattern": _TIMESTAMP_PATTERN,
        "path": list(path),
        "message": "Invalid ISO datetime",
    }


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
    year_s, month_s, day_s, hour_s, minute_s, second_s = match.groups()
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


def _is_number(value: Any) -> bool:
    kind = type(value)
    return kind is int or (kind is float and math.isfinite(value))


def _validate_event(obj: Any, prefix: tuple[str | int, ...], issues: list[dict[str, Any]]) -> dict[str, Any]:
    """Validate one event object; append issues and return its known fields.

    The returned dict is only meaningful when no issues were added.
    """
    if type(obj) is not dict:
        issues.append(_type_issue("object", obj, prefix))
        return {}
    clean: dict[str, Any] = {}
    name = obj.get("name", _MISSING)
    if type(name) is not str:
        issues.append(_type_issue("string", name, (*prefix, "name")))
    elif not name:
        issues.append(_too_small("string", 1, (*prefix, "name")))
    clean["name"] = name
    if len(obj) == 1:  # fast path: only ``name``
        return clean
    if "properties" in obj:
        props = obj["properties"]
        # ``null`` passes validation; it is the database that rejects it (see _db_rejects_event).
        if props is not None and type(props) is not dict:
            issues.append(_type_issue("record", props, (*prefix, "properties")))
        clean["properties"] = props
    if "timestamp" in obj:
        stamp = obj["timestamp"]
        if stamp is not None:
            if type(stamp) is not str:
                issues.append(_type_issue("string", stamp, (*prefix, "timestamp")))
            elif not is_valid_timestamp(stamp):
                issues.append(_format_issue((*prefix, "timestamp")))
        clean["timestamp"] = stamp
    for key in _EVENT_STRING_FIELDS:
        if key in obj:
            value = obj[key]
            if value is not None and type(value) is not str:
                issues.append(_type_issue("string", value, (*prefix, key)))
            clean[key] = value
    for key in _EVENT_NUMBER_FIELDS:
        if key in obj:
            value = obj[key]
            if value is not None and not _is_number(value):
                issues.append(_type_issue("number", value, (*prefix, key)))
            clean[key] = value
    if "elementSelector" in obj:
        value = obj["elementSelector"]
        if value is not None and type(value) is not str:
            issues.append(_type_issue("string", value, (*prefix, "elementSelector")))
        clean["elementSelector"] = value
    return clean


def _validate_batch(body: Any, issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if type(body) is not dict:
        issues.append(_type_issue("object", body, ()))
        return []
    events = body.get("events", _MISSING)
    if type(events) is not list:
        issues.append(_type_issue("array", events, ("events",)))
        return []
    clean = [_validate_event(event, ("events", index), issues) for index, event in enumerate(events)]
    if not events:
        issues.append(_too_small("array", 1, ("events",)))
    elif len(events) > MAX_BATCH_EVENTS:
        issues.append(_too_big("array", MAX_BATCH_EVENTS, ("events",)))
    return clean


def _utf16_len(value: str) -> int:
    return len(value.encode("utf-16-le", "surrogatepass")) // 2


def _validate_identify(body: Any, issues: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    if type(body) is not dict:
        issues.append(_type_issue("object", body, ()))
        return "", {}
    distinct_id = body.get("distinctId", _MISSING)
    if type(distinct_id) is not str:
        issues.append(_type_issue("string", distinct_id, ("distinctId",)))
        distinct_id = ""
    elif not distinct_id:
        issues.append(_too_small("string", 1, ("distinctId",)))
    elif (
        len(distinct_id) > MAX_IDENTIFY_DISTINCT_ID // 2
        and _utf16_len(distinct_id) > MAX_IDENTIFY_DISTINCT_ID
    ):
        issues.append(_too_big("string", MAX_IDENTIFY_DISTINCT_ID, ("distinctId",)))
    props = body.get("properties", _MISSING)
    if props is _MISSING:
        props = {}
    elif type(props) is not dict:
        issues.append(_type_issue("record", props, ("properties",)))
        props = {}
    return distinct_id, props


def _has_bad_chars(value: Any) -> bool:
    """Tell whether NUL or an unpaired surrogate occurs in any string or key inside ``value``."""
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


def _db_rejects_event(event: dict[str, Any], check_chars: bool) -> bool:
    """Apply the rules that make the real database fail (a 500) for an event that passed validation."""
    if "properties" in event and event["properties"] is None:
        return True
    for key in _EVENT_NUMBER_FIELDS:
        value = event.get(key)
        if value is not None:
            if type(value) is float:
                if not value.is_integer():
                    return True
                value = int(value)
            if not _INT32_MIN <= value <= _INT32_MAX:
                return True
    if check_chars:
        for key, value in event.items():
            # An invalid sessionId is replaced by a random one before the insert, so it can't break it.
            if key != "sessionId" and _has_bad_chars(value):
                return True
    return False


def _parse_json(body: bytes) -> Any:
    """Parse a body like the real server's ``request.json()``: UTF-8 with replacement, BOM stripped.

    Returns:
        The value, or ``_MALFORMED`` for an empty/invalid body or a bare ``NaN``/``Infinity`` token.
    """
    text = body.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return _MALFORMED


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON token {token}")


def _count_events(path: str, parsed: Any) -> int:
    if path == BATCH_PATH:
        if type(parsed) is dict:
            events = parsed.get("events")
            if type(events) is list:
                return len(events)
        return 0
    if path == EVENTS_PATH and type(parsed) is dict:
        return 1
    return 0


# --------------------------------------------------------------------------------------------------------
# Responses


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    merged = {"Content-Type": _JSON_TYPE, **_CORS_HEADERS}
    if headers:
        merged.update(headers)
    return Response(status, _ENCODER.encode(payload).encode("utf-8"), merged)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _fault_response(fault: Fault, path: str) -> Response:
    """Build the response for a ``status`` fault."""
    status = cast(int, fault.status)
    headers = dict(fault.headers or {})
    body = fault.body
    if body is None:
        body = _default_fault_body(status, path, headers)
    if isinstance(body, (bytes, bytearray)):
        data, content_type = bytes(body), _TEXT_TYPE
    elif isinstance(body, str):
        data, content_type = body.encode("utf-8"), _TEXT_TYPE
    else:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        content_type = _JSON_TYPE
    if _header(headers, "Content-Type") is None:
        headers["Content-Type"] = content_type
    return Response(status, data, headers)


def _default_fault_body(status: int, path: str, headers: Mapping[str, str]) -> FaultBody:
    if status == 413:
        return _VERCEL_413_BODY
    if status in (502, 503, 504):
        return f"{status} {_phrase(status)}\n"
    if status == 400:
        return {"error": _INVALID_DATA.get(path, "Invalid batch data"), "details": []}
    if status == 401:
        return {"error": "Invalid API key"}
    if status == 402:
        return {"error": "This feature requires the Hobby plan or above"}
    if status == 403:
        return {"error": "This endpoint requires a secret key"}
    if status == 429:
        retry_after = _header(headers, "Retry-After")
        if retry_after is None:
            return {"error": "Rate limit exceeded", "message": _QUOTA_MESSAGE}
        try:
            seconds = int(retry_after)
        except ValueError:
            seconds = 1
        return {"error": "Too many requests", "retryAfter": seconds}
    if status >= 500:
        return {"error": "Internal server error"}
    if status < 300:
        return {"success": True}
    return {"error": _phrase(status) or f"HTTP {status}"}


_INVALID_DATA: Final[Mapping[str, str]] = {
    BATCH_PATH: "Invalid batch data",
    EVENTS_PATH: "Invalid event data",
    IDENTIFY_PATH: "Invalid identify data",
}
_NOT_FOUND: Final = Response(
    404, b"404: This page could not be found.", {"Content-Type": "text/html; charset=utf-8"}
)


# --------------------------------------------------------------------------------------------------------
# The server


RouteHandler = Callable[[RecordedRequest], Response]
"""A function that answers an extra route registered with :meth:`SerlaServer.add_route`."""


class SerlaServer:
    """A local Serla server on a background thread.

    Example::

        with SerlaServer(api_keys={"sk_live_test"}) as server:
            client = serla.Client("sk_live_test", host=server.url)
            ...
            assert server.wait_for_events(1, timeout=5)
            assert server.events[0]["name"] == "signup"

    All public methods are thread-safe.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_keys: Iterable[str] | None = None,
        store: Store | None = None,
        rate_limit: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        dedupe: bool = False,
        max_body_size: int | None = None,
        max_recorded_requests: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """Configure the server. Nothing is bound until :meth:`start`.

        Args:
            host: Interface to bind. An address containing ``:`` is treated as IPv6.
            port: TCP port; ``0`` picks a free one (read it from :attr:`port` after :meth:`start`).
            api_keys: Keys to accept. ``None`` accepts any non-empty key (everything after exactly
                ``"Bearer "``); otherwise other keys get 401.
            store: Where events and identities go. ``None`` uses a fresh :class:`MemoryStore`.
            rate_limit: Requests per fixed 60 s window, applied separately to ``/events`` and
                ``/events/batch`` (``/identify`` is never limited). ``None`` disables the limit. The real
                server uses 100 for batch and 1000 for single events.
            clock: Monotonic clock in seconds used for rate-limit windows; inject one to step time in tests.
            dedupe: If ``True``, an events request whose ``X-Idempotency-Key`` was already stored is answered
                with success but not stored again. The real server never dedupes (``False``).
            max_body_size: Reject bodies larger than this many bytes with Vercel's plain-text 413 and close
                the connection. ``None`` (the default) means no cap, like a self-hosted server; the hosted
                service caps at 4.5 MB.
            max_recorded_requests: Keep only the newest this-many :attr:`requests` (``None``: keep all).
            log: Called with one line per handled request and per connection error. ``None`` is silent.

        Raises:
            ValueError: If ``rate_limit``, ``max_body_size`` or ``max_recorded_requests`` is negative.
        """
        for name, value in (
            ("rate_limit", rate_limit),
            ("max_body_size", max_body_size),
            ("max_recorded_requests", max_recorded_requests),
        ):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value!r}")
        self._host = host
        self._requested_port = port
        self._api_keys: frozenset[str] | None = None if api_keys is None else frozenset(api_keys)
        self._store: Store = MemoryStore() if store is None else store
        self._rate_limit = rate_limit
        self._clock = clock
        self._dedupe = dedupe
        self._max_body_size = max_body_size
        self._log = log

        self._cond = threading.Condition()  # guards everything below, and every call into the store
        self._requests: deque[RecordedRequest] = deque(maxlen=max_recorded_requests)
        self._request_total = 0
        self._faults: deque[Fault] = deque()
        self._default_fault: Fault | None = None
        self._windows: dict[str, list[float]] = {}  # bucket -> [window start, count]
        self._routes: dict[tuple[str, str], RouteHandler] = {}
        self.flags = FlagRoute(self)  # GET /api/v1/flags, with the real evaluation (serla.devtools.flags)

        self._lifecycle = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._conn_lock = threading.Lock()
        self._conns: dict[threading.Thread, socket.socket] = {}
        from serla.devtools.errors import register as register_errors  # issue 14: POST /api/v1/errors

        self.errors = register_errors(self)
        from serla.devtools.llm import LlmEndpoint  # POST /api/v1/llm, as the real route

        self.llm = LlmEndpoint(self)

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> SerlaServer:
        """Bind the socket and serve on a daemon thread named ``serla-server``.

        Returns:
            The server itself, for chaining.

        Raises:
            RuntimeError: If the server was already started (a stopped server can't be restarted).
            OSError: If the address can't be bound.
        """
        with self._lifecycle:
            if self._address is not None:
                raise RuntimeError("SerlaServer can only be started once")
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            httpd = _HTTPServer((self._host, self._requested_port), self, family)
            self._wake_r, self._wake_w = socket.socketpair()
            self._httpd = httpd
            self._address = (self._host, int(httpd.server_address[1]))
            self._thread = threading.Thread(target=self._serve_loop, name="serla-server", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every connection and join the server's threads.

        Requests waiting in a ``delay`` or ``hang`` fault are dropped without a response. Safe to call twice
        and on a server that was never started.

        Args:
            timeout: Upper bound in seconds for joining the threads.
        """
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None or thread is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        thread.join(timeout)
        httpd.server_close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        with self._conn_lock:
            conns = list(self._conns.items())
        for _, sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for conn_thread, _ in conns:
            conn_thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> SerlaServer:
        """Start the server if needed.

        Returns:
            The server itself.
        """
        if self._address is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port.

        Raises:
            RuntimeError: If the server was never started.
        """
        if self._address is None:
            raise RuntimeError("SerlaServer is not started")
        return self._address[1]

    @property
    def url(self) -> str:
        """The base URL to configure a client with, e.g. ``"http://127.0.0.1:54321"`` (no trailing slash).

        It stays valid after :meth:`stop`, so tests can check "connection refused" handling.

        Raises:
            RuntimeError: If the server was never started.
        """
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # ---- recorded data -----------------------------------------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """The stored events' wire fields (:attr:`StoredEvent.data`), in arrival order (a new list)."""
        with self._cond:
            stored = self._store.events()
        return [event.data for event in stored]

    @property
    def stored(self) -> list[StoredEvent]:
        """The stored events with their metadata, in arrival order (a new list)."""
        with self._cond:
            return self._store.events()

    @property
    def identities(self) -> dict[str, dict[str, Any]]:
        """Each identified person's merged properties, keyed by ``distinctId`` (a copy)."""
        with self._cond:
            return self._store.identities()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, including rejected and dropped ones, in arrival order (a new list)."""
        with self._cond:
            return list(self._requests)

    @property
    def store(self) -> Store:
        """The store the server writes to."""
        return self._store

    def wait_for_events(self, n: int, timeout: float | None = 5.0) -> bool:
        """Block until at least ``n`` events are stored.

        Args:
            n: The number of stored events to wait for.
            timeout: Seconds to wait at most; ``None`` waits forever.

        Returns:
            ``True`` if ``n`` events are stored, ``False`` on timeout.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._store.event_count() >= n, timeout)

    def wait_for_requests(self, n: int, timeout: float | None = 5.0) -> bool:
        """Block until at least ``n`` requests have arrived (since the last :meth:`clear`).

        A request counts as soon as its body is read, before it is answered, so this also works for
        requests held by a ``delay`` or ``hang`` fault.

        Args:
            n: The number of requests to wait for.
            timeout: Seconds to wait at most; ``None`` waits forever.

        Returns:
            ``True`` if ``n`` requests arrived, ``False`` on timeout.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._request_total >= n, timeout)

    def clear(self) -> None:
        """Forget stored events, identities, recorded requests and rate-limit windows.

        Queued and default faults are kept; see :meth:`clear_faults`.
        """
        with self._cond:
            self._store.clear()
            self._requests.clear()
            self._request_total = 0
            self._windows.clear()

    # ---- faults ----------------------------------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        """Queue one-shot faults.

        Each request consumes the first queued fault whose :attr:`Fault.path` matches it (``None`` matches
        everything), in FIFO order. Requests that match no queued fault get the default fault, if any.

        Args:
            *faults: Faults to append to the queue.
        """
        with self._cond:
            self._faults.extend(faults)

    def fail_next(
        self,
        n: int,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: FaultBody = None,
        *,
        path: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` instead of processing them.

        Args:
            n: How many requests to fail.
            status: The status code to send.
            headers: Extra response headers (e.g. ``{"Retry-After": "1"}``).
            body: The response body; ``None`` picks a realistic default (see :attr:`Fault.body`).
            path: Only fail requests to this path; ``None`` matches every path.
        """
        fault = Fault(status=status, headers=headers, body=body, path=path)
        self.inject(*([fault] * n))

    def set_default_fault(self, fault: Fault | None) -> None:
        """Apply a fault to every request that matches no queued fault ("endpoint down" tests).

        Args:
            fault: The permanent fault, or ``None`` to go back to normal processing.
        """
        with self._cond:
            self._default_fault = fault

    def clear_faults(self) -> None:
        """Drop every queued fault and the default fault."""
        with self._cond:
            self._faults.clear()
            self._default_fault = None

    @property
    def pending_faults(self) -> list[Fault]:
        """The queued one-shot faults not consumed yet (a new list)."""
        with self._cond:
            return list(self._faults)

    # ---- extension -----------------------------------------------------------------------------------

    def add_route(self, method: str, path: str, handler: RouteHandler) -> None:
        """Serve an extra route (e.g. the ``serla dev`` web page).

        Extra routes are matched after the trailing-slash redirect and before the Serla routes, without
        authentication. ``handler`` runs on a connection thread, outside the server's lock; it may read
        :attr:`events` or :attr:`store`.

        Args:
            method: The HTTP method, e.g. ``"GET"``.
            path: The exact path, without query string.
            handler: Called with the recorded request; returns the response.
        """
        with self._cond:
            self._routes[(method.upper(), path)] = handler

    # ---- request handling (connection threads) -------------------------------------------------------

    def _serve_loop(self) -> None:
        """Accept connections until :meth:`stop` writes to the wake-up socket (serve thread)."""
        httpd = self._httpd
        wake = self._wake_r
        if httpd is None or wake is None:  # pragma: no cover - start() sets both first
            return
        # A custom loop instead of serve_forever(): its shutdown() waits up to poll_interval, which would
        # add up to 0.5 s to every test's teardown.
        with selectors.DefaultSelector() as selector:
            selector.register(httpd.socket, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is httpd.socket and not self._stopping.is_set():
                        httpd.handle_request()  # timeout 0: never blocks if the client went away

    def _track(self, thread: threading.Thread, sock: socket.socket) -> None:
        with self._conn_lock:
            self._conns[thread] = sock

    def _untrack(self, thread: threading.Thread) -> None:
        with self._conn_lock:
            self._conns.pop(thread, None)

    def _emit_log(self, line: str) -> None:
        if self._log is not None:
            # A broken log callback must not break request handling.
            with contextlib.suppress(Exception):
                self._log(line)

    def _take_fault(self, path: str) -> Fault | None:
        """Pop the first queued fault matching ``path``; caller holds ``_cond``."""
        for index, fault in enumerate(self._faults):
            if fault.path is None or fault.path == path:
                del self._faults[index]
                return fault
        return self._default_fault

    def _finish(self, request: RecordedRequest, response: Response | None) -> Response | None:
        with self._cond:
            request.status = 0 if response is None else response.status
        return response

    def handle(self, request: RecordedRequest) -> Response | None:
        """Answer one request as the server would (used by the HTTP loop and by :mod:`serla.testing`).

        Args:
            request: The request, already read off the wire (or built by hand).

        Returns:
            The response, or ``None``: close the connection without one (an injected fault).
        """
        parsed: Any = _MALFORMED
        if request.method == "POST" and request.path in _INGEST_PATHS:
            parsed = _parse_json(request.body)
            request.event_count = _count_events(request.path, parsed)
        with self._cond:
            fault = self._take_fault(request.path)
            request.fault = fault
            self._requests.append(request)
            self._request_total += 1
            self._cond.notify_all()
        if fault is not None:
            if fault.delay and self._stopping.wait(fault.delay):
                return self._finish(request, None)
            if fault.hang:
                self._stopping.wait()
                return self._finish(request, None)
            if fault.close_connection:
                return self._finish(request, None)
            if fault.status is not None:
                return self._finish(request, _fault_response(fault, request.path))
        response = self._process(request, parsed)
        if fault is not None and fault.store_then_drop:
            return self._finish(request, None)
        return self._finish(request, response)

    def _process(self, request: RecordedRequest, parsed: Any) -> Response:
        """Route and answer a request the way the real server does (no faults here)."""
        path, method = request.path, request.method
        if path != "/" and path.endswith("/"):
            location = path.rstrip("/") or "/"
            if request.query:
                location = f"{location}?{request.query}"
            return Response(308, location.encode("utf-8"), {"Location": location, "Content-Type": _TEXT_TYPE})
        with self._cond:
            route = self._routes.get((method, path))
        if route is not None:
            return route(request)
        if path not in _INGEST_PATHS:
            return _NOT_FOUND
        if method == "OPTIONS":
            return Response(204, b"", _PREFLIGHT_HEADERS)
        if method != "POST":
            return Response(405, b"", {"Allow": "OPTIONS, POST", **_CORS_HEADERS})
        api_key = self._authenticate(request, allow_query=path == BATCH_PATH)
        if api_key is None:
            return _json_response(401, {"error": "Invalid API key"})
        if path == IDENTIFY_PATH:
            return self._identify(parsed)
        limited = self._check_rate_limit(path)
        if limited is not None:
            return limited
        if parsed is _MALFORMED:
            return _json_response(500, {"error": "Internal server error"})
        return self._ingest(request, parsed, api_key)

    def _authenticate(self, request: RecordedRequest, *, allow_query: bool) -> str | None:
        header = request.headers.get("authorization")
        if header is None:
            if not allow_query or not request.query:
                return None
            keys = parse_qs(request.query).get("api_key")
            key = keys[0] if keys else ""
        elif header.startswith("Bearer "):
            key = header[7:]
        else:
            return None
        if not key or (self._api_keys is not None and key not in self._api_keys):
            return None
        return key

    def _check_rate_limit(self, path: str) -> Response | None:
        limit = self._rate_limit
        if limit is None:
            return None
        with self._cond:
            now = self._clock()
            window = self._windows.get(path)
            if window is None or now >= window[0] + RATE_LIMIT_WINDOW:
                window = [now, 0.0]
                self._windows[path] = window
            window[1] += 1  # rejected requests count too, and don't extend the window
            if window[1] <= limit:
                return None
            remaining = window[0] + RATE_LIMIT_WINDOW - now
        retry_after = max(0, math.ceil(remaining))
        reset_ms = int((time.time() + remaining) * 1000)
        headers = {
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(reset_ms),
        }
        return _json_response(429, {"error": "Too many requests", "retryAfter": retry_after}, headers)

    def _ingest(self, request: RecordedRequest, parsed: Any, api_key: str) -> Response:
        """Validate and store ``POST /events`` or ``POST /events/batch``."""
        single = request.path == EVENTS_PATH
        issues: list[dict[str, Any]] = []
        events = [_validate_event(parsed, (), issues)] if single else _validate_batch(parsed, issues)
        if issues:
            return _json_response(400, {"error": _INVALID_DATA[request.path], "details": issues})
        # NUL and lone surrogates can only come from \u escapes: raw ones make the JSON (or UTF-8) invalid.
        check_chars = b"\\u" in request.body
        for event in events:
            if _db_rejects_event(event, check_chars):
                return _json_response(500, {"error": "Internal server error"})

        key = request.idempotency_key
        received_at = time.time()
        user_agent = request.headers.get("user-agent", "")
        # One urandom call per request; formatting UUIDs by hand is ~5x faster than uuid.UUID (benchmarks
        # push 100,000 events through here).
        randomness = os.urandom(32 * len(events)).hex()
        stored: list[StoredEvent] = []
        for index, data in enumerate(events):
            rand = randomness[64 * index : 64 * index + 64]
            session_id = data.get("sessionId")
            if type(session_id) is not str or not _SESSION_ID_RE.fullmatch(session_id):
                session_id = rand[32:]
            event_id = (
                f"{rand[:8]}-{rand[8:12]}-4{rand[13:16]}-{_UUID_VARIANT[rand[16]]}{rand[17:20]}-{rand[20:32]}"
            )
            stored.append(
                StoredEvent(
                    data, key, index, user_agent, event_id, session_id, request.path, received_at, api_key
                )
            )
        with self._cond:
            previous = self._store.find_idempotency_key(key) if self._dedupe and key else None
            if previous is None:
                self._store.add_events(stored)
                self._cond.notify_all()
        if single:
            first = stored[0] if previous is None else previous
            return _json_response(
                201, {"success": True, "eventId": first.event_id, "sessionId": first.session_id}
            )
        return _json_response(201, {"success": True, "count": len(stored)})

    def _identify(self, parsed: Any) -> Response:
        if parsed is _MALFORMED:
            return _json_response(500, {"error": "Internal server error"})
        issues: list[dict[str, Any]] = []
        distinct_id, props = _validate_identify(parsed, issues)
        if issues:
            return _json_response(400, {"error": _INVALID_DATA[IDENTIFY_PATH], "details": issues})
        if _has_bad_chars(distinct_id) or _has_bad_chars(props):
            return _json_response(500, {"error": "Internal server error"})
        with self._cond:
            identity_id = self._store.identify(distinct_id, props)
        return _json_response(200, {"success": True, "identityId": identity_id})


def serve(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> SerlaServer:
    """Create and start a :class:`SerlaServer`.

    Args:
        host: Interface to bind.
        port: TCP port; ``0`` picks a free one.
        **kwargs: Keyword arguments for :class:`SerlaServer`.

    Returns:
        The running server; call :meth:`SerlaServer.stop` (or use it as a context manager) when done.
    """
    return SerlaServer(host, port, **kwargs).start()


# --------------------------------------------------------------------------------------------------------
# HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with named, tracked daemon connection threads and no reverse DNS on bind."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: SerlaServer, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.owner = owner
        super().__init__(address, _Handler)
        self.timeout = 0.0  # handle_request() is only called when the socket is readable

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="serla-server-conn",
            daemon=True,
        )
        self.owner._track(thread, request)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner._untrack(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; clients that hang up mid-response are normal here.
        self.owner._emit_log(f"connection error from {client_address}")


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, hands it to :meth:`SerlaServer.handle` and writes the answer."""

    protocol_version = "HTTP/1.1"
    server_version = f"SerlaDev/{__version__}"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are closed after this many seconds

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def log_message(self, format: str, *args: Any) -> None:
        owner = cast(_HTTPServer, self.server).owner
        if owner._log is not None:
            owner._emit_log(f"{self.address_string()} {format % args}")

    def _dispatch(self, method: str) -> None:
        owner = cast(_HTTPServer, self.server).owner
        split = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, raw in self.headers.items():
            key = name.lower()
            value = raw.strip(" \t")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request = RecordedRequest(
            method=method,
            path=split.path,
            headers=headers,
            body=b"",
            idempotency_key=headers.get("x-idempotency-key") or None,
            query=split.query,
        )
        body = self._read_body(headers, owner, request)
        if body is None:
            return
        request.body = body
        response = owner.handle(request)
        if response is None:
            self.close_connection = True
            return
        self._write(response, method)

    def _read_body(
        self, headers: Mapping[str, str], owner: SerlaServer, request: RecordedRequest
    ) -> bytes | None:
        """Read the request body; on a framing error answer (or drop) and return ``None``."""
        limit = owner._max_body_size
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked(limit, owner, request)
        length_header = headers.get("content-length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError(length_header)
        except ValueError:
            self.close_connection = True
            self._write(Response(400, b"Bad Request", {"Content-Type": _TEXT_TYPE}), request.method)
            return None
        if limit is not None and length > limit:
            self._reject_too_large(owner, request)
            return None
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def _read_chunked(self, limit: int | None, owner: SerlaServer, request: RecordedRequest) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                return None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if limit is not None and total > limit:
                self._reject_too_large(owner, request)
                return None
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                self.close_connection = True
                return None
            parts.append(chunk)
            self.rfile.readline(65537)  # the CRLF after the chunk

    def _reject_too_large(self, owner: SerlaServer, request: RecordedRequest) -> None:
        # The body is not read, so the connection can't be reused.
        self.close_connection = True
        response = Response(413, _VERCEL_413_BODY, {"Content-Type": _TEXT_TYPE})
        request.status = 413
        with owner._cond:
            owner._requests.append(request)
            owner._request_total += 1
            owner._cond.notify_all()
        self._write(response, request.method)

    def _write(self, response: Response, method: str) -> None:
        status = response.status
        lines = [
            f"HTTP/1.1 {status} {_phrase(status)}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
        ]
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                lines.append(f"{name}: {value}")
        body = response.body
        if status == 204 or status == 304 or status < 200:
            body = b""  # these responses must not carry Content-Length or a body
        else:
            lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        elif self.request_version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.wfile.write(head if method == "HEAD" else head + body)
        self.log_request(status, len(body))
