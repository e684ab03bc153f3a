"""OpenTelemetry and Serla configured in code: span events, log-based events and track() in one trace.

Usage::

    pip install "serla-py[otel]"
    SERLA_API_KEY=sk_live_... SERLA_HOST=https://serla.dev python examples/otel_code_config.py

What arrives in Serla (all for ``user_42``, all with the same ``trace_id``):

* ``payment_authorized``: a span event, through ``SerlaSpanProcessor``;
* ``invoice.pay``: the whole span, because it is opted in with ``spans={"invoice.pay"}``;
* ``receipt_issued``: a log-based event (a log record with an ``event_name``), through
  ``SerlaLogRecordProcessor``;
* ``invoice_paid``: a plain ``track()``, which ``SerlaInstrumentor`` also shows in the trace as a span
  event (that span event is not tracked a second time);
* ``invoice_emailed``: one per call of the ``@tracked`` function.
"""

from __future__ import annotations

import os

from opentelemetry import _logs, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

import serla
from serla.otel import SerlaInstrumentor, SerlaLogRecordProcessor, SerlaSpanProcessor, tracked

client = serla.Serla(
    api_key=os.environ["SERLA_API_KEY"],
    host=os.environ.get("SERLA_HOST", "https://serla.dev"),
)
serla.set_default_client(client)  # what @tracked (and exporters built with no client) use

resource = Resource.create({"service.name": "billing"})
tracer_provider = TracerProvider(resource=resource)
# No BatchSpanProcessor in front: the processor translates when a span ends and the client batches.
tracer_provider.add_span_processor(SerlaSpanProcessor(client, spans={"invoice.pay"}))
trace.set_tracer_provider(tracer_provider)

logger_provider = LoggerProvider(resource=resource)
logger_provider.add_log_record_processor(SerlaLogRecordProcessor(client))
_logs.set_logger_provider(logger_provider)

SerlaInstrumentor().instrument()  # every accepted track() also becomes a span event on the current span

tracer = trace.get_tracer("billing")
events = _logs.get_logger("billing")


@tracked(event="invoice_emailed")
def email_invoice(invoice_id: str) -> None:
    """Pretend to send the invoice by e-mail."""


def pay_invoice(user_id: str, invoice_id: str, amount: float) -> None:
    """Handle one payment, inside a request-scoped distinct_id (what web middleware would set)."""
    attributes = {"invoice.id": invoice_id}
    with (
        serla.distinct_id_context(user_id),
        tracer.start_as_current_span("invoice.pay", attributes=attributes) as span,
    ):
        span.add_event("payment_authorized", {"amount": amount, "currency": "EUR"})
        client.track("invoice_paid", properties={"amount": amount})
        events.emit(event_name="receipt_issued", attributes=attributes)
        email_invoice(invoice_id)


if __name__ == "__main__":
    pay_invoice("user_42", "inv_1001", 99.0)
    # A serverless handler would flush before returning; a long-running app needs nothing here.
    tracer_provider.force_flush()
    logger_provider.force_flush()
    client.shutdown()
    print("paid")
