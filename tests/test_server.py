"""Tests for ``serla.devtools.server``: the local Serla server, over real sockets on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from serla.devtools.server import (
    BATCH_PATH,
    EVENTS_PATH,
    IDENTIFY_PATH,
    Fault,
    MemoryStore,
    Project,
    RecordedRequest,
    Response,
    SerlaServer,
    is_valid_timestamp,
    serve,
)
from serla.devtools.validation import stored_timestamp

pytestmark = pytest.mark.timeout(10)

KEY = "sk_live_test"


class Result:
    """A response read off the wire."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.getheaders()}
        self.body = response.read()

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """A persistent ``http.client`` connection to the server."""

    def __init__(self, server: SerlaServer, timeout: float = 5.0) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: str | None = f"Bearer {KEY}",
        headers: dict[str, str] | None = None,
    ) -> Result:
        if body is None or isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = json.dumps(body).encode("utf-8")
        all_headers = {"Content-Type": "application/json"}
        if auth is not None:
            all_headers["Authorization"] = auth
        all_headers.update(headers or {})
        self.conn.request(method, path, data, all_headers)
        return Result(self.conn.getresponse())

    def post(self, path: str, body: Any, **kwargs: Any) -> Result:
        return self.request("POST", path, body, **kwargs)

    def batch(self, *events: Any, **kwargs: Any) -> Result:
        return self.post(BATCH_PATH, {"events": list(events)}, **kwargs)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer() as srv:
        yield srv


@pytest.fixture
def client(server: SerlaServer) -> Iterator[Client]:
    c = Client(server)
    yield c
    c.close()


def issue(result: Result, index: int = 0) -> dict[str, Any]:
    details: list[dict[str, Any]] = result.json()["details"]
    return details[index]


# ---- timestamps (SERLA_API.md section 3, every row) ----------------------------------------------------

ACCEPTED_TIMESTAMPS = [
    "2024-01-15T10:30:00Z",
    "2024-01-15T10:30:00.123Z",
    "2024-01-15T10:30:00.123456Z",
    "2024-01-15T10:30:00.123456789Z",
    "2024-01-15T10:30Z",
    "2024-02-29T00:00:00Z",
    "2000-02-29T00:00:00Z",
    "2024-12-31T23:59:59.9Z",
]
REJECTED_TIMESTAMPS = [
    "2024-01-15T10:30:00+00:00",
    "2024-01-15T10:30:00+02:00",
    "2024-01-15T10:30:00-05:00",
    "2024-01-15T10:30:00+0200",
    "2024-01-15T10:30:00",
    "2024-01-15T10:30:00z",
    "2024-01-15t10:30:00Z",
    "2024-01-15 10:30:00Z",
    "2024-01-15",
    "2023-02-29T00:00:00Z",
    "1900-02-29T00:00:00Z",
    "2024-02-30T00:00:00Z",
    "2024-04-31T00:00:00Z",
    "2024-13-01T00:00:00Z",
    "2024-00-10T00:00:00Z",
    "2024-01-00T00:00:00Z",
    "2024-01-15T24:00:00Z",
    "2024-01-15T10:60:00Z",
    "2024-01-15T10:30:60Z",
    "2024-01-15T10:30:00.Z",
    "20240115T103000Z",
    "+002024-01-15T10:30:00Z",
    " 2024-01-15T10:30:00Z",
    "2024-01-15T10:30:00Z ",
    "2024-01-15T10:30:00Z\n",
    "\n2024-01-15T10:30:00Z",
    "2024-01-15T10:3Z",
    "\uff12\uff10\uff12\uff14-01-15T10:30:00Z",  # full-width digits: ``\d`` would match them
    "",
]


@pytest.mark.parametrize("stamp", ACCEPTED_TIMESTAMPS)
def test_timestamp_accepted(client: Client, server: SerlaServer, stamp: str) -> None:
    result = client.batch({"name": "e", "timestamp": stamp})
    assert result.status == 201, result.body
    # Stored as the real server stores it: new Date(stamp).toISOString(), cut to milliseconds.
    assert server.events == [{"name": "e", "timestamp": stored_timestamp(stamp)}]


@pytest.mark.parametrize("stamp", REJECTED_TIMESTAMPS)
def test_timestamp_rejected(client: Client, server: SerlaServer, stamp: str) -> None:
    result = client.batch({"name": "ok"}, {"name": "e", "timestamp": stamp})
    assert result.status == 400
    assert result.json()["error"] == "Invalid batch data"
    found = issue(result)
    assert found["code"] == "invalid_format"
    assert found["format"] == "datetime"
    assert found["path"] == ["events", 1, "timestamp"]
    assert "message" in found
    assert server.events == []
    assert not is_valid_timestamp(stamp)


@pytest.mark.parametrize("stamp", [1705314600, 1705314600000, 1.5, True, {"iso": "x"}])
def test_timestamp_wrong_type(client: Client, stamp: Any) -> None:
    result = client.batch({"name": "e", "timestamp": stamp})
    assert result.status == 400
    assert issue(result)["code"] == "invalid_type"
    assert issue(result)["expected"] == "string"
    assert issue(result)["path"] == ["events", 0, "timestamp"]


def test_timestamp_null_or_absent(client: Client, server: SerlaServer) -> None:
    assert client.batch({"name": "a", "timestamp": None}, {"name": "b"}).status == 201
    assert server.events == [{"name": "a", "timestamp": None}, {"name": "b"}]


def test_timestamp_on_single_event(client: Client) -> None:
    bad = client.post(EVENTS_PATH, {"name": "e", "timestamp": "2024-01-15T10:30:00+00:00"})
    assert bad.status == 400
    assert bad.json()["error"] == "Invalid event data"
    assert issue(bad)["path"] == ["timestamp"]
    assert client.post(EVENTS_PATH, {"name": "e", "timestamp": "2024-01-15T10:30Z"}).status == 201


# ---- batch shape -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "status"), [(0, 400), (1, 201), (100, 201), (101, 400)])
def test_batch_size(client: Client, server: SerlaServer, size: int, status: int) -> None:
    result = client.batch(*[{"name": f"e{i}"} for i in range(size)])
    assert result.status == status
    if status == 201:
        assert result.json() == {"success": True, "count": size}
        assert [e["name"] for e in server.events] == [f"e{i}" for i in range(size)]
    else:
        found = issue(result)
        assert found["code"] == ("too_small" if size == 0 else "too_big")
        assert found["path"] == ["events"]
        assert found["origin"] == "array"
        assert server.events == []


@pytest.mark.parametrize(
    ("body", "expected", "path"),
    [
        ([{"name": "e"}], "object", []),
        ("a string", "object", []),
        (None, "object", []),
        ({}, "array", ["events"]),
        ({"events": {"name": "e"}}, "array", ["events"]),
        ({"events": ["e"]}, "object", ["events", 0]),
    ],
)
def test_batch_body_shape(client: Client, body: Any, expected: str, path: list[Any]) -> None:
    result = client.post(BATCH_PATH, json.dumps(body))
    assert result.status == 400
    assert result.json()["error"] == "Invalid batch data"
    assert issue(result)["code"] == "invalid_type"
    assert issue(result)["expected"] == expected
    assert issue(result)["path"] == path


def test_one_bad_event_rejects_whole_batch_with_index(client: Client, server: SerlaServer) -> None:
    result = client.batch({"name": "a"}, {"name": "b"}, {"name": ""}, {"name": "d"})
    assert result.status == 400
    assert result.json()["details"] == [
        {
            "origin": "string",
            "code": "too_small",
            "minimum": 1,
            "inclusive": True,
            "path": ["events", 2, "name"],
            "message": "Event name is required",  # the schema's own message
        }
    ]
    assert server.events == []


def test_every_issue_is_reported(client: Client) -> None:
    result = client.batch({"distinctId": 5, "pageUrl": True}, {"name": "ok", "clickX": "1"})
    paths = [d["path"] for d in result.json()["details"]]
    assert paths == [
        ["events", 0, "name"],
        ["events", 0, "distinctId"],
        ["events", 0, "pageUrl"],
        ["events", 1, "clickX"],
    ]
    assert result.json()["details"][0]["message"] == "Invalid input: expected string, received undefined"


@pytest.mark.parametrize(
    "field", ["distinctId", "sessionId", "pageUrl", "pagePath", "pageTitle", "referrer", "elementSelector"]
)
@pytest.mark.parametrize("value", [1, 1.5, True, ["x"], {"x": 1}])
def test_string_fields_reject_other_types(client: Client, field: str, value: Any) -> None:
    result = client.batch({"name": "e", field: value})
    assert result.status == 400
    assert issue(result)["code"] == "invalid_type"
    assert issue(result)["expected"] == "string"
    assert issue(result)["path"] == ["events", 0, field]


def test_nullable_fields_accept_null(client: Client, server: SerlaServer) -> None:
    event = {
        "name": "e",
        "timestamp": None,
        "distinctId": None,
        "sessionId": None,
        "pageUrl": None,
        "pagePath": None,
        "pageTitle": None,
        "referrer": None,
        "clickX": None,
        "clickY": None,
        "elementSelector": None,
    }
    assert client.batch(event).status == 201
    assert server.events == [event]


@pytest.mark.parametrize("name", [None, 1, ""])
def test_name_required(client: Client, name: Any) -> None:
    result = client.batch({"name": name})
    assert result.status == 400
    assert issue(result)["code"] == ("too_small" if name == "" else "invalid_type")


def test_unknown_fields_stripped_and_camel_case_kept(client: Client, server: SerlaServer) -> None:
    result = client.batch(
        {"name": "a", "distinctId": "user_1", "context": {"ip": "1.2.3.4"}, "messageId": "m"},
        {"name": "b", "distinct_id": "user_2", "event": "x"},
    )
    assert result.status == 201
    assert server.events == [{"name": "a", "distinctId": "user_1"}, {"name": "b"}]


# ---- properties and the "database" 500s ----------------------------------------------------------------


def test_properties_null_is_500(client: Client, server: SerlaServer) -> None:
    result = client.batch({"name": "ok"}, {"name": "e", "properties": None})
    assert result.status == 500
    assert result.json() == {"error": "Internal server error"}
    assert server.events == []
    assert client.post(EVENTS_PATH, {"name": "e", "properties": None}).status == 500


@pytest.mark.parametrize("props", [[1, 2], "x", 3, True])
def test_properties_non_object_is_400(client: Client, props: Any) -> None:
    result = client.batch({"name": "e", "properties": props})
    assert result.status == 400
    assert issue(result)["expected"] == "record"
    assert issue(result)["path"] == ["events", 0, "properties"]


@pytest.mark.parametrize(
    "raw",
    [
        '{"events":[{"name":"e","properties":{"x":NaN}}]}',
        '{"events":[{"name":"e","properties":{"x":Infinity}}]}',
        '{"events":[{"name":"e","properties":{"x":-Infinity}}]}',
        "",
        "{",
        '{"events":[{"name":"e"}]} trailing',
        "{'events': []}",
    ],
)
def test_malformed_json_is_500(client: Client, server: SerlaServer, raw: str) -> None:
    result = client.post(BATCH_PATH, raw)
    assert result.status == 500
    assert result.json() == {"error": "Internal server error"}
    assert client.post(EVENTS_PATH, raw).status == 500
    assert client.post(IDENTIFY_PATH, raw).status == 500
    assert server.events == []


@pytest.mark.parametrize(
    "raw",
    [
        '{"events":[{"name":"a\\u0000b"}]}',
        '{"events":[{"name":"e","properties":{"k":"v\\u0000"}}]}',
        '{"events":[{"name":"e","properties":{"k\\u0000":"v"}}]}',
        '{"events":[{"name":"e","properties":{"deep":[{"x":["\\u0000"]}]}}]}',
        '{"events":[{"name":"e","distinctId":"\\u0000"}]}',
        '{"events":[{"name":"\\ud800"}]}',
        '{"events":[{"name":"e","properties":{"k":"x\\udc00y"}}]}',
        '{"events":[{"name":"e","properties":{"\\ud83d":1}}]}',
        '{"events":[{"name":"e","pageTitle":"\\ude00\\ud83d"}]}',
    ],
)
def test_nul_and_lone_surrogates_are_500(client: Client, server: SerlaServer, raw: str) -> None:
    assert client.post(BATCH_PATH, raw).status == 500
    assert server.events == []


def test_harmless_escapes_are_stored(client: Client, server: SerlaServer) -> None:
    raw = (
        '{"events":[{"name":"\\ud83d\\ude00","properties":{"lit":"\\\\u0000","e":"\\u00e9"},'
        '"sessionId":"bad\\u0000id"},{"name":"e","junk":"\\u0000"}]}'
    )
    assert client.post(BATCH_PATH, raw).status == 201
    first, second = server.events
    assert first["name"] == "\U0001f600"
    assert first["properties"] == {"lit": "\\u0000", "e": "é"}
    assert second == {"name": "e"}
    # The invalid sessionId is replaced (as the server does), so its NUL never reaches the database.
    assert re.fullmatch("[0-9a-f]{32}", server.stored[0].session_id)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (5, 201),
        (5.0, 201),
        (-(2**31), 201),
        (2**31 - 1, 201),
        (1.5, 500),
        (2**31, 500),
        (-(2**31) - 1, 500),
        (1e20, 500),
        ("5", 400),
        (True, 400),
    ],
)
def test_click_coordinates(client: Client, value: Any, status: int) -> None:
    assert client.batch({"name": "e", "clickY": value}).status == status
    assert client.post(EVENTS_PATH, {"name": "e", "clickX": value}).status == status


# ---- single event ------------------------------------------------------------------------------------


def test_single_event_response(client: Client, server: SerlaServer) -> None:
    result = client.post(EVENTS_PATH, {"name": "e", "distinctId": "u", "junk": 1})
    assert result.status == 201
    body = result.json()
    assert body["success"] is True
    assert uuid.UUID(body["eventId"]).version == 4
    assert re.fullmatch("[0-9a-f]{32}", body["sessionId"])
    assert server.events == [{"name": "e", "distinctId": "u"}]
    stored = server.stored[0]
    assert (stored.event_id, stored.session_id, stored.endpoint) == (
        body["eventId"],
        body["sessionId"],
        EVENTS_PATH,
    )


def test_session_id_kept_if_valid_else_replaced(client: Client) -> None:
    valid = "ABCDEF0123456789abcdef0123456789"
    assert client.post(EVENTS_PATH, {"name": "e", "sessionId": valid}).json()["sessionId"] == valid
    replaced = client.post(EVENTS_PATH, {"name": "e", "sessionId": "sess-1"}).json()["sessionId"]
    assert replaced != "sess-1"
    assert re.fullmatch("[0-9a-f]{32}", replaced)


def test_single_event_body_must_be_object(client: Client) -> None:
    result = client.post(EVENTS_PATH, [{"name": "e"}])
    assert result.status == 400
    assert issue(result)["path"] == []


# ---- identify ----------------------------------------------------------------------------------------


def test_identify_shallow_merge(client: Client, server: SerlaServer) -> None:
    first = client.post(IDENTIFY_PATH, {"distinctId": "u1", "properties": {"a": 1, "nested": {"x": 1}}})
    assert first.status == 200
    assert first.json()["success"] is True
    identity_id = first.json()["identityId"]
    uuid.UUID(identity_id)
    second = client.post(IDENTIFY_PATH, {"distinctId": "u1", "properties": {"b": 2, "nested": {"y": 2}}})
    assert second.json()["identityId"] == identity_id
    assert client.post(IDENTIFY_PATH, {"distinctId": "u1", "properties": {"a": None}}).status == 200
    assert client.post(IDENTIFY_PATH, {"distinctId": "u2", "extra": 1}).status == 200
    assert server.identities == {"u1": {"a": None, "b": 2, "nested": {"y": 2}}, "u2": {}}
    assert server.events == []


@pytest.mark.parametrize(
    ("body", "code", "path"),
    [
        ({}, "invalid_type", ["distinctId"]),
        ({"distinct_id": "u"}, "invalid_type", ["distinctId"]),
        ({"distinctId": 5}, "invalid_type", ["distinctId"]),
        ({"distinctId": ""}, "too_small", ["distinctId"]),
        ({"distinctId": "x" * 257}, "too_big", ["distinctId"]),
        ({"distinctId": "\U0001f600" * 129}, "too_big", ["distinctId"]),
        ({"distinctId": "u", "properties": None}, "invalid_type", ["properties"]),
        ({"distinctId": "u", "properties": [1]}, "invalid_type", ["properties"]),
        ([], "invalid_type", []),
    ],
)
def test_identify_validation(client: Client, body: Any, code: str, path: list[Any]) -> None:
    result = client.post(IDENTIFY_PATH, body)
    assert result.status == 400
    assert result.json()["error"] == "Invalid identify data"
    assert issue(result)["code"] == code
    assert issue(result)["path"] == path


def test_identify_limits_count_utf16_units(client: Client, server: SerlaServer) -> None:
    assert client.post(IDENTIFY_PATH, {"distinctId": "x" * 256}).status == 200
    assert client.post(IDENTIFY_PATH, {"distinctId": "\U0001f600" * 128}).status == 200
    assert client.post(IDENTIFY_PATH, {"distinctId": " padded "}).status == 200
    assert " padded " in server.identities


@pytest.mark.parametrize(
    "raw", ['{"distinctId":"a\\u0000"}', '{"distinctId":"u","properties":{"k":"\\ud800"}}']
)
def test_identify_db_rejects(client: Client, raw: str) -> None:
    assert client.post(IDENTIFY_PATH, raw).status == 500


# ---- authentication ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth", [None, "", "bearer x", "Bearer", "Bearer ", "Bearer \t", "Basic eDp5", "Token x", f"BEARER {KEY}"]
)
def test_auth_rejected(client: Client, server: SerlaServer, auth: str | None) -> None:
    for path, body in ((BATCH_PATH, {"events": [{"name": "e"}]}), (EVENTS_PATH, {"name": "e"})):
        result = client.post(path, body, auth=auth)
        assert result.status == 401
        assert result.json() == {"error": "Invalid API key"}
    assert client.post(IDENTIFY_PATH, {"distinctId": "u"}, auth=auth).status == 401
    assert server.events == []


def test_auth_before_parsing(client: Client) -> None:
    assert client.post(BATCH_PATH, "not json", auth=None).status == 401


def test_double_space_is_part_of_the_key(server: SerlaServer, client: Client) -> None:
    assert client.batch({"name": "e"}, auth="Bearer  x").status == 201
    assert server.stored[0].api_key == " x"
    with SerlaServer(api_keys={"x"}) as strict:
        c = Client(strict)
        try:
            assert c.batch({"name": "e"}, auth="Bearer  x").status == 401
            assert c.batch({"name": "e"}, auth="Bearer x").status == 201
            assert c.batch({"name": "e"}, auth="Bearer y").status == 401
            assert c.post(IDENTIFY_PATH, {"distinctId": "u"}, auth="Bearer y").status == 401
        finally:
            c.close()


def test_api_key_query_fallback_only_on_batch(client: Client, server: SerlaServer) -> None:
    event = {"name": "e"}
    assert (
        client.post(f"{BATCH_PATH}?api_key={KEY}&idempotency_key=abc", {"events": [event]}, auth=None).status
        == 201
    )
    assert server.stored[0].api_key == KEY
    assert client.post(f"{EVENTS_PATH}?api_key={KEY}", event, auth=None).status == 401
    assert client.post(f"{IDENTIFY_PATH}?api_key={KEY}", {"distinctId": "u"}, auth=None).status == 401
    assert client.post(f"{BATCH_PATH}?api_key=", {"events": [event]}, auth=None).status == 401
    # The header, when present, wins even if it is malformed.
    assert client.post(f"{BATCH_PATH}?api_key={KEY}", {"events": [event]}, auth="bearer x").status == 401


# ---- routing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [BATCH_PATH, EVENTS_PATH, IDENTIFY_PATH])
def test_trailing_slash_redirects(client: Client, server: SerlaServer, path: str) -> None:
    result = client.post(f"{path}/", {"events": [{"name": "e"}]})
    assert result.status == 308
    assert result.headers["location"] == path
    assert client.post(f"{path}/?api_key=x", {}).headers["location"] == f"{path}?api_key=x"
    assert server.events == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD"])
def test_other_methods_are_405(client: Client, method: str) -> None:
    for path in (BATCH_PATH, EVENTS_PATH, IDENTIFY_PATH):
        result = client.request(method, path)
        assert result.status == 405
        assert result.body == b""


def test_options_preflight(client: Client) -> None:
    for path in (BATCH_PATH, EVENTS_PATH, IDENTIFY_PATH):
        result = client.request("OPTIONS", path, auth=None)
        assert result.status == 200  # 204 only on /errors, /llm and /flags
        assert result.headers["access-control-allow-methods"] == "POST, OPTIONS"
        assert result.body == b""
        assert result.headers["access-control-allow-origin"] == "*"
        assert "X-Idempotency-Key" in result.headers["access-control-allow-headers"]


@pytest.mark.parametrize(
    "path", ["/", "/api/v1/track", "/api/v1/batch", "/v1/events/batch", "/api/v1/events/x"]
)
def test_unknown_paths_are_404(client: Client, path: str) -> None:
    assert client.post(path, {"events": [{"name": "e"}]}).status == 404


def test_responses_carry_cors_header_and_no_rate_limit_headers(client: Client) -> None:
    result = client.batch({"name": "e"})
    assert result.headers["access-control-allow-origin"] == "*"
    assert result.headers["content-type"] == "application/json"
    assert not any(name.startswith("x-ratelimit") for name in result.headers)


def test_keep_alive(server: SerlaServer, client: Client) -> None:
    assert client.batch({"name": "a"}).status == 201
    sock = client.conn.sock
    assert sock is not None
    assert client.post(EVENTS_PATH, {"name": "b"}).status == 201
    assert client.post(BATCH_PATH, "{").status == 500
    assert client.request("GET", BATCH_PATH).status == 405
    assert client.batch({"name": "c"}).status == 201
    assert client.conn.sock is sock  # http.client reconnects silently if the server closed it
    assert [e["name"] for e in server.events] == ["a", "b", "c"]


def test_chunked_body(client: Client, server: SerlaServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"events":[{"na'
        yield b'me":"chunked"}]}'

    client.conn.request("POST", BATCH_PATH, chunks(), {"Authorization": f"Bearer {KEY}"}, encode_chunked=True)
    assert Result(client.conn.getresponse()).status == 201
    assert server.events == [{"name": "chunked"}]


def test_max_body_size_gives_plain_413() -> None:
    with SerlaServer(max_body_size=100) as srv:
        c = Client(srv)
        try:
            result = c.batch({"name": "x" * 200})
            assert result.status == 413
            assert result.headers["content-type"].startswith("text/plain")
            assert b"FUNCTION_PAYLOAD_TOO_LARGE" in result.body
            assert c.batch({"name": "small"}).status == 201
        finally:
            c.close()
        assert [r.status for r in srv.requests] == [413, 201]
        assert srv.events == [{"name": "small"}]


# ---- rate limit --------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_fixed_window() -> None:
    clock = FakeClock()
    with SerlaServer(rate_limits={"batch": 2, "events": 2}, clock=clock) as srv:
        c = Client(srv)
        try:
            assert c.batch({"name": "a"}).status == 201
            clock.now += 10
            assert c.batch({"name": "b"}).status == 201
            assert c.batch({"name": "c"}, auth=None).status == 401  # auth comes first, uses no slot
            clock.now += 5
            limited = c.batch({"name": "d"})
            assert limited.status == 429
            assert limited.json() == {"error": "Too many requests", "retryAfter": 45}
            assert limited.headers["retry-after"] == "45"
            assert limited.headers["x-ratelimit-limit"] == "2"
            assert limited.headers["x-ratelimit-remaining"] == "0"
            reset_ms = int(limited.headers["x-ratelimit-reset"])
            assert abs(reset_ms - (time.time() + 45) * 1000) < 5000
            assert c.post(BATCH_PATH, "{").status == 429  # rate limit is checked before parsing
            # Separate buckets per endpoint; identify is never limited.
            assert c.post(EVENTS_PATH, {"name": "single"}).status == 201
            for _ in range(3):
                assert c.post(IDENTIFY_PATH, {"distinctId": "u"}).status == 200
            clock.now += 44.5
            assert c.batch({"name": "e"}).json()["retryAfter"] == 1
            clock.now += 0.5  # at the window's end exactly it still counts (the real limiter's resetAt < now)
            assert c.batch({"name": "e2"}).status == 429
            clock.now += 0.001  # the window started at the first request and ended 60 s later
            assert c.batch({"name": "f"}).status == 201
        finally:
            c.close()
        assert [e["name"] for e in srv.events] == ["a", "b", "single", "f"]


# ---- recording ---------------------------------------------------------------------------------------


def test_requests_are_recorded(client: Client, server: SerlaServer) -> None:
    client.batch(
        {"name": "a"}, {"name": "b"}, headers={"X-Idempotency-Key": "k1", "User-Agent": "serla-py/0.2.0"}
    )
    client.batch({"name": ""})
    client.post(EVENTS_PATH, {"name": "c"}, auth=None)
    client.request("GET", "/nope")
    requests = server.requests
    assert [(r.method, r.path, r.status, r.event_count) for r in requests] == [
        ("POST", BATCH_PATH, 201, 2),
        ("POST", BATCH_PATH, 400, 1),
        ("POST", EVENTS_PATH, 401, 1),
        ("GET", "/nope", 404, 0),
    ]
    first = requests[0]
    assert first.idempotency_key == "k1"
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert first.headers["x-idempotency-key"] == "k1"
    assert first.json() == {"events": [{"name": "a"}, {"name": "b"}]}
    assert requests[1].idempotency_key is None
    stored = server.stored
    assert [(s.position, s.idempotency_key, s.user_agent) for s in stored] == [
        (0, "k1", "serla-py/0.2.0"),
        (1, "k1", "serla-py/0.2.0"),
    ]
    assert len({s.event_id for s in stored}) == 2
    assert isinstance(requests[0], RecordedRequest)


def test_wait_for_events(server: SerlaServer) -> None:
    assert server.wait_for_events(1, timeout=0.01) is False

    def send() -> None:
        c = Client(server)
        try:
            c.batch({"name": "a"}, {"name": "b"})
        finally:
            c.close()

    timer = threading.Timer(0.05, send)
    timer.start()
    try:
        assert server.wait_for_events(2, timeout=5) is True
    finally:
        timer.join()
    assert server.wait_for_events(3, timeout=0.01) is False


def test_clear(client: Client, server: SerlaServer) -> None:
    client.batch({"name": "a"})
    client.post(IDENTIFY_PATH, {"distinctId": "u"})
    server.inject(Fault(status=503))
    server.clear()
    assert (server.events, server.identities, server.requests) == ([], {}, [])
    assert len(server.pending_faults) == 1
    server.clear_faults()
    assert server.pending_faults == []


# ---- dedupe ----------------------------------------------------------------------------------------


def test_no_dedupe_by_default(client: Client, server: SerlaServer) -> None:
    for _ in range(2):
        assert client.batch({"name": "a"}, headers={"X-Idempotency-Key": "same"}).status == 201
    assert len(server.events) == 2


def test_dedupe_option() -> None:
    with SerlaServer(dedupe=True) as srv:
        c = Client(srv)
        try:
            headers = {"X-Idempotency-Key": "same"}
            assert c.batch({"name": "a"}, {"name": "b"}, headers=headers).json() == {
                "success": True,
                "count": 2,
            }
            assert c.batch({"name": "a"}, {"name": "b"}, headers=headers).json() == {
                "success": True,
                "count": 2,
            }
            assert c.batch({"name": "c"}).status == 201
            assert c.batch({"name": "c"}).status == 201  # no key: never deduped
            first = c.post(EVENTS_PATH, {"name": "s"}, headers={"X-Idempotency-Key": "one"}).json()
            again = c.post(EVENTS_PATH, {"name": "s"}, headers={"X-Idempotency-Key": "one"}).json()
            assert first == again
        finally:
            c.close()
        assert [e["name"] for e in srv.events] == ["a", "b", "c", "c", "s"]


# ---- faults ------------------------------------------------------------------------------------------


def test_fail_next_statuses(client: Client, server: SerlaServer) -> None:
    server.fail_next(2, 503)
    first = client.batch({"name": "a"})
    assert first.status == 503
    assert first.headers["content-type"].startswith("text/plain")
    assert client.batch({"name": "a"}).status == 503
    assert client.batch({"name": "a"}).status == 201
    assert server.events == [{"name": "a"}]
    assert [r.status for r in server.requests] == [503, 503, 201]
    assert server.requests[0].fault == Fault(status=503)
    assert server.requests[0].event_count == 1


@pytest.mark.parametrize(
    ("fault", "status", "json_body", "text"),
    [
        (Fault(status=500), 500, {"error": "Internal server error"}, None),
        (Fault(status=401), 401, {"error": "Invalid API key"}, None),
        (Fault(status=400), 400, {"error": "Invalid batch data", "details": []}, None),
        (Fault(status=413), 413, None, b"FUNCTION_PAYLOAD_TOO_LARGE"),
        (Fault(status=502), 502, None, b"502 Bad Gateway"),
        (Fault(status=504), 504, None, b"504 Gateway Timeout"),
        (Fault(status=418, body={"custom": 1}), 418, {"custom": 1}, None),
        (Fault(status=500, body=b"<html>oops</html>"), 500, None, b"<html>oops</html>"),
    ],
)
def test_fault_bodies(
    client: Client,
    server: SerlaServer,
    fault: Fault,
    status: int,
    json_body: Any,
    text: bytes | None,
) -> None:
    server.inject(fault)
    result = client.batch({"name": "a"})
    assert result.status == status
    if json_body is not None:
        assert result.headers["content-type"] == "application/json"
        assert result.json() == json_body
    else:
        assert text is not None
        assert text in result.body
        assert result.headers["content-type"].startswith("text/plain")
    assert server.events == []
    assert client.batch({"name": "b"}).status == 201  # the connection is still usable


def test_fault_429_kinds(client: Client, server: SerlaServer) -> None:
    server.fail_next(1, 429, headers={"Retry-After": "3"})
    server.fail_next(1, 429)
    per_minute = client.batch({"name": "a"})
    assert per_minute.status == 429
    assert per_minute.headers["retry-after"] == "3"
    assert per_minute.json() == {"error": "Too many requests", "retryAfter": 3}
    quota = client.batch({"name": "a"})
    assert quota.status == 429
    assert "retry-after" not in quota.headers
    assert quota.json()["error"] == "Rate limit exceeded"
    assert "Monthly event limit" in quota.json()["message"]


def test_fault_400_one_event_is_real_validation(client: Client) -> None:
    result = client.batch({"name": "ok"}, {"name": "bad", "timestamp": "yesterday"})
    assert result.status == 400
    assert issue(result)["path"][1] == 1


def test_fault_path_filter(client: Client, server: SerlaServer) -> None:
    server.inject(Fault(status=500, path=EVENTS_PATH), Fault(status=502))
    assert client.post(IDENTIFY_PATH, {"distinctId": "u"}).status == 502  # skips the /events fault
    assert client.batch({"name": "a"}).status == 201
    assert client.post(EVENTS_PATH, {"name": "a"}).status == 500
    assert server.pending_faults == []


def test_close_connection_fault(client: Client, server: SerlaServer) -> None:
    server.inject(Fault(close_connection=True))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        client.batch({"name": "a"})
    client.close()
    assert client.batch({"name": "b"}).status == 201  # reconnects
    assert server.events == [{"name": "b"}]
    assert [r.status for r in server.requests] == [0, 201]


def test_store_then_drop_fault(client: Client, server: SerlaServer) -> None:
    server.inject(Fault(store_then_drop=True))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        client.batch({"name": "a"}, headers={"X-Idempotency-Key": "k"})
    client.close()
    assert server.events == [{"name": "a"}]
    assert client.batch({"name": "a"}, headers={"X-Idempotency-Key": "k"}).status == 201
    assert len(server.events) == 2  # the retry duplicates, like the real server
    assert [r.status for r in server.requests] == [0, 201]


def test_delay_fault(client: Client, server: SerlaServer) -> None:
    server.inject(Fault(delay=0.1))
    started = time.monotonic()
    assert client.batch({"name": "a"}).status == 201
    assert time.monotonic() - started >= 0.1
    assert server.events == [{"name": "a"}]


def test_delay_fault_times_out_client(server: SerlaServer) -> None:
    server.inject(Fault(delay=0.5))
    c = Client(server, timeout=0.1)
    try:
        with pytest.raises(socket.timeout):
            c.batch({"name": "a"})
    finally:
        c.close()
    assert server.wait_for_events(1, timeout=5)  # the server still stores it after the delay


def test_hang_fault_and_stop_interrupts(server: SerlaServer) -> None:
    server.inject(Fault(hang=True))
    c = Client(server, timeout=0.2)
    try:
        with pytest.raises(socket.timeout):
            c.batch({"name": "a"})
    finally:
        c.close()
    assert server.requests[0].status == 0
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0
    assert server.events == []


def test_stop_interrupts_long_delay() -> None:
    srv = serve(rate_limits=False)
    srv.inject(Fault(delay=30))
    outcome: list[BaseException | None] = []

    def send() -> None:
        c = Client(srv)
        try:
            c.batch({"name": "a"})
            outcome.append(None)
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)
        finally:
            c.close()

    thread = threading.Thread(target=send)
    thread.start()
    assert srv.wait_for_requests(1, timeout=5)
    started = time.monotonic()
    srv.stop()
    thread.join(5)
    assert time.monotonic() - started < 2.0
    assert len(outcome) == 1
    assert isinstance(outcome[0], (http.client.RemoteDisconnected, ConnectionError))
    assert srv.events == []


def test_default_fault(client: Client, server: SerlaServer) -> None:
    server.set_default_fault(Fault(status=503))
    server.inject(Fault(status=500))
    assert [client.batch({"name": "a"}).status for _ in range(3)] == [500, 503, 503]
    server.set_default_fault(None)
    assert client.batch({"name": "a"}).status == 201


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault(status=500, hang=True)
    with pytest.raises(ValueError):
        Fault(close_connection=True, store_then_drop=True)
    with pytest.raises(ValueError):
        Fault(delay=-1)
    with pytest.raises(ValueError):
        Fault(status=99)


# ---- lifecycle and extension ----------------------------------------------------------------------------


def test_lifecycle() -> None:
    srv = SerlaServer(store=MemoryStore())
    with pytest.raises(RuntimeError):
        _ = srv.url
    srv.stop()  # never started: no-op
    srv.start()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", srv.url)
    assert srv.url.endswith(f":{srv.port}")
    with pytest.raises(RuntimeError):
        srv.start()
    srv.stop()
    srv.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
    leftover = [t for t in threading.enumerate() if t.name.startswith("serla-server")]
    assert leftover == []


def test_stop_closes_idle_keep_alive_connections(server: SerlaServer) -> None:
    c = Client(server)
    try:
        assert c.batch({"name": "a"}).status == 201
        server.stop()
        assert [t for t in threading.enumerate() if t.name.startswith("serla-server")] == []
    finally:
        c.close()


def test_log_callback() -> None:
    lines: list[str] = []
    with SerlaServer(log=lines.append) as srv:
        c = Client(srv)
        try:
            c.batch({"name": "a"})
        finally:
            c.close()
    assert any("POST /api/v1/events/batch" in line and "201" in line for line in lines)


def test_add_route(client: Client, server: SerlaServer) -> None:
    def page(request: RecordedRequest) -> Response:
        return Response(
            200, f"{len(server.events)} events {request.query}".encode(), {"Content-Type": "text/plain"}
        )

    server.add_route("GET", "/", page)
    client.batch({"name": "a"})
    result = client.request("GET", "/?q=1", auth=None)
    assert (result.status, result.body) == (200, b"1 events q=1")


# ---- the real server's limits, projects, plans and storage ---------------------------------------------


def test_real_rate_limits_are_on_by_default() -> None:
    clock = FakeClock()
    with SerlaServer(clock=clock) as srv:
        c = Client(srv)
        try:
            assert srv.rate_limits["batch"] == 100 and srv.rate_limits["events"] == 1000
            assert all(c.batch({"name": "e"}).status == 201 for _ in range(100))
            limited = c.batch({"name": "e"})
            assert limited.status == 429 and limited.json() == {
                "error": "Too many requests",
                "retryAfter": 60,
            }
            assert limited.headers["access-control-allow-methods"] == "GET, POST, OPTIONS"
            assert c.post(EVENTS_PATH, {"name": "single"}).status == 201  # its own 1,000 bucket
            assert c.post(IDENTIFY_PATH, {"distinctId": "u"}).status == 200  # never limited
            assert srv.rate_limited == 1
            clock.now += 60.001
            assert c.batch({"name": "e"}).status == 201
        finally:
            c.close()


def test_rate_limits_can_be_lifted() -> None:
    with SerlaServer(rate_limits=False) as srv:
        c = Client(srv)
        try:
            assert all(c.batch({"name": "e"}).status == 201 for _ in range(150))
            assert srv.rate_limits == {} and srv.rate_limited == 0
        finally:
            c.close()


def test_a_shorter_window_scales_retry_after() -> None:
    clock = FakeClock()
    with SerlaServer(rate_limits={"batch": 1}, rate_limit_window=2.0, clock=clock) as srv:
        c = Client(srv)
        try:
            assert srv.rate_limit_window == 2.0
            assert c.batch({"name": "a"}).status == 201
            clock.now += 0.5
            limited = c.batch({"name": "b"})
            assert (limited.status, limited.headers["retry-after"]) == (429, "2")
            clock.now += 1.501
            assert c.batch({"name": "c"}).status == 201
        finally:
            c.close()
    with pytest.raises(ValueError, match="rate_limit_window"):
        SerlaServer(rate_limit_window=0)


def test_limits_are_per_project_and_shared_by_its_keys() -> None:
    shop = Project("shop", keys=["sk_live_a", "sk_live_b"], public_keys=["pk_live_c"])
    blog = Project("blog", keys=["sk_live_d"])
    with SerlaServer(projects=[shop, blog], rate_limits={"batch": 3}) as srv:
        c = Client(srv)
        try:
            statuses = [
                c.batch({"name": "e"}, auth=f"Bearer {k}").status
                for k in ("sk_live_a", "sk_live_b", "pk_live_c", "sk_live_a")
            ]
            assert statuses == [201, 201, 201, 429]
            assert c.batch({"name": "e"}, auth="Bearer sk_live_d").status == 201  # another project
            assert c.batch({"name": "e"}, auth=f"Bearer {KEY}").status == 401  # not a key of any project
            assert {e.project_id for e in srv.stored} == {"shop", "blog"}
            assert [e.api_key for e in srv.stored if e.project_id == "shop"] == [
                "sk_live_a",
                "sk_live_b",
                "pk_live_c",
            ]
        finally:
            c.close()
    with pytest.raises(ValueError, match="two projects"):
        SerlaServer(projects=[shop, Project("other", keys=["sk_live_a"])])


def test_monthly_quota_is_per_account_and_counts_this_months_events() -> None:
    free = Project("free", keys=["sk_live_f"], plan="free", owner="acct", monthly_quota=3)
    sibling = Project("sibling", keys=["sk_live_s"], plan="free", owner="acct", monthly_quota=3)
    unlimited = Project("max", keys=["sk_live_m"], plan="max")
    assert Project("x", plan="free").quota == 25_000 and unlimited.quota is None
    with SerlaServer(projects=[free, sibling, unlimited]) as srv:
        c = Client(srv)
        try:
            old = {"name": "old", "timestamp": "2020-01-01T00:00:00Z"}  # back-dated: does not count
            assert c.batch(old, auth="Bearer sk_live_f").status == 201
            assert c.batch({"name": "a"}, {"name": "b"}, auth="Bearer sk_live_f").status == 201
            # The check is "already over?": one batch may cross the line.
            assert c.batch({"name": "c"}, {"name": "d"}, auth="Bearer sk_live_s").status == 201
            over = c.batch({"name": "e"}, auth="Bearer sk_live_f")
            assert over.status == 429 and "retry-after" not in over.headers
            assert over.json() == {
                "error": "Rate limit exceeded",
                "message": "Monthly event limit of 3 exceeded. Please upgrade your plan.",
            }
            assert c.post(EVENTS_PATH, {"name": "e"}, auth="Bearer sk_live_s").status == 429
            assert c.post(IDENTIFY_PATH, {"distinctId": "u"}, auth="Bearer sk_live_f").status == 200
            assert c.batch({"name": "e"}, auth="Bearer sk_live_m").status == 201
        finally:
            c.close()


def test_plan_gates_and_key_scopes_through_authorize(monkeypatch: pytest.MonkeyPatch) -> None:
    """A route registered in ROUTES gets the real checks from ``authorize`` (as /errors, /export do)."""
    from serla.devtools import server as server_module
    from serla.devtools.wire import Endpoint, json_response

    def errors(srv: SerlaServer, request: RecordedRequest) -> Response:
        caller = srv.authorize(request, bucket="errors", quota_error="Monthly limit exceeded")
        return caller if isinstance(caller, Response) else json_response(200, {"project": caller.project.id})

    def export(srv: SerlaServer, request: RecordedRequest) -> Response:
        caller = srv.authorize(request, bucket="export", scope="secret", cors={})
        return caller if isinstance(caller, Response) else json_response(200, {"scope": caller.scope}, {})

    monkeypatch.setitem(server_module.ROUTES, "/api/v1/errors", Endpoint(("POST",), errors, "errors", 204))
    monkeypatch.setitem(server_module.ROUTES, "/api/v1/export", Endpoint(("GET",), export, "export"))
    projects = [
        Project("free", keys=["sk_live_free"], plan="free"),
        Project("paid", keys=["sk_live_paid"], public_keys=["pk_live_paid"], plan="hobby"),
    ]
    with SerlaServer(projects=projects, rate_limits={"export": 1}) as srv:
        c = Client(srv)
        try:
            gated = c.post("/api/v1/errors", {"message": "m"}, auth="Bearer sk_live_free")
            assert gated.status == 402
            assert gated.json() == {"error": "Error tracking requires the Hobby plan or above"}
            assert c.post("/api/v1/errors", {"message": "m"}, auth="Bearer pk_live_paid").json() == {
                "project": "paid"
            }
            assert c.request("OPTIONS", "/api/v1/errors", auth=None).status == 204
            refused = c.request("GET", "/api/v1/export", auth="Bearer pk_live_paid")
            assert refused.status == 403 and refused.json()["error"] == "This endpoint requires a secret key"
            assert "access-control-allow-origin" not in refused.headers
            assert c.request("GET", "/api/v1/export", auth="Bearer sk_live_paid").json() == {
                "scope": "secret"
            }
            assert (
                c.request("GET", "/api/v1/export", auth="Bearer sk_live_paid").status == 429
            )  # 10/min, here 1
        finally:
            c.close()


def test_any_key_mode_scopes_by_prefix(server: SerlaServer, client: Client) -> None:
    assert client.batch({"name": "a"}, auth="Bearer pk_live_x").status == 201
    assert client.batch({"name": "b"}, auth="Bearer anything").status == 201
    assert client.batch({"name": "c"}, auth="Bearer ").status == 401
    assert {e.project_id for e in server.stored} == {"default"}


def test_stored_values_are_what_the_real_server_stores(client: Client, server: SerlaServer) -> None:
    body = (
        b'{"events":[{"name":"n","timestamp":"2024-01-15T10:30:00.123456789Z","properties":'
        b'{"big":9007199254740993,"neg":-9007199254740993,"e25":10000000000000000000000001,'
        b'"inf":1e400,"huge":' + b"1" * 400 + b',"ok":9007199254740991,"f":0.5,'
        b'"__proto__":{"x":1},"nested":{"__proto__":1,"deep":[1e400]}}}]}'
    )
    assert client.post(BATCH_PATH, body).status == 201
    (event,) = server.events
    assert event["timestamp"] == "2024-01-15T10:30:00.123Z"
    assert event["properties"] == {
        "big": 9007199254740992,
        "neg": -9007199254740992,
        "e25": 10**25,
        "inf": None,
        "huge": None,
        "ok": 9007199254740991,
        "f": 0.5,
        "nested": {"__proto__": 1, "deep": [None]},  # only a top-level __proto__ is dropped
    }


def test_identify_drops_proto_and_rounds_big_ints(client: Client, server: SerlaServer) -> None:
    body = b'{"distinctId":"u","properties":{"__proto__":{"a":1},"n":9007199254740993,"w":-1e400}}'
    assert client.post(IDENTIFY_PATH, body).status == 200
    assert server.identities == {"u": {"n": 9007199254740992, "w": None}}


def test_a_session_of_another_project_is_replaced() -> None:
    projects = [Project("a", keys=["sk_live_a"]), Project("b", keys=["sk_live_b"])]
    session = uuid.uuid4().hex
    with SerlaServer(projects=projects) as srv:
        c = Client(srv)
        try:
            first = c.post(EVENTS_PATH, {"name": "e", "sessionId": session}, auth="Bearer sk_live_a").json()
            again = c.post(EVENTS_PATH, {"name": "e", "sessionId": session}, auth="Bearer sk_live_a").json()
            other = c.post(EVENTS_PATH, {"name": "e", "sessionId": session}, auth="Bearer sk_live_b").json()
            assert first["sessionId"] == again["sessionId"] == session
            assert other["sessionId"] != session and re.fullmatch("[0-9a-f]{32}", other["sessionId"])
            assert c.batch({"name": "e", "sessionId": session}, auth="Bearer sk_live_b").status == 201
            stored = srv.stored
            assert [e.session_id == session for e in stored] == [True, True, False, False]
            assert stored[2].data["sessionId"] == stored[2].session_id  # what the real row holds
        finally:
            c.close()


def test_a_2000_level_body_is_stored_and_a_deeper_one_is_a_500_on_a_kept_connection(
    client: Client, server: SerlaServer
) -> None:
    deep = b"[" * 2000 + b"]" * 2000
    assert (
        client.post(BATCH_PATH, b'{"events":[{"name":"deep","properties":{"a":' + deep + b"}}]}").status
        == 201
    )
    sock = client.conn.sock
    deeper = b'{"a":' * 5000 + b"1" + b"}" * 5000
    result = client.post(BATCH_PATH, b'{"events":[{"name":"deeper","properties":{"a":' + deeper + b"}}]}")
    assert result.status == 500 and result.json() == {"error": "Internal server error"}
    assert client.conn.sock is sock
    assert client.post(IDENTIFY_PATH, b'{"distinctId":"u","properties":{"a":' + deep + b"}}").status == 200
    (event,) = server.stored
    depth, value = 0, event.data["properties"]["a"]
    while value:
        depth, value = depth + 1, value[0]
    assert depth == 1999  # the innermost of 2,000 brackets is the empty list


def test_the_default_project_can_have_a_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    from serla.devtools import server as server_module
    from serla.devtools.store import StoredEvent
    from serla.devtools.wire import Endpoint, json_response

    def flags(srv: SerlaServer, request: RecordedRequest) -> Response:
        caller = srv.authorize(request, bucket="flags")
        return caller if isinstance(caller, Response) else json_response(200, {"flags": {}})

    monkeypatch.setitem(server_module.ROUTES, "/api/v1/flags", Endpoint(("GET",), flags, "flags", 204))
    with SerlaServer(plan="free") as srv:
        c = Client(srv)
        try:
            assert srv.plan == "free"
            gated = c.request("GET", "/api/v1/flags", auth="Bearer any_key")
            assert gated.json() == {"error": "Feature flags require the Hobby plan or above"}
            with srv.locked_store() as store:
                store.add_events(
                    [StoredEvent({"name": "fill"}, None, 0, "", received_at=time.time())] * 25_000
                )
            over = c.batch({"name": "e"})
            assert over.status == 429 and over.json()["message"].startswith("Monthly event limit of 25,000")
        finally:
            c.close()
    with pytest.raises(ValueError, match="plan"):
        SerlaServer(plan="gold")
