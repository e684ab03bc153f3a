"""Log-based events (records with an event name) to Serla events, through the real Logs SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk._logs")

from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

import serla
from serla.devtools.server import SerlaServer
from serla.otel import SerlaLogRecordExporter, SerlaLogRecordProcessor

T0 = 1_700_000_000_123_456_789
T0_TEXT = "2023-11-14T22:13:20.123Z"
T1 = 1_700_000_100_000_000_000
T1_TEXT = "2023-11-14T22:15:00.000Z"


def make_provider(*processors: LogRecordProcessor) -> LoggerProvider:
    provider = LoggerProvider(resource=Resource.create({"service.name": "shop"}), shutdown_on_exit=False)
    for p in processors:
        provider.add_log_record_processor(p)
    return provider


@pytest.fixture
def logs(client: serla.Serla) -> Iterator[tuple[LoggerProvider, SerlaLogRecordProcessor]]:
    processor = SerlaLogRecordProcessor(client)
    provider = make_provider(processor)
    yield provider, processor
    provider.shutdown()


def test_a_log_based_event_becomes_an_event(logs: Any, server: SerlaServer) -> None:
    provider, _ = logs
    provider.get_logger("shop").emit(
        event_name="order_placed",
        timestamp=T0,
        body={"items": 3, "total": 1.0},
        attributes={"user.id": "u1", "total": 42.5},
    )
    assert provider.force_flush(5000)
    [event] = server.events
    assert event["name"] == "order_placed"
    assert event["distinctId"] == "u1"
    assert event["timestamp"] == T0_TEXT
    # body keys and attributes are both properties; an attribute wins over a body key of the same name
    assert event["properties"] == {"items": 3, "total": 42.5, "user.id": "u1", "service.name": "shop"}


def test_timestamp_falls_back_to_observed_timestamp(logs: Any, server: SerlaServer) -> None:
    provider, _ = logs
    provider.get_logger("shop").emit(event_name="e", observed_timestamp=T1, attributes={"user.id": "u"})
    assert provider.force_flush(5000)
    assert server.events[0]["timestamp"] == T1_TEXT


@pytest.mark.parametrize("key", ["event.name", "otel.event.name"])
def test_event_name_attribute_names_the_event(logs: Any, server: SerlaServer, key: str) -> None:
    provider, _ = logs
    provider.get_logger("shop").emit(body="hello", attributes={key: "legacy_event", "user.id": "u"})
    assert provider.force_flush(5000)
    [event] = server.events
    assert event["name"] == "legacy_event"
    assert key not in event["properties"]
    assert event["properties"]["body"] == "hello"  # a body that is not a map is kept under "body"


def test_ordinary_log_records_are_ignored(logs: Any, server: SerlaServer, client: serla.Serla) -> None:
    provider, processor = logs
    provider.get_logger("shop").emit(body="just a log line", attributes={"user.id": "u"})
    assert provider.force_flush(5000)
    assert server.events == []
    assert client.stats()["accepted"] == 0
    assert processor.stats() == {"dropped": {}}


def test_records_inside_a_span_carry_its_ids(logs: Any, server: SerlaServer) -> None:
    provider, _ = logs
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    with tracer_provider.get_tracer("t").start_as_current_span("s") as span:
        provider.get_logger("shop").emit(event_name="e", attributes={"user.id": "u"})
        ctx = span.get_span_context()
    assert provider.force_flush(5000)
    props = server.events[0]["properties"]
    assert props["trace_id"] == f"{ctx.trace_id:032x}"
    assert props["span_id"] == f"{ctx.span_id:016x}"
    tracer_provider.shutdown()


def test_records_do_not_depend_on_trace_sampling(logs: Any, server: SerlaServer) -> None:
    """Ratio sampling thins traces, not product events: a log-based event inside an unsampled span is
    still sent (with that span's ids), unlike the span's own events."""
    provider, _ = logs
    tracer_provider = TracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    with tracer_provider.get_tracer("t").start_as_current_span("s") as span:
        provider.get_logger("shop").emit(event_name="order_placed", attributes={"user.id": "u"})
        span.add_event("not_recorded")
        ctx = span.get_span_context()
    assert not ctx.trace_flags.sampled
    assert provider.force_flush(5000)
    [event] = server.events
    assert event["name"] == "order_placed"
    assert event["properties"]["trace_id"] == f"{ctx.trace_id:032x}"
    tracer_provider.shutdown()


def test_body_keys_name_the_user_and_attributes_win(logs: Any, server: SerlaServer) -> None:
    provider, _ = logs
    logger = provider.get_logger("shop")
    logger.emit(event_name="from_body", body={"user.id": "body-user", "n": 1})
    logger.emit(event_name="attribute_wins", body={"user.id": "body-user"}, attributes={"user.id": "attr"})
    assert provider.force_flush(5000)
    assert {e["name"]: e["distinctId"] for e in server.events} == {
        "from_body": "body-user",
        "attribute_wins": "attr",
    }


def test_distinct_id_from_context_then_fallback(client: serla.Serla, server: SerlaServer) -> None:
    processor = SerlaLogRecordProcessor(client, fallback_distinct_id="anon")
    provider = make_provider(processor)
    logger = provider.get_logger("shop")
    with serla.distinct_id_context("ctx-user"):
        logger.emit(event_name="with_context")
    logger.emit(event_name="with_fallback")
    assert provider.force_flush(5000)
    provider.shutdown()
    assert {e["name"]: e["distinctId"] for e in server.events} == {
        "with_context": "ctx-user",
        "with_fallback": "anon",
    }


def test_no_distinct_id_is_dropped_and_counted(logs: Any, server: SerlaServer) -> None:
    provider, processor = logs
    provider.get_logger("shop").emit(event_name="anonymous")
    assert provider.force_flush(5000)
    assert server.events == []
    assert processor.stats() == {"dropped": {"no_distinct_id": 1}}


def test_exporter_behind_the_batch_processor(client: serla.Serla, server: SerlaServer) -> None:
    exporter = SerlaLogRecordExporter(client)
    provider = make_provider(BatchLogRecordProcessor(exporter, schedule_delay_millis=60_000))
    provider.get_logger("shop").emit(event_name="queued", attributes={"user.id": "u"})
    assert server.events == []
    provider.shutdown()  # the batch processor exports, then the exporter's shutdown flushes the client
    assert [e["name"] for e in server.events] == ["queued"]
    assert exporter.export([]).name == "FAILURE"


def test_exporter_force_flush(client: serla.Serla, server: SerlaServer) -> None:
    exporter = SerlaLogRecordExporter(client)
    provider = make_provider(SimpleLogRecordProcessor(exporter))
    provider.get_logger("shop").emit(event_name="e", attributes={"enduser.id": "u"})
    assert client.pending_count() == 1
    assert exporter.force_flush(5000)
    assert [e["distinctId"] for e in server.events] == ["u"]
    provider.shutdown()


def test_processor_shutdown_flushes(client: serla.Serla, server: SerlaServer) -> None:
    provider = make_provider(SerlaLogRecordProcessor(client))
    provider.get_logger("shop").emit(event_name="e", attributes={"user.id": "u"})
    provider.shutdown()
    assert len(server.events) == 1
