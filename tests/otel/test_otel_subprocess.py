"""Whole processes: ``opentelemetry-instrument`` auto-configuration, delivery at exit, and import rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

from serla.devtools.server import SerlaServer

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "otel_auto_instrument_app.py"
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
needs_instrument = pytest.mark.skipif(
    not INSTRUMENT.exists(), reason="opentelemetry-instrument is not installed"
)


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SERLA_"))}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH", "")]))
    result = subprocess.run(args, env={**base, **env}, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result


def run_script(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-c", textwrap.dedent(code)], env)


@needs_instrument
@pytest.mark.parametrize("service", [None, "shop"], ids=["the_issue_command", "with_service_name"])
def test_opentelemetry_instrument_delivers_from_an_unmodified_app(
    server: SerlaServer, api_key: str, service: str | None
) -> None:
    """The command of issue 5, verbatim: OTEL_TRACES_EXPORTER=serla OTEL_LOGS_EXPORTER=serla
    OTEL_METRICS_EXPORTER=none SERLA_API_KEY=... SERLA_HOST=... opentelemetry-instrument python app.py"""
    env = {
        "OTEL_TRACES_EXPORTER": "serla",
        "OTEL_LOGS_EXPORTER": "serla",
        "OTEL_METRICS_EXPORTER": "none",
        "SERLA_API_KEY": api_key,
        "SERLA_HOST": server.url,
    }
    if service is not None:
        env["OTEL_SERVICE_NAME"] = service
    assert "serla" not in APP.read_text().replace("OTEL_TRACES_EXPORTER=serla", "").split('"""', 2)[2]
    result = run([str(INSTRUMENT), sys.executable, str(APP)], env)
    assert "checkout done" in result.stdout
    # The process has exited: everything must already be stored (no waiting on a background sender).
    events = {e["name"]: e for e in server.events}
    assert len(server.events) == 2 and set(events) == {"checkout_completed", "order_placed"}
    span_event, log_event = events["checkout_completed"], events["order_placed"]
    assert span_event["distinctId"] == log_event["distinctId"] == "user_123"
    assert span_event["properties"]["order.total"] == 42.5
    assert span_event["properties"]["span_name"] == "checkout"
    services = {span_event["properties"]["service.name"], log_event["properties"]["service.name"]}
    assert all(s.startswith(service or "unknown_service") for s in services)
    assert log_event["properties"]["items"] == 3
    # the log-based event was emitted inside the span: both carry the same trace
    assert log_event["properties"]["trace_id"] == span_event["properties"]["trace_id"]


TRACKING_APP = """
    import serla
    from opentelemetry import trace

    client = serla.get_default_client()  # made from SERLA_API_KEY / SERLA_HOST
    with trace.get_tracer("shop").start_as_current_span("checkout", attributes={"enduser.id": "u1"}) as span:
        client.track("order_paid", "u1", {"amount": 5})  # a product event, inside a span
        span.add_event("cart_viewed")  # an OTel span event
    print("Serla.track is a", type(serla.Serla.__dict__["track"]).__name__)
"""


@needs_instrument
@pytest.mark.parametrize("disabled", [False, True], ids=["auto_loaded", "disabled_by_env"])
def test_opentelemetry_instrument_loads_serla_instrumentor(
    server: SerlaServer, api_key: str, tmp_path: Path, disabled: bool
) -> None:
    """The ``opentelemetry_instrumentor`` entry point ``serla``: opentelemetry-instrument instruments
    Serla.track, so a track() inside a span shows in the trace as a span event, once, and that span event
    does not come back as a second Serla event. OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=serla turns it off."""
    app = tmp_path / "app.py"
    app.write_text(textwrap.dedent(TRACKING_APP))
    env = {
        "OTEL_TRACES_EXPORTER": "serla,console",  # the console exporter prints the finished span as JSON
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "SERLA_API_KEY": api_key,
        "SERLA_HOST": server.url,
    }
    if disabled:
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "serla"
    result = run([str(INSTRUMENT), sys.executable, str(app)], env)
    assert "Traceback" not in result.stderr, result.stderr
    assert f"Serla.track is a {'function' if disabled else 'FunctionWrapper'}" in result.stdout
    span, _ = json.JSONDecoder().raw_decode(result.stdout[result.stdout.index("{") :])
    span_events = [(e["name"], e["attributes"]) for e in span["events"]]
    tracked_event = ("order_paid", {"amount": 5, "serla.distinct_id": "u1", "serla.tracked": True})
    assert span_events == ([] if disabled else [tracked_event]) + [("cart_viewed", {})]
    # Either way Serla gets each event once: the instrumentor's span event is not tracked again.
    events = {e["name"]: e for e in server.events}
    assert len(server.events) == 2 and set(events) == {"order_paid", "cart_viewed"}
    assert events["order_paid"]["properties"]["trace_id"] == span["context"]["trace_id"][2:]
    assert events["cart_viewed"]["distinctId"] == "u1"


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
