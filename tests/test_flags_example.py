"""``examples/fastapi_flags_app.py`` runs against the local server and gates its view on the flag."""

from __future__ import annotations

import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from serla.devtools.server import SerlaServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = "sk_live_examples_test_key"


@contextlib.contextmanager
def imported(name: str) -> Iterator[ModuleType]:
    """Import an example module, and forget it afterwards (as ``tests/test_examples.py`` does)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))
        sys.modules.pop(name, None)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY}) as srv:
        monkeypatch.setenv("SERLA_API_KEY", KEY)
        monkeypatch.setenv("SERLA_HOST", srv.url)
        monkeypatch.delenv("SERLA_DISABLED", raising=False)
        yield srv


def test_the_view_follows_the_flag(server: SerlaServer) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient

    server.flags.define(
        "new-checkout",
        rollout_percentage=0,
        conditions=[{"type": "property_equals", "field": "plan", "value": "pro"}],
    )
    server.flags.define(
        "button-color", variants=[{"key": "control", "weight": 50}, {"key": "variant_a", "weight": 50}]
    )
    with imported("fastapi_flags_app") as app_module:
        try:
            with TestClient(app_module.app) as http:
                pro = http.get("/checkout", params={"user_id": "user_123", "plan": "pro"}).json()
                free = http.get("/checkout", params={"user_id": "user_123"}).json()
                server.flags.payment_required_keys.add(KEY)  # cached answers keep working
                again = http.get("/checkout", params={"user_id": "user_123", "plan": "pro"}).json()
        finally:
            app_module.serla.shutdown(5)
    assert pro == again == {"checkout": "new", "button": "control"}
    assert free == {"checkout": "old", "button": "grey"}
    exposures = [
        (e["distinctId"], e["properties"]["$feature_flag"], e["properties"]["$feature_flag_response"])
        for e in server.events
    ]
    assert exposures == [
        ("user_123", "new-checkout", True),
        ("user_123", "button-color", "control"),
        ("user_123", "new-checkout", False),
    ]
