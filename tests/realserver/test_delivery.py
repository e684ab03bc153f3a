"""Delivery that holds, tried as a new user would (issue 11): at default settings, nothing accepted is lost.

- 20,000 events in a tight loop against the real server's ``rl`` project (its own 100 requests a minute
  on ``/events/batch``), then ``shutdown(timeout=None)``: all 20,000 stored exactly once, read back
  through SQL by distinct id and by a sequence property; the server's 429s were waited out (its access
  log shows them) without a retry storm.
- ``track()`` never waits: against a loopback endpoint that answers nothing until the test lets it (an
  endpoint slower than any loop, like the 2-second one of the issue), 1,000 calls all return, accepted,
  before any response could arrive. Nothing here measures time: the endpoint's handler records whether it
  answered.
- A client that lives in a function delivers its events at exit (a real subprocess, read back with SQL).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from serla import Serla

from ._access import answers as client_answers
from .conftest import PROJECTS, RealServer

BATCH_PATH = "/api/v1/events/batch"


def dropped(stats: dict[str, Any]) -> dict[str, int]:
    """``stats()["dropped"]`` without reasons that counted nothing."""
    return {reason: n for reason, n in stats["dropped"].items() if n}


@pytest.mark.timeout(360)
def test_20000_event_tight_loop_at_defaults_is_stored_exactly_once(
    realserver: RealServer, unique: str
) -> None:
    n = 20_000
    log_start = len(realserver.access_log())
    client = Serla(realserver.keys["rl"], host=realserver.host, flush_on_exit=False)
    accepted = [client.track("tight_loop", unique, {"seq": i}) for i in range(n)]
    assert client.shutdown(timeout=None) is True
    stats = client.stats()

    assert accepted.count(False) == 0, stats
    assert stats["sent"] == n and stats["pending"] == 0 and dropped(stats) == {}, stats
    (row,) = realserver.sql(
        "select count(*) as events, count(distinct (properties->>'seq')) as seqs,"
        " min((properties->>'seq')::int) as lo, max((properties->>'seq')::int) as hi"
        f" from events where project_id = '{PROJECTS['rl']}' and distinct_id = '{unique}'"
    )
    assert row == {"events": n, "seqs": n, "lo": 0, "hi": n - 1}  # every event, none twice

    answers = client_answers(realserver.access_log()[log_start:], BATCH_PATH, client)
    # 20,000 events take at least 200 requests: past the project's 100 a minute, so the server said
    # 429 (with Retry-After) at least once; each was waited out, not retried in a loop.
    assert answers.count("429") >= 1, answers
    assert answers.count("429") <= 10, answers
    assert set(answers) <= {"201", "429"}, answers
    assert answers.count("201") >= n // 100


class _HeldEndpoint:
    """A loopback ``/events/batch`` that answers nothing until released (then every request at once).

    ``arrived`` is set when the first request is in; ``answered`` when the first response is written.
    Each request waits at most ``hold_bound`` seconds for the release (a bound, not a pace).
    """

    hold_bound = 30.0

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.answered = threading.Event()
        self.release = threading.Event()
        self.events: list[dict[str, object]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                endpoint.arrived.set()
                endpoint.release.wait(endpoint.hold_bound)
                endpoint.events.extend(body["events"])
                out = json.dumps({"success": True, "count": len(body["events"])}).encode()
                endpoint.answered.set()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def held_endpoint() -> Iterator[_HeldEndpoint]:
    endpoint = _HeldEndpoint()
    try:
        yield endpoint
    finally:
        endpoint.close()


def test_track_never_waits_for_a_slow_endpoint(held_endpoint: _HeldEndpoint) -> None:
    client = Serla("sk_live_slow", host=held_endpoint.url, flush_on_exit=False)
    try:
        assert client.track("first", "u_slow", {"seq": -1})
        assert client.flush(timeout=0.01) is False  # send it now; the endpoint holds it
        assert held_endpoint.arrived.wait(10), "the first request never reached the endpoint"

        accepted = [client.track("burst", "u_slow", {"seq": i}) for i in range(1_000)]

        # Every call returned before any response existed: none of them waited for the endpoint.
        assert not held_endpoint.answered.is_set()
        assert accepted.count(True) == 1_000, client.stats()
        assert dropped(client.stats()) == {}
    finally:
        held_endpoint.release.set()
    assert client.shutdown(timeout=60) is True
    seqs = [e["properties"]["seq"] for e in held_endpoint.events]  # type: ignore[index]
    assert sorted(seqs) == list(range(-1, 1_000))


def test_a_function_local_client_delivers_at_exit(
    realserver: RealServer, unique: str, tmp_path: Path
) -> None:
    script = tmp_path / "local_client.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            from serla import Serla

            def main():
                c = Serla({realserver.keys["max"]!r}, host={realserver.host!r})
                c.track("local_client_event", {unique!r}, {{"n": 1}})

            main()
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    rows = realserver.sql(f"select name, properties from events where distinct_id = '{unique}'")
    assert rows == [{"name": "local_client_event", "properties": {"n": 1}}], proc.stderr
