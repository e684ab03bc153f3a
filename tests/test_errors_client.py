"""``capture_exception``, the hooks, the logging handler and the OTel bridge, end to end on the contract server.

Reports travel through the client's worker ("errors" lane) to ``SerlaServer``'s ``/api/v1/errors`` (the real
route's validation and fingerprint). Uncaught exceptions are raised in real subprocesses.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import serla
from serla import Serla
from serla._errors import ERRORS_PER_MINUTE
from serla._worker import BatchWorker
from serla.devtools.errors import parse_top_frame
from serla.devtools.server import SerlaServer

# Reports travel through the worker's "errors" lane (the lead's "Worker: lanes" commit on main).
pytestmark = pytest.mark.skipif(
    not hasattr(BatchWorker, "submit"), reason="needs the worker's lanes: git merge main"
)

KEY = "sk_live_test"


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer() as srv:
        yield srv


@pytest.fixture
def client(server: SerlaServer) -> Iterator[Serla]:
    c = Serla(KEY, host=server.url, flush_on_exit=False, release="1.2.3", environment="test")
    yield c
    c.shutdown(5)


def charge(card: int) -> None:
    raise ValueError(f"card {card} declined")


def test_capture_exception_in_an_except_block(server: SerlaServer, client: Serla) -> None:
    with serla.distinct_id_context("user_1"):
        try:
            charge(4242)
        except ValueError:
            assert client.capture_exception(context={"order": 7}) is True
    assert client.flush(5)
    assert server.errors.wait_for_reports(1, timeout=5)
    report = server.errors.reports()[0]
    assert report["message"] == "card 4242 declined" and report["type"] == "ValueError"
    assert report["distinctId"] == "user_1" and report["level"] == "error"
    assert report["release"] == "1.2.3" and report["environment"] == "test"
    assert report["metadata"] == {"order": 7}
    top = parse_top_frame(report["stack"])
    assert top is not None and top.fn == "charge" and top.file.endswith("test_errors_client.py")
    assert client.stats()["errors"]["captured"] == 1


def test_wrong_calls_are_dropped_never_raised(client: Serla) -> None:
    assert client.capture_exception() is False  # nothing being handled
    assert client.capture_exception("not an exception") is False
    assert client.stats()["dropped"]["invalid_call"] == 2
    try:
        charge(1)
    except ValueError as exc:
        assert client.capture_exception(exc, level="loud", distinct_id=object(), context=[1]) is True  # type: ignore[arg-type]


def test_each_exception_is_reported_once(server: SerlaServer, client: Serla) -> None:
    try:
        charge(1)
    except ValueError as exc:
        assert client.capture_exception(exc)
        assert not client.capture_exception(exc)
    assert client.stats()["errors"]["duplicate"] == 1


def test_rate_limit_per_fingerprint_per_minute(server: SerlaServer) -> None:
    now = [1_000_000.0]
    c = Serla(KEY, host=server.url, flush_on_exit=False, _clock=lambda: now[0])
    try:
        results = []
        for n in range(ERRORS_PER_MINUTE + 5):
            try:
                charge(n)
            except ValueError as exc:
                results.append(c.capture_exception(exc))
        try:
            {}["other"]  # another fingerprint has its own budget
        except KeyError as exc:
            assert c.capture_exception(exc)
        assert results.count(True) == ERRORS_PER_MINUTE
        assert c.stats()["errors"]["rate_limited"] == 5
        now[0] += 60
        try:
            charge(99)
        except ValueError as exc:
            assert c.capture_exception(exc)
        assert c.flush(5)
        assert server.errors.wait_for_reports(ERRORS_PER_MINUTE + 2, timeout=5)
        assert [g["count"] for g in server.errors.groups()] in (
            [ERRORS_PER_MINUTE + 1, 1],
            [1, ERRORS_PER_MINUTE + 1],
        )
    finally:
        c.shutdown(5)


def test_before_send_error_scrubs_or_drops(server: SerlaServer) -> None:
    def scrub(report: dict[str, Any], exc: BaseException | None) -> dict[str, Any] | None:
        if "secret" in report["message"]:
            return None
        if isinstance(exc, KeyError):
            raise RuntimeError("a broken hook")
        report["message"] = report["message"].replace("4242", "****")
        return report

    c = Serla(KEY, host=server.url, flush_on_exit=False, before_send_error=scrub)
    try:
        for exc in (ValueError("card 4242"), ValueError("the secret"), KeyError("k")):
            c.capture_exception(exc)
        assert c.flush(5)
        assert server.errors.wait_for_reports(1, timeout=5)
        assert [r["message"] for r in server.errors.reports()] == ["card ****"]
        stats = c.stats()["errors"]
        assert stats["dropped_by_hook"] == 1 and stats["hook_error"] == 1
    finally:
        c.shutdown(5)


def test_402_turns_error_reporting_off_and_events_go_on(server: SerlaServer) -> None:
    server.errors.free_keys.add("sk_live_free")
    c = Serla("sk_live_free", host=server.url, flush_on_exit=False)
    try:
        c.capture_exception(ValueError("first"))
        assert c.flush(5) is not None
        assert c.track("still_tracked", "u1")
        assert c.flush(5)
        assert server.wait_for_events(1, timeout=5)
        assert not c.capture_exception(ValueError("after the 402"))
        lane = c.stats()["lanes"]["errors"]
        assert lane["disabled"]
    finally:
        c.shutdown(5)
    assert server.errors.reports() == []


def test_a_rate_limited_errors_bucket_never_holds_up_events(server: SerlaServer, client: Serla) -> None:
    from serla.devtools.server import Fault

    server.inject(Fault(status=429, headers={"Retry-After": "30"}, path="/api/v1/errors"))
    assert client.capture_exception(ValueError("held for 30 s"))
    assert server.wait_for_requests(1, timeout=5)  # the 429
    for n in range(3):
        assert client.track("order_paid", "u1", {"n": n})
    assert client.flush(0.5) is False  # the report waits for its bucket...
    assert server.wait_for_events(3, timeout=5)  # ...while events are delivered
    assert server.errors.reports() == []
    assert client.stats()["lanes"]["errors"]["queued"] == 1


def test_logging_handler_reports_exceptions_once(server: SerlaServer, client: Serla) -> None:
    from serla.logging_handler import SerlaHandler

    handler = SerlaHandler(client, errors_level="ERROR")
    log = logging.getLogger("test_errors_client.shop")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            charge(5)
        except ValueError as exc:
            log.exception("payment failed for %s", "order 5", extra={"distinct_id": "u5"})
            log.info("not an error", exc_info=True)  # below errors_level
            assert not client.capture_exception(exc)  # already reported by the handler
        log.error("no exception here")
    finally:
        log.removeHandler(handler)
        handler.close()
    assert client.flush(5)
    assert server.errors.wait_for_reports(1, timeout=5)
    reports = server.errors.reports()
    assert len(reports) == 1
    assert reports[0]["distinctId"] == "u5" and reports[0]["level"] == "error"
    assert reports[0]["metadata"]["log_message"] == "payment failed for order 5"
    assert handler.stats()["errors_reported"] == 1


def test_otel_exception_events_become_reports_with_the_trace_id(server: SerlaServer, client: Serla) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from serla.otel import SerlaSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SerlaSpanProcessor(client, errors=True, span_events=False))
    tracer = provider.get_tracer("test")
    trace_id = None
    try:
        with tracer.start_as_current_span("checkout") as span:
            trace_id = f"{span.get_span_context().trace_id:032x}"
            charge(6)
    except ValueError as exc:
        assert not client.capture_exception(exc)  # the span processor reported this very exception
    with tracer.start_as_current_span("manual") as span:  # recorded, not raised: from the event's text
        try:
            charge(7)
        except ValueError as exc:
            span.record_exception(exc)
    provider.shutdown()
    assert client.flush(5)
    assert server.errors.wait_for_reports(2, timeout=5)
    first, second = server.errors.reports()
    assert first["metadata"]["trace_id"] == trace_id and first["metadata"]["span_name"] == "checkout"
    assert parse_top_frame(first["stack"]).fn == "charge"  # type: ignore[union-attr]
    assert second["message"] == "card 7 declined"
    assert parse_top_frame(second["stack"]).fn == "charge"  # type: ignore[union-attr]
    assert server.events == []  # span_events=False: no $exception events


# -- uncaught exceptions, in subprocesses --------------------------------------------------------------------

SCRIPT_HEAD = """
import sys
from serla import Serla
client = Serla("sk_live_test", host=sys.argv[1], capture_exceptions=True, flush_interval_seconds=60)
"""


def _run(tmp_path: Path, body: str, server: SerlaServer) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app_script.py"
    script.write_text(SCRIPT_HEAD + textwrap.dedent(body))
    here = str(Path(serla.__file__).parents[1])  # this checkout's serla, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, *sys.path])}
    return subprocess.run(
        [sys.executable, str(script), server.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )


def test_uncaught_exception_in_the_main_thread_arrives_before_exit(
    tmp_path: Path, server: SerlaServer
) -> None:
    out = _run(
        tmp_path,
        """
        def main():
            raise LookupError("no such order")
        main()
        """,
        server,
    )
    assert out.returncode == 1 and "LookupError: no such order" in out.stderr  # Python's hook still ran
    assert server.errors.wait_for_reports(1, timeout=5)
    report = server.errors.reports()[0]
    assert report["type"] == "LookupError" and report["metadata"]["mechanism"] == "sys.excepthook"
    top = parse_top_frame(report["stack"])
    assert top is not None and (top.file, top.fn) == ("app_script.py", "main")


def test_uncaught_exception_in_a_thread_arrives_before_exit(tmp_path: Path, server: SerlaServer) -> None:
    out = _run(
        tmp_path,
        """
        import threading
        def work():
            raise KeyError("job 9")
        t = threading.Thread(target=work, name="worker-1")
        t.start(); t.join()
        """,
        server,
    )
    assert out.returncode == 0 and "KeyError" in out.stderr
    assert server.errors.wait_for_reports(1, timeout=5)
    report = server.errors.reports()[0]
    assert report["metadata"] == {"mechanism": "threading.excepthook", "handled": False, "thread": "worker-1"}


def test_uncaught_exception_in_an_asyncio_task_arrives_before_exit(
    tmp_path: Path, server: SerlaServer
) -> None:
    out = _run(
        tmp_path,
        """
        import asyncio, gc
        async def job():
            raise ArithmeticError("task failed")
        async def main():
            task = asyncio.get_running_loop().create_task(job())
            await asyncio.sleep(0.05)
            del task
            gc.collect()
        asyncio.run(main())
        """,
        server,
    )
    assert out.returncode == 0, out.stderr
    assert "Task exception was never retrieved" in out.stderr  # the loop's own handler still ran
    assert server.errors.wait_for_reports(1, timeout=5)
    report = server.errors.reports()[0]
    assert report["type"] == "ArithmeticError" and report["metadata"]["mechanism"] == "asyncio"
    assert parse_top_frame(report["stack"]).fn == "job"  # type: ignore[union-attr]


def test_asyncio_imported_after_the_client_is_hooked_too(tmp_path: Path, server: SerlaServer) -> None:
    out = _run(
        tmp_path,
        """
        assert "asyncio" not in sys.modules
        import asyncio
        loop = asyncio.new_event_loop()
        loop.call_exception_handler({"message": "boom", "exception": OSError("late import")})
        loop.close()
        """,
        server,
    )
    assert out.returncode == 0, out.stderr
    assert server.errors.wait_for_reports(1, timeout=5)
    assert server.errors.reports()[0]["message"] == "late import"


def test_keyboard_interrupt_and_system_exit_are_not_reported(tmp_path: Path, server: SerlaServer) -> None:
    out = _run(tmp_path, "raise KeyboardInterrupt\n", server)
    assert out.returncode != 0
    out = _run(tmp_path, "raise SystemExit(3)\n", server)
    assert out.returncode == 3
    assert server.wait_for_requests(1, timeout=0.5) is False
    assert server.errors.reports() == []


def test_hooks_chain_what_was_installed_and_uninstall(server: SerlaServer) -> None:
    seen: list[Any] = []
    previous_sys, previous_thread = sys.excepthook, threading.excepthook

    def mine(*args: Any) -> None:
        seen.append(args[0])

    sys.excepthook = mine
    try:
        c = Serla(KEY, host=server.url, flush_on_exit=False, capture_exceptions=True)
        assert sys.excepthook is not mine
        try:
            charge(3)
        except ValueError:
            sys.excepthook(*sys.exc_info())
        assert seen == [ValueError]
        assert server.errors.wait_for_reports(1, timeout=5)  # the hook flushed
        c.shutdown(5)
        assert sys.excepthook is mine and threading.excepthook is previous_thread
    finally:
        sys.excepthook = previous_sys
