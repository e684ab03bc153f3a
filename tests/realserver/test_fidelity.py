"""Fidelity: the local contract server answers and stores what the real Serla server does.

The same raw requests (a corpus of over 200: good and bad events, timestamps, batch sizes, JSON oddities,
numbers JavaScript reads differently, ``__proto__``, sessions, keys and scopes, identify, methods, paths)
go to the real server and to a fresh :class:`~serla.devtools.server.SerlaServer` whose projects mirror the
harness's (its own keys: a max project with a secret and a public key, a free one, a rate-limit one, a quota
one). For each request the test compares the status, the JSON body (ids and times masked), the headers a
client acts on, and what was stored: read back with SQL on the real server, from the store on ours.

Not compared, by design: the columns the real server derives from request headers and URLs (browser, OS
and device from ``User-Agent``, geo from edge headers, UTM and referrer domain), which the local stores do
not keep; the 404 page's HTML (both answer 404 with HTML); headers other than CORS, ``Retry-After``,
``X-RateLimit-*``, ``Location`` and the JSON content type. ``/export`` is not served locally (its key scope
check is :meth:`SerlaServer.authorize`'s ``scope="secret"``, tested in tests/test_server.py).

A difference is either fixed or listed in :data:`ALLOWED` with its reason. A *dangerous* difference (ours
accepts or stores what the real server refuses or changes) is never allowed. An allowed entry that no
longer differs fails too, so the list stays true.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from serla.devtools.limits import PLAN_FEATURES, Project
from serla.devtools.server import ROUTES, SerlaServer
from serla.devtools.store import StoredEvent
from serla.devtools.validation import dumps, parse_json

from .conftest import PROJECTS, RealServer

BATCH = "/api/v1/events/batch"
EVENTS = "/api/v1/events"
IDENTIFY = "/api/v1/identify"

ALLOWED: dict[str, str] = {}
"""Differences left, by case name, with the reason. None may be dangerous. (Empty: every difference found
by this corpus was fixed.)"""

NOT_REGISTERED: dict[str, str] = {
    "errors route (max)": "POST /errors: served once serla.devtools.errors is registered in ROUTES",
    "errors route (free, 402)": "POST /errors: served once serla.devtools.errors is registered in ROUTES",
    "llm route (free, 402)": "POST /llm: served once serla.devtools.llm is registered in ROUTES",
    "flags route (free, 402)": "GET /flags: served once serla.devtools.flags is registered in ROUTES",
}
"""Cases of routes that other modules serve: allowed to differ (ours answers 404) only while their route is
not in :data:`serla.devtools.server.ROUTES`."""


_ID_KEYS = ("eventId", "identityId")
_HEADERS = (
    "access-control-allow-origin",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "location",
)


# --------------------------------------------------------------------------------------------------------
# The corpus


@dataclass
class Case:
    """One raw request. ``{key:NAME}`` in ``auth`` and ``query`` is replaced by each server's key."""

    name: str
    path: str = BATCH
    body: bytes | None = b""
    method: str = "POST"
    auth: str | None = "Bearer {key:max}"
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    session: str | None = None  # a sessionId sent, to tell "kept" from "replaced"
    chunked: bool = False  # send the body with Transfer-Encoding: chunked


def _j(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def corpus(tok: str, session: str) -> list[Case]:
    """The requests, each event named ``{tok}-{n}...`` so its rows can be found on both servers."""
    cases: list[Case] = []
    n = 0
    # The real server allows 100 batch requests a minute per project: the groups of plain variations go
    # to the free project, so no project nears its limit during the run.
    spread = {"auth": "Bearer {key:max}"}

    def name() -> str:
        nonlocal n
        n += 1
        return f"{tok}-{n:03d}"

    def batch(case: str, *events: dict[str, Any], **kw: Any) -> None:
        cases.append(Case(case, body=_j({"events": list(events)}), **{**spread, **kw}))

    def raw(case: str, body: bytes, path: str = BATCH, **kw: Any) -> None:
        cases.append(Case(case, path=path, body=body, **{**spread, **kw}))

    # -- plain events
    batch("minimal", {"name": name()})
    batch(
        "all fields",
        {
            "name": name(),
            "distinctId": "user-1",
            "properties": {"plan": "pro", "n": 3, "ok": True, "none": None, "list": [1, "a"]},
            "timestamp": "2026-01-15T10:30:00.123Z",
            "pageUrl": "https://shop.example/p?utm_source=news&utm_medium=mail&utm_campaign=c1",
            "pagePath": "/p",
            "pageTitle": "P",
            "referrer": "https://ref.example/x",
            "elementSelector": "#buy",
            "clickX": 10,
            "clickY": 20,
        },
    )
    batch(
        "unknown fields dropped", {"name": name(), "distinct_id": "u", "event": "x", "context": {"ip": "1"}}
    )
    batch("nulls", {"name": name(), "distinctId": None, "timestamp": None, "pageUrl": None, "clickX": None})
    batch("unicode", {"name": name() + "-é✓😀", "distinctId": "ü", "properties": {"k😀": "v\u2028"}})
    batch("empty properties", {"name": name(), "properties": {}})
    batch("long name", {"name": name() + "x" * 5000})
    # -- timestamps (SERLA_API.md section 3)
    spread["auth"] = "Bearer {key:free}"
    for stamp in (
        "2024-01-15T10:30:00Z",
        "2024-01-15T10:30:00.123Z",
        "2024-01-15T10:30:00.123456Z",
        "2024-01-15T10:30:00.123456789Z",
        "2024-01-15T10:30:00.9999Z",
        "2024-01-15T10:30Z",
        "2024-02-29T00:00:00Z",
        "2000-02-29T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "2099-12-31T23:59:59.999Z",
        "0000-01-01T00:00:00Z",
        "2024-01-15T10:30:00+00:00",
        "2024-01-15T10:30:00+02:00",
        "2024-01-15T10:30:00",
        "2024-01-15T10:30:00z",
        "2024-01-15t10:30:00Z",
        "2024-01-15 10:30:00Z",
        "2024-01-15",
        "2023-02-29T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "2024-01-15T24:00:00Z",
        "2024-01-15T10:60:00Z",
        "2024-01-15T10:30:60Z",
        "2024-01-15T10:30:00.Z",
        "20240115T103000Z",
        " 2024-01-15T10:30:00Z",
        "2024-01-15T10:30:00Z\n",
        "\uff12\uff1024-01-15T10:30:00Z",  # full-width digits
    ):
        batch(f"timestamp {stamp!r}", {"name": name(), "timestamp": stamp})
    batch("timestamp number", {"name": name(), "timestamp": 1705314600})
    # -- batch sizes
    raw("batch of 0", _j({"events": []}))
    batch("batch of 1", {"name": name()})
    big = [{"name": name(), "properties": {"i": i}} for i in range(100)]
    batch("batch of 100", *big)
    batch("batch of 101", *[{"name": f"{tok}-x101", "properties": {"i": i}} for i in range(101)])
    batch("one bad event rejects the batch", {"name": name()}, {"name": ""}, {"name": name()})
    # -- body shapes and JSON oddities
    raw("empty body", b"")
    raw("not JSON", b"{")
    raw("bare array", b"[]")
    raw("JSON null", b"null")
    raw("JSON number", b"1")
    raw("JSON string", b'"s"')
    raw("events not an array", _j({"events": {"name": "x"}}))
    raw("events missing", _j({"event": [{"name": "x"}]}))
    raw("event is a string", _j({"events": ["x"]}))
    raw("event is null", _j({"events": [None]}))
    raw("NaN token", b'{"events":[{"name":"' + name().encode() + b'","properties":{"x":NaN}}]}')
    raw("Infinity token", b'{"events":[{"name":"' + name().encode() + b'","properties":{"x":Infinity}}]}')
    raw("-Infinity token", b'{"events":[{"name":"' + name().encode() + b'","properties":{"x":-Infinity}}]}')
    raw("trailing garbage", _j({"events": [{"name": name()}]}) + b"x")
    raw("BOM", b"\xef\xbb\xbf" + _j({"events": [{"name": name()}]}))
    raw("invalid UTF-8 in a string", b'{"events":[{"name":"' + name().encode() + b'-\xff"}]}')
    raw("duplicate keys", b'{"events":[{"name":"dup-first","name":"' + name().encode() + b'"}]}')
    raw("chunked body", _j({"events": [{"name": name(), "properties": {"a": "x" * 40}}]}), chunked=True)
    raw(
        "chunked identify",
        _j({"distinctId": f"{tok}-idc", "properties": {"c": 1}}),
        path=IDENTIFY,
        chunked=True,
    )
    raw("whitespace around", b" \n\t" + _j({"events": [{"name": name()}]}) + b"\n ")
    # -- numbers JavaScript reads as doubles
    for label, literal in (
        ("2^53-1", "9007199254740991"),
        ("2^53", "9007199254740992"),
        ("2^53+1", "9007199254740993"),
        ("-(2^53+1)", "-9007199254740993"),
        ("10^21+1", "1000000000000000000001"),
        ("10^25", "10000000000000000000000000"),
        ("400-digit int", "1" + "0" * 399),
        ("1e400", "1e400"),
        ("-1e400", "-1e400"),
        ("1e308", "1e308"),
        ("1.5e300", "1.5e300"),
        ("5e-324", "5e-324"),
        ("1e-400", "1e-400"),
        ("0.1", "0.1"),
        ("-0.0", "-0.0"),
        ("1.0", "1.0"),
        ("nested 2^53+1", '{"a":[9007199254740993]}'),
    ):
        raw(
            f"number {label}",
            b'{"events":[{"name":"' + name().encode() + b'","properties":{"v":' + literal.encode() + b"}}]}",
        )
    raw("clickX 2^53+1", b'{"events":[{"name":"' + name().encode() + b'","clickX":9007199254740993}]}')
    batch("clickX float", {"name": name(), "clickX": 1.5})
    batch("clickX integral float", {"name": name(), "clickX": 2.0})
    batch("clickX beyond int32", {"name": name(), "clickX": 2**31})
    batch("clickX string", {"name": name(), "clickX": "1"})
    raw("clickX 1e400", b'{"events":[{"name":"' + name().encode() + b'","clickX":1e400}]}')
    # -- __proto__ and friends
    spread["auth"] = "Bearer {key:max}"
    raw(
        "__proto__ property",
        b'{"events":[{"name":"' + name().encode() + b'","properties":{"__proto__":{"x":1},"a":1}}]}',
    )
    raw("__proto__ only", b'{"events":[{"name":"' + name().encode() + b'","properties":{"__proto__":1}}]}')
    raw(
        "nested __proto__",
        b'{"events":[{"name":"' + name().encode() + b'","properties":{"a":{"__proto__":1}}}]}',
    )
    raw(
        "escaped __proto__",
        b'{"events":[{"name":"' + name().encode() + b'","properties":{"\\u005f_proto__":2,"b":1}}]}',
    )
    batch(
        "constructor and toString keys", {"name": name(), "properties": {"constructor": 1, "toString": "x"}}
    )
    # -- properties types
    batch("properties null", {"name": name(), "properties": None})
    batch("properties array", {"name": name(), "properties": [1]})
    batch("properties string", {"name": name(), "properties": "x"})
    deep = "[" * 2000 + "]" * 2000
    raw(
        "2000 levels deep",
        b'{"events":[{"name":"' + name().encode() + b'","properties":{"a":' + deep.encode() + b"}}]}",
    )
    deeper = '{"a":' * 5000 + "1" + "}" * 5000
    raw(
        "5000 levels deep",
        b'{"events":[{"name":"' + name().encode() + b'","properties":{"a":' + deeper.encode() + b"}}]}",
    )
    # -- strings the database refuses
    raw("NUL in name", b'{"events":[{"name":"' + name().encode() + b'\\u0000"}]}')
    raw(
        "NUL in a property key",
        b'{"events":[{"name":"' + name().encode() + b'","properties":{"a\\u0000":1}}]}',
    )
    raw("lone surrogate", b'{"events":[{"name":"' + name().encode() + b'","properties":{"a":"\\ud800"}}]}')
    raw(
        "surrogate pair",
        b'{"events":[{"name":"' + name().encode() + b'","properties":{"a":"\\ud83d\\ude00"}}]}',
    )
    raw(
        "NUL in an invalid sessionId",
        b'{"events":[{"name":"' + name().encode() + b'","sessionId":"x\\u0000"}]}',
    )
    # -- names and ids
    batch("name missing", {"distinctId": "u"})
    batch("name empty", {"name": ""})
    batch("name number", {"name": 5})
    batch("name null", {"name": None})
    batch("distinctId number", {"name": name(), "distinctId": 5})
    batch("distinctId long", {"name": name(), "distinctId": "d" * 1000})
    batch("pageUrl boolean", {"name": name(), "pageUrl": True})
    # -- sessions
    batch("sessionId valid (first use)", {"name": name(), "sessionId": session}, session=session)
    batch("sessionId same project", {"name": name(), "sessionId": session}, session=session)
    batch(
        "sessionId of another project",
        {"name": name(), "sessionId": session},
        session=session,
        auth="Bearer {key:free}",
    )
    upper = uuid.uuid4().hex.upper()
    batch("sessionId upper-case hex", {"name": name(), "sessionId": upper}, session=upper)
    batch("sessionId 31 hex", {"name": name(), "sessionId": session[:31]}, session=session[:31])
    batch("sessionId 33 hex", {"name": name(), "sessionId": session + "a"}, session=session + "a")
    batch("sessionId not hex", {"name": name(), "sessionId": "sess-1"}, session="sess-1")
    batch("sessionId empty", {"name": name(), "sessionId": ""}, session="")
    batch("sessionId number", {"name": name(), "sessionId": 5})
    fresh = uuid.uuid4().hex
    batch(
        "two events share a new session",
        {"name": name(), "sessionId": fresh},
        {"name": name(), "sessionId": fresh},
        session=fresh,
    )
    # -- keys and scopes
    batch("no Authorization", {"name": name()}, auth=None)
    batch("lower-case bearer", {"name": name()}, auth="bearer {key:max}")
    batch("Bearer without key", {"name": name()}, auth="Bearer ")
    batch("two spaces after Bearer", {"name": name()}, auth="Bearer  {key:max}")
    batch("Token scheme", {"name": name()}, auth="Token {key:max}")
    batch("unknown key", {"name": name()}, auth="Bearer sk_live_" + "A" * 43)
    batch("public key", {"name": name()}, auth="Bearer {key:public}")
    batch("free key", {"name": name()}, auth="Bearer {key:free}")
    batch("free public key", {"name": name()}, auth="Bearer {key:free_public}")
    batch("api_key query", {"name": name()}, auth=None, query="api_key={key:max}")
    batch("api_key query, empty Authorization", {"name": name()}, auth="", query="api_key={key:max}")
    batch("api_key query, bad Authorization", {"name": name()}, auth="Bearer nope", query="api_key={key:max}")
    batch("api_key query empty", {"name": name()}, auth=None, query="api_key=")
    batch(
        "api_key query and idempotency_key",
        {"name": name()},
        auth=None,
        query="api_key={key:max}&idempotency_key=k1",
    )
    cases.append(
        Case(
            "api_key query on /events",
            path=EVENTS,
            body=_j({"name": name()}),
            auth=None,
            query="api_key={key:max}",
        )
    )
    batch("Bearer without a space", {"name": name()}, auth="Bearer")
    batch("api_key query, Authorization 'Bearer'", {"name": name()}, auth="Bearer", query="api_key={key:max}")
    batch("api_key query twice", {"name": name()}, auth=None, query="api_key={key:max}&api_key=nope")
    batch(
        "api_key query twice, bad first", {"name": name()}, auth=None, query="api_key=nope&api_key={key:max}"
    )
    batch("api_key query, public key", {"name": name()}, auth=None, query="api_key={key:public}")
    batch("api_key query, percent-encoded", {"name": name()}, auth=None, query="api%5Fkey={key:max}")
    batch("key with a trailing space", {"name": name()}, auth="Bearer {key:max} ")
    batch("other query parameters", {"name": name()}, query="foo=1&bar")
    batch("Content-Type text/plain", {"name": name()}, headers={"Content-Type": "text/plain"})
    key = str(uuid.uuid4())
    batch("idempotency key, first", {"name": name()}, headers={"X-Idempotency-Key": key})
    cases.append(Case("idempotency key, resent", body=cases[-1].body, headers={"X-Idempotency-Key": key}))
    # -- methods and paths
    for method in ("GET", "PUT", "PATCH", "DELETE", "HEAD"):
        cases.append(Case(f"{method} batch", method=method, body=None))
    for path in (BATCH, EVENTS, IDENTIFY):
        cases.append(Case(f"OPTIONS {path}", path=path, method="OPTIONS", body=None, auth=None))
    cases.append(Case("GET identify", path=IDENTIFY, method="GET", body=None))
    raw("trailing slash", _j({"events": [{"name": name()}]}), path=BATCH + "/")
    raw("trailing slash with query", _j({"events": [{"name": name()}]}), path=BATCH + "/", query="a=1")
    raw("double slash", _j({"events": [{"name": name()}]}), path="/api/v1//events/batch")
    raw("unknown path", b"{}", path="/api/v1/nope")
    cases.append(Case("OPTIONS unknown path", path="/api/v1/nope", method="OPTIONS", body=None, auth=None))
    raw("path in upper case", _j({"events": [{"name": name()}]}), path="/api/v1/Events/batch")
    # -- POST /events
    single = name()
    raw("single event", _j({"name": single}), path=EVENTS)
    raw(
        "single event, all fields",
        _j(
            {"name": name(), "distinctId": "u", "properties": {"a": 1}, "timestamp": "2026-02-01T00:00:00.5Z"}
        ),
        path=EVENTS,
    )
    raw(
        "single event, valid sessionId",
        _j({"name": name(), "sessionId": session}),
        path=EVENTS,
        session=session,
    )
    raw(
        "single event, sessionId of another project",
        _j({"name": name(), "sessionId": session}),
        path=EVENTS,
        session=session,
        auth="Bearer {key:free}",
    )
    raw("single event, bad sessionId", _j({"name": name(), "sessionId": "nope"}), path=EVENTS, session="nope")
    raw("single event, batch body", _j({"events": [{"name": name()}]}), path=EVENTS)
    raw("single event, array", b"[]", path=EVENTS)
    raw("single event, malformed", b"{", path=EVENTS)
    raw("single event, bad timestamp", _j({"name": name(), "timestamp": "2024-01-15"}), path=EVENTS)
    raw("single event, no key", _j({"name": name()}), path=EVENTS, auth=None)
    raw("single event, public key", _j({"name": name()}), path=EVENTS, auth="Bearer {key:public}")
    raw(
        "single event, __proto__",
        b'{"name":"' + name().encode() + b'","properties":{"__proto__":1,"b":2}}',
        path=EVENTS,
    )
    raw("single event, properties null", _j({"name": name(), "properties": None}), path=EVENTS)

    # -- POST /identify
    def ident(case: str, body: bytes, **kw: Any) -> None:
        cases.append(Case(case, path=IDENTIFY, body=body, **kw))

    ident("identify minimal", _j({"distinctId": f"{tok}-id1"}))
    ident("identify properties", _j({"distinctId": f"{tok}-id2", "properties": {"plan": "pro", "n": 1}}))
    ident("identify merge", _j({"distinctId": f"{tok}-id2", "properties": {"n": 2, "x": {"y": 1}}}))
    ident("identify properties null", _j({"distinctId": f"{tok}-id3", "properties": None}))
    ident("identify properties array", _j({"distinctId": f"{tok}-id3", "properties": []}))
    ident("identify distinctId missing", _j({"properties": {}}))
    ident("identify distinctId empty", _j({"distinctId": ""}))
    ident("identify distinctId number", _j({"distinctId": 5}))
    ident("identify distinctId 256", _j({"distinctId": f"{tok}-" + "d" * (256 - len(tok) - 1)}))
    ident("identify distinctId 257", _j({"distinctId": f"{tok}-" + "d" * (257 - len(tok) - 1)}))
    ident("identify distinctId 128 emoji", _j({"distinctId": "😀" * 128}))
    ident("identify distinctId 129 emoji", _j({"distinctId": "😀" * 129}))
    ident(
        "identify __proto__",
        b'{"distinctId":"' + f"{tok}-id4".encode() + b'","properties":{"__proto__":{"a":1},"b":1}}',
    )
    ident(
        "identify big int",
        b'{"distinctId":"' + f"{tok}-id5".encode() + b'","properties":{"v":9007199254740993,"w":1e400}}',
    )
    ident("identify NUL", b'{"distinctId":"' + f"{tok}-id6".encode() + b'","properties":{"a":"\\u0000"}}')
    ident("identify malformed", b"{")
    ident("identify empty body", b"")
    ident("identify no key", _j({"distinctId": f"{tok}-id7"}), auth=None)
    ident("identify public key", _j({"distinctId": f"{tok}-id8"}), auth="Bearer {key:public}")
    ident("identify api_key query", _j({"distinctId": f"{tok}-id9"}), auth=None, query="api_key={key:max}")
    ident("identify free key", _j({"distinctId": f"{tok}-id10"}), auth="Bearer {key:free}")
    ident("identify quota key", _j({"distinctId": f"{tok}-id11"}), auth="Bearer {key:quota}")
    ident(
        "identify 2000 levels deep",
        b'{"distinctId":"' + f"{tok}-id12".encode() + b'","properties":{"a":' + deep.encode() + b"}}",
    )
    # -- routes owned by other modules (compared once they are registered)
    cases.append(Case("errors route (max)", path="/api/v1/errors", body=_j({"message": "boom"})))
    cases.append(
        Case(
            "errors route (free, 402)",
            path="/api/v1/errors",
            body=_j({"message": "boom"}),
            auth="Bearer {key:free}",
        )
    )
    cases.append(
        Case("llm route (free, 402)", path="/api/v1/llm", body=_j({"model": "m"}), auth="Bearer {key:free}")
    )
    cases.append(
        Case(
            "flags route (free, 402)", path="/api/v1/flags", method="GET", body=None, auth="Bearer {key:free}"
        )
    )
    for path in ("/api/v1/errors", "/api/v1/llm", "/api/v1/flags"):
        method = "GET" if "flags" in path else "POST"
        cases.append(Case(f"OPTIONS {path}", path=path, method="OPTIONS", body=None, auth=None))
        cases.append(Case(f"PUT {path}", path=path, method="PUT", body=b"{}"))
        cases.append(Case(f"{path} without a key", path=path, method=method, body=b"{}", auth=None))
    errors, llm = "/api/v1/errors", "/api/v1/llm"
    cases.append(
        Case(
            "errors, public key",
            path=errors,
            body=_j({"message": "boom", "type": "E"}),
            auth="Bearer {key:public}",
        )
    )
    cases.append(Case("errors, malformed", path=errors, body=b"{"))
    cases.append(Case("errors, bad level", path=errors, body=_j({"message": "m", "level": "fatal"})))
    cases.append(
        Case("llm (max)", path=llm, body=_j({"model": "gpt-4o", "inputTokens": 3, "outputTokens": 4}))
    )
    cases.append(Case("llm, malformed", path=llm, body=b"{"))
    cases.append(Case("llm, float tokens", path=llm, body=_j({"model": "m", "inputTokens": 1.5})))
    cases.append(Case("llm, no model", path=llm, body=_j({"provider": "x"})))
    flags_query = Case(
        "flags, api_key query",
        path="/api/v1/flags",
        method="GET",
        body=None,
        auth=None,
        query="api_key={key:max}",
    )
    cases.append(flags_query)
    return cases


# --------------------------------------------------------------------------------------------------------
# Sending and normalising


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def send(base: str, case: Case, keys: dict[str, str]) -> Answer:
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=60)
    try:

        def fill(text: str) -> str:
            return re.sub(r"\{key:(\w+)\}", lambda m: keys[m.group(1)], text)

        headers = {"Content-Type": "application/json", "User-Agent": "serla-fidelity/1"}
        if case.auth is not None:
            headers["Authorization"] = fill(case.auth)
        headers.update(case.headers)
        target = case.path + ("?" + fill(case.query) if case.query else "")
        conn.putrequest(case.method, target, skip_accept_encoding=True)
        body = case.body
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None and case.chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for start in range(0, len(body), 7):
                piece = body[start : start + 7]
                conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def send_real(real: RealServer, case: Case) -> Answer:
    """Send to the real server; after a per-minute 429, wait for the window's end once and send again.

    The real limiter keeps its windows in memory across test runs and tests: an earlier test within the
    last minute may have used this project's budget. A request refused by the limiter had no effect.
    """
    answer = send(real.host, case, real.keys)
    if answer.status == 429 and "retry-after" in answer.headers:
        time.sleep(min(61, int(answer.headers["retry-after"]) + 1))
        answer = send(real.host, case, real.keys)
    return answer


def norm_body(answer: Answer, case: Case) -> Any:
    if answer.status == 404:
        return "<html 404>"
    try:
        value = json.loads(answer.body) if answer.body else None
    except ValueError:
        return answer.body.decode("utf-8", "replace")
    if isinstance(value, dict):
        value = dict(value)
        for key in _ID_KEYS:
            if isinstance(value.get(key), str) and re.fullmatch(r"[0-9a-f-]{36}", value[key]):
                value[key] = "<uuid>"
        sid = value.get("sessionId")
        if isinstance(sid, str):
            value["sessionId"] = (
                "<kept>" if sid == case.session else "<new>" if re.fullmatch("[0-9a-f]{32}", sid) else sid
            )
        if isinstance(value.get("retryAfter"), int):
            value["retryAfter"] = "<seconds>"
    return value


def norm_headers(answer: Answer) -> dict[str, str]:
    out = {}
    for name in _HEADERS:
        if name in answer.headers:
            out[name] = "<present>" if name == "retry-after" else answer.headers[name]
    if answer.status != 204 and answer.body:
        out["json"] = str(answer.headers.get("content-type", "").startswith("application/json"))
    return out


def same_number(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        try:
            return float(a) == float(b)
        except OverflowError:
            return a == b
    return False


def same(a: Any, b: Any) -> bool:
    """Equality of JSON values, numbers compared as doubles (JSONB prints 1e21 as 1000000000000000000000)."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if isinstance(x, dict) and isinstance(y, dict):
            if x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list) and isinstance(y, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y))
        elif isinstance(x, (int, float)) or isinstance(y, (int, float)):
            if not same_number(x, y):
                return False
        elif x != y:
            return False
    return True


def _loads(text: str) -> Any:
    """JSON as Python reads it, at any depth (``properties::text`` of a 2,000-level value)."""
    try:
        return json.loads(text)
    except RecursionError:
        return parse_json(text.encode())


def real_rows(real: RealServer, tok: str) -> dict[str, list[dict[str, Any]]]:
    rows = real.sql(
        "select name, distinct_id, properties::text as properties,"
        " (extract(epoch from timestamp) * 1000)::bigint as ts,"
        " session_id, page_url, page_path, page_title, referrer, click_x, click_y, element_selector,"
        f" project_id::text as project from events where name like '{tok}-%'"
    )
    for row in rows:
        row["properties"] = _loads(row["properties"])
    return _group(rows)


def local_rows(
    stored: list[StoredEvent], tok: str, projects: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    rows = []
    for event in stored:
        data = event.data
        if not str(data.get("name", "")).startswith(f"{tok}-"):
            continue
        stamp = data.get("timestamp")
        rows.append(
            {
                "name": data["name"],
                "distinct_id": data.get("distinctId"),
                "properties": data.get("properties", {}),
                "ts": round(event.time * 1000) if isinstance(stamp, str) else None,
                "session_id": event.session_id,
                "page_url": data.get("pageUrl"),
                "page_path": data.get("pagePath"),
                "page_title": data.get("pageTitle"),
                "referrer": data.get("referrer"),
                "click_x": data.get("clickX"),
                "click_y": data.get("clickY"),
                "element_selector": data.get("elementSelector"),
                "project": projects[event.project_id],
            }
        )
    return _group(rows)


def _group(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows by the event-name prefix ``{tok}-NNN`` that ties them to a case's request."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(str(row["name"])[: len(str(row["name"]).split("-")[0]) + 4], []).append(row)
    for group in out.values():
        group.sort(key=lambda r: (r["name"], dumps(r["properties"])[:200]))
    return out


def comparable_rows(rows: list[dict[str, Any]], case: Case | None) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        row = dict(row)
        sid = row.pop("session_id")
        row["session"] = "<kept>" if case is not None and sid == case.session else "<new>"
        if not _sent_timestamp(case):
            row["ts"] = "<receive time>"
        out.append(row)
    return out


# --------------------------------------------------------------------------------------------------------
# The test


@pytest.fixture
def local(realserver: RealServer) -> Iterator[tuple[SerlaServer, dict[str, str], dict[str, str]]]:
    """Our server with projects mirroring the harness's, each with fresh keys of its own."""
    keys = {
        alias: f"{'pk' if 'public' in alias else 'sk'}_live_{secrets.token_urlsafe(32)}"
        for alias in realserver.keys
    }
    projects = [
        Project(
            PROJECTS["max"], keys=[keys["max"]], public_keys=[keys["public"]], plan="max", owner="harness"
        ),
        Project(
            PROJECTS["free"],
            keys=[keys["free"]],
            public_keys=[keys["free_public"]],
            plan="free",
            owner="free",
        ),
        Project(PROJECTS["rl"], keys=[keys["rl"]], plan="max", owner="harness"),
        Project(PROJECTS["quota"], keys=[keys["quota"]], plan="free", owner="quota"),
    ]
    with SerlaServer(projects=projects) as server:
        yield server, keys, {p.id: p.id for p in projects}


Difference = tuple[str, str, Any, Any]


def compare_case(case: Case, real: Answer, ours: Answer) -> list[Difference]:
    diffs: list[Difference] = []
    if real.status != ours.status:
        diffs.append((case.name, "status", real.status, ours.status))
    if norm_body(real, case) != norm_body(ours, case):
        diffs.append((case.name, "body", norm_body(real, case), norm_body(ours, case)))
    if norm_headers(real) != norm_headers(ours):
        diffs.append((case.name, "headers", norm_headers(real), norm_headers(ours)))
    return diffs


def dangerous(diff: Difference, answers: dict[str, tuple[Answer, Answer]]) -> bool:
    """Ours accepts what the real server refuses, or stores something else."""
    name, what, _, _ = diff
    real, ours = answers[name]
    if what == "stored":
        return True
    return 200 <= ours.status < 300 and not 200 <= real.status < 300


def test_the_local_server_answers_and_stores_what_the_real_one_does(
    realserver: RealServer, local: tuple[SerlaServer, dict[str, str], dict[str, str]], unique: str
) -> None:
    server, local_keys, project_names = local
    session = uuid.uuid4().hex
    cases = corpus(unique, session)
    assert len(cases) >= 100
    answers: dict[str, tuple[Answer, Answer]] = {}
    diffs: list[Difference] = []
    for case in cases:
        real = send_real(realserver, case)
        ours = send(server.url, case, local_keys)
        answers[case.name] = (real, ours)
        diffs.extend(compare_case(case, real, ours))

    # What was stored: every event row, grouped by the request that carried it.
    real_by_case = real_rows(realserver, unique)
    ours_by_case = local_rows(server.stored, unique, project_names)
    prefix_case: dict[str, Case] = {}
    for case in cases:
        for match in re.finditer(rf"{unique}-(\d\d\d)".encode(), case.body or b""):
            prefix_case.setdefault(match.group(0).decode(), case)
    for prefix in sorted(set(real_by_case) | set(ours_by_case)):
        case = prefix_case.get(prefix)
        label = case.name if case else prefix
        left = comparable_rows(real_by_case.get(prefix, []), case)
        right = comparable_rows(ours_by_case.get(prefix, []), case)
        if len(left) != len(right) or not all(same(x, y) for x, y in zip(left, right)):
            diffs.append((label, "stored", left[:3], right[:3]))

    # People: identify upserts, read back per project.
    real_people = {
        r["distinct_id"]: _loads(r["properties"])
        for r in realserver.sql(
            f"select distinct_id, properties::text as properties from identities where distinct_id like '{unique}-%'"
        )
    }
    ours_people = {
        d: p
        for pid in project_names
        for d, p in server.store.identities(pid).items()
        if d.startswith(f"{unique}-")
    }
    if not same(real_people, ours_people):
        diffs.append(("identify", "stored", real_people, ours_people))
    assert real_people, "the identify cases stored nobody on the real server"

    # The comparison saw what matters (a guard against a read-back that silently finds nothing).
    stored_real = {
        case.name: rows for prefix, rows in real_by_case.items() if (case := prefix_case.get(prefix))
    }
    assert sum(len(rows) for rows in real_by_case.values()) >= 150
    assert stored_real["number 2^53+1"][0]["properties"] == {"v": 9007199254740992}
    assert stored_real["number 1e400"][0]["properties"] == {"v": None}
    assert stored_real["__proto__ property"][0]["properties"] == {"a": 1}
    assert stored_real["timestamp '2024-01-15T10:30:00.123456789Z'"][0]["ts"] % 1000 == 123
    assert stored_real["2000 levels deep"], "the 2,000-level body was not stored"

    allowed_now = dict(ALLOWED)
    for case in cases:
        if case.name in NOT_REGISTERED and case.path not in ROUTES:
            allowed_now[case.name] = NOT_REGISTERED[case.name]
    allowed = [d for d in diffs if d[0] in allowed_now]
    unexplained = [d for d in diffs if d[0] not in allowed_now]
    bad = [d for d in diffs if (d[0] in answers and dangerous(d, answers)) or d[1] == "stored"]
    stale = [name for name in ALLOWED if not any(d[0] == name for d in diffs)]
    report = "\n".join(f"  {n} [{w}]: real={_show(r)} ours={_show(o)}" for n, w, r, o in unexplained + bad)
    assert not bad, (
        f"dangerous differences (ours accepts or stores what the real server refuses or changes):\n{report}"
    )
    assert not unexplained, f"{len(unexplained)} differences not in ALLOWED:\n{report}"
    assert not stale, f"ALLOWED lists cases that no longer differ (remove them): {stale}"
    assert all(not dangerous(d, answers) for d in allowed)


def _show(value: Any) -> str:
    """A short text of a value, at any depth."""
    try:
        return dumps(value)[:300]
    except (TypeError, ValueError):
        return repr(value)[:300]


def _sent_timestamp(case: Case | None) -> bool:
    if case is None or case.body is None:
        return False
    return b'"timestamp":"' in case.body


# --------------------------------------------------------------------------------------------------------
# Limits: per-minute (per project and endpoint) and the monthly quota


def _limited_after(
    base: str, keys: dict[str, str], alias: str, path: str, body: bytes, bound: int
) -> tuple[int, Answer]:
    """Send until the first 429; return how many were accepted first and the 429."""
    for sent in range(bound):
        answer = send(base, Case("flood", path=path, body=body, auth=f"Bearer {{key:{alias}}}"), keys)
        if answer.status == 429:
            return sent, answer
        assert answer.status == 201, answer.body
    raise AssertionError(f"no 429 after {bound} requests")


def _check_429(answer: Answer, limit: int, window: float) -> None:
    body = json.loads(answer.body)
    assert set(body) == {"error", "retryAfter"} and body["error"] == "Too many requests"
    assert 0 <= body["retryAfter"] <= math.ceil(window)
    assert answer.headers["retry-after"] == str(body["retryAfter"])
    assert answer.headers["x-ratelimit-limit"] == str(limit)
    assert answer.headers["x-ratelimit-remaining"] == "0"
    reset = int(answer.headers["x-ratelimit-reset"])
    assert abs(reset - (time.time() + body["retryAfter"]) * 1000) <= 2000
    assert answer.headers["access-control-allow-origin"] == "*"


def test_rate_limits_are_per_project_and_endpoint_on_both(
    realserver: RealServer, local: tuple[SerlaServer, dict[str, str], dict[str, str]], unique: str
) -> None:
    server, local_keys, _ = local
    body = _j({"events": [{"name": f"{unique}-rl"}]})
    real_ok, real_429 = _limited_after(realserver.host, realserver.keys, "rl", BATCH, body, 102)
    ours_ok, ours_429 = _limited_after(server.url, local_keys, "rl", BATCH, body, 102)
    # The real window may already hold requests of an earlier run; ours starts fresh.
    assert ours_ok == 100 and 0 <= real_ok <= 100
    _check_429(real_429, 100, 60)
    _check_429(ours_429, 100, 60)
    # Another endpoint of the same project, and the same endpoint of another project, still pass.
    others = (
        Case("events", path=EVENTS, body=_j({"name": f"{unique}-rl"}), auth="Bearer {key:rl}"),
        Case("another project", body=body),
        Case("identify", path=IDENTIFY, body=_j({"distinctId": f"{unique}-rl"}), auth="Bearer {key:rl}"),
    )
    assert [send_real(realserver, case).status for case in others] == [201, 201, 200]
    assert [send(server.url, case, local_keys).status for case in others] == [201, 201, 200]


def test_the_monthly_quota_on_both(
    realserver: RealServer, local: tuple[SerlaServer, dict[str, str], dict[str, str]], unique: str
) -> None:
    server, local_keys, _ = local
    quota = PROJECTS["quota"]
    realserver.execute(f"delete from events where project_id = '{quota}'")
    realserver.execute(
        f"insert into events (project_id, name) select '{quota}', 'fill' from generate_series(1, 25000)"
    )
    try:
        fill = [
            StoredEvent({"name": "fill"}, None, i, "", received_at=time.time(), project_id=quota)
            for i in range(25_000)
        ]
        with server.locked_store() as store:
            store.add_events(fill)
        body = _j({"events": [{"name": f"{unique}-q"}]})
        answers = []
        for base, keys in ((realserver.host, realserver.keys), (server.url, local_keys)):
            batch = send(base, Case("quota batch", body=body, auth="Bearer {key:quota}"), keys)
            single = send(
                base,
                Case("quota event", path=EVENTS, body=_j({"name": f"{unique}-q"}), auth="Bearer {key:quota}"),
                keys,
            )
            ident = send(
                base,
                Case(
                    "quota identify",
                    path=IDENTIFY,
                    body=_j({"distinctId": f"{unique}-q"}),
                    auth="Bearer {key:quota}",
                ),
                keys,
            )
            answers.append((batch, single, ident))
        for batch, single, ident in answers:
            for answer in (batch, single):
                assert answer.status == 429 and "retry-after" not in answer.headers
                assert json.loads(answer.body) == {
                    "error": "Rate limit exceeded",
                    "message": "Monthly event limit of 25,000 exceeded. Please upgrade your plan.",
                }
            assert ident.status == 200  # identify has no quota
        # Back-dated events do not count toward this month.
        realserver.execute(
            f"update events set timestamp = timestamp - interval '62 days' where project_id = '{quota}'"
        )
        with server.locked_store() as store:
            store.clear()
            store.add_events(
                [
                    StoredEvent(
                        {"name": "fill", "timestamp": "2020-01-01T00:00:00.000Z"},
                        None,
                        0,
                        "",
                        project_id=quota,
                    )
                ]
            )
        for base, keys in ((realserver.host, realserver.keys), (server.url, local_keys)):
            assert send(base, Case("quota batch", body=body, auth="Bearer {key:quota}"), keys).status == 201
    finally:
        realserver.execute(f"delete from events where project_id = '{quota}'")


def test_free_plan_gates_are_402_with_the_real_text(
    realserver: RealServer, local: tuple[SerlaServer, dict[str, str], dict[str, str]]
) -> None:
    """The 402 that ``SerlaServer.authorize`` sends is the real one; over HTTP too once a route is registered."""
    server, local_keys, _ = local
    for bucket, path, method, body in (
        ("errors", "/api/v1/errors", "POST", _j({"message": "boom"})),
        ("llm", "/api/v1/llm", "POST", _j({"model": "m"})),
        ("flags", "/api/v1/flags", "GET", None),
    ):
        case = Case("gate", path=path, method=method, body=body, auth="Bearer {key:free}")
        real = send(realserver.host, case, realserver.keys)
        assert real.status == 402
        assert json.loads(real.body) == {"error": PLAN_FEATURES[bucket][1]}
        assert real.headers["access-control-allow-origin"] == "*"
        if path in ROUTES:
            ours = send(server.url, case, local_keys)
            assert (ours.status, json.loads(ours.body)) == (402, json.loads(real.body))
