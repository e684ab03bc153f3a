"""Span events (and opted-in whole spans) to Serla events, through the real SDK and the local server."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import EventBase, ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Decision, Sampler, SamplingResult
from opentelemetry.trace import Status, StatusCode

import serla
from serla.devtools.server import Fault, SerlaServer
from serla.otel import SerlaSpanExporter, SerlaSpanProcessor
from serla.otel._translate import _fast_class

T0 = 1_700_000_000_123_456_789  # ns: 2023-11-14T22:13:20.123Z
T0_TEXT = "2023-11-14T22:13:20.123Z"


def make_provider(*processors: SpanProcessor, sampler: Sampler | None = None) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": "shop"}), sampler=sampler, shutdown_on_exit=False
    )
    for p in processors:
        provider.add_span_processor(p)
    return provider


@pytest.fixture
def provider_for(client: serla.Serla) -> Iterator[Any]:
    made: list[TracerProvider] = []

    def build(**options: Any) -> TracerProvider:
        provider = make_provider(SerlaSpanProcessor(client, **options))
        made.append(provider)
        return provider

    yield build
    for p in made:
        p.shutdown()


def test_a_span_event_becomes_an_event_with_span_context(provider_for: Any, server: SerlaServer) -> None:
    provider = provider_for()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("checkout", attributes={"enduser.id": "u1", "cart.size": 3}) as span:
        span.add_event("coupon_applied", {"code": "SPRING"}, timestamp=T0)
        ctx = span.get_span_context()
    assert provider.force_flush(5000)
    [event] = server.events
    assert event["name"] == "coupon_applied"
    assert event["distinctId"] == "u1"
    assert event["timestamp"] == T0_TEXT
    assert event["properties"] == {
        "enduser.id": "u1",
        "cart.size": 3,
        "code": "SPRING",
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "span_name": "checkout",
        "service.name": "shop",
    }


def test_the_processor_leaves_the_json_to_the_clients_flusher(
    client: serla.Serla, provider_for: Any, server: SerlaServer
) -> None:
    """On the ending thread only the decisions are made; the event's JSON is built when its batch is taken."""
    from serla._worker import Deferred

    provider = provider_for()
    with provider.get_tracer("test").start_as_current_span("s", attributes={"user.id": "u1"}) as span:
        span.add_event("added", {"sku": "A1", "qty": 2})
    [queued] = list(client._worker._buffer)  # the interval is 60 s: nothing was sent yet
    assert isinstance(queued, Deferred)
    assert client.pending_count() == 1
    assert provider.force_flush(5000)
    [event] = server.events
    assert (event["name"], event["distinctId"], event["properties"]["qty"]) == ("added", "u1", 2)


def test_the_exception_event_becomes_dollar_exception(provider_for: Any, server: SerlaServer) -> None:
    provider = provider_for()
    with provider.get_tracer("t").start_as_current_span("pay", attributes={"user.id": "u2"}) as span:
        try:
            raise ValueError("card declined")
        except ValueError as exc:
            span.record_exception(exc)
    assert provider.force_flush(5000)
    [event] = server.events
    assert event["name"] == "$exception"
    props = event["properties"]
    assert props["exception.type"] == "ValueError"
    assert props["exception.message"] == "card declined"
    assert "Traceback" in props["exception.stacktrace"]
    assert event["distinctId"] == "u2"


def test_distinct_id_precedence(client: serla.Serla, server: SerlaServer) -> None:
    provider = make_provider(
        SerlaSpanProcessor(client, distinct_id_key="account.id", fallback_distinct_id="anonymous")
    )
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span(
        "s", attributes={"enduser.id": "span-enduser", "user.id": "span-user"}
    ) as s:
        s.add_event("event_attr_wins", {"enduser.id": "event-enduser"})
        s.add_event("span_attr_used")
        s.add_event("configured_key_first", {"account.id": 42, "enduser.id": "not-me"})
    with tracer.start_as_current_span("s2", attributes={"user.id": "only-user-id"}) as s:
        s.add_event("user_id_used")
    with serla.distinct_id_context("from-context"), tracer.start_as_current_span("s3") as s:
        s.add_event("context_used")
    with tracer.start_as_current_span("s4") as s:
        s.add_event("fallback_used")
    assert provider.force_flush(5000)
    provider.shutdown()
    got = {e["name"]: e["distinctId"] for e in server.events}
    assert got == {
        "event_attr_wins": "event-enduser",
        "span_attr_used": "span-enduser",
        "configured_key_first": "42",
        "user_id_used": "only-user-id",
        "context_used": "from-context",
        "fallback_used": "anonymous",
    }


def test_no_distinct_id_drops_counts_and_warns(
    client: serla.Serla, server: SerlaServer, caplog: pytest.LogCaptureFixture
) -> None:
    from serla._log import reset_warnings

    reset_warnings()
    processor = SerlaSpanProcessor(client)
    provider = make_provider(processor)
    with (
        caplog.at_level(logging.WARNING, logger="serla"),
        provider.get_tracer("t").start_as_current_span("s") as s,
    ):
        s.add_event("nobody")
        s.add_event("nobody_again")
    assert provider.force_flush(5000)
    provider.shutdown()
    assert server.events == []
    assert processor.stats() == {"dropped": {"no_distinct_id": 2}}
    assert client.stats()["accepted"] == 0
    assert any("no distinct_id" in r.getMessage() for r in caplog.records)


def test_span_attribute_filters(client: serla.Serla, server: SerlaServer) -> None:
    attrs = {"enduser.id": "u", "http.route": "/pay", "db.statement": "SELECT 1"}
    for option, expected in (
        (False, set()),
        (["http.route"], {"http.route"}),
        (lambda key: not key.startswith("db."), {"enduser.id", "http.route"}),
    ):
        server.clear()
        provider = make_provider(SerlaSpanProcessor(client, span_attributes=option))
        with provider.get_tracer("t").start_as_current_span("s", attributes=attrs) as s:
            s.add_event("e", {"k": 1})
        assert provider.force_flush(5000)
        provider.shutdown()
        [event] = server.events
        assert event["distinctId"] == "u"  # the distinct_id comes from the span even when filtered out
        fixed = {"k", "trace_id", "span_id", "span_name", "service.name"}
        assert set(event["properties"]) == expected | fixed, option


def test_whole_spans_only_when_opted_in(client: serla.Serla, server: SerlaServer) -> None:
    def run(provider: TracerProvider) -> None:
        tracer = provider.get_tracer("t")
        with tracer.start_as_current_span(
            "checkout", attributes={"user.id": "u", "items": 2}, start_time=T0
        ) as s:
            s.set_status(Status(StatusCode.ERROR, "boom"))
        with tracer.start_as_current_span("healthcheck", attributes={"user.id": "u"}):
            pass
        assert provider.force_flush(5000)
        provider.shutdown()

    run(make_provider(SerlaSpanProcessor(client)))
    assert server.events == []

    run(make_provider(SerlaSpanProcessor(client, spans={"checkout"})))
    [event] = server.events
    assert event["name"] == "checkout"
    assert event["timestamp"] == T0_TEXT
    assert event["properties"]["status"] == "error"
    assert event["properties"]["items"] == 2
    assert event["properties"]["duration_ms"] > 0

    server.clear()
    run(make_provider(SerlaSpanProcessor(client, spans=lambda span: span.name.startswith("health"))))
    assert [e["name"] for e in server.events] == ["healthcheck"]


def test_spans_from_the_environment(
    client: serla.Serla, server: SerlaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERLA_OTEL_SPANS", "checkout, refund")
    monkeypatch.setenv("SERLA_OTEL_DISTINCT_ID_KEY", "tenant.user")
    provider = make_provider(SerlaSpanProcessor(client))
    tracer = provider.get_tracer("t")
    for name in ("checkout", "refund", "other"):
        with tracer.start_as_current_span(name, attributes={"tenant.user": "t-1"}):
            pass
    assert provider.force_flush(5000)
    provider.shutdown()
    assert sorted((e["name"], e["distinctId"]) for e in server.events) == [
        ("checkout", "t-1"),
        ("refund", "t-1"),
    ]


class _RecordOnly(Sampler):
    """Records spans (processors see them) without sampling them."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY)

    def get_description(self) -> str:
        return "RecordOnly"


class _Ended(SpanProcessor):
    def __init__(self) -> None:
        self.names: list[str] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.names.append(span.name)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@pytest.mark.parametrize("sampler", [ALWAYS_OFF, _RecordOnly()], ids=["always_off", "record_only"])
def test_unsampled_spans_produce_nothing(client: serla.Serla, server: SerlaServer, sampler: Sampler) -> None:
    seen = _Ended()
    processor = SerlaSpanProcessor(client, spans=True)
    provider = make_provider(seen, processor, sampler=sampler)
    with provider.get_tracer("t").start_as_current_span("s", attributes={"user.id": "u"}) as s:
        s.add_event("e")
    assert provider.force_flush(5000)
    provider.shutdown()
    assert client.stats()["accepted"] == 0
    assert server.events == []
    assert processor.stats() == {"dropped": {}}
    if isinstance(sampler, _RecordOnly):
        assert seen.names == ["s"]  # the span did reach the processors


def test_force_flush_delivers_without_waiting_for_the_interval(
    client: serla.Serla, server: SerlaServer
) -> None:
    provider = make_provider(SerlaSpanProcessor(client))
    with provider.get_tracer("t").start_as_current_span("s", attributes={"user.id": "u"}) as s:
        s.add_event("e")
    assert client.pending_count() == 1
    assert provider.force_flush(5000) is True  # the client's interval is 60 s: only a flush sends now
    assert len(server.events) == 1
    provider.shutdown()


def test_processor_never_waits_for_room(server: SerlaServer, api_key: str) -> None:
    """A full queue while deliveries succeed would make track() wait; the processor drops and counts."""
    client = serla.Serla(
        api_key,
        host=server.url,
        max_queue_size=2,
        max_buffer_bytes=1500,  # a hanging endpoint is slow, not down: the byte bound applies
        batch_size=1,
        block_on_full_seconds=5.0,
        flush_on_exit=False,
        timeout=30.0,
    )
    server.inject(Fault(hang=True))  # the first request stays in flight
    try:
        assert client.track("first", "u")
        assert server.wait_for_requests(1, timeout=5)
        processor = SerlaSpanProcessor(client)
        provider = make_provider(processor)
        started = time.monotonic()
        with provider.get_tracer("t").start_as_current_span("s", attributes={"user.id": "u"}) as s:
            for name in ("a", "b", "c"):
                s.add_event(name)
        assert time.monotonic() - started < 4.0  # not the 5 s that block_on_full_seconds allows a wait
        assert processor.stats()["dropped"] == {"queue_full": 2}
        assert client.stats()["dropped"] == {"queue_full": 2}  # the client counts the refusals too
    finally:
        server.stop()
        client.shutdown(timeout=0.5)


def test_with_block_on_full_zero_the_client_itself_refuses(server: SerlaServer, api_key: str) -> None:
    """block_on_full_seconds=0: track() never waits, so the processor skips its pre-check; the client
    refuses the overflow (its own queue_full) and the processor counts it as rejected."""
    client = serla.Serla(
        api_key,
        host=server.url,
        max_queue_size=2,
        max_buffer_bytes=1500,  # the first event and one deferred one (charged 1 KiB) fit
        batch_size=1,
        block_on_full_seconds=0,
        flush_on_exit=False,
    )
    server.inject(Fault(hang=True))
    try:
        assert client.track("first", "u")
        assert server.wait_for_requests(1, timeout=5)
        processor = SerlaSpanProcessor(client)
        provider = make_provider(processor)
        with provider.get_tracer("t").start_as_current_span("s", attributes={"user.id": "u"}) as s:
            for name in ("a", "b", "c"):
                s.add_event(name)
        assert processor.stats()["dropped"] == {"rejected": 2}
        assert client.stats()["dropped"]["queue_full"] == 2
    finally:
        server.stop()
        client.shutdown(timeout=0.5)


def test_interleaved_traces_keep_their_own_ids(client: serla.Serla, server: SerlaServer) -> None:
    provider = make_provider(SerlaSpanProcessor(client))
    tracer = provider.get_tracer("t")
    user = {"user.id": "u"}
    a = tracer.start_span("a", attributes=user)
    b = tracer.start_span("b", attributes=user)
    a_child = tracer.start_span("a_child", context=trace.set_span_in_context(a), attributes=user)
    b_child = tracer.start_span("b_child", context=trace.set_span_in_context(b), attributes=user)
    spans = (a_child, b_child, a, b)  # ended alternating between the two traces
    for span in spans:
        span.add_event(f"{span.name}_event")
        span.end()
    assert provider.force_flush(5000)
    provider.shutdown()
    got = {e["name"]: (e["properties"]["trace_id"], e["properties"]["span_id"]) for e in server.events}
    assert got == {
        f"{span.name}_event": (
            f"{span.get_span_context().trace_id:032x}",
            f"{span.get_span_context().span_id:016x}",
        )
        for span in spans
    }
    assert len({trace_id for trace_id, _ in got.values()}) == 2


class _PublicOnly(ReadableSpan):
    """A span class that overrides a property: the translator may read it only through its properties."""

    @property
    def events(self) -> Any:
        return tuple(self._events)


class _PlainEvent(EventBase):
    """A span event that is not the SDK's ``Event``, with plain-dict (or no) attributes."""

    def __init__(self, name: str, attributes: Any, timestamp: int) -> None:
        super().__init__(name, timestamp)
        self._plain = attributes

    @property
    def attributes(self) -> Any:
        return self._plain


def test_any_span_or_event_class_translates_like_the_sdk_one(
    client: serla.Serla, server: SerlaServer
) -> None:
    """The SDK's own spans take a fast path that reads their fields; other classes use the public
    properties. Both must give the same events."""
    memory = InMemorySpanExporter()
    provider = make_provider(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("s", attributes={"user.id": "u", "n": 1}) as span:
        span.add_event("first", {"k": "v", "enduser.id": "e"}, timestamp=T0)
        span.add_event("second", timestamp=T0)
    provider.shutdown()
    [sdk_span] = memory.get_finished_spans()
    copy = _PublicOnly(
        name=sdk_span.name,
        context=sdk_span.context,
        resource=sdk_span.resource,
        attributes=dict(sdk_span.attributes or {}),
        events=[
            _PlainEvent(e.name, dict(e.attributes) if e.attributes else None, T0) for e in sdk_span.events
        ],
        start_time=sdk_span.start_time,
        end_time=sdk_span.end_time,
    )
    assert _fast_class(type(sdk_span)) and not _fast_class(_PublicOnly)
    exporter = SerlaSpanExporter(client)
    assert exporter.export([sdk_span]).name == "SUCCESS"
    assert client.flush(5)
    fast = list(server.events)
    server.clear()
    assert exporter.export([copy]).name == "SUCCESS"
    assert client.flush(5)
    assert server.events == fast
    assert [(e["name"], e["distinctId"]) for e in fast] == [("first", "e"), ("second", "u")]


def test_processor_shutdown_flushes_and_stops(client: serla.Serla, server: SerlaServer) -> None:
    provider = make_provider(SerlaSpanProcessor(client))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("s", attributes={"user.id": "u"}) as s:
        s.add_event("before")
    provider.shutdown()
    assert [e["name"] for e in server.events] == ["before"]
    with tracer.start_as_current_span("s", attributes={"user.id": "u"}) as s:
        s.add_event("after")
    assert client.flush(5)
    assert [e["name"] for e in server.events] == ["before"]


def test_a_failing_option_never_reaches_the_app(
    client: serla.Serla, server: SerlaServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(span: Any) -> bool:
        raise RuntimeError("predicate bug")

    provider = make_provider(SerlaSpanProcessor(client, spans=broken))
    with (
        caplog.at_level(logging.WARNING, logger="serla"),
        provider.get_tracer("t").start_as_current_span("s"),
    ):
        pass  # ending the span must not raise
    provider.shutdown()
    assert any("translating a span failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"client": "not a client"}, TypeError),
        ({"distinct_id_key": ""}, ValueError),
        ({"fallback_distinct_id": 5}, ValueError),
        ({"span_attributes": "http.route"}, TypeError),
        ({"span_attributes": [1, 2]}, TypeError),
        ({"spans": "checkout"}, TypeError),
        ({"span_events": "yes"}, TypeError),
    ],
)
def test_bad_options_raise_at_construction(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        SerlaSpanProcessor(**kwargs)
    with pytest.raises(error):
        SerlaSpanExporter(**kwargs)


# -- the exporter ----------------------------------------------------------------------------------------


def test_exporter_behind_the_batch_processor_delivers_at_shutdown(
    client: serla.Serla, server: SerlaServer
) -> None:
    exporter = SerlaSpanExporter(client)
    provider = make_provider(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    with provider.get_tracer("t").start_as_current_span("s", attributes={"user.id": "u"}) as s:
        s.add_event("e1")
        s.add_event("e2")
    assert server.events == []
    provider.shutdown()  # drains the batch processor into the exporter, whose shutdown flushes the client
    assert sorted(e["name"] for e in server.events) == ["e1", "e2"]
    assert exporter.export([]).name == "FAILURE"  # export after shutdown is refused


def test_exporter_force_flush_flushes_the_client(client: serla.Serla, server: SerlaServer) -> None:
    exporter = SerlaSpanExporter(client)
    provider = make_provider(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("s", attributes={"user.id": "u"}) as s:
        s.add_event("e")
    assert client.pending_count() == 1
    assert exporter.force_flush(5000) is True
    assert len(server.events) == 1
    provider.shutdown()


def test_exporter_without_arguments_uses_the_registered_client(
    client: serla.Serla, server: SerlaServer
) -> None:
    exporter = SerlaSpanExporter()
    serla.set_default_client(client)
    provider = make_provider(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("s", attributes={"user.id": "u"}) as s:
        s.add_event("e")
    provider.shutdown()
    assert [e["name"] for e in server.events] == ["e"]


def test_exporter_without_arguments_creates_a_client_from_the_environment(
    server: SerlaServer, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERLA_API_KEY", api_key)
    monkeypatch.setenv("SERLA_HOST", server.url)
    exporter = SerlaSpanExporter()
    assert serla.get_default_client(create=False) is None  # nothing is created before spans arrive
    provider = make_provider(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("s", attributes={"user.id": "u"}) as s:
        s.add_event("e")
    provider.shutdown()
    assert serla.get_default_client(create=False) is not None
    assert [e["name"] for e in server.events] == ["e"]


def test_exporter_with_no_client_available_counts_the_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SERLA_API_KEY", raising=False)
    monkeypatch.delenv("SERLA_DISABLED", raising=False)
    exporter = SerlaSpanExporter()
    provider = make_provider(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("s", attributes={"user.id": "u"}) as s:
        s.add_event("e")
    provider.shutdown()
    assert exporter.stats() == {"dropped": {"no_client": 1}}
