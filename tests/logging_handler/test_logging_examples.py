"""The logging examples, run as real processes against the loopback server, and the exit-time ordering."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from serla.devtools.server import SerlaServer

KEY = "sk_live_logging_examples"
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY}) as srv:
        yield srv


def run(server: SerlaServer, *args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SERLA_API_KEY=KEY, SERLA_HOST=server.url)
    env.pop("SERLA_DISABLED", None)
    cmd = [sys.executable, "-c", textwrap.dedent(code)] if code is not None else [sys.executable, *args]
    done = subprocess.run(cmd, env=env, cwd=EXAMPLES, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Logging error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    return done


def test_an_app_configured_only_by_dictconfig_delivers_the_documented_event(server: SerlaServer) -> None:
    done = run(server, str(EXAMPLES / "logging_dictconfig.py"))
    assert "order ord_1001 placed" in done.stderr  # the console handler still prints every line
    [event] = server.events  # the two ordinary lines are not events
    assert event["timestamp"].endswith("Z")
    assert event == {
        "name": "order_placed",
        "distinctId": "user_123",
        "timestamp": event["timestamp"],
        "properties": {
            "message": "order ord_1001 placed",
            "level": "INFO",
            "logger": "shop.checkout",
            "order_id": "ord_1001",
            "total": 42.5,
            "currency": "EUR",
            "items": 3,
        },
    }


@pytest.mark.parametrize("mode", ["kwargs", "formatter"])
def test_structlog_example(server: SerlaServer, mode: str) -> None:
    pytest.importorskip("structlog")
    run(server, str(EXAMPLES / "structlog_example.py"), mode)
    [event] = server.events
    assert (event["name"], event["distinctId"]) == ("signup_completed", "user_42")
    assert event["properties"] == {
        "message": "user signed up",
        "level": "INFO",
        "logger": "shop.accounts",
        "plan": "pro",
        "mode": mode,
    }


def test_django_logging_settings_and_middleware(server: SerlaServer) -> None:
    pytest.importorskip("django")
    run(
        server,
        code="""
        import logging
        import django
        from django.conf import settings
        import django_logging_settings as example

        settings.configure(LOGGING=example.LOGGING, DEBUG=False, ALLOWED_HOSTS=["testserver"])
        django.setup()  # Django applies LOGGING with dictConfig

        from django.http import HttpResponse
        from django.test import RequestFactory

        log = logging.getLogger("shop.views")

        def upgrade(request):
            log.info("plan upgraded", extra={"event": "plan_upgraded", "plan": "pro"})
            return HttpResponse("ok")

        class User:
            pk = 7
            is_authenticated = True

        request = RequestFactory().post("/upgrade")
        request.user = User()
        assert example.serla_distinct_id(upgrade)(request).status_code == 200
        log.info("nightly job done", extra={"event": "job_done"})  # no user: default_distinct_id
        logging.getLogger("django.request").warning("Not Found: /x")  # Django's own lines: not events
        """,
    )
    events = sorted(server.events, key=lambda e: e["name"])
    assert [(e["name"], e["distinctId"]) for e in events] == [
        ("job_done", "anonymous"),
        ("plan_upgraded", "7"),
    ]
    assert events[1]["properties"]["plan"] == "pro"
    assert events[1]["properties"]["logger"] == "shop.views"


def test_exit_ordering_a_record_logged_after_the_clients_exit_hook_still_arrives(server: SerlaServer) -> None:
    """atexit runs hooks in reverse: the client's flush, then a late app hook that logs, then logging.shutdown."""
    run(
        server,
        code=f"""
        import atexit, logging, os
        from serla.logging_handler import SerlaHandler

        log = logging.getLogger("app")
        log.setLevel(logging.INFO)

        def late_hook():
            log.info("bye", extra={{"event": "late_event", "distinct_id": "u"}})

        atexit.register(late_hook)  # registered before the client, so it runs after the client's hook
        handler = SerlaHandler(api_key="{KEY}", host=os.environ["SERLA_HOST"],
                               client_options={{"flush_interval_seconds": 60.0}})
        log.addHandler(handler)
        log.info("hi", extra={{"event": "early_event", "distinct_id": "u"}})
        """,
    )
    assert sorted(e["name"] for e in server.events) == ["early_event", "late_event"]


def documented_example() -> tuple[str, dict[str, object], str]:
    """The handler's worked example in the README: its code, the JSON shown for it, and the README's text."""
    for doc in (ROOT / "docs" / "logging.md",):
        text = doc.read_text(encoding="utf-8")
        for found in re.finditer(
            r"```python\n((?:(?!```).)*)```\s*arrives as\s*```json\n(.*?)```", text, re.S
        ):
            if "SerlaHandler(serla)" in found.group(1):
                return found.group(1), json.loads(found.group(2)), text
    pytest.fail("the documented SerlaHandler example is not in docs/logging.md")


def test_the_documented_example_arrives_as_shown(server: SerlaServer) -> None:
    """The mapping's worked example in the docs is what the handler really sends."""
    code, shown, _ = documented_example()
    runnable = code.replace('Serla("sk_live_...")', f"Serla({KEY!r}, host={server.url!r})")
    assert runnable != code
    run(server, code=runnable)  # nothing flushed by hand: the client's exit hook delivers
    [event] = server.events
    assert event == {**shown, "timestamp": event["timestamp"]}


def test_the_documented_defaults_are_the_codes() -> None:
    from serla.logging_handler import DEFAULT_DISTINCT_ID_KEYS, DEFAULT_EVENT_KEYS, IGNORED_LOGGERS

    _, _, text = documented_example()
    assert f"| `event_keys` | `{json.dumps(list(DEFAULT_EVENT_KEYS))}` |" in text
    assert f"| `distinct_id_keys` | `{json.dumps(list(DEFAULT_DISTINCT_ID_KEYS))}` |" in text
    assert all(f"`{name}`" in text for name in IGNORED_LOGGERS)
