"""``serla.integrations.asgi`` in a real FastAPI app, served by uvicorn in a subprocess (HTTP and websockets)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serla.devtools.server import SerlaServer

from .conftest import BROWSER_SESSION, KEY, by_name, request

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

APP = """
import asyncio, os
from fastapi import FastAPI, WebSocket
import serla
from serla.integrations.asgi import SerlaMiddleware

client = serla.Serla(os.environ["SERLA_API_KEY"], host=os.environ["SERLA_HOST"],
                     flush_interval_seconds=60, flush_on_exit=False)


def header(scope, name):
    for key, value in scope["headers"]:
        if key == name:
            return value.decode()
    return None


def user(scope):
    if header(scope, b"x-user") == "crash":
        raise RuntimeError("resolver bug")
    return header(scope, b"x-user")


async def groups(scope):  # an async resolver
    await asyncio.sleep(0)
    return {"company": header(scope, b"x-company")}


app = FastAPI()
app.add_middleware(SerlaMiddleware, distinct_id=user, groups=groups,
                   properties=lambda scope: {"path": scope["path"]})


async def later():
    await asyncio.sleep(0.01)
    client.track("background_task_done")


@app.post("/async")
async def async_view():
    client.track("async_view")
    task = asyncio.get_running_loop().create_task(later())  # a task started by the request
    await task
    return {"ok": True}


@app.post("/sync")
def sync_view():  # FastAPI runs it in its thread pool
    client.track("sync_view")
    return {"ok": True}


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        if text == "bye":
            break
        client.track("ws_message", properties={"text": text})
        await websocket.send_text("ok")
    await websocket.close()


@app.post("/flush")
async def flush():
    return {"ok": await client.aflush(10), "stats": client.stats()["dropped"]}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def port(server: SerlaServer, tmp_path: Path) -> Iterator[int]:
    (tmp_path / "asgi_app.py").write_text(APP, encoding="utf-8")
    port = free_port()
    env = dict(os.environ, SERLA_API_KEY=KEY, SERLA_HOST=server.url, PYTHONPATH=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "asgi_app:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # bounded: until uvicorn accepts connections, or 30 s
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"uvicorn did not start:\n{out}")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def flush(port: int) -> dict[str, int]:
    status, body = request(port, "POST", "/flush")
    assert status == 200 and body["ok"] is True
    return body["stats"]


def test_http_requests_carry_user_session_and_groups(port: int, server: SerlaServer) -> None:
    headers = {"X-User": "u1", "X-Company": "acme"}
    assert request(port, "POST", "/async", headers) == (200, {"ok": True})
    assert request(port, "POST", "/sync", {**headers, "X-Serla-Session-Id": BROWSER_SESSION}) == (
        200,
        {"ok": True},
    )
    flush(port)
    events = by_name(server.events)
    view, task, sync = events["async_view"][0], events["background_task_done"][0], events["sync_view"][0]
    for event in (view, task, sync):
        assert event["distinctId"] == "u1"
        assert event["properties"]["$groups"] == {"company": "acme"}
    # The task the request started is in the request's session; the thread-pool view adopted the header.
    assert view["sessionId"] == task["sessionId"] != BROWSER_SESSION
    assert sync["sessionId"] == BROWSER_SESSION
    assert (view["properties"]["path"], sync["properties"]["path"]) == ("/async", "/sync")


def test_a_websocket_connection_is_one_context(port: int, server: SerlaServer) -> None:
    sync_client = pytest.importorskip("websockets.sync.client")
    headers = {"X-User": "u2", "X-Serla-Session-Id": BROWSER_SESSION}
    with sync_client.connect(f"ws://127.0.0.1:{port}/ws", additional_headers=headers, open_timeout=10) as ws:
        for text in ("a", "b"):
            ws.send(text)
            assert ws.recv(timeout=10) == "ok"
        ws.send("bye")
    flush(port)
    messages = by_name(server.events)["ws_message"]
    assert [(e["distinctId"], e["sessionId"], e["properties"]["text"]) for e in messages] == [
        ("u2", BROWSER_SESSION, "a"),
        ("u2", BROWSER_SESSION, "b"),
    ]


def test_a_failing_resolver_never_fails_the_request(port: int, server: SerlaServer) -> None:
    assert request(port, "POST", "/async", {"X-User": "crash"}) == (200, {"ok": True})
    assert flush(port)["invalid_call"] == 2  # no user: dropped and counted, the request succeeded
    assert server.events == []
