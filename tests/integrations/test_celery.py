"""``serla.integrations.celery`` with a real Celery worker process and Celery's filesystem broker.

The task is sent from a request (a Flask view behind the WSGI middleware) in this process; a worker
subprocess runs it. The broker is kombu's ``filesystem://`` transport in a temporary folder: no network
service at all.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import serla
from serla.devtools.server import SerlaServer

from .conftest import BROWSER_SESSION, KEY, by_name

pytest.importorskip("celery")
flask = pytest.importorskip("flask")

TASKS = """
import os
from celery import Celery
import serla
from serla.integrations.celery import setup

folder = os.environ["BROKER_FOLDER"]
app = Celery("celery_tasks", broker="filesystem://")
app.conf.broker_transport_options = {"data_folder_in": folder, "data_folder_out": folder}
app.conf.broker_connection_retry_on_startup = True
setup()

client = serla.Serla(os.environ["SERLA_API_KEY"], host=os.environ["SERLA_HOST"],
                     flush_interval_seconds=60, flush_on_exit=False)


@app.task
def send_receipt(order):
    client.track("receipt_sent", properties={"order": order})  # no user code: the context has it
    client.flush(10)


@app.task
def probe():
    scope = serla.current_scope()
    client.track("probe", "probe", {"user": scope.distinct_id, "session": scope.session_id})
    client.flush(10)
"""


@pytest.fixture
def tasks(server: SerlaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    broker = tmp_path / "broker"
    broker.mkdir()
    (tmp_path / "celery_tasks.py").write_text(TASKS, encoding="utf-8")
    env = {"SERLA_API_KEY": KEY, "SERLA_HOST": server.url, "BROKER_FOLDER": str(broker)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("celery_tasks")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_tasks",
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            "--without-heartbeat",
            "--without-mingle",
            "--without-gossip",
            "--loglevel=WARNING",
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield module
    finally:
        worker.terminate()
        try:
            output, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate(timeout=10)
        module.client.shutdown(5)
        from serla.integrations.celery import teardown

        teardown()
        sys.modules.pop("celery_tasks", None)
        assert b"Traceback" not in output, output.decode(errors="replace")


def test_a_task_started_from_a_request_reports_under_the_same_user_and_session(
    tasks: Any, server: SerlaServer
) -> None:
    from serla.integrations.wsgi import SerlaMiddleware

    app = flask.Flask("celery_caller")

    @app.post("/order")
    def order() -> Any:
        tasks.send_receipt.delay("o-1")
        return {"ok": True}

    app.wsgi_app = SerlaMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        distinct_id=lambda environ: environ.get("HTTP_X_USER"),
        groups=lambda environ: {"company": "acme"},
        properties=lambda environ: {"when": object()},  # not JSON: must not break delay()
    )
    http = app.test_client()
    response = http.post("/order", headers={"X-User": "u7", "X-Serla-Session-Id": BROWSER_SESSION})
    assert response.status_code == 200
    tasks.probe.delay()  # sent outside any context, run after the first task by the same worker process

    assert server.wait_for_events(2, timeout=60), "the worker did not report both tasks"
    events = by_name(server.events)
    (receipt,) = events["receipt_sent"]
    assert receipt["distinctId"] == "u7" and receipt["sessionId"] == BROWSER_SESSION
    assert receipt["properties"]["$groups"] == {"company": "acme"}
    assert receipt["properties"]["order"] == "o-1"
    assert isinstance(receipt["properties"]["when"], str)  # coerced on the way
    (probe,) = events["probe"]
    assert probe["properties"] == {"user": None, "session": None}  # nothing leaked from the first task
    assert serla.current_scope() == serla.Scope()


def test_header_round_trip() -> None:
    from serla.integrations.celery import from_header, to_header

    scope = serla.Scope("u", BROWSER_SESSION, {"company": "acme"}, {"n": 1})
    assert to_header(serla.Scope()) is None
    assert from_header(to_header(scope)) == scope
    assert (
        from_header({"distinct_id": 5, "session_id": "x", "groups": {"a": 1}, "properties": [1]})
        == serla.Scope()
    )
    assert from_header("garbage") is None
