"""An unmodified app: it uses only OpenTelemetry APIs and never imports serla.

Run it under ``opentelemetry-instrument`` with serla's exporters selected by environment variables, and its
span events and log-based events become Serla events with no code change::

    OTEL_TRACES_EXPORTER=serla OTEL_LOGS_EXPORTER=serla OTEL_METRICS_EXPORTER=none \\
    OTEL_SERVICE_NAME=shop SERLA_API_KEY=sk_live_... SERLA_HOST=https://serla.dev \\
    opentelemetry-instrument python examples/otel_auto_instrument_app.py

(``pip install "serla-py[otel]" opentelemetry-distro`` provides the command.) Nothing is sent before the
process exits: the SDK's batch processors hold spans for up to 5 s, and the providers' exit hooks hand
them to serla, which delivers them before the interpreter is gone.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry._logs import get_logger

tracer = trace.get_tracer("shop")
events = get_logger("shop")


def checkout(user_id: str, total: float) -> None:
    """Handle one checkout: a span with a span event, and a log-based event inside it."""
    with tracer.start_as_current_span("checkout", attributes={"enduser.id": user_id}) as span:
        span.add_event("checkout_completed", {"order.total": total, "currency": "EUR"})
        events.emit(
            event_name="order_placed",
            attributes={"user.id": user_id, "order.total": total},
            body={"items": 3},
        )


if __name__ == "__main__":
    checkout("user_123", 42.5)
    print("checkout done")
