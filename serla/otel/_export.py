"""The OpenTelemetry SDK components: two processors (the recommended way) and two exporters (for auto-config).

Processors translate on the thread that ends the span or emits the record, with no second batching: the
client's own worker is the only queue, so ``provider.force_flush()`` reaches the server. Exporters exist for
``opentelemetry-instrument`` (entry points named ``serla``), where the SDK puts them behind its batch
processors.

Neither ever raises into the SDK, and neither does network I/O on the calling thread: ``track()`` only
encodes and enqueues. ``shutdown()`` flushes the client but never shuts it down: the client may be shared
(the tracer and logger providers, the logging handler), and a provider's exit hook can run after the
client's own (see the README's OpenTelemetry section, "Exit").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from serla._client import Serla
from serla._log import logger
from serla.otel._genai import for_translator
from serla.otel._translate import AttributeFilter, LogTranslator, SpanSelector, SpanTranslator

if TYPE_CHECKING:
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
else:
    try:  # opentelemetry-sdk 1.39+
        from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
    except ImportError:  # pragma: no cover - older SDKs name them LogExporter / LogExportResult
        from opentelemetry.sdk._logs.export import LogExporter as LogRecordExporter
        from opentelemetry.sdk._logs.export import LogExportResult as LogRecordExportResult


def _seconds(timeout_millis: float | None) -> float | None:
    """Milliseconds (OTel's unit) to seconds (serla's), at this boundary only."""
    return None if timeout_millis is None else max(0.0, timeout_millis / 1000.0)


class SerlaSpanProcessor(SpanProcessor):
    """Tracks span events (and opted-in whole spans) as Serla events when a span ends.

    Add it to your ``TracerProvider``; it needs no exporter and no batch processor in front::

        provider.add_span_processor(SerlaSpanProcessor(client))

    ``on_end`` runs on the thread that ends the span: it skips unsampled spans and spans without events
    at once, and otherwise calls ``client.track()`` (encode and enqueue, no I/O). It never waits for room:
    when the client's queue is full the event is dropped and counted (``stats()``).

    Args:
        client: The client to track with. ``None`` uses the client registered with
            :func:`serla.set_default_client`, else one made from ``SERLA_API_KEY`` / ``SERLA_HOST`` on
            first use.
        distinct_id_key: An attribute key tried (on the event, then on the span) before ``enduser.id``
            and ``user.id``. ``None`` reads ``SERLA_OTEL_DISTINCT_ID_KEY``.
        fallback_distinct_id: Used when neither attributes nor :func:`serla.set_distinct_id` give one.
            ``None`` reads ``SERLA_OTEL_FALLBACK_DISTINCT_ID``; unset, such events are dropped and counted.
        span_attributes: Which span attributes go into every event's properties: ``True`` (all),
            ``False`` (none), a collection of keys, or a ``key -> bool`` callable.
        span_events: Whether span events become events (default ``True``).
        spans: Which whole spans also become an event named after the span: ``None`` (read
            ``SERLA_OTEL_SPANS``: comma-separated names or ``*``), ``False``, ``True`` (all), a collection
            of span names, or a ``ReadableSpan -> bool`` callable.
        errors: Also report ``exception`` span events (``span.record_exception``, and exceptions leaving
            ``start_as_current_span``) to error tracking, with the trace id, span id and span name in the
            report's ``metadata`` (default ``False``). Independent of ``span_events``.
        llm: Whether spans of model calls that carry the GenAI semantic conventions also become LLM
            records (``client.track_llm``, see ``serla.otel._genai``). ``None`` reads ``SERLA_OTEL_LLM``.

    Raises:
        TypeError, ValueError: For a bad option (at construction only).
    """

    def __init__(
        self,
        client: Serla | None = None,
        *,
        distinct_id_key: str | None = None,
        fallback_distinct_id: str | None = None,
        span_attributes: AttributeFilter = True,
        span_events: bool = True,
        spans: SpanSelector = None,
        errors: bool = False,
        llm: bool | None = None,
    ) -> None:
        self._translator = SpanTranslator(
            client,
            distinct_id_key=distinct_id_key,
            fallback_distinct_id=fallback_distinct_id,
            wait_for_room=False,
            span_attributes=span_attributes,
            span_events=span_events,
            spans=spans,
            errors=errors,
        )
        self._on_span = self._translator.on_span
        self._genai = for_translator(self._translator, llm)
        self._shutdown = False

    def on_end(self, span: ReadableSpan) -> None:
        """Track the span's events now (called by the SDK on the thread that ended the span)."""
        if self._shutdown:
            return
        try:
            self._on_span(span)
        except Exception:
            logger.warning("serla: translating a span failed; its events are dropped", exc_info=True)
        if self._genai is not None:
            try:
                self._genai.on_span(span)
            except Exception:
                logger.warning("serla: recording a GenAI span failed", exc_info=True)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Deliver everything tracked so far (``client.flush``); False on timeout or loss."""
        try:
            return self._translator.flush(_seconds(timeout_millis))
        except Exception:
            logger.warning("serla: force_flush failed", exc_info=True)
            return False

    def shutdown(self) -> None:
        """Flush (at most the client's ``shutdown_timeout``) and stop translating; the client stays open."""
        self._shutdown = True
        try:
            self._translator.flush(None, at_shutdown=True)
        except Exception:
            logger.warning("serla: flushing at span processor shutdown failed", exc_info=True)

    def stats(self) -> dict[str, Any]:
        """Events dropped before reaching the client: ``{"dropped": {reason: n}}``.

        The reasons are listed in the README's OpenTelemetry section, "Options".
        """
        return self._translator.stats()


class SerlaLogRecordProcessor(LogRecordProcessor):
    """Tracks log-based events (records with an ``event_name``) as Serla events when they are emitted.

    ``provider.add_log_record_processor(SerlaLogRecordProcessor(client))``. Records without an event name
    (ordinary log lines) are ignored. Same arguments and guarantees as :class:`SerlaSpanProcessor`.

    Args:
        client: See :class:`SerlaSpanProcessor`.
        distinct_id_key: See :class:`SerlaSpanProcessor`.
        fallback_distinct_id: See :class:`SerlaSpanProcessor`.
    """

    def __init__(
        self,
        client: Serla | None = None,
        *,
        distinct_id_key: str | None = None,
        fallback_distinct_id: str | None = None,
    ) -> None:
        self._translator = LogTranslator(
            client,
            distinct_id_key=distinct_id_key,
            fallback_distinct_id=fallback_distinct_id,
            wait_for_room=False,
        )
        self._on_record = self._translator.on_record
        self._shutdown = False

    def on_emit(self, log_record: Any) -> None:
        """Track the record now if it is an event (opentelemetry-sdk 1.39+ calls this)."""
        if self._shutdown:
            return
        try:
            self._on_record(log_record)
        except Exception:
            logger.warning("serla: translating a log record failed; it is dropped", exc_info=True)

    def emit(self, log_data: Any) -> None:
        """The same as :meth:`on_emit`, for older SDKs that call ``emit(LogData)``."""
        self.on_emit(log_data)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Deliver everything tracked so far (``client.flush``); False on timeout or loss."""
        try:
            return self._translator.flush(_seconds(timeout_millis))
        except Exception:
            logger.warning("serla: force_flush failed", exc_info=True)
            return False

    def shutdown(self) -> None:
        """Flush (at most the client's ``shutdown_timeout``) and stop translating; the client stays open."""
        self._shutdown = True
        try:
            self._translator.flush(None, at_shutdown=True)
        except Exception:
            logger.warning("serla: flushing at log processor shutdown failed", exc_info=True)

    def stats(self) -> dict[str, Any]:
        """Events dropped before reaching the client: ``{"dropped": {reason: n}}``."""
        return self._translator.stats()


class SerlaSpanExporter(SpanExporter):
    """A span exporter for ``OTEL_TRACES_EXPORTER=serla`` (the entry point ``serla``).

    Constructible with no arguments, as auto-configuration requires; the client is found when the first
    spans arrive (see ``client`` below). It translates exactly like :class:`SerlaSpanProcessor`, but the
    SDK puts it behind a ``BatchSpanProcessor``, which adds up to 5 s of delay and whose ``force_flush``
    never reaches this exporter's. In code, prefer the processor.

    ``export`` runs on the batch processor's thread; like any ``track()`` it may wait up to the client's
    ``block_on_full_seconds`` for room while deliveries succeed. ``shutdown`` and ``force_flush`` flush the
    client, so spans ended just before exit still arrive (even when the interpreter is finalizing and no
    thread can start: the client then sends on this thread).

    Args:
        client: See :class:`SerlaSpanProcessor`.
        distinct_id_key: See :class:`SerlaSpanProcessor`.
        fallback_distinct_id: See :class:`SerlaSpanProcessor`.
        span_attributes: See :class:`SerlaSpanProcessor`.
        span_events: See :class:`SerlaSpanProcessor`.
        spans: See :class:`SerlaSpanProcessor`.
        llm: See :class:`SerlaSpanProcessor` (``SERLA_OTEL_LLM=1`` turns it on under auto-configuration).
    """

    def __init__(
        self,
        client: Serla | None = None,
        *,
        distinct_id_key: str | None = None,
        fallback_distinct_id: str | None = None,
        span_attributes: AttributeFilter = True,
        span_events: bool = True,
        spans: SpanSelector = None,
        llm: bool | None = None,
    ) -> None:
        self._translator = SpanTranslator(
            client,
            distinct_id_key=distinct_id_key,
            fallback_distinct_id=fallback_distinct_id,
            wait_for_room=True,
            span_attributes=span_attributes,
            span_events=span_events,
            spans=spans,
        )
        self._genai = for_translator(self._translator, llm)
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Track the events of ``spans``; FAILURE only after shutdown or on an internal error."""
        if self._shutdown:
            return SpanExportResult.FAILURE
        on_span = self._translator.on_span
        genai = self._genai
        ok = True
        for span in spans:
            try:
                on_span(span)
                if genai is not None:
                    genai.on_span(span)
            except Exception:
                ok = False
                logger.warning("serla: translating a span failed; its events are dropped", exc_info=True)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Deliver everything exported so far (``client.flush``)."""
        try:
            return self._translator.flush(_seconds(timeout_millis))
        except Exception:
            logger.warning("serla: force_flush failed", exc_info=True)
            return False

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Flush the client within ``timeout_millis`` (the batch processor passes what is left of its own)."""
        self._shutdown = True
        try:
            self._translator.flush(_seconds(timeout_millis), at_shutdown=True)
        except Exception:
            logger.warning("serla: flushing at span exporter shutdown failed", exc_info=True)

    def stats(self) -> dict[str, Any]:
        """Events dropped before reaching the client: ``{"dropped": {reason: n}}``."""
        return self._translator.stats()


class SerlaLogRecordExporter(LogRecordExporter):
    """A log record exporter for ``OTEL_LOGS_EXPORTER=serla`` (the entry point ``serla``).

    Tracks the exported records that carry an event name; see :class:`SerlaSpanExporter` for the client,
    threading and exit behaviour, and :class:`SerlaLogRecordProcessor` for the arguments.

    Args:
        client: See :class:`SerlaSpanProcessor`.
        distinct_id_key: See :class:`SerlaSpanProcessor`.
        fallback_distinct_id: See :class:`SerlaSpanProcessor`.
    """

    def __init__(
        self,
        client: Serla | None = None,
        *,
        distinct_id_key: str | None = None,
        fallback_distinct_id: str | None = None,
    ) -> None:
        self._translator = LogTranslator(
            client,
            distinct_id_key=distinct_id_key,
            fallback_distinct_id=fallback_distinct_id,
            wait_for_room=True,
        )
        self._shutdown = False

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        """Track the records of ``batch`` that are events; FAILURE only after shutdown or on an error."""
        if self._shutdown:
            return LogRecordExportResult.FAILURE
        on_record = self._translator.on_record
        ok = True
        for item in batch:
            try:
                on_record(item)
            except Exception:
                ok = False
                logger.warning("serla: translating a log record failed; it is dropped", exc_info=True)
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Deliver everything exported so far (``client.flush``)."""
        try:
            return self._translator.flush(_seconds(timeout_millis))
        except Exception:
            logger.warning("serla: force_flush failed", exc_info=True)
            return False

    def shutdown(self, timeout_millis: float = 30000) -> None:
        """Flush the client within ``timeout_millis`` (the batch processor passes what is left of its own)."""
        self._shutdown = True
        try:
            self._translator.flush(_seconds(timeout_millis), at_shutdown=True)
        except Exception:
            logger.warning("serla: flushing at log exporter shutdown failed", exc_info=True)

    def stats(self) -> dict[str, Any]:
        """Events dropped before reaching the client: ``{"dropped": {reason: n}}``."""
        return self._translator.stats()
