"""The error-tracking examples run against the contract server and their reports arrive as documented."""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import serla
from serla._worker import BatchWorker
from serla.devtools.errors import parse_top_frame
from serla.devtools.server import SerlaServer

pytestmark = pytest.mark.skipif(
    not hasattr(BatchWorker, "submit"), reason="needs the worker's lanes: git merge main"
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KEY = "sk_live_examples_test_key"


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY}) as srv:
        yield srv


@contextlib.contextmanager
def imported(name: str) -> Iterator[ModuleType]:
    sys.path.insert(0, str(EXAMPLES))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))
        sys.modules.pop(name, None)


def test_fastapi_failing_view_is_reported(server: SerlaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    monkeypatch.setenv("SERLA_API_KEY", KEY)
    monkeypatch.setenv("SERLA_HOST", server.url)
    monkeypatch.setenv("SERLA_RELEASE", "2026.12.1")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        from fastapi.testclient import TestClient

    with (
        imported("fastapi_errors_app") as module,
        TestClient(module.app, raise_server_exceptions=False) as http,
    ):
        for order in (42, 43):
            response = http.get(f"/orders/{order}/refund", headers={"x-user-id": "user_1"})
            assert response.status_code == 500
    assert server.errors.wait_for_reports(2, timeout=10)
    reports = server.errors.reports()
    assert [r["message"] for r in reports] == [
        "order 42 was already refunded",
        "order 43 was already refunded",
    ]
    assert {r["type"] for r in reports} == {"fastapi_errors_app.RefundRefused"}
    assert reports[0]["metadata"] == {"method": "GET", "path": "/orders/42/refund"}
    assert reports[0]["distinctId"] == "user_1" and reports[0]["release"] == "2026.12.1"
    top = parse_top_frame(reports[0]["stack"])
    assert top is not None and (top.file, top.fn) == ("fastapi_errors_app.py", "refund")
    assert [g["count"] for g in server.errors.groups()] == [2]


def test_the_script_reports_handled_and_uncaught_errors(server: SerlaServer) -> None:
    here = str(Path(serla.__file__).parents[1])
    env = {
        **os.environ,
        "SERLA_API_KEY": KEY,
        "SERLA_HOST": server.url,
        "PYTHONPATH": os.pathsep.join([here, *sys.path]),
    }
    proc = subprocess.run(
        [sys.executable, "errors_script.py"],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "RuntimeError: the import stopped after 7" in proc.stderr
    assert server.errors.wait_for_reports(2, timeout=10)
    handled, uncaught = server.errors.reports()
    assert handled["level"] == "warning" and handled["metadata"] == {"row": "three"}
    assert parse_top_frame(handled["stack"]).fn == "parse_row"  # type: ignore[union-attr]
    assert uncaught["type"] == "RuntimeError" and uncaught["metadata"]["mechanism"] == "sys.excepthook"
    assert parse_top_frame(uncaught["stack"]).fn == "main"  # type: ignore[union-attr]
