"""Shared helpers of the reliability suite: a real SerlaServer on 127.0.0.1, real clients, real subprocesses.

Nothing here is a double: every client is a real :class:`serla.Serla` with its real ``HttpTransport``
talking HTTP to a real :class:`serla.devtools.server.SerlaServer`. The only test seam used is the retry policy
(``_policy``), so that backoffs last milliseconds instead of seconds; its arithmetic is the production one.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from serla import Serla
from serla._retry import RetryPolicy
from serla.devtools.server import BATCH_PATH, RecordedRequest, SerlaServer, StoredEvent

API_KEY = "sk_live_reliability_0123456789abcdef"

FAST_OPTIONS: dict[str, float] = {
    "base_delay": 0.01,
    "max_delay": 0.05,
    "jitter": 0.0,
    "retry_after_max": 120.0,
    "quota_delay": 3600.0,
    "auth_delay": 0.05,
    "server_error_attempts": 5,
    "pace_min": 0.001,  # pacing while rate limited, scaled down like the delays
    "pace_max": 0.01,
    "rate_window": 0.1,
}


def fast_policy(**overrides: float) -> RetryPolicy:
    """The production policy's classification with test-sized delays (``FAST_OPTIONS`` + ``overrides``)."""
    return RetryPolicy(**{**FAST_OPTIONS, **overrides})  # type: ignore[arg-type]


FAST = fast_policy()
"""The production policy with millisecond backoffs (server holds and quota pauses keep their real size)."""


class Clients:
    """Makes real clients with test-friendly defaults and shuts every one of them down afterwards."""

    def __init__(self) -> None:
        self.made: list[Serla] = []

    def __call__(self, url: str, **options: Any) -> Serla:
        options.setdefault("flush_on_exit", False)
        options.setdefault("flush_interval_seconds", 0.02)
        options.setdefault("timeout", 5.0)
        options.setdefault("shutdown_timeout", 5.0)
        options.setdefault("_policy", FAST)
        api_key = options.pop("api_key", API_KEY)
        client = Serla(api_key, host=url, **options)
        self.made.append(client)
        return client


def batch_requests(server: SerlaServer) -> list[RecordedRequest]:
    """The server's recorded ``POST /api/v1/events/batch`` requests, in arrival order."""
    return [r for r in server.requests if r.path == BATCH_PATH]


def seq_of(event: StoredEvent | dict[str, Any]) -> Any:
    """The ``seq`` property every test event carries."""
    data = event.data if isinstance(event, StoredEvent) else event
    return data["properties"]["seq"]


def by_key_position(server: SerlaServer) -> collections.Counter[tuple[str | None, int]]:
    """How many times each (idempotency key, position) was stored."""
    return collections.Counter((e.idempotency_key, e.position) for e in server.stored)


def first_arrivals(server: SerlaServer) -> list[Any]:
    """Each stored event's ``seq``, in the order of its first arrival (later duplicates skipped)."""
    seen: set[Any] = set()
    out = []
    for event in server.stored:
        s = seq_of(event)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


# -- subprocesses ---------------------------------------------------------------------------------------


def write_script(tmp_path: Path, body: str, name: str = "script.py") -> Path:
    """Write a dedented Python script into ``tmp_path`` and return its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child interpreter: this one's, with output unbuffered."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("SERLA_DISABLED", None)
    env.update(extra)
    return env


def run_script(
    path: Path, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``path`` with this interpreter; a hung child is killed at ``timeout`` (the test then fails)."""
    return subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or child_env(),
        check=False,
    )


def wait_stopped(pid: int, timeout: float) -> bool:
    """Wait (bounded) until the child ``pid`` is stopped by a signal (SIGSTOP); False on timeout.

    ``waitpid(WUNTRACED)`` blocks, so it runs on a helper thread; on timeout the child is killed, which
    ends the wait.
    """
    box: list[int] = []

    def wait() -> None:
        _, status = os.waitpid(pid, os.WUNTRACED)
        box.append(status)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        os.kill(pid, signal.SIGKILL)
        thread.join(5)
        return False
    return bool(box) and os.WIFSTOPPED(box[0])


def read_http_request(conn: socket.socket | Any) -> tuple[bytes, bytes]:
    """Read one HTTP/1.1 request (head, body) off a raw or TLS socket; raises ``OSError`` on EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionAbortedError("the client closed the connection mid-request")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionAbortedError("the client closed the connection mid-body")
        body += chunk
    return head, body


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
