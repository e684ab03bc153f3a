"""OpenTelemetry for Serla: span events and log-based events become Serla events, and back.

Install with ``pip install "serla-py[otel]"``. The mapping and both ways to configure it (code or
``opentelemetry-instrument`` with environment variables) are in the README's OpenTelemetry section.

Example:
    >>> from opentelemetry.sdk.trace import TracerProvider  # doctest: +SKIP
    >>> from serla.otel import SerlaSpanProcessor  # doctest: +SKIP
    >>> provider = TracerProvider()  # doctest: +SKIP
    >>> provider.add_span_processor(SerlaSpanProcessor(client))  # doctest: +SKIP

``import serla`` never imports this package (nor OpenTelemetry or wrapt); importing this package does.
Tested with opentelemetry-api/sdk 1.45 and wrapt 2.x; the log side accepts the record shapes of 1.30+.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_EXTRA = 'pip install "serla-py[otel]"'

try:
    from serla._tracked import tracked
    from serla.otel._export import (
        SerlaLogRecordExporter,
        SerlaLogRecordProcessor,
        SerlaSpanExporter,
        SerlaSpanProcessor,
    )
    from serla.otel._translate import (
        DEFAULT_DISTINCT_ID_KEYS,
        EVENT_NAME_ATTRIBUTES,
        EXCEPTION_EVENT,
        TRACKED_MARKER,
    )
except ImportError as _exc:
    if (_exc.name or "").split(".")[0] not in ("opentelemetry", "wrapt", "typing_extensions"):
        raise
    # A ModuleNotFoundError (an ImportError) so that opentelemetry-instrument, which loads the
    # ``serla`` instrumentor entry point, skips it quietly instead of logging a traceback.
    raise ModuleNotFoundError(
        f"serla.otel needs opentelemetry-api, opentelemetry-sdk and wrapt: {_EXTRA} ({_exc})",
        name=_exc.name,
    ) from _exc

if TYPE_CHECKING:
    from serla.otel._instrument import SerlaInstrumentor


def __getattr__(name: str) -> Any:
    """Import ``SerlaInstrumentor`` on first use: it needs ``opentelemetry-instrumentation``."""
    if name == "SerlaInstrumentor":
        try:
            from serla.otel._instrument import SerlaInstrumentor
        except ImportError as exc:
            raise ModuleNotFoundError(
                f"serla.otel.SerlaInstrumentor needs opentelemetry-instrumentation: {_EXTRA} ({exc})",
                name=exc.name,
            ) from exc
        return SerlaInstrumentor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_DISTINCT_ID_KEYS",
    "EVENT_NAME_ATTRIBUTES",
    "EXCEPTION_EVENT",
    "TRACKED_MARKER",
    "SerlaInstrumentor",
    "SerlaLogRecordExporter",
    "SerlaLogRecordProcessor",
    "SerlaSpanExporter",
    "SerlaSpanProcessor",
    "tracked",
]
