"""Whole processes: ``opentelemetry-instrument`` auto-configuration, delivery at exit, and import rules."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

from serla._server import SerlaServer

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "otel_auto_instrument_app.py"
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SERLA_"))}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH", "")]))
    result = subprocess.run(args, env={**base, **env}, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


def run_script(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-c", textwrap.dedent(code)], env)


@pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrument is not installed")
def test_opentelemetry_instrument_delivers_from_an_unmodified_app(server: SerlaServer, api_key: str) -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "serla",
        "OTEL_LOGS_EXPORTER": "serla",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "shop",
        "SERLA_API_KEY": api_key,
        "SERLA_HOST": server.url,
    }
    assert "serla" not in APP.read_text().replace("OTEL_TRACES_EXPORTER=serla", "").split('"""', 2)[2]
    result = run([str(INSTRUMENT), sys.executable, str(APP)], env)
    assert "checkout done" in result.stdout
    # The process has exited: everything must already be stored (no waiting on a background sender).
    events = {e["name"]: e for e in server.events}
    assert set(events) == {"checkout_completed", "order_placed"}
    span_event, log_event = events["checkout_completed"], events["order_placed"]
    assert span_event["distinctId"] == log_event["distinctId"] == "user_123"
    assert span_event["properties"]["order.total"] == 42.5
    assert span_event["properties"]["span_name"] == "checkout"
    assert span_event["properties"]["service.name"] == log_event["properties"]["service.name"] == "shop"
    assert log_event["properties"]["items"] == 3
    # the log-based event was emitted inside the span: both carry the same trace
    assert log_event["properties"]["trace_id"] == span_event["properties"]["trace_id"]


EXIT_APP = """
    import atexit, threading
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    import serla
    from serla.otel import SerlaLogRecordExporter, SerlaSpanExporter

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(SerlaSpanExporter(), schedule_delay_millis=60000))
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(SerlaLogRecordExporter(), schedule_delay_millis=60000)
    )
    MODE = {mode!r}
    if MODE == "client_created_later":
        # The app registers its own client after the providers: its atexit hook runs first.
        serla.set_default_client(serla.Serla({key!r}, host={host!r}))
    if MODE == "no_thread_at_exit":
        # What Python 3.12+ does during interpreter shutdown: no new thread can start. Registered after
        # the providers, this hook runs before their shutdown hooks.
        def forbid_threads():
            def start(self):
                raise RuntimeError("can't create new thread at interpreter shutdown")
            threading.Thread.start = start
        atexit.register(forbid_threads)

    with tracer_provider.get_tracer("t").start_as_current_span("s", attributes={{"user.id": "u"}}) as span:
        span.add_event("last_span_event")
        logger_provider.get_logger("l").emit(event_name="last_log_event", attributes={{"user.id": "u"}})
    print("pending clients:", serla.get_default_client(create=False) is not None)
"""


@pytest.mark.parametrize("mode", ["lazy_client", "client_created_later", "no_thread_at_exit"])
def test_events_ended_just_before_exit_are_delivered(server: SerlaServer, api_key: str, mode: str) -> None:
    """Nothing is exported before exit (60 s batch delay): the providers' exit hooks export, create the
    client if needed, and the exporters' shutdown flushes it, even when no thread can start any more."""
    code = EXIT_APP.format(mode=mode, key=api_key, host=server.url)
    result = run_script(code, {"SERLA_API_KEY": api_key, "SERLA_HOST": server.url})
    expect_client = "True" if mode == "client_created_later" else "False"
    assert f"pending clients: {expect_client}" in result.stdout  # lazy: no client before the first export
    assert sorted(e["name"] for e in server.events) == ["last_log_event", "last_span_event"]


def test_processor_events_are_delivered_by_the_client_exit_hook(server: SerlaServer, api_key: str) -> None:
    code = f"""
        from opentelemetry.sdk.trace import TracerProvider
        import serla
        from serla.otel import SerlaSpanProcessor
        client = serla.Serla({api_key!r}, host={server.url!r}, flush_interval_seconds=60)
        provider = TracerProvider()
        provider.add_span_processor(SerlaSpanProcessor(client))
        with provider.get_tracer("t").start_as_current_span("s", attributes={{"user.id": "u"}}) as span:
            span.add_event("at_exit")
    """
    run_script(code, {})
    assert [e["name"] for e in server.events] == ["at_exit"]


def test_missing_extra_names_it() -> None:
    code = """
        import sys
        sys.modules["opentelemetry"] = None  # as if opentelemetry were not installed
        try:
            import serla.otel
        except ImportError as exc:
            print("ImportError:", exc)
    """
    result = run_script(code, {})
    assert 'pip install "serla-py[otel]"' in result.stdout


def test_instrumentor_is_imported_only_when_used() -> None:
    code = """
        import sys
        import serla
        assert not any(m.startswith(("opentelemetry", "wrapt")) for m in sys.modules), "import serla"
        import serla.otel
        print("instrumentation loaded:", "opentelemetry.instrumentation" in sys.modules)
        sys.modules["opentelemetry.instrumentation"] = None  # as if it were not installed
        try:
            serla.otel.SerlaInstrumentor
        except ImportError as exc:
            print("ImportError:", exc)
    """
    result = run_script(code, {})
    assert "instrumentation loaded: False" in result.stdout
    assert "needs opentelemetry-instrumentation" in result.stdout


def test_code_config_example(server: SerlaServer, api_key: str) -> None:
    result = run(
        [sys.executable, str(ROOT / "examples" / "otel_code_config.py")],
        {"SERLA_API_KEY": api_key, "SERLA_HOST": server.url},
    )
    assert "paid" in result.stdout
    events = {e["name"]: e for e in server.events}
    assert sorted(events) == [
        "invoice.pay",
        "invoice_emailed",
        "invoice_paid",
        "payment_authorized",
        "receipt_issued",
    ]
    assert {e["distinctId"] for e in server.events} == {"user_42"}
    assert len({e["properties"]["trace_id"] for e in server.events}) == 1  # one trace ties them together
    assert events["invoice.pay"]["properties"]["invoice.id"] == "inv_1001"
