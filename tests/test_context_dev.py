"""``serla dev`` shows sessions (events grouped by the session id sent) and groups (``$groups``).

A Flask app behind the WSGI integration sends to a real :class:`DevServer`; the JSON endpoint is read over
HTTP, and the page itself in headless Chromium when it is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import serla
from serla.devtools.dev import SESSIONS_API, DevServer, SQLiteStore

BROWSER = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevServer]:
    store = SQLiteStore(tmp_path / "dev.db")
    server = DevServer("127.0.0.1", 0, store=store)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        store.close()


def send_requests(dev: DevServer) -> None:
    flask = pytest.importorskip("flask")
    from serla.integrations.wsgi import SerlaMiddleware

    client = serla.Serla("sk_live_dev", host=dev.url, flush_interval_seconds=60, flush_on_exit=False)
    app = flask.Flask("dev_sessions")

    @app.post("/checkout")
    def checkout() -> Any:
        client.track("cart_viewed")
        client.track("checkout_paid")
        return {"ok": True}

    app.wsgi_app = SerlaMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        distinct_id=lambda environ: environ.get("HTTP_X_USER"),
        groups=lambda environ: {"company": environ.get("HTTP_X_COMPANY")},
    )
    try:
        http = app.test_client()
        http.post("/checkout", headers={"X-User": "u1", "X-Company": "acme", "X-Serla-Session-Id": BROWSER})
        http.post("/checkout", headers={"X-User": "u2", "X-Company": "globex"})
        client.track("bare", "u3")  # no session: counted apart
        assert client.flush(5)
    finally:
        client.shutdown(5)


def test_the_sessions_endpoint_groups_events_by_session_and_group(dev: DevServer) -> None:
    send_requests(dev)
    with urllib.request.urlopen(dev.url + SESSIONS_API, timeout=10) as response:
        data = json.loads(response.read())
    assert data["withoutSession"] == 1 and data["scanned"] == 5
    first, second = data["sessions"][1], data["sessions"][0]  # the most recently active first
    assert first["sessionId"] == BROWSER
    assert (first["events"], first["names"], first["distinctIds"]) == (
        2,
        ["cart_viewed", "checkout_paid"],
        ["u1"],
    )
    assert first["groups"] == {"company": ["acme"]}
    assert second["sessionId"] != BROWSER and second["distinctIds"] == ["u2"] and second["events"] == 2
    assert [(g["type"], g["id"], g["events"], g["distinctIds"]) for g in data["groups"]] == [
        ("company", "globex", 2, ["u2"]),
        ("company", "acme", 2, ["u1"]),
    ]


def test_the_page_shows_sessions_and_groups(dev: DevServer, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    send_requests(dev)
    proc = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=3000",
            "--dump-dom",
            dev.url + "/",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        raise AssertionError("chromium did not finish loading the page") from None
    dom = out.decode()
    sessions = dom[dom.index('id="sessions-body"') : dom.index('id="groups-body"')]
    groups = dom[dom.index('id="groups-body"') : dom.index('id="rejected-section"')]
    assert BROWSER in sessions and "cart_viewed → checkout_paid" in sessions
    assert sessions.count('class="session"') == 2
    assert "acme" in groups and "globex" in groups and groups.count('class="group"') == 2
    assert "1 of the last 5 events came without one" in dom
