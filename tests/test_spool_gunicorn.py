"""A gunicorn app with 3 pre-forked workers sharing one spool, through an outage longer than its memory bound."""

from __future__ import annotations

import collections
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
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serla._spool import FILE_NAME, Spool
from serla.devtools.server import Fault, SerlaServer

KEY = "sk_live_spool_gunicorn_test_01"

APP = """
import logging
import os
from serla import Serla

logging.getLogger("serla").addHandler(logging.StreamHandler())  # its warnings, in the test's failure report

client = Serla(os.environ["SERLA_TEST_KEY"], host=os.environ["SERLA_TEST_URL"],
               spool_dir=os.environ["SERLA_TEST_SPOOL"], max_queue_size=20, flush_interval_seconds=0.2,
               shutdown_timeout=5)

def app(environ, start_response):
    rid = environ.get("QUERY_STRING", "").partition("rid=")[2]
    client.track("hit", "visitor", {"rid": rid, "pid": os.getpid()})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
"""


class LineReader:
    """Reads a pipe on a thread so the test can wait for a line with a timeout."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.stream = stream
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for line in self.stream:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                return None
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match


def gunicorn_bin() -> str | None:
    candidate = Path(sys.executable).with_name("gunicorn")
    return str(candidate) if candidate.exists() else shutil.which("gunicorn")


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY}) as srv:
        yield srv


@pytest.mark.timeout(300)
@pytest.mark.skipif(gunicorn_bin() is None, reason="gunicorn is not installed")
def test_three_workers_sharing_a_spool_lose_nothing_and_send_nothing_twice(
    server: SerlaServer, tmp_path: Path
) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "serla_spool_app.py").write_text(APP, encoding="utf-8")
    spool_dir = tmp_path / "spool"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERLA_")}
    env.update(SERLA_TEST_KEY=KEY, SERLA_TEST_URL=server.url, SERLA_TEST_SPOOL=str(spool_dir))
    server.set_default_fault(Fault(status=503))  # down from the start
    cmd = [
        str(gunicorn_bin()), "--preload", "--workers", "3", "--bind", "127.0.0.1:0",
        "--chdir", str(tmp_path / "app"), "--graceful-timeout", "20", "--log-level", "info",
        "serla_spool_app:app",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    assert proc.stderr is not None
    log = LineReader(proc.stderr)
    answers: dict[str, int] = {}
    try:
        listening = log.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)", 30)
        assert listening is not None, "".join(log.seen)
        port = int(listening.group(1))
        for _ in range(3):
            assert log.wait_for(r"Booting worker with pid", 30) is not None, "".join(log.seen)
        lock = threading.Lock()

        def hit(prefix: str) -> None:
            for n in range(100):
                rid = f"{prefix}-{n}"
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/?rid={rid}", timeout=10) as resp:
                    pid = int(resp.read())
                with lock:
                    answers[rid] = pid

        clients = [threading.Thread(target=hit, args=(f"c{k}",)) for k in range(4)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(120)
        assert len(answers) == 400, "each worker got far more than its memory bound (20) while down"
        assert len(set(answers.values())) >= 2, "several workers served the requests"
        assert server.events == []
        for _ in range(100):  # bounded: until every event is on disk (written within about a second)
            if Spool(spool_dir).size() and sum(r["events"] for r in Spool(spool_dir).status()) >= 400:
                break
            time.sleep(0.1)
        assert sum(r["events"] for r in Spool(spool_dir).status()) == 400, "all 400 on disk, none dropped"

        server.clear_faults()  # back up: the workers' flushers deliver from the shared spool
        if not server.wait_for_events(400, timeout=120):
            pytest.fail(f"{len(server.events)} of 400 delivered; log: {''.join(log.seen)}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.thread.join(10)
        proc.stderr.close()

    hits = collections.Counter(e["properties"]["rid"] for e in server.events if e["name"] == "hit")
    assert hits == {rid: 1 for rid in answers}, "every hit once: nothing lost, nothing sent twice"
    left = Spool(spool_dir).status()
    if left:
        while not log.lines.empty():
            log.seen.append(log.lines.get_nowait())
        conn = sqlite3.connect(spool_dir / FILE_NAME)
        rows = conn.execute(
            "SELECT id, key, events, lease_until, lease_owner, attempts FROM batches"
        ).fetchall()
        conn.close()
        pytest.fail(f"left on disk: {left} {rows}; log: {''.join(log.seen)}")
