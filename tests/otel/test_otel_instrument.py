"""The other direction (track() inside spans), SerlaInstrumentor, @tracked, and the no-feedback-loop rules."""

from __future__ import annotations

import asyncio
import http.client
import inspect
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.trace")
pytest.importorskip("opentelemetry.instrumentation")

import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import serla
import serla._client
from serla.devtools.server import SerlaServer
from serla.otel import TRACKED_MARKER, SerlaInstrumentor, SerlaSpanProcessor, tracked


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.fixture
def instrumented() -> Iterator[Any]:
    original = serla._client.Serla.__dict__["track"]
    instrumentor = SerlaInstrumentor()
    instrumentor.instrument()
    yield instrumentor
    instrumentor.uninstrument()
    assert serla._client.Serla.__dict__["track"] is original


# -- track() inside a span (core's capture_trace_context) ----------------------------------------------


def test_track_inside_a_span_carries_its_ids(client: serla.Serla, server: SerlaServer, spans: Any) -> None:
    provider, _ = spans
    with provider.get_tracer("t").start_as_current_span("s") as span:
        client.track("inside", "u")
        client.track("mine_win", "u", {"trace_id": "custom"})
        ctx = span.get_span_context()
    client.track("outside", "u")
    assert client.flush(5)
    by_name = {e["name"]: e["properties"] for e in server.events}
    assert by_name["inside"] == {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
    assert by_name["mine_win"]["trace_id"] == "custom"
    assert by_name["outside"] == {}


def test_capture_trace_context_can_be_turned_off(server: SerlaServer, api_key: str, spans: Any) -> None:
    provider, _ = spans
    with serla.Serla(api_key, host=server.url, capture_trace_context=False, flush_on_exit=False) as c:
        with provider.get_tracer("t").start_as_current_span("s"):
            c.track("e", "u")
        assert c.flush(5)
    assert server.events[0]["properties"] == {}


# -- SerlaInstrumentor ---------------------------------------------------------------------------------


def test_instrumented_track_adds_a_span_event(client: serla.Serla, spans: Any, instrumented: Any) -> None:
    provider, exporter = spans
    with provider.get_tracer("t").start_as_current_span("s"):
        assert client.track("signup", "u1", {"plan": "pro", "seats": 3, "tags": ["a", "b"], "meta": {"x": 1}})
        with serla.distinct_id_context("ctx-user"):
            client.track("from_context", properties={"n": None})
        assert not client.track("")  # a dropped call adds nothing
    client.track("outside_any_span", "u1")
    [span] = exporter.get_finished_spans()
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert events == [
        (
            "signup",
            {
                "plan": "pro",
                "seats": 3,
                "tags": ("a", "b"),
                "meta": '{"x":1}',
                "serla.distinct_id": "u1",
                TRACKED_MARKER: True,
            },
        ),
        ("from_context", {"serla.distinct_id": "ctx-user", TRACKED_MARKER: True}),
    ]


def test_instrument_options(client: serla.Serla, spans: Any) -> None:
    provider, exporter = spans
    instrumentor = SerlaInstrumentor()
    instrumentor.instrument(properties=False, distinct_id=False)
    try:
        with provider.get_tracer("t").start_as_current_span("s"):
            client.track("signup", "u1", {"plan": "pro"})
    finally:
        instrumentor.uninstrument()
    [span] = exporter.get_finished_spans()
    assert [dict(e.attributes or {}) for e in span.events] == [{TRACKED_MARKER: True}]


def test_uninstrument_stops_adding_events(client: serla.Serla, spans: Any) -> None:
    provider, exporter = spans
    instrumentor = SerlaInstrumentor()
    instrumentor.instrument()
    instrumentor.uninstrument()
    with provider.get_tracer("t").start_as_current_span("s"):
        client.track("signup", "u1")
    assert exporter.get_finished_spans()[0].events == ()


def test_instrumentor_and_processor_do_not_feed_each_other(
    client: serla.Serla, server: SerlaServer, instrumented: Any
) -> None:
    """One track() is one Serla event: its span event is not re-tracked, and the processor's own
    track() calls add no span events to the parent span."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SerlaSpanProcessor(client))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    user = {"user.id": "u"}
    with (
        tracer.start_as_current_span("parent", attributes=user),
        tracer.start_as_current_span("child", attributes=user) as child,
    ):
        client.track("product_event", "u")
        child.add_event("otel_event")
    assert provider.force_flush(5000)
    provider.shutdown()
    assert sorted(e["name"] for e in server.events) == ["otel_event", "product_event"]
    finished = {s.name: [e.name for e in s.events] for s in memory.get_finished_spans()}
    assert finished == {"child": ["product_event", "otel_event"], "parent": []}


# -- @tracked ------------------------------------------------------------------------------------------


class Checkout:
    def __init__(self, client: serla.Serla) -> None:
        self.client = client

    @tracked(event="method_called", distinct_id="u")
    def pay(self, amount: int) -> int:
        return amount * 2

    @tracked(event="classmethod_called", distinct_id=lambda region: f"region-{region}")
    @classmethod
    def open(cls, region: str) -> str:
        return cls.__name__ + region

    @tracked(event="staticmethod_called", distinct_id="u")
    @staticmethod
    def tax(amount: int) -> int:
        return amount // 10


def test_tracked_functions_methods_and_classmethods(client: serla.Serla, server: SerlaServer) -> None:
    serla.set_default_client(client)

    @tracked
    def plain(x: int) -> int:
        return x + 1

    @tracked(event="refund", properties={"source": "api"})
    def refund(order: str) -> None:
        raise LookupError(order)

    with serla.distinct_id_context("ctx-user"):
        assert plain(1) == 2
        with pytest.raises(LookupError):
            refund("o-1")
    assert Checkout(client).pay(21) == 42
    assert Checkout.open("eu") == "Checkouteu"
    assert Checkout(client).open("us") == "Checkoutus"
    assert Checkout.tax(100) == 10
    assert client.flush(5)
    events = {e["name"]: e for e in server.events}
    assert sorted(e["name"] for e in server.events) == sorted(
        [
            "test_tracked_functions_methods_and_classmethods.<locals>.plain",
            "refund",
            "method_called",
            "classmethod_called",
            "classmethod_called",
            "staticmethod_called",
        ]
    )
    plain_event = events["test_tracked_functions_methods_and_classmethods.<locals>.plain"]
    assert plain_event["distinctId"] == "ctx-user"
    assert plain_event["properties"]["success"] is True
    assert plain_event["properties"]["duration_ms"] >= 0
    refund_event = events["refund"]["properties"]
    assert refund_event["success"] is False
    assert refund_event["error_type"] == "LookupError"
    assert refund_event["source"] == "api"
    assert refund_event["function"].endswith("refund")
    assert sorted(e["distinctId"] for e in server.events if e["name"] == "classmethod_called") == [
        "region-eu",
        "region-us",
    ]


def test_tracked_async_functions(client: serla.Serla, server: SerlaServer) -> None:
    @tracked(event="async_called", client=client, distinct_id="u")
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 3

    class Service:
        @tracked(event="async_method", client=client, distinct_id="u")
        async def run(self) -> str:
            return "ok"

    assert inspect.iscoroutinefunction(fetch)
    coro = fetch(2)
    assert client.pending_count() == 0  # tracked when the call completes, not when the coroutine is made
    assert asyncio.run(coro) == 6
    assert asyncio.run(Service().run()) == "ok"
    assert client.flush(5)
    assert sorted(e["name"] for e in server.events) == ["async_called", "async_method"]


def test_tracked_never_breaks_the_call(client: serla.Serla, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERLA_API_KEY", raising=False)

    def bad_id(*args: Any) -> str:
        raise RuntimeError("id lookup bug")

    @tracked(event="x", client=client, distinct_id=bad_id)
    def f() -> int:
        return 1

    @tracked(event="y")  # no client anywhere
    def g() -> int:
        return 2

    assert f() == 1
    assert g() == 2
    assert client.stats()["accepted"] == 0


def test_tracked_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError):
        tracked(event="")
    with pytest.raises(TypeError):
        tracked(event="x", distinct_id=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tracked(event="x", properties=[1])  # type: ignore[arg-type]


# -- no feedback loops -----------------------------------------------------------------------------------


@pytest.fixture
def http_client_instrumentation(spans: Any) -> Iterator[InMemorySpanExporter]:
    """A minimal http.client instrumentation written the way OTel's contrib ones are: it opens a CLIENT
    span around each request unless instrumentation is suppressed in the current context."""
    provider, exporter = spans
    tracer = provider.get_tracer("http-client-instrumentation")

    def request(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_instrumentation_enabled():
            return wrapped(*args, **kwargs)
        with tracer.start_as_current_span(f"HTTP {args[0]}", kind=trace.SpanKind.CLIENT):
            return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(http.client.HTTPConnection, "request", request)
    try:
        yield exporter
    finally:
        unwrap(http.client.HTTPConnection, "request")


def test_the_sdk_own_requests_are_never_traced(
    client: serla.Serla, server: SerlaServer, http_client_instrumentation: InMemorySpanExporter
) -> None:
    client.track("e", "u")
    assert client.flush(5)
    client.identify("u", {"plan": "pro"})
    assert len(server.events) == 1 and "u" in server.identities
    assert http_client_instrumentation.get_finished_spans() == ()
    # the instrumentation does work: the application's own request is traced
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", "/")
    conn.getresponse().read()
    conn.close()
    assert [s.name for s in http_client_instrumentation.get_finished_spans()] == ["HTTP GET"]
