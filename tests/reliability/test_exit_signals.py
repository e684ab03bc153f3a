"""Exit by SIGTERM and by a collected client, in real subprocesses and real servers (uvicorn, hypercorn).

``SIGTERM``'s default action kills a process before ``atexit`` runs, and uvicorn and hypercorn restore
that default and re-raise the signal once they have drained. The SDK's handler (``serla._exit``) delivers
first, then chains to the handler it replaced. Every child is bounded by a timeout.
"""

from __future__ import annotations

import collections
import http.client
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from reliability_support import API_KEY, child_env, free_port, run_script, write_script

from serla.devtools.server import SerlaServer

pytestmark = pytest.mark.timeout(90)


def names(server: SerlaServer) -> collections.Counter[str]:
    return collections.Counter(e["name"] for e in server.events)


def test_a_client_that_lived_in_a_function_delivers_at_exit(server: SerlaServer, tmp_path: Path) -> None:
    path = write_script(
        tmp_path,
        f"""
        import gc, sys
        from serla import Serla

        def main():
            c = Serla({API_KEY!r}, host=sys.argv[1], flush_interval_seconds=60)
            c.track("from_a_function", "u")

        main()
        gc.collect()  # the client is gone; its worker and its exit hook are not
        """,
    )
    proc = run_script(path, server.url)
    assert proc.returncode == 0, proc.stderr
    assert names(server)["from_a_function"] == 1


def _start_and_wait(cmd: list[str], marker: str, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return proc
    proc.kill()
    raise AssertionError(f"{cmd[0]} did not print {marker!r}: {''.join(seen)[-2000:]}")


@pytest.mark.parametrize("previous", ["default", "python-handler", "ignored"])
def test_sigterm_delivers_then_chains_to_the_handler_it_replaced(
    server: SerlaServer, tmp_path: Path, previous: str
) -> None:
    install = {
        "default": "",
        "python-handler": "signal.signal(signal.SIGTERM, lambda s, f: (print('app handler', flush=True), sys.exit(7)))",
        "ignored": "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
    }[previous]
    path = write_script(
        tmp_path,
        f"""
        import signal, sys, time
        {install}
        from serla import Serla

        c = Serla({API_KEY!r}, host=sys.argv[1], flush_interval_seconds=60)
        for i in range(5):
            c.track("before_sigterm", "u", {{"i": i}})
        print("ready", flush=True)
        for _ in range(200):
            time.sleep(0.05)
        print("still alive", flush=True)
        """,
    )
    proc = _start_and_wait([sys.executable, str(path), server.url], "ready", child_env())
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert names(server)["before_sigterm"] == 5
    if previous == "default":
        assert proc.returncode == -signal.SIGTERM  # still dies of the signal, as without the SDK
    elif previous == "python-handler":
        assert "app handler" in out and proc.returncode == 7
    else:
        assert "still alive" in out and proc.returncode == 0


APP = """
import os
from fastapi import FastAPI
from serla import Serla

client = Serla({key!r}, host=os.environ["SINK"], flush_interval_seconds=60)
app = FastAPI()

@app.get("/hit/{{n}}")
def hit(n: int) -> dict:
    client.track("served", "u", {{"n": n}})
    return {{"ok": True}}
"""


@pytest.mark.parametrize("server_cmd", ["uvicorn", "hypercorn"])
def test_an_asgi_server_stopped_with_sigterm_delivers_every_event(
    server: SerlaServer, tmp_path: Path, server_cmd: str
) -> None:
    pytest.importorskip(server_cmd)
    (tmp_path / "sigapp.py").write_text(textwrap.dedent(APP.format(key=API_KEY)))
    port = free_port()
    if server_cmd == "uvicorn":
        cmd = [sys.executable, "-m", "uvicorn", "sigapp:app", "--host", "127.0.0.1", "--port", str(port)]
        marker = "Uvicorn running"
    else:
        cmd = [sys.executable, "-m", "hypercorn", "sigapp:app", "--bind", f"127.0.0.1:{port}"]
        marker = "Running on"
    env = child_env(SINK=server.url, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = _start_and_wait(cmd, marker, env)
    try:
        for n in range(37):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"/hit/{n}")
            assert conn.getresponse().status == 200
            conn.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert names(server)["served"] == 37
