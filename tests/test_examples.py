"""Every example in ``examples/`` runs against the local server and its events arrive as the README says.

Web frameworks run in-process through their own test clients; the Lambda handler and the scripts run in
subprocesses, configured only through ``SERLA_API_KEY`` / ``SERLA_HOST`` like a user would.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from serla.devtools.server import SerlaServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = "sk_live_examples_test_key"
BROWSER_SESSION = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY}) as srv:
        yield srv


@pytest.fixture
def env(server: SerlaServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process (for in-process examples) and subprocesses at the local server."""
    monkeypatch.setenv("SERLA_API_KEY", KEY)
    monkeypatch.setenv("SERLA_HOST", server.url)
    monkeypatch.delenv("SERLA_DISABLED", raising=False)
    return dict(os.environ)


@contextlib.contextmanager
def imported(name: str, directory: Path) -> Iterator[ModuleType]:
    """Import an example module from ``directory``, and forget it (and its submodules) afterwards."""
    sys.path.insert(0, str(directory))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(directory))
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]


def run_example(
    args: list[str], env: dict[str, str], cwd: Path = EXAMPLES
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e["name"], e["distinctId"], e["properties"]) for e in events]


def test_fastapi_lifespan_shutdown_delivers(server: SerlaServer, env: dict[str, str]) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        # Recent Starlette prefers httpx2 and warns when its TestClient runs on httpx; either works here.
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient

    with imported("fastapi_app", EXAMPLES) as app_module:
        try:
            with TestClient(app_module.app) as http:
                response = http.post("/signup", params={"user_id": "user_123"})
                assert response.json() == {"ok": True}
                headers = {"X-User-Id": "user_123", "X-Serla-Session-Id": BROWSER_SESSION}
                assert http.post("/checkout", headers=headers).json() == {"ok": True}
            # Leaving the TestClient ran the lifespan's shutdown: delivered, no waiting needed.
            assert summary(server.events) == [
                ("signup_completed", "user_123", {"source": "api"}),
                ("checkout_started", "user_123", {}),  # the ASGI integration named the user
            ]
            assert server.events[1]["sessionId"] == BROWSER_SESSION
            assert app_module.serla.track("late", "user_123") is False  # it really was shut down
        finally:
            app_module.serla.shutdown(5)
    assert server.stored[0].api_key == KEY


def test_flask_route_tracks_and_atexit_hook_flushes(server: SerlaServer, env: dict[str, str]) -> None:
    pytest.importorskip("flask")

    with imported("flask_app", EXAMPLES) as app_module:
        client = app_module.serla
        try:
            http = app_module.app.test_client()
            response = http.post("/signup", json={"user_id": "user_123", "plan": "pro"})
            assert response.get_json() == {"ok": True}
            response = http.post("/signup", json={"user_id": "user_456"})
            assert response.status_code == 200
            assert http.post("/checkout", headers={"X-User-Id": "user_456"}).status_code == 200
            assert client.shutdown(5) is True  # what the example's atexit hook calls
        finally:
            atexit.unregister(client.shutdown)
            client.shutdown(5)
    assert summary(server.events) == [
        ("signup_completed", "user_123", {"plan": "pro"}),
        ("signup_completed", "user_456", {"plan": None}),
        ("checkout_started", "user_456", {}),  # the WSGI integration named the user
    ]
    # One session per request (no browser id was sent): each event its request's.
    assert len({e["sessionId"] for e in server.events}) == 3


def test_django_view_and_middleware(
    server: SerlaServer, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("django")
    import django
    from django.conf import settings
    from django.urls import clear_url_caches
    from django.utils.functional import empty

    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "shop.settings")
    with imported("shop", EXAMPLES / "django_app"):
        django.setup()
        from django.test import Client
        from shop.analytics import serla as client  # type: ignore[import-not-found]

        try:
            http = Client()
            response = http.post("/signup/", {"plan": "pro"}, HTTP_X_DEMO_USER="42")
            assert response.json() == {"ok": True}
            response = http.post("/signup/", {})  # anonymous: the middleware tracks nothing
            assert response.status_code == 200
            assert client.flush(5) is True
        finally:
            client.shutdown(5)
            settings._wrapped = empty  # forget the example's settings
            clear_url_caches()
    assert summary(server.events) == [
        ("signup_completed", "1", {"plan": "pro"}),
        ("request_handled", "42", {"path": "/signup/", "status": 200}),
        ("signup_completed", "2", {"plan": "free"}),
    ]
    # The Django integration put each request in one session: the view's and the middleware's events.
    first, handled, second = server.events
    assert first["sessionId"] == handled["sessionId"] != second["sessionId"]


def test_lambda_handler_flushes_before_returning(server: SerlaServer, env: dict[str, str]) -> None:
    # os._exit() skips atexit hooks, like a Lambda container frozen after the handler returns: the events
    # must have been delivered by the handler's own flush().
    code = (
        "import json, os, aws_lambda_handler as h\n"
        "results = [h.handler({'user_id': 'u1'}, None), h.handler({'user_id': 'u2'}, None)]\n"
        "print(json.dumps(results), flush=True)\n"
        "os._exit(0)\n"
    )
    proc = run_example(["-c", code], env)
    assert json.loads(proc.stdout) == [{"statusCode": 200}, {"statusCode": 200}]
    assert summary(server.events) == [
        ("lambda_invoked", "u1", {"region": "us-east-1"}),
        ("lambda_invoked", "u2", {"region": "us-east-1"}),
    ]


def test_oneshot_script_flushes_every_record_on_exit(
    server: SerlaServer, env: dict[str, str], tmp_path: Path
) -> None:
    records = [{"user_id": f"user_{i % 7}", "size": i} for i in range(250)]
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    run_example([str(EXAMPLES / "oneshot_script.py"), str(path)], env)
    events = server.events
    assert len(events) == 250
    assert {e["name"] for e in events} == {"record_processed"}
    assert sorted((e["distinctId"], e["properties"]["size"]) for e in events) == sorted(
        (r["user_id"], r["size"]) for r in records
    )
    # The default batch_size (50) triggers sends; a backlog that builds up while a request is in flight
    # goes out in requests of up to 100 events, the server's cap.
    assert all(r.event_count <= 100 for r in server.requests)


def test_oneshot_script_sample_records(server: SerlaServer, env: dict[str, str]) -> None:
    run_example([str(EXAMPLES / "oneshot_script.py")], env)
    assert [e["distinctId"] for e in server.events] == ["user_1", "user_2", "user_3"]


def test_atexit_script_flushes_at_interpreter_exit(server: SerlaServer, env: dict[str, str]) -> None:
    run_example([str(EXAMPLES / "atexit_script.py")], env)
    assert summary(server.events) == [("started", "cron", {})]
