"""``serla dev``: the SQLite store, the JSON endpoints, the command in a subprocess, and the page in Chromium.

Everything runs for real on 127.0.0.1: the dev server, a real :class:`serla.Serla` client, ``http.client``
requests, ``python -m serla dev`` subprocesses and Debian's headless ``chromium`` (skipped when absent).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import queue
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote, urlsplit

import pytest

from serla import Serla
from serla.devtools.dev import DevServer, SQLiteStore, build_parser, run
from serla.devtools.server import BATCH_PATH, EVENTS_PATH, IDENTIFY_PATH, Fault, SerlaServer

KEY = "sk_live_dev_test_key_0123456789abcdefghijklmnopq"  # redacted in the database as sk_live_...nopq


# -- helpers ----------------------------------------------------------------------------------------------


class Reply:
    """A response read off the wire."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = {name.lower(): value for name, value in response.getheaders()}
        self.body = response.read()

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request on a fresh connection (``Host`` is what http.client sends: 127.0.0.1:PORT)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return Reply(conn.getresponse())
    finally:
        conn.close()


def get_json(url: str, path: str) -> Any:
    reply = call(url, "GET", path)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    return reply.json()


def batch(url: str, *events: dict[str, Any], key: str | None = None, auth: str = f"Bearer {KEY}") -> Reply:
    headers = {"Content-Type": "application/json", "Authorization": auth}
    if key is not None:
        headers["X-Idempotency-Key"] = key
    return call(url, "POST", BATCH_PATH, json.dumps({"events": list(events)}).encode(), headers)


@contextlib.contextmanager
def dev_server(db: Path | str, **kwargs: Any) -> Iterator[DevServer]:
    """A started DevServer on its own SQLiteStore; both are closed afterwards."""
    keep = kwargs.pop("keep_rejected", 100)
    store = SQLiteStore(db, keep_rejected=keep)
    server = DevServer("127.0.0.1", 0, store=store, **kwargs)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        store.close()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevServer]:
    with dev_server(tmp_path / "dev.db") as server:
        yield server


class _AnyStr:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)

    def __repr__(self) -> str:
        return "ANY_STR"


ANY_STR: Any = _AnyStr()


def client_for(server: SerlaServer) -> Serla:
    return Serla(KEY, host=server.url, flush_on_exit=False, flush_interval_seconds=60, timeout=5)


# -- the store: persistence, dedupe, filters, limits ------------------------------------------------------


def test_events_and_identities_persist_across_two_servers_on_the_same_file(tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    with dev_server(db) as first:
        with client_for(first) as client:
            client.track("signup", "u1", {"plan": "pro", "tags": ["a", "b"]})
            client.track("page_viewed", "u2", {"path": "/"}, timestamp="2024-01-15T10:30:00Z")
            assert client.flush(10)
            assert client.identify("u1", {"email": "ada@example.com", "plan": "free"})
            assert client.identify("u1", {"plan": "pro"})  # shallow merge
        before = first.stored
        assert [e.data["name"] for e in before] == ["signup", "page_viewed"]

    with dev_server(db) as second:
        after = second.stored
        assert [(e.data, e.event_id, e.session_id, e.received_at, e.idempotency_key) for e in after] == [
            (e.data, e.event_id, e.session_id, e.received_at, e.idempotency_key) for e in before
        ]
        assert after[1].data["timestamp"] == "2024-01-15T10:30:00.000Z"
        assert second.identities == {"u1": {"email": "ada@example.com", "plan": "pro"}}
        # The secret itself is never written to the file.
        assert {e.api_key for e in after} == {"sk_live_...nopq"}
        assert KEY.encode() not in db.read_bytes()
        assert batch(second.url, {"name": "third", "distinctId": "u3"}).status == 201
        assert [e["name"] for e in second.events] == ["signup", "page_viewed", "third"]
        people, total = second.store.people()
        assert total == 1 and people[0]["distinctId"] == "u1"


def test_identity_id_is_stable_across_restarts(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "dev.db") as store:
        first = store.identify("u1", {"a": 1})
        assert store.identify("u1", {"b": 2}) == first
    with SQLiteStore(tmp_path / "dev.db") as store:
        assert store.identify("u1", {}) == first
        assert store.identities() == {"u1": {"a": 1, "b": 2}}


def test_a_retried_batch_is_stored_twice_by_default_like_the_real_server(tmp_path: Path) -> None:
    """The real server never dedupes: a retry after a lost response is stored again, and so by default here."""
    with dev_server(tmp_path / "dev.db") as server:
        assert not server.dedupe
        server.inject(Fault(store_then_drop=True))
        with client_for(server) as client:
            client.track("checkout", "u1", {"total": 10})
            assert client.flush(15)
            assert client.stats()["retried"] >= 1
        assert [e["name"] for e in server.events] == ["checkout", "checkout"]
        assert server.duplicates_ignored == 0
        assert get_json(server.url, "/api/dev/events")["dedupe"] is False


def test_opt_in_dedupe_stores_a_retried_batch_once(tmp_path: Path) -> None:
    """With ``dedupe=True`` the SDK's retry (same X-Idempotency-Key) is stored once."""
    with dev_server(tmp_path / "dev.db", dedupe=True) as server:
        server.inject(Fault(store_then_drop=True))  # stored, then the response is lost: the client retries
        with client_for(server) as client:
            client.track("checkout", "u1", {"total": 10})
            assert client.flush(15)
            assert client.stats()["retried"] >= 1
        assert server.events == [
            {"name": "checkout", "distinctId": "u1", "properties": {"total": 10}, "timestamp": ANY_STR}
        ]
        keys = [r.idempotency_key for r in server.requests if r.path == BATCH_PATH]
        assert len(keys) == 2 and keys[0] == keys[1] and keys[0]
        assert server.duplicates_ignored == 1
        assert get_json(server.url, "/api/dev/events")["duplicatesIgnored"] == 1


def test_dedupe_survives_a_restart_and_is_off_by_default(tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    with dev_server(db, dedupe=True) as server:
        assert batch(server.url, {"name": "a"}, {"name": "b"}, key="k1").json() == {
            "success": True,
            "count": 2,
        }
        assert batch(server.url, {"name": "a"}, {"name": "b"}, key="k1").json() == {
            "success": True,
            "count": 2,
        }
        assert batch(server.url, {"name": "c"}).status == 201  # no key: never deduped
        assert batch(server.url, {"name": "c"}).status == 201
        single = {"Authorization": f"Bearer {KEY}", "X-Idempotency-Key": "k2"}
        first = call(server.url, "POST", EVENTS_PATH, b'{"name": "one"}', single).json()
        again = call(server.url, "POST", EVENTS_PATH, b'{"name": "one"}', single).json()
        assert again == first  # the duplicate is answered with the stored event's IDs
        assert [e["name"] for e in server.events] == ["a", "b", "c", "c", "one"]
        assert server.duplicates_ignored == 2
    with dev_server(db, dedupe=True) as server:
        assert batch(server.url, {"name": "a"}, key="k1").status == 201
        assert len(server.events) == 5  # the key is in the file, so the retry is still recognised
    with dev_server(db) as server:
        assert batch(server.url, {"name": "a"}, key="k1").status == 201
        assert len(server.events) == 6  # like the real server
        assert get_json(server.url, "/api/dev/events")["dedupe"] is False


def test_filters_limits_and_order(dev: DevServer) -> None:
    for i in range(5):
        assert (
            batch(dev.url, {"name": "view", "distinctId": f"u{i % 2}", "properties": {"i": i}}).status == 201
        )
    assert batch(dev.url, {"name": "signup", "distinctId": "u1"}, {"name": "anon"}).status == 201

    def names_and_i(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        return [(e["name"], (e["properties"] or {}).get("i")) for e in events]

    events, matching = dev.store.query_events()
    assert matching == 7
    assert names_and_i(events) == [("anon", None), ("signup", None)] + [("view", i) for i in (4, 3, 2, 1, 0)]
    events, matching = dev.store.query_events(name="view", limit=2)
    assert (names_and_i(events), matching) == ([("view", 4), ("view", 3)], 5)
    events, matching = dev.store.query_events(distinct_id="u1")
    assert (names_and_i(events), matching) == ([("signup", None), ("view", 3), ("view", 1)], 3)
    events, matching = dev.store.query_events(name="view", distinct_id="u0")
    assert (names_and_i(events), matching) == ([("view", 4), ("view", 2), ("view", 0)], 3)
    assert dev.store.query_events(name="nope") == ([], 0)

    # The same through the JSON endpoint.
    data = get_json(dev.url, "/api/dev/events?name=view&distinct_id=u0&limit=2")
    assert (data["matching"], data["total"], len(data["events"])) == (3, 7, 2)
    assert [e["properties"]["i"] for e in data["events"]] == [4, 2]
    assert get_json(dev.url, "/api/dev/events?name=&distinct_id=")["matching"] == 7  # empty = no filter
    anon = get_json(dev.url, "/api/dev/events?limit=1")["events"][0]
    assert anon["name"] == "anon" and anon["distinctId"] is None and anon["properties"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", anon["receivedAt"])
    assert anon["endpoint"] == BATCH_PATH and anon["otherFields"] == {}


def test_event_fields_in_the_json_endpoint(dev: DevServer) -> None:
    event = {
        "name": "click",
        "distinctId": "u1",
        "properties": {"nested": {"a": [1, 2.5, None, True]}, "big": 1e999},
        "timestamp": "2024-02-29T00:00:00.123456Z",
        "pageUrl": "https://example.com/",
        "clickX": 3,
        "unknownField": "dropped by validation",
    }
    body = json.dumps({"events": [event]}, allow_nan=True).replace("Infinity", "1e999").encode()
    headers = {"Authorization": f"Bearer {KEY}", "X-Idempotency-Key": "key-1", "User-Agent": "my-app/1.0"}
    assert call(dev.url, "POST", BATCH_PATH, body, headers).status == 201
    (got,) = get_json(dev.url, "/api/dev/events")["events"]
    assert got["name"] == "click" and got["distinctId"] == "u1"
    assert got["timestamp"] == "2024-02-29T00:00:00.123Z"  # cut to milliseconds, as the real server stores it
    # 1e999 parses as infinity; the endpoint stays valid JSON (null, as JavaScript's JSON would have it).
    assert got["properties"] == {"nested": {"a": [1, 2.5, None, True]}, "big": None}
    assert got["otherFields"] == {"pageUrl": "https://example.com/", "clickX": 3}
    assert (got["idempotencyKey"], got["userAgent"]) == ("key-1", "my-app/1.0")
    assert got["eventId"] == dev.stored[0].event_id and got["sessionId"] == dev.stored[0].session_id


def test_limit_parameter_is_checked(dev: DevServer) -> None:
    for path in ("/api/dev/events", "/api/dev/identities", "/api/dev/rejected"):
        for bad in ("0", "1001", "x", "-1"):
            reply = call(dev.url, "GET", f"{path}?limit={bad}")
            assert reply.status == 400
            assert "limit must be an integer from 1 to 1000" in reply.json()["error"]
        assert call(dev.url, "GET", f"{path}?limit=1000").status == 200


def test_identities_endpoint(dev: DevServer) -> None:
    with client_for(dev) as client:
        assert client.identify("u1", {"plan": "free"})
        assert client.identify("u2", {"plan": "pro", "seats": 5})
        assert client.identify("u1", {"email": "a@example.com"})
    data = get_json(dev.url, "/api/dev/identities")
    assert data["total"] == 2
    assert [(p["distinctId"], p["properties"]) for p in data["identities"]] == [
        ("u1", {"plan": "free", "email": "a@example.com"}),  # updated last, so first
        ("u2", {"plan": "pro", "seats": 5}),
    ]
    one = get_json(dev.url, "/api/dev/identities?distinct_id=u2")
    assert one["total"] == 1 and one["identities"][0]["distinctId"] == "u2"
    assert get_json(dev.url, "/api/dev/identities?limit=1")["identities"][0]["distinctId"] == "u1"


# -- rejected requests ------------------------------------------------------------------------------------


BAD_REQUESTS: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("POST", BATCH_PATH, b'{"events": [{"name": "ok"}, {"name": "x", "timestamp": "2024-01-15"}]}', {}),
    ("POST", BATCH_PATH, b'{"events": []}', {}),
    ("POST", BATCH_PATH, b'{"events": [{"name": ""}]}', {}),
    ("POST", EVENTS_PATH, b'{"name": "x", "properties": []}', {}),
    ("POST", IDENTIFY_PATH, b'{"properties": {}}', {}),
    ("POST", BATCH_PATH, b"{not json", {}),
    ("POST", BATCH_PATH, b'{"events": [{"name": "x", "properties": null}]}', {}),
    ("POST", BATCH_PATH, b'{"events": [{"name": "x"}]}', {"Authorization": "bearer lowercase"}),
    ("POST", BATCH_PATH + "/", b'{"events": [{"name": "x"}]}', {}),
    ("GET", BATCH_PATH, b"", {}),
    ("POST", "/v1/batch", b'{"events": [{"name": "x"}]}', {}),
]


def test_rejections_match_the_contract_server_and_are_kept_with_details(dev: DevServer) -> None:
    with SerlaServer() as plain:
        for method, path, body, extra in BAD_REQUESTS:
            headers = {"Authorization": f"Bearer {KEY}", **extra}
            want = call(plain.url, method, path, body or None, headers)
            got = call(dev.url, method, path, body or None, headers)
            assert (got.status, got.body) == (want.status, want.body), (method, path, body)
            assert got.status >= 300
    assert dev.events == []

    data = get_json(dev.url, "/api/dev/rejected")
    assert data["total"] == len(BAD_REQUESTS)
    kept = list(reversed(data["rejected"]))  # newest first on the wire
    assert [(r["method"], r["path"], r["status"]) for r in kept] == [
        ("POST", BATCH_PATH, 400),
        ("POST", BATCH_PATH, 400),
        ("POST", BATCH_PATH, 400),
        ("POST", EVENTS_PATH, 400),
        ("POST", IDENTIFY_PATH, 400),
        ("POST", BATCH_PATH, 500),
        ("POST", BATCH_PATH, 500),
        ("POST", BATCH_PATH, 401),
        ("POST", BATCH_PATH + "/", 308),
        ("GET", BATCH_PATH, 405),
        ("POST", "/v1/batch", 404),
    ]
    first = kept[0]
    assert first["error"] == "Invalid batch data"
    assert [(d["path"], d["code"], d["message"]) for d in first["details"]] == [
        (["events", 1, "timestamp"], "invalid_format", "Invalid ISO datetime")
    ]
    assert first["response"] == {"error": "Invalid batch data", "details": first["details"]}
    assert json.loads(first["body"]) == json.loads(BAD_REQUESTS[0][2])
    assert first["bodySize"] == len(BAD_REQUESTS[0][2]) and first["bodyTruncated"] is False
    assert kept[4]["details"][0]["path"] == ["distinctId"]
    assert kept[5]["response"] == {"error": "Internal server error"} and kept[5]["body"] == "{not json"
    assert kept[7]["error"] == "Invalid API key"
    assert kept[10]["response"] == "404: This page could not be found."


def test_rejected_request_details_are_capped_and_redacted(tmp_path: Path) -> None:
    with dev_server(tmp_path / "dev.db", keep_rejected=3) as server:
        for i in range(5):
            assert batch(server.url, {"name": f"bad{i}", "timestamp": "yesterday"}).status == 400
        big = json.dumps({"events": [{"name": "x" * 70_000, "timestamp": 1}]}).encode()
        query = f"{BATCH_PATH}?api_key={KEY}&idempotency_key=abc"
        assert call(server.url, "POST", query, big).status == 400  # the query fallback authenticates
        data = get_json(server.url, "/api/dev/rejected")
        assert data["total"] == 3
        newest = data["rejected"][0]
        assert (newest["bodySize"], newest["bodyTruncated"], len(newest["body"])) == (len(big), True, 65536)
        assert newest["query"] == "api_key=sk_live_...nopq&idempotency_key=abc"
        assert newest["details"][0]["path"] == ["events", 0, "timestamp"]
        assert [json.loads(r["body"])["events"][0]["name"] for r in data["rejected"][1:]] == ["bad4", "bad3"]
    assert KEY.encode() not in (tmp_path / "dev.db").read_bytes()
    with dev_server(tmp_path / "dev.db", keep_rejected=0) as server:
        assert batch(server.url, {"name": "x", "timestamp": "no"}).status == 400
        assert get_json(server.url, "/api/dev/rejected")["total"] == 3  # nothing new kept; the old remain


# -- the other dev endpoints ------------------------------------------------------------------------------


def test_page_headers_and_no_user_data_in_the_html(dev: DevServer) -> None:
    assert batch(dev.url, {"name": "<b>bold</b>", "distinctId": "<i>x</i>"}).status == 201
    reply = call(dev.url, "GET", "/?name=%3Cb%3E")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    csp = reply.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    assert '<script src="/static/dev.js"></script>' in reply.body.decode()
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "access-control-allow-origin" not in reply.headers
    text = reply.body.decode()
    assert "<b>" not in text and "<i>" not in text  # event data only ever arrives through the JSON API
    assert "dedupe by X-Idempotency-Key off" in text and str(Path(dev.store.path)) in text
    assert "rate limits on (batch 100 requests a minute per project)" in text
    for name, kind in (("dev.js", "text/javascript"), ("dev.css", "text/css")):
        asset = call(dev.url, "GET", f"/static/{name}")
        assert asset.status == 200 and asset.headers["content-type"].startswith(kind)
        assert asset.headers["content-security-policy"] == csp and len(asset.body) > 500
    assert call(dev.url, "GET", "/static/other.js").status == 404
    events = call(dev.url, "GET", "/api/dev/events")
    assert "access-control-allow-origin" not in events.headers
    assert events.headers["cache-control"] == "no-store"


def test_rate_limited_requests_are_counted_and_listed(tmp_path: Path) -> None:
    with dev_server(tmp_path / "dev.db", rate_limits={"batch": 2}) as server:
        assert [batch(server.url, {"name": f"e{i}"}).status for i in range(4)] == [201, 201, 429, 429]
        assert (
            call(server.url, "POST", EVENTS_PATH, b'{"name": "single"}', {"Authorization": "Bearer k"}).status
            == 201
        )
        status = get_json(server.url, "/api/dev/status")
        assert status["rateLimited"] == 2 and status["rateLimits"]["batch"] == 2
        assert status["rateLimitWindow"] == 60 and status["dedupe"] is False
        limited = get_json(server.url, "/api/dev/rejected?status=429")
        assert limited["total"] == 2
        assert {r["status"] for r in limited["rejected"]} == {429}
        assert limited["rejected"][0]["response"]["error"] == "Too many requests"
        assert get_json(server.url, "/api/dev/events")["rateLimited"] == 2
        assert call(server.url, "GET", "/api/dev/rejected?status=abc").status == 400
        page = call(server.url, "GET", "/").body.decode()
        assert 'id="rate-limited-count"' in page and "rate limits on (batch 2 requests a minute" in page
    with dev_server(tmp_path / "dev.db", rate_limits=False) as server:
        assert all(batch(server.url, {"name": "x"}).status == 201 for _ in range(120))
        assert get_json(server.url, "/api/dev/status")["rateLimits"] == {}
        assert "rate limits off" in call(server.url, "GET", "/").body.decode()


def test_dev_routes_refuse_foreign_host_names(dev: DevServer) -> None:
    """A page on another site that rebinds its DNS name to 127.0.0.1 can't read the events."""
    for path in ("/", "/api/dev/events", "/api/dev/rejected", "/api/dev/identities"):
        assert call(dev.url, "GET", path, headers={"Host": f"evil.example:{dev.port}"}).status == 403
        for host in (f"localhost:{dev.port}", "127.0.0.1", f"[::1]:{dev.port}"):
            assert call(dev.url, "GET", path, headers={"Host": host}).status == 200
    # Ingest follows the real server's contract: any host, CORS allowed.
    reply = call(
        dev.url,
        "POST",
        BATCH_PATH,
        b'{"events": [{"name": "x"}]}',
        {"Host": "evil.example", "Authorization": "Bearer k"},
    )
    assert reply.status == 201 and reply.headers["access-control-allow-origin"] == "*"


def test_clear_needs_the_header(dev: DevServer) -> None:
    assert batch(dev.url, {"name": "x"}).status == 201
    assert batch(dev.url, {"name": "x", "timestamp": "bad"}).status == 400
    with client_for(dev) as client:
        assert client.identify("u1", {"a": 1})
    reply = call(dev.url, "POST", "/api/dev/clear")  # what a cross-site form could send
    assert reply.status == 403 and "X-Serla-Dev" in reply.json()["error"]
    assert dev.store.counts() == {"events": 1, "people": 1, "rejected": 1}
    preflight = call(dev.url, "OPTIONS", "/api/dev/clear", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in preflight.headers  # so a cross-site fetch can't add it
    assert call(dev.url, "POST", "/api/dev/clear", headers={"X-Serla-Dev": "clear"}).json() == {
        "cleared": True
    }
    assert dev.store.counts() == {"events": 0, "people": 0, "rejected": 0}


def test_store_refuses_a_database_it_did_not_create(tmp_path: Path) -> None:
    app_db = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(app_db)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
        conn.commit()
    with pytest.raises(ValueError, match="that serla dev did not create"):
        SQLiteStore(app_db)
    with contextlib.closing(sqlite3.connect(app_db)) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("users",)]  # untouched
    text_file = tmp_path / "notes.db"
    text_file.write_text("not a database, but long enough to have a header: " * 5)
    with pytest.raises(sqlite3.DatabaseError):
        SQLiteStore(text_file)
    with pytest.raises(ValueError, match="keep_rejected"):
        SQLiteStore(":memory:", keep_rejected=-1)


def test_memory_database_works(tmp_path: Path) -> None:
    with dev_server(":memory:") as server:
        assert batch(server.url, {"name": "x"}).status == 201
        assert get_json(server.url, "/api/dev/events")["total"] == 1
    assert list(tmp_path.iterdir()) == []


# -- run(): in-process, with a stop event -----------------------------------------------------------------


class Lines(io.StringIO):
    """An output stream that signals when a line containing ``marker`` has been written."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.seen = threading.Event()

    def write(self, s: str) -> int:
        n = super().write(s)
        if self.marker in s:
            self.seen.set()
        return n


def test_run_prints_the_url_logs_requests_and_stops(tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    args = build_parser().parse_args(["--port", "0", "--db", str(db)])
    out, err, stop = Lines("listening on"), io.StringIO(), threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(run(args, out=out, err=err, stop=stop)))
    thread.start()
    try:
        assert out.seen.wait(10)
        url = re.search(r"listening on (http://\S+)", out.getvalue())
        assert url is not None
        assert batch(url.group(1), {"name": "a"}, {"name": "b"}, key="k").status == 201
        assert batch(url.group(1), {"name": "a"}, {"name": "b"}, key="k").status == 201
        assert batch(url.group(1), {"name": "x", "timestamp": "2024-01-15T10:30:00+00:00"}).status == 400
        for _ in range(97):  # 100 batch requests a minute per project, as on the real server
            assert batch(url.group(1), {"name": "c"}).status == 201
        limited = batch(url.group(1), {"name": "d"})
        assert limited.status == 429 and limited.headers["retry-after"]
        assert call(url.group(1), "GET", "/api/dev/events").status == 200  # the page's polls are not logged
    finally:
        stop.set()
        thread.join(10)
    assert result == [0] and err.getvalue() == ""
    text = out.getvalue()
    assert f"database:     {db}" in text
    assert "export SERLA_HOST=http://127.0.0.1:" in text
    assert re.search(r"POST /api/v1/events/batch  201  2 events\n", text)
    assert "not stored again" not in text  # no dedupe by default
    assert "dedupe:       off: every request is stored, retries included, like the real server" in text
    assert "limits:       rate limits on (batch 100 requests a minute per project)" in text
    assert "400  Invalid batch data: events.0.timestamp: Invalid ISO datetime" in text
    assert "429  Too many requests" in text
    assert "/api/dev/" not in text
    assert text.endswith(f"stopped; 101 events in {db}\n")


def test_run_reports_startup_errors(tmp_path: Path) -> None:
    foreign = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE t (x)")
    err = io.StringIO()
    assert run(build_parser().parse_args(["--db", str(foreign)]), out=io.StringIO(), err=err) == 2
    assert f"serla dev: cannot use --db {foreign}: " in err.getvalue()
    assert "did not create" in err.getvalue()

    err = io.StringIO()
    missing_dir = tmp_path / "no" / "such" / "dir.db"
    assert run(build_parser().parse_args(["--db", str(missing_dir)]), out=io.StringIO(), err=err) == 2
    assert "cannot use --db" in err.getvalue()

    with SerlaServer() as busy:
        err = io.StringIO()
        args = build_parser().parse_args(["--port", str(busy.port), "--db", ":memory:"])
        assert run(args, out=io.StringIO(), err=err) == 2
        assert f"serla dev: cannot listen on 127.0.0.1:{busy.port}: " in err.getvalue()
        assert "try --port 0" in err.getvalue()


# -- the command, in a subprocess -------------------------------------------------------------------------


class DevProcess:
    """``python -m serla dev`` in a subprocess, its stdout read by a thread into a queue."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERLA_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serla", "dev", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, pattern: str, timeout: float = 15) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout} s: {self.seen}"
                ) from None
            if line is None:
                raise AssertionError(
                    f"serla dev exited before printing {pattern!r}: {self.seen} {self.stderr()}"
                )
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def stop(self, sig: signal.Signals, timeout: float = 15) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        while True:
            line = self.lines.get_nowait() if not self.lines.empty() else None
            if line is None:
                break
            self.seen.append(line)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals to a child process")
def test_command_serves_persists_and_stops_cleanly_on_sigterm_and_sigint(tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    dev = DevProcess("--port", "0", "--db", str(db))
    try:
        url = dev.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+) ").group(1)
        with Serla("anything", host=url, flush_on_exit=False, timeout=5) as client:
            client.track("signup", "user_1", {"plan": "pro"})
            client.track("page_viewed", "user_2", {"path": "/pricing"})
            assert client.flush(10)
            assert client.identify("user_1", {"email": "ada@example.com"})
        data = get_json(url, "/api/dev/events")
        assert [(e["name"], e["distinctId"], e["properties"]) for e in data["events"]] == [
            ("page_viewed", "user_2", {"path": "/pricing"}),
            ("signup", "user_1", {"plan": "pro"}),
        ]
        assert get_json(url, "/api/dev/identities")["identities"][0]["properties"] == {
            "email": "ada@example.com"
        }
        dev.wait_for_line(r"POST /api/v1/events/batch  201  2 events")
        assert dev.stop(signal.SIGTERM) == 0
        assert dev.seen[-1] == f"stopped; 2 events in {db}\n", dev.seen
        assert dev.stderr() == ""
    finally:
        dev.close()

    # Same file, new process: the events are still there. Ctrl-C (SIGINT) stops it cleanly too.
    dev = DevProcess("--port", "0", "--db", str(db), "--quiet")
    try:
        url = dev.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+) ").group(1)
        dev.wait_for_line(r"database: +.*\(2 events and 1 people from earlier runs\)")
        assert get_json(url, "/api/dev/events?name=signup")["events"][0]["distinctId"] == "user_1"
        assert batch(url, {"name": "third"}).status == 201
        assert dev.stop(signal.SIGINT) == 0
        assert dev.seen[-1] == f"stopped; 3 events in {db}\n", dev.seen
        assert not any("POST" in line for line in dev.seen)  # --quiet
        assert dev.stderr() == ""
    finally:
        dev.close()


def test_command_usage_errors_exit_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERLA_")}
    for args, message in (
        (["--port", "70000"], "port must be 0..65535"),
        (["--keep-rejected", "-1"], "must be >= 0"),
        (["--frobnicate"], "unrecognized arguments"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "serla", "dev", *args], capture_output=True, text=True, timeout=30, env=env
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "serla", "dev", "--help"], capture_output=True, text=True, timeout=30, env=env
    )
    assert proc.returncode == 0 and "--no-dedupe" in proc.stdout and "dev.db" in proc.stdout


# -- the page, in headless Chromium -----------------------------------------------------------------------


def _find_chromium() -> Optional[str]:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


CHROMIUM = _find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian/Ubuntu: apt-get install chromium); "
    "the headless browser test of the serla dev page needs it",
)

XSS_NAME = "<img src=x onerror=\"document.title='pwned-by-name'\">"
XSS_ID = "<script>document.title='pwned-by-id'</script>"
XSS_PROPS = {"html": "<script>document.title='pwned'</script>", "img": "<img src=x onerror=alert(1)>"}


def dump_dom(url: str, profile: Path, timeout: float = 60) -> str:
    """Load ``url`` in headless Chromium and return the DOM after ~3 s of (virtual) time."""
    assert CHROMIUM is not None
    proc = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so a hung browser is killed with its children
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        raise AssertionError(f"chromium did not finish loading {url} within {timeout} s") from None
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


class Page(HTMLParser):
    """What the tests read from the dumped DOM."""

    def __init__(self, dom: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: dict[str, int] = {}
        self.state = ""
        self.title = ""
        self.rows: list[dict[str, str]] = []
        self.rejected: list[str] = []
        self.filter_summary = ""
        self.matching = ""
        self._stack: list[tuple[str, dict[str, str]]] = []
        self._cell: Optional[str] = None
        self._capture: Optional[str] = None
        self.feed(dom)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags[tag] = self.tags.get(tag, 0) + 1
        classes = a.get("class", "").split()
        if tag == "body":
            self.state = a.get("data-state", "")
        if tag == "tr" and "event" in classes:
            self.rows.append({})
        if tag == "td" and self.rows and self._in("tr", "event"):
            self._cell = classes[0] if classes else ""
            self.rows[-1][self._cell] = ""
        if tag == "article" and "rejected" in classes:
            self.rejected.append("")
        if a.get("id") in ("filter-summary", "count") or tag == "title":
            self._capture = a.get("id") or tag
            self.matching = a.get("data-matching", self.matching)
        if tag not in ("meta", "link", "input", "br", "img", "option"):
            self._stack.append((tag, a))

    def _in(self, tag: str, cls: str) -> bool:
        return any(t == tag and cls in a.get("class", "").split() for t, a in self._stack)

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            top, _ = self._stack.pop()
            if top == tag:
                break
        if tag == "td":
            self._cell = None
        if tag in ("p", "span", "title"):
            self._capture = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None and self.rows:
            self.rows[-1][self._cell] += data
        if self._in("article", "rejected"):
            self.rejected[-1] += data
        if self._capture == "title":
            self.title += data
        elif self._capture == "filter-summary":
            self.filter_summary += data

    def names(self) -> list[str]:
        return [row.get("name", "") for row in self.rows]


@pytest.fixture(scope="module")
def browsed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevServer, Path]]:
    """A dev server with events tracked by a real client, plus one rejected batch."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    tmp = tmp_path_factory.mktemp("browser")
    with dev_server(tmp / "dev.db") as server:
        with client_for(server) as client:
            client.track("signup", "u1", {"plan": "pro"})
            client.track("page_viewed", "u2", {"path": "/a"})
            client.track("page_viewed", "u2", {"path": "/b"})
            client.track(XSS_NAME, XSS_ID, XSS_PROPS)
            assert client.flush(10)
            assert client.identify("u1", {"email": "ada@example.com"})
        assert batch(server.url, {"name": "late", "timestamp": "2024-01-15T10:30:00+02:00"}).status == 400
        yield server, tmp


@needs_chromium
def test_page_lists_events_newest_first_and_renders_user_data_as_text(
    browsed: tuple[DevServer, Path], tmp_path: Path
) -> None:
    server, _ = browsed
    page = Page(dump_dom(f"{server.url}/", tmp_path / "profile"))
    assert page.state == "ready", "the page never loaded its data"
    assert page.names() == [XSS_NAME, "page_viewed", "page_viewed", "signup"]
    xss = page.rows[0]
    assert xss["distinct-id"] == XSS_ID
    assert json.loads(xss["properties"]) == XSS_PROPS
    assert re.fullmatch(r"[0-9a-f-]{36}", xss["idempotency-key"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", xss["timestamp"])
    # The payloads were rendered as text: no element was created from them, no script of theirs ran.
    assert page.tags.get("img", 0) == 0
    assert page.tags["script"] == 1  # the page's own
    assert page.title == "Serla dev"
    assert json.loads(page.rows[3]["properties"]) == {"plan": "pro"}
    assert page.matching == "4"
    # The rejected batch, with the server's details.
    assert len(page.rejected) == 1
    rejected = page.rejected[0]
    assert "400" in rejected and "POST /api/v1/events/batch" in rejected
    assert "Invalid batch data" in rejected and "events.0.timestamp" in rejected
    assert "Invalid ISO datetime" in rejected


@needs_chromium
def test_page_filters_by_name_from_the_query_string(browsed: tuple[DevServer, Path], tmp_path: Path) -> None:
    server, _ = browsed
    page = Page(dump_dom(f"{server.url}/?name=page_viewed", tmp_path / "profile"))
    assert page.state == "ready"
    assert page.names() == ["page_viewed", "page_viewed"]
    assert [json.loads(row["properties"]) for row in page.rows] == [{"path": "/b"}, {"path": "/a"}]
    assert page.filter_summary == 'Filtered by name = "page_viewed"'
    assert page.matching == "2"


@needs_chromium
def test_page_filters_by_distinct_id_including_markup(
    browsed: tuple[DevServer, Path], tmp_path: Path
) -> None:
    server, _ = browsed
    page = Page(dump_dom(f"{server.url}/?distinct_id={quote(XSS_ID)}", tmp_path / "profile"))
    assert page.state == "ready"
    assert page.names() == [XSS_NAME]
    assert page.tags.get("img", 0) == 0 and page.tags["script"] == 1
    page = Page(dump_dom(f"{server.url}/?name=signup&distinct_id=u1", tmp_path / "profile2"))
    assert page.names() == ["signup"] and page.rows[0]["distinct-id"] == "u1"
    page = Page(dump_dom(f"{server.url}/?name=signup&distinct_id=u2", tmp_path / "profile3"))
    assert page.state == "ready" and page.names() == []


@needs_chromium
def test_page_shows_rate_limited_requests(tmp_path: Path) -> None:
    with dev_server(tmp_path / "dev.db", rate_limits={"batch": 1}) as server:
        assert [batch(server.url, {"name": f"e{i}"}).status for i in range(3)] == [201, 429, 429]
        dom = dump_dom(f"{server.url}/", tmp_path / "profile")
    page = Page(dom)
    assert page.state == "ready"
    count = re.search(r'id="rate-limited-count"[^>]*data-count="(\d+)"', dom) or re.search(
        r'data-count="(\d+)"[^>]*id="rate-limited-count"', dom
    )
    assert count is not None and count.group(1) == "2"
    section = dom[dom.index('id="rate-limited-section"') : dom.index('id="rejected-section"')]
    assert section.count('class="rejected"') == 2 and "Too many requests" in section
    assert "batch 1 requests a minute" in section
    # The 429s are also among the rejected requests.
    assert sum("429" in text and "Too many requests" in text for text in page.rejected) == 4


@needs_chromium
def test_page_shows_new_events_without_a_reload(tmp_path: Path) -> None:
    """The page polls: an event stored after its first poll was answered shows up without a reload."""
    with dev_server(tmp_path / "dev.db") as server:
        # The first events poll is answered at once; the second is held for 2 s (Chromium's virtual time
        # stands still while a fetch is pending), and the event is sent while it is held.
        server.inject(Fault(path="/api/dev/events"), Fault(delay=2.0, path="/api/dev/events"))
        sent: list[int] = []

        def send_during_the_second_poll() -> None:
            # GET /, its script and style, six first-round fetches, then the first of the second round.
            if server.wait_for_requests(10, timeout=30):
                sent.append(batch(server.url, {"name": "arrived_later", "distinctId": "u9"}).status)

        sender = threading.Thread(target=send_during_the_second_poll)
        sender.start()
        try:
            page = Page(dump_dom(f"{server.url}/?distinct_id=u9", tmp_path / "profile"))
        finally:
            sender.join(35)
        assert sent == [201]
        assert server.pending_faults == []
        polls = [r for r in server.requests if r.path == "/api/dev/events"]
        assert len(polls) >= 2
        assert page.names() == ["arrived_later"]


def test_a_2000_level_body_is_stored_in_sqlite_and_served_back(dev: DevServer) -> None:
    deep = b"[" * 2000 + b"]" * 2000
    body = b'{"events":[{"name":"deep","properties":{"a":' + deep + b',"big":9007199254740993}}]}'
    assert call(dev.url, "POST", BATCH_PATH, body, {"Authorization": f"Bearer {KEY}"}).status == 201
    reply = call(dev.url, "GET", "/api/dev/events")
    assert reply.status == 200 and reply.body.count(b"[") >= 2000
    (event,) = dev.stored
    assert event.data["properties"]["big"] == 9007199254740992  # rounded, as the real server stores it
    depth, value = 0, event.data["properties"]["a"]
    while value:
        depth, value = depth + 1, value[0]
    assert depth == 1999


V1_SCHEMA = """
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, name TEXT NOT NULL,
    distinct_id TEXT, timestamp TEXT, data TEXT NOT NULL, received_at REAL NOT NULL, idempotency_key TEXT,
    position INTEGER NOT NULL, session_id TEXT NOT NULL, endpoint TEXT NOT NULL, user_agent TEXT NOT NULL,
    api_key TEXT NOT NULL);
CREATE TABLE people (distinct_id TEXT PRIMARY KEY, identity_id TEXT NOT NULL, properties TEXT NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE rejected (seq INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL, method TEXT NOT NULL,
    path TEXT NOT NULL, query TEXT NOT NULL, status INTEGER NOT NULL, idempotency_key TEXT,
    user_agent TEXT NOT NULL, body TEXT NOT NULL, body_size INTEGER NOT NULL, response TEXT NOT NULL);
PRAGMA application_id=1397902401;
PRAGMA user_version=1;
"""


def test_a_database_of_the_previous_version_is_migrated(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.executescript(V1_SCHEMA)
        conn.execute(
            "INSERT INTO events (event_id, name, data, received_at, position, session_id, endpoint, user_agent,"
            " api_key) VALUES ('e1', 'old', '{\"name\":\"old\"}', 1.0, 0, 's1', ?, '', 'sk_live_...abcd')",
            (BATCH_PATH,),
        )
        conn.execute("INSERT INTO people VALUES ('u1', 'i1', '{\"plan\":\"pro\"}', 1.0)")
        conn.commit()
    with dev_server(db) as server:
        assert [e.data for e in server.stored] == [{"name": "old"}]
        assert server.identities == {"u1": {"plan": "pro"}}
        assert batch(server.url, {"name": "new"}).status == 201
        assert server.store.session_project("s1") == "default"
        with client_for(server) as client:
            assert client.identify("u1", {"seats": 2})
        assert server.identities == {"u1": {"plan": "pro", "seats": 2}}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_plan_option(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--port", "0", "--db", ":memory:", "--plan", "free"])
    out, stop = Lines("listening on"), threading.Event()
    thread = threading.Thread(target=lambda: run(args, out=out, err=io.StringIO(), stop=stop))
    thread.start()
    try:
        assert out.seen.wait(10)
        url = re.search(r"listening on (http://\S+)", out.getvalue())
        assert url is not None
        assert get_json(url.group(1), "/api/dev/status")["plan"] == "free"
    finally:
        stop.set()
        thread.join(10)
    assert "plan:         free (a quota of 25,000 events a month)" in out.getvalue()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--plan", "gold"])
