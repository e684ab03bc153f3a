"""``SerlaInstrumentor``: every accepted ``track()`` also becomes a span event on the current span.

Product events then show up in traces, next to the spans they happened in. The span event carries the
marker attribute ``serla.tracked``, so a :class:`~serla.otel.SerlaSpanProcessor` in the same process never
tracks it a second time, and ``track()`` calls made by the processors and exporters themselves add no span
event (a per-thread flag), so the two directions never feed each other.

This module needs ``opentelemetry-instrumentation`` (for ``BaseInstrumentor``); ``serla.otel`` imports it
only when ``SerlaInstrumentor`` is first used.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Callable, Final

import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

import serla._client
from serla._context import get_distinct_id
from serla._encode import encode, sanitize
from serla._log import logger
from serla.otel._translate import GUARD, HOOK, TRACKED_MARKER

DISTINCT_ID_ATTRIBUTE: Final = "serla.distinct_id"
_PRIMITIVES: Final = (str, bool, int, float)


def to_attributes(properties: Any) -> dict[str, Any]:
    """Turn track() properties into OpenTelemetry attribute values.

    Strings, booleans, ints and floats are kept; a list of one primitive type becomes a tuple; ``None``
    is left out (OTel has no null); anything else (nested objects, mixed lists) becomes its JSON text.
    """
    out: dict[str, Any] = {}
    clean = sanitize(properties)
    if not isinstance(clean, dict):
        return out
    for key, value in clean.items():
        if value is None:
            continue
        if isinstance(value, _PRIMITIVES):
            out[key] = value
        elif (
            isinstance(value, list)
            and value
            and isinstance(value[0], _PRIMITIVES)
            and all(type(v) is type(value[0]) for v in value)
        ):
            out[key] = tuple(value)
        else:
            out[key] = encode(value).decode("utf-8")
    return out


def _track_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """``(event, distinct_id, properties)`` of a ``Serla.track()`` call, however its arguments were passed."""
    names = ("event", "distinct_id", "properties")
    values = [args[i] if i < len(args) else kwargs.get(name) for i, name in enumerate(names)]
    return values[0], values[1], values[2]


class SerlaInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Adds a span event to the current recording span for every ``track()`` the client accepts.

    ``SerlaInstrumentor().instrument()`` wraps ``serla.Serla.track`` (every client in the process);
    ``.uninstrument()`` restores it. The event is named after the tracked event and carries its
    properties as attributes (see :func:`to_attributes`), ``serla.distinct_id`` and the marker
    ``serla.tracked``. Nothing happens outside a recording span, for a dropped ``track()``, or for the
    ``track()`` calls of serla's own processors and exporters.

    Keyword arguments of ``instrument()``:
        properties (bool): Copy the event's properties onto the span event (default True).
        distinct_id (bool): Add ``serla.distinct_id`` (default True). Turn off if your traces must not
            carry user ids.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        """None: serla is instrumenting itself, so there is no third-party version to check."""
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        wrapper = _make_wrapper(bool(kwargs.get("properties", True)), bool(kwargs.get("distinct_id", True)))
        # wrapt 2.x renamed the first parameter (module -> target): pass it positionally.
        wrapt.wrap_function_wrapper(serla._client, "Serla.track", wrapper)
        HOOK.active = True  # from now on the translators mark their own track() calls (GUARD)

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap(serla._client.Serla, "track")
        HOOK.active = False


def _make_wrapper(with_properties: bool, with_distinct_id: bool) -> Callable[..., Any]:
    get_current_span = trace.get_current_span

    def _track_wrapper(wrapped: Callable[..., bool], instance: Any, args: Any, kwargs: Any) -> bool:
        accepted = wrapped(*args, **kwargs)
        if not accepted or GUARD.busy:
            return accepted
        try:
            span = get_current_span()
            if span.is_recording():
                event, distinct_id, properties = _track_args(args, kwargs)
                attributes = to_attributes(properties) if with_properties and properties else {}
                if with_distinct_id:
                    distinct_id = distinct_id if distinct_id is not None else get_distinct_id()
                    if isinstance(distinct_id, str):
                        attributes[DISTINCT_ID_ATTRIBUTE] = distinct_id
                attributes[TRACKED_MARKER] = True
                span.add_event(event, attributes)
        except Exception:
            logger.warning("serla: adding a span event for track() failed", exc_info=True)
        return accepted

    return _track_wrapper
