"""``import serla`` stays light: no HTTP stack, no TLS, no OpenTelemetry, no threads, no atexit hooks."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("ssl", "http.client", "urllib.request", "opentelemetry", "wrapt", "email.utils", "socket")


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def test_import_serla_pulls_in_no_heavy_module() -> None:
    code = (
        "import sys, threading\n"
        "before = threading.active_count()\n"
        "import serla\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules], threading.active_count() - before)\n"
    )
    assert run(code) == "[] 0"


def test_creating_a_client_starts_no_thread_and_loads_no_http_stack() -> None:
    code = (
        "import sys, threading\n"
        "import serla\n"
        "c = serla.Serla('sk_live_x', host='http://127.0.0.1:9')\n"
        "print(sorted(t.name for t in threading.enumerate()), 'http.client' in sys.modules)\n"
    )
    assert run(code) == "['MainThread'] False"


def test_logger_has_only_a_null_handler() -> None:
    code = (
        "import logging, serla\n"
        "print([type(h).__name__ for h in logging.getLogger('serla').handlers], logging.getLogger().handlers)\n"
    )
    assert run(code) == "['NullHandler'] []"
