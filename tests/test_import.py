"""``import serla`` stays light: no HTTP stack, no TLS, no OpenTelemetry, no threads, no atexit hooks.

Each stage loads only what it needs: ``import serla`` the encoder and the client class; ``Serla()`` the
worker (``threading``) and the proxy settings; the first send the transport (``http.client``); the first
failed send the retry policy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

from serla.devtools.server import SerlaServer

HEAVY = ("ssl", "http.client", "urllib.request", "opentelemetry", "wrapt", "email.utils", "socket")
# Made lazy for import time (benchmarks/README.md): none of these is needed to define the API.
LAZY_AT_IMPORT = (
    "logging",
    "typing",
    "json",
    "re",
    "threading",
    "dataclasses",
    "uuid",
    "random",
    "decimal",
    "enum",
    "datetime",
    "urllib.parse",
    "contextlib",
    "serla._worker",
    "serla._transport",
    "serla._proxy",
    "serla._retry",
    "serla._log",
    "serla._context",
    "serla._registry",
)
# Never needed to create a client.
LAZY_AT_CLIENT = (*HEAVY, "logging", "json", "re", "dataclasses", "uuid", "random", "urllib.parse")
LAZY_AT_CLIENT += ("serla._transport", "serla._retry")
# Not needed to deliver events (http.client, with ssl and email behind it, is: it loads on the first send).
NOT_FOR_DELIVERY = ("urllib.request", "opentelemetry", "wrapt", "logging", "json", "dataclasses", "uuid")
NOT_FOR_DELIVERY += ("serla._retry",)


def run(code: str, env: Optional[dict[str, str]] = None) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True, env=env
    )
    return out.stdout.strip()


def test_import_serla_pulls_in_no_heavy_module() -> None:
    code = (
        "import sys, threading\n"
        "before = threading.active_count()\n"
        "import serla\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules], threading.active_count() - before)\n"
    )
    assert run(code) == "[] 0"


# Each check counts only modules loaded after interpreter start: an editable install's path hook (the
# dev venv's) imports ``re``, ``pathlib`` and ``urllib.parse`` before any user code runs.


def test_import_serla_defers_everything_the_api_does_not_need() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import serla\n"
        f"print([m for m in {LAZY_AT_IMPORT!r} if m in sys.modules and m not in before])\n"
        "from serla import Serla, Config, set_distinct_id, get_default_client\n"  # lazy names resolve
        "print(callable(set_distinct_id), callable(get_default_client), 'serla._context' in sys.modules)\n"
    )
    assert run(code) == "[]\nTrue True True"


def test_creating_a_client_loads_only_the_worker() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import serla\n"
        "c = serla.Serla('sk_live_x', host='http://127.0.0.1:9')\n"
        f"print([m for m in {LAZY_AT_CLIENT!r} if m in sys.modules and m not in before],"
        " 'serla._worker' in sys.modules)\n"
    )
    assert run(code) == "[] True"


def test_delivering_over_http_loads_http_client_but_no_json_logging_or_retry_policy() -> None:
    # The transport is http.client, imported by the first send; a 2xx never touches the retry policy.
    with SerlaServer(api_keys={"sk_live_x"}) as server:
        code = (
            "import sys\n"
            "before = set(sys.modules)\n"
            "import serla\n"
            f"c = serla.Serla('sk_live_x', host={server.url!r})\n"
            "c.track('e', 'u', {'n': 1})\n"
            "print(c.flush(10), [m for m in "
            + repr(NOT_FOR_DELIVERY)
            + " if m in sys.modules and m not in before], 'http.client' in sys.modules)\n"
        )
        assert run(code) == "True [] True"
        assert [e["name"] for e in server.events] == ["e"]


def test_proxy_settings_cost_no_import_at_client_creation() -> None:
    # Proxy variables are read the way urllib reads them, without importing urllib.request (~30 ms).
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import serla\n"
        "c = serla.Serla('sk_live_x', host='https://serla.example')\n"
        f"print([m for m in {LAZY_AT_CLIENT!r} if m in sys.modules and m not in before])\n"
        "print(repr(c._transport_factory()))\n"  # (this loads the transport, after the check)
    )
    clean = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    direct = "[]\n<HttpTransport https://serla.example>"
    proxied = direct[:-1] + " via proxy http://127.0.0.1:9>"
    assert run(code, {**clean, "NO_PROXY": "localhost", "HTTP_PROXY": "http://127.0.0.1:9"}) == direct
    assert run(code, {**clean, "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "other"}) == proxied
    option = code.replace("host='https://serla.example'", "host='https://serla.example', proxy='127.0.0.1:9'")
    assert run(option, clean) == proxied


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


def test_null_handler_is_attached_before_the_first_record_when_logging_comes_later() -> None:
    # ``import serla`` doesn't import logging; the SDK attaches its NullHandler before it logs anything,
    # so an unconfigured app still sees nothing (no "last resort" output on stderr).
    code = (
        "import sys\n"
        "import serla\n"
        "c = serla.Serla('sk_live_x', host='http://127.0.0.1:9', flush_on_exit=False)\n"
        "print('logging' in sys.modules, c.track('', 'u'))\n"  # dropped: nothing could show the warning
        "import logging\n"
        "print(c.track('', 'u'), [type(h).__name__ for h in logging.getLogger('serla').handlers])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split("\n")[:2] == ["False False", "False ['NullHandler']"]
    assert out.stderr == ""
