"""``serla.integrations.wsgi`` around a real Flask app served by werkzeug on 127.0.0.1 (real HTTP)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import serla
from serla.devtools.server import SerlaServer
from serla.integrations.wsgi import SerlaMiddleware

from .conftest import BROWSER_SESSION, by_name, request

flask = pytest.importorskip("flask")
serving = pytest.importorskip("werkzeug.serving")


def make_app(client: serla.Serla) -> Any:
    app = flask.Flask("wsgi_test")

    @app.post("/checkout")
    def checkout() -> Any:
        # No user, session or group in the view: the middleware's context supplies them.
        client.track("checkout_started")
        client.track("checkout_paid", properties={"total": 12})
        return {"ok": True}

    @app.get("/stream")
    def stream() -> Any:
        def body() -> Iterator[str]:
            for i in range(2):
                client.track("chunk_sent", properties={"i": i})
                yield f"chunk {i}\n"

        return flask.Response(body(), mimetype="text/plain")

    def user(environ: dict[str, Any]) -> Any:
        if environ.get("HTTP_X_USER") == "crash":
            raise RuntimeError("resolver bug")
        return environ.get("HTTP_X_USER")

    app.wsgi_app = SerlaMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        distinct_id=user,
        groups=lambda environ: {"company": environ.get("HTTP_X_COMPANY")},
        properties=lambda environ: {"route": environ["PATH_INFO"]},
    )
    return app


@pytest.fixture
def port(client: serla.Serla) -> Iterator[int]:
    httpd = serving.make_server("127.0.0.1", 0, make_app(client), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_port
    finally:
        httpd.shutdown()
        thread.join(10)


def test_a_request_carries_its_user_session_and_groups(
    port: int, client: serla.Serla, server: SerlaServer
) -> None:
    headers = {"X-User": "u1", "X-Company": "acme"}
    assert request(port, "POST", "/checkout", headers) == (200, {"ok": True})
    assert request(port, "POST", "/checkout", headers) == (200, {"ok": True})
    assert client.flush(5)
    started, paid = by_name(server.events)["checkout_started"], by_name(server.events)["checkout_paid"]
    for event in started + paid:
        assert event["distinctId"] == "u1"
        assert event["properties"]["$groups"] == {"company": "acme"}
        assert event["properties"]["route"] == "/checkout"
    # One session per request: both events of a request share it; the two requests differ.
    assert started[0]["sessionId"] == paid[0]["sessionId"]
    assert started[1]["sessionId"] == paid[1]["sessionId"]
    assert started[0]["sessionId"] != started[1]["sessionId"]
    assert paid[0]["properties"]["total"] == 12


def test_the_browser_session_header_and_cookie_are_adopted(
    port: int, client: serla.Serla, server: SerlaServer
) -> None:
    other = "f" * 32
    request(port, "POST", "/checkout", {"X-User": "u1", "X-Serla-Session-Id": BROWSER_SESSION})
    request(port, "POST", "/checkout", {"X-User": "u1", "Cookie": f"a=1; serla_session_id={other}; b=2"})
    request(port, "POST", "/checkout", {"X-User": "u1", "X-Serla-Session-Id": "not-a-session"})
    assert client.flush(5)
    sessions = [e["sessionId"] for e in by_name(server.events)["checkout_started"]]
    assert sessions[:2] == [BROWSER_SESSION, other]
    assert sessions[2] not in (BROWSER_SESSION, other) and len(sessions[2]) == 32  # a fresh one instead


def test_a_failing_resolver_never_fails_the_request(
    port: int, client: serla.Serla, server: SerlaServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="serla"):
        assert request(port, "POST", "/checkout", {"X-User": "crash"}) == (200, {"ok": True})
    assert "the distinct_id resolver raised RuntimeError('resolver bug')" in caplog.text
    # No user: the view's events are dropped (and counted), the request succeeded all the same.
    assert client.flush(5)
    assert server.events == []
    assert client.stats()["dropped"]["invalid_call"] == 2


def test_a_streamed_body_is_produced_inside_the_request_context(
    port: int, client: serla.Serla, server: SerlaServer
) -> None:
    status, body = request(port, "GET", "/stream", {"X-User": "u2"})
    assert (status, body) == (200, "chunk 0\nchunk 1\n")
    assert client.flush(5)
    chunks = by_name(server.events)["chunk_sent"]
    assert [(e["distinctId"], e["properties"]["i"]) for e in chunks] == [("u2", 0), ("u2", 1)]
    assert chunks[0]["sessionId"] == chunks[1]["sessionId"]
    assert serla.current_scope() == serla.Scope()  # nothing leaked into the test's thread


def test_before_send_scrubs_a_property_from_every_request(server: SerlaServer) -> None:
    from .conftest import KEY

    def scrub(event: dict[str, Any]) -> dict[str, Any]:
        event["properties"].pop("route", None)
        return event

    client = serla.Serla(
        KEY, host=server.url, flush_interval_seconds=60, flush_on_exit=False, before_send=scrub
    )
    try:
        http = make_app(client).test_client()
        assert http.post("/checkout", headers={"X-User": "u3"}).status_code == 200
        assert client.flush(5)
    finally:
        client.shutdown(5)
    assert [sorted(e["properties"]) for e in server.events] == [[], ["total"]]
    assert all(e["distinctId"] == "u3" for e in server.events)


def test_resolvers_must_be_callable() -> None:
    with pytest.raises(TypeError, match="distinct_id must be a callable"):
        SerlaMiddleware(lambda e, s: [], distinct_id="HTTP_X_USER")  # type: ignore[arg-type]


def test_session_resolver_and_request_sessions_off(client: serla.Serla, server: SerlaServer) -> None:
    app = flask.Flask("wsgi_sessions")

    @app.get("/")
    def index() -> Any:
        client.track("viewed")
        return {"ok": True}

    login_session = "ab" * 16
    with_resolver = SerlaMiddleware(
        app.wsgi_app,
        distinct_id=lambda environ: "u",
        session_id=lambda environ: login_session if environ.get("HTTP_X_LOGGED_IN") else "not-hex",
    )
    without = SerlaMiddleware(app.wsgi_app, distinct_id=lambda environ: "u", request_sessions=False)
    app.wsgi_app = with_resolver  # type: ignore[method-assign]
    http = app.test_client()
    http.get("/", headers={"X-Logged-In": "1"})
    http.get("/", headers={"X-Logged-In": "1", "X-Serla-Session-Id": BROWSER_SESSION})  # the browser's wins
    http.get("/")  # the resolver's value is not a session id: a fresh one per request instead
    app.wsgi_app = without  # type: ignore[method-assign]
    http.get("/")
    assert client.flush(5)
    sessions = [e.get("sessionId") for e in server.events]
    assert sessions[:2] == [login_session, BROWSER_SESSION]
    assert sessions[2] is not None and sessions[2] not in (login_session, BROWSER_SESSION)
    assert sessions[3] is None


def test_integrations_are_not_imported_by_import_serla() -> None:
    import subprocess
    import sys

    code = (
        "import sys, serla\n"
        "serla.context, serla.current_scope, serla.new_session_id\n"
        "print(sorted(m for m in sys.modules if m.startswith(('serla.integrations', 'flask', 'django', "
        "'celery', 'starlette'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
