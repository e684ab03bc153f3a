"""``POST /api/v1/errors`` on the contract server and ``serla dev``: the ported fingerprint, validation, gates.

The fingerprint vectors are the real server's (``SERLA_API.md`` section 7.1, computed by the server).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serla.devtools.dev import DevServer, SQLiteStore
from serla.devtools.errors import compute_fingerprint, parse_top_frame, validate_error_report
from serla.devtools.server import SerlaServer

ZERO_DIV_STACK = (
    "ZeroDivisionError: division by zero\n    at main (/app/main.py:5:0)\n    at <module> (/app/main.py:10:0)"
)


@pytest.mark.parametrize(
    ("type_", "message", "stack", "expected"),
    [
        (
            "TypeError",
            "x is undefined",
            "TypeError: x is undefined\n    at handleCheckout (/app/src/checkout.js:42:10)\n    at foo (a.js:1:1)",
            "4779f3e3b6d86b3b1874c2073a6e5657",
        ),
        ("ValueError", "invalid literal", None, "3e3cfc67d586bad6c0d5d770e13a7e13"),
        (None, "boom", None, "fa7b0be40464ad0b440462c61d6f3954"),
        (
            "Error",
            "chunk",
            "Error: chunk\n    at /_next/static/chunks/page-abc123def.js?v=1:3:7",
            "26bf21b8e1838fb769964c26f3bd8554",
        ),
        ("ZeroDivisionError", "division by zero", ZERO_DIV_STACK, "fc70124f7728847b63c3cbf83f66511b"),
    ],
)
def test_the_servers_own_vectors(type_: Any, message: str, stack: Any, expected: str) -> None:
    assert compute_fingerprint(type_, message, stack) == expected


def test_parse_top_frame_forms() -> None:
    frame = parse_top_frame("Error: x\n  at async handler (/app/x.js:1:2)")
    assert frame is not None and frame.fn == "async handler" and frame.file == "/app/x.js"
    assert (frame.line, frame.column) == (1, 2)
    moz = parse_top_frame("Error\nrender@https://x.test/app-0123456789.js?v=2:10:20")
    assert moz is not None and moz.fn == "render" and moz.file == "https://x.test/app.js"
    assert parse_top_frame("@https://x.test/a.js:1:1") is None  # (.+?)@ needs a name, as in JavaScript
    assert parse_top_frame('  File "x.py", line 5, in f') is None  # a Python traceback never parses
    assert parse_top_frame("at f (x.py:5)") is None  # a column is required
    assert parse_top_frame("at f (x.py:\u0665:1)") is None  # JavaScript's \\d is ASCII only
    assert parse_top_frame("at f (x.py:1:2) [library]") is None


def test_validation_matches_zod() -> None:
    clean, issues = validate_error_report({"message": "m", "level": "error", "metadata": None})
    assert not issues and clean["message"] == "m"
    _, issues = validate_error_report({"message": ""})
    assert [i["code"] for i in issues] == ["too_small"]
    _, issues = validate_error_report({"type": "x"})
    assert issues[0]["path"] == ["message"] and issues[0]["code"] == "invalid_type"
    _, issues = validate_error_report({"message": "m", "level": None})
    assert issues[0]["code"] == "invalid_value" and issues[0]["path"] == ["level"]
    _, issues = validate_error_report({"message": "m", "level": "fatal"})
    assert issues[0]["code"] == "invalid_value"
    _, issues = validate_error_report({"message": "\U0001f600" * 1001})  # 2002 UTF-16 units
    assert issues[0]["code"] == "too_big" and issues[0]["maximum"] == 2000
    _, issues = validate_error_report({"message": "m", "environment": "e" * 51, "metadata": [1]})
    assert [i["path"] for i in issues] == [["environment"], ["metadata"]]
    _, issues = validate_error_report({"message": "m", "timestamp": "2024-01-15T10:30:00+00:00"})
    assert issues[0]["code"] == "invalid_format"
    _, issues = validate_error_report([])
    assert issues[0]["expected"] == "object"


def _post(server: SerlaServer, body: Any, key: str | None = "sk_live_test", raw: bytes | None = None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else json.dumps(body).encode()
    try:
        conn.request("POST", "/api/v1/errors", body=data, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(rate_limits={"errors": 3}) as srv:
        yield srv


def test_the_endpoint_answers_like_the_real_route(server: SerlaServer) -> None:
    body = {"message": "division by zero", "type": "ZeroDivisionError", "stack": ZERO_DIV_STACK}
    status, answer = _post(server, body)
    assert (status, answer) == (200, {"success": True, "fingerprint": "fc70124f7728847b63c3cbf83f66511b"})
    assert _post(server, body, key=None) == (401, {"error": "Invalid API key"})
    status, answer = _post(server, None, raw=b"{nope")
    assert (status, answer) == (400, {"error": "Invalid JSON"})
    status, answer = _post(server, {"message": "m", "level": "fatal"})
    assert status == 400 and answer["error"] == "Invalid error report"
    assert server.errors.wait_for_reports(1, timeout=5)
    groups = server.errors.groups()
    assert [(g["count"], g["type"]) for g in groups] == [(1, "ZeroDivisionError")]
    # A fourth request in the window: the per-minute limit (3 here) answers 429 with Retry-After.
    status, answer = _post(server, body)
    assert status == 429 and answer["error"] == "Too many requests"


def test_plan_gate_answers_402(server: SerlaServer) -> None:
    server.errors.free_keys.add("sk_live_free")
    status, answer = _post(server, {"message": "m"}, key="sk_live_free")
    assert status == 402 and answer == {"error": "Error tracking requires the Hobby plan or above"}
    assert server.errors.reports() == []


def test_nul_characters_are_a_500_like_postgres(server: SerlaServer) -> None:
    status, answer = _post(server, {"message": "a\u0000b"})
    assert (status, answer) == (500, {"error": "Internal server error"})


def test_serla_dev_keeps_error_groups_in_sqlite_and_shows_them(tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    with SQLiteStore(db) as store, DevServer(port=0, store=store) as dev:
        for n in (1, 2):
            report = {
                "message": f"card {n}",
                "type": "shop.CardDeclined",
                "stack": "x\n    at pay (shop.py:3:0)",
            }
            assert _post(dev, report)[0] == 200
        conn = http.client.HTTPConnection("127.0.0.1", dev.port, timeout=10)
        conn.request("GET", "/api/dev/errors")
        groups = json.loads(conn.getresponse().read())["groups"]
        conn.request("GET", "/errors")
        page = conn.getresponse()
        html = page.read().decode()
        conn.close()
        assert page.status == 200 and "Error groups" in html
        assert [(g["count"], g["type"], g["message"]) for g in groups] == [(2, "shop.CardDeclined", "card 1")]
        assert "at pay (shop.py:3:0)" in groups[0]["stack"]
    with SQLiteStore(db) as store, DevServer(port=0, store=store) as dev:  # kept across restarts
        assert [g["count"] for g in dev.errors.groups()] == [2]
        conn = http.client.HTTPConnection("127.0.0.1", dev.port, timeout=10)
        conn.request("POST", "/api/dev/clear", headers={"X-Serla-Dev": "1"})
        assert conn.getresponse().status == 200
        conn.close()
        assert dev.errors.groups() == []
