"""Turning OpenTelemetry spans, span events and log records into Serla events.

The mapping is documented in the README's OpenTelemetry section.

One :class:`SpanTranslator` or :class:`LogTranslator` sits behind each processor and exporter. The hot path
is :meth:`SpanTranslator.on_span`, called once per ended span: a span with no events (and not opted in as a
whole) costs a few attribute reads and returns. Everything that reaches ``Serla.track()`` is then encoded
once, on the calling thread, like any other ``track()``.

Only public OpenTelemetry API is read (``span.context``, ``.events``, ``.attributes``, ``.resource``,
``event.name``...). For the SDK's own span class, whose values are immutable once it has ended, the
properties and the JSON are built later, on the client's flusher (``Serla._track_deferred``, a generic
deferral of the client); any other span class is translated on the ending thread.

Thread invariant: every method may be called from any thread at once. Mutable state is limited to the drop
counters (under ``_lock``), the per-class fast-path verdicts (a dict only ever given the same value for a
key) and one-entry caches (the last resource's ``service.name``, the last client's queue limit, the last
trace id's hex), each a tuple replaced in one assignment, so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import threading
import weakref
from collections.abc import Collection, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any, Callable, Final, Optional, Union

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan

from serla import _registry
from serla._client import Serla
from serla._context import get_distinct_id
from serla._log import warn_limited

# Attribute keys tried, in this order, for a distinct_id (after the configurable key).
DEFAULT_DISTINCT_ID_KEYS: Final = ("enduser.id", "user.id")
# The log-record attributes that name an event when ``event_name`` is unset (older instrumentations).
EVENT_NAME_ATTRIBUTES: Final = ("event.name", "otel.event.name")
# A span event carrying this attribute was made by SerlaInstrumentor from a track(): never re-tracked.
TRACKED_MARKER: Final = "serla.tracked"
EXCEPTION_EVENT: Final = "$exception"

ENV_DISTINCT_ID_KEY: Final = "SERLA_OTEL_DISTINCT_ID_KEY"
ENV_FALLBACK_DISTINCT_ID: Final = "SERLA_OTEL_FALLBACK_DISTINCT_ID"
ENV_SPANS: Final = "SERLA_OTEL_SPANS"

AttributeFilter = Union[bool, Collection[str], Callable[[str], bool]]
"""``True`` keeps every span attribute, ``False`` none, a collection keeps those keys, a callable decides."""

SpanSelector = Union[None, bool, Collection[str], Callable[[Any], bool]]
"""Which whole spans become events: ``None``/``False`` none, ``True`` all, span names, or a predicate."""

_STATUS_NAMES: Final = {0: "unset", 1: "ok", 2: "error"}
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_MISSING: Final = object()


def _type_name(cls: type) -> str:
    """The name OpenTelemetry's ``record_exception`` gives an exception type."""
    module, qualname = cls.__module__, cls.__qualname__
    return f"{module}.{qualname}" if module and module != "builtins" else qualname


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


class _Guard(threading.local):
    """Per-thread flag: set while a translator calls ``track()``, so the instrumentor adds no span event."""

    busy = False


class _Hook:
    """Whether :class:`~serla.otel.SerlaInstrumentor` is installed (it sets ``active``).

    Only then do the translators set :data:`GUARD` around their ``track()`` calls.
    """

    active = False


GUARD: Final = _Guard()
HOOK: Final = _Hook()

_SPAN_PROPERTIES: Final = ("context", "name", "attributes", "events", "resource")


_READABLE_PROPERTIES: Final = {name: ReadableSpan.__dict__.get(name) for name in _SPAN_PROPERTIES}
_FAST_SPAN_CLASSES: dict[type, bool] = {}  # span class -> whether it is the SDK's own (immutable once ended)


def _fast_class(cls: type) -> bool:
    """Whether ``cls`` is the SDK's ``ReadableSpan`` (or a subclass keeping its properties): its values are
    immutable once the span has ended, so the JSON may be built later, on the client's flusher."""
    ok = issubclass(cls, ReadableSpan) and all(
        inspect.getattr_static(cls, n, None) is _READABLE_PROPERTIES[n] for n in _SPAN_PROPERTIES
    )
    _FAST_SPAN_CLASSES[cls] = ok
    return ok


def _plain(attributes: Any) -> Mapping[str, Any]:
    """A read-only plain mapping of OTel attributes (``BoundedAttributes``, mappingproxy, dict or None).

    It may be the attributes' own dict: never mutate it.
    """
    kind = type(attributes)
    if kind is dict or kind is MappingProxyType or kind is BoundedAttributes:
        return attributes if attributes else _EMPTY  # read-only mappings: never mutated here
    if not attributes:
        return _EMPTY
    return dict(attributes)


def _from_ns(ns: int | None) -> float | None:
    """OTel's epoch nanoseconds as epoch seconds (``track()`` formats those fastest); None: now."""
    if not ns:
        return None
    return ns / 1e9


def _id_from(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first usable distinct_id among ``keys``: a non-empty string, or a number as text."""
    for key in keys:
        value = attributes.get(key)
        if value is None:
            continue
        if type(value) is str or isinstance(value, str):
            if value:
                return value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    return None


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


class _Base:
    """What span and log translation share: the client, the distinct_id rule and the drop counters.

    Args:
        client: The client to track with. ``None`` looks one up on every use: the client registered with
            :func:`serla.set_default_client`, else one made from ``SERLA_API_KEY`` / ``SERLA_HOST``.
        distinct_id_key: An attribute key tried before ``enduser.id`` and ``user.id``. ``None`` reads
            ``SERLA_OTEL_DISTINCT_ID_KEY``.
        fallback_distinct_id: Used when no attribute and no :func:`serla.set_distinct_id` context names
            the user. ``None`` reads ``SERLA_OTEL_FALLBACK_DISTINCT_ID``; if that is unset too, such
            events are dropped and counted as ``no_distinct_id``.
        wait_for_room: Whether ``track()`` may wait for room in a full queue (``block_on_full_seconds``).
            Processors run on the application's thread and never wait; exporters run on a batch thread.
    """

    def __init__(
        self,
        client: Optional[Serla],
        *,
        distinct_id_key: Optional[str],
        fallback_distinct_id: Optional[str],
        wait_for_room: bool,
    ) -> None:
        if client is not None and not callable(getattr(client, "track", None)):
            raise TypeError(f"serla.otel: client must be a serla.Serla or None, not {type(client).__name__}")
        if distinct_id_key is None:
            distinct_id_key = _env(ENV_DISTINCT_ID_KEY)
        if fallback_distinct_id is None:
            fallback_distinct_id = _env(ENV_FALLBACK_DISTINCT_ID)
        if distinct_id_key is not None and (not isinstance(distinct_id_key, str) or not distinct_id_key):
            raise ValueError(
                f"serla.otel: distinct_id_key must be a non-empty string, not {distinct_id_key!r}"
            )
        if fallback_distinct_id is not None and (
            not isinstance(fallback_distinct_id, str) or not fallback_distinct_id
        ):
            raise ValueError(
                f"serla.otel: fallback_distinct_id must be a non-empty string, not {fallback_distinct_id!r}"
            )
        self._client = client
        self._keys: tuple[str, ...] = (
            (distinct_id_key, *DEFAULT_DISTINCT_ID_KEYS)
            if distinct_id_key and distinct_id_key not in DEFAULT_DISTINCT_ID_KEYS
            else DEFAULT_DISTINCT_ID_KEYS
        )
        self._fallback = fallback_distinct_id
        self._wait_for_room = wait_for_room
        self._lock = threading.Lock()
        self._dropped: dict[str, int] = {}
        if hasattr(os, "register_at_fork"):
            # A forked child gets a fresh lock (another thread may have held the parent's at the fork) and
            # its own counters, like the client's pipeline.
            ref = weakref.ref(self)

            def _child() -> None:
                translator = ref()
                if translator is not None:
                    translator._lock = threading.Lock()
                    translator._dropped = {}

            os.register_at_fork(after_in_child=_child)
        self._service: tuple[Any, Any] = (None, None)  # (resource, its service.name)
        self._limit: tuple[Any, int] = (None, 0)  # (client, see _queue_limit)

    @property
    def distinct_id_keys(self) -> tuple[str, ...]:
        """The attribute keys tried for a distinct_id, in order."""
        return self._keys

    def client(self) -> Serla | None:
        """The client events go to: the one given, else the registered default (created on first use)."""
        client = self._client
        if client is None:
            client = _registry.get_default_client()
            if client is None:
                client = _registry.get_default_client(create=True)
        return client

    def flush(self, timeout: float | None, *, at_shutdown: bool = False) -> bool:
        """Flush the client (see ``Serla.flush``); True when there is no client to flush.

        Args:
            timeout: Seconds to wait at most; ``None`` without bound.
            at_shutdown: Also cap the wait at the client's ``shutdown_timeout``.
        """
        client = self._client if self._client is not None else _registry.get_default_client(create=False)
        if client is None:
            return True
        if at_shutdown:
            cap = client.config.shutdown_timeout
            timeout = cap if timeout is None else min(timeout, cap)
        return client.flush(timeout)

    def stats(self) -> dict[str, Any]:
        """Events this translator dropped before they reached the client: ``{"dropped": {reason: n}}``.

        Reasons: ``no_distinct_id``, ``no_client`` (no client given, registered or configurable from the
        environment), ``queue_full`` (a processor found the client's queue full and would not wait),
        ``rejected`` (the client refused the event; see its own ``stats()``), ``error``.
        """
        with self._lock:
            return {"dropped": dict(self._dropped)}

    def _drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + n
        if reason == "no_distinct_id":
            warn_limited(
                "otel_no_distinct_id",
                "serla: OpenTelemetry event dropped: no distinct_id (set the %s attribute, "
                "serla.set_distinct_id() or fallback_distinct_id)",
                " / ".join(self._keys),
            )
        elif reason == "no_client":
            warn_limited(
                "otel_no_client",
                "serla: OpenTelemetry events dropped: no client (pass one, call serla.set_default_client() "
                "or set SERLA_API_KEY)",
            )
        elif reason == "queue_full":
            warn_limited("otel_queue_full", "serla: OpenTelemetry event dropped: the client's queue is full")

    def _service_name(self, resource: Any) -> Any:
        cached = self._service
        if cached[0] is resource:
            return cached[1]
        name = None
        with contextlib.suppress(Exception):
            name = resource.attributes.get("service.name")
        self._service = (resource, name)
        return name

    def _queue_limit(self, client: Serla) -> int:
        """The pending count at which an event must be dropped rather than tracked; 0: never.

        ``track()`` waits for room in a full queue only when ``block_on_full_seconds`` is above zero;
        a translator that must not wait (a processor, on the application's thread) then checks the
        client's pending count first (racy but cheap: at worst one ``track()`` waits briefly).
        """
        cached = self._limit
        if cached[0] is client:
            return cached[1]
        config = client.config
        limit = 0 if self._wait_for_room or config.block_on_full_seconds <= 0 else config.max_queue_size
        self._limit = (client, limit)
        return limit

    def _room(self, client: Serla) -> bool:
        """False when the queue is full and waiting is not allowed."""
        limit = self._queue_limit(client)
        return not limit or client.pending_count() < limit

    def _distinct_id(self, *attribute_maps: Mapping[str, Any]) -> str | None:
        keys = self._keys
        for attributes in attribute_maps:
            if attributes:
                found = _id_from(attributes, keys)
                if found is not None:
                    return found
        return get_distinct_id() or self._fallback


class SpanTranslator(_Base):
    """Translates ended spans: each span event becomes an event; whole spans only when opted in.

    Args:
        client: See :class:`_Base`.
        distinct_id_key: See :class:`_Base`.
        fallback_distinct_id: See :class:`_Base`.
        wait_for_room: See :class:`_Base`.
        span_attributes: Which span attributes are copied into every event's properties
            (see :data:`AttributeFilter`).
        span_events: Whether span events become events.
        spans: Which whole spans become events (see :data:`SpanSelector`). ``None`` reads
            ``SERLA_OTEL_SPANS`` (comma-separated span names, or ``*`` for all).
        errors: Whether ``exception`` span events also become error reports (see
            :meth:`_report_exception`).
    """

    def __init__(
        self,
        client: Optional[Serla],
        *,
        distinct_id_key: Optional[str] = None,
        fallback_distinct_id: Optional[str] = None,
        wait_for_room: bool = False,
        span_attributes: AttributeFilter = True,
        span_events: bool = True,
        spans: SpanSelector = None,
        errors: bool = False,
    ) -> None:
        super().__init__(
            client,
            distinct_id_key=distinct_id_key,
            fallback_distinct_id=fallback_distinct_id,
            wait_for_room=wait_for_room,
        )
        if not isinstance(errors, bool):
            raise TypeError("serla.otel: errors must be a bool")
        self._errors = errors
        self._attr_all = span_attributes is True
        self._attr_none = span_attributes is False
        self._attr_keep: Callable[[str], bool] | None = None
        if not (self._attr_all or self._attr_none):
            if callable(span_attributes):
                self._attr_keep = span_attributes
            elif isinstance(span_attributes, Collection) and not isinstance(span_attributes, (str, bytes)):
                keep = frozenset(span_attributes)
                if not all(isinstance(k, str) for k in keep):
                    raise TypeError("serla.otel: span_attributes must hold attribute keys (str)")
                self._attr_keep = keep.__contains__
            else:
                raise TypeError(
                    "serla.otel: span_attributes must be True, False, a collection of keys or a callable"
                )
        if not isinstance(span_events, bool):
            raise TypeError("serla.otel: span_events must be a bool")
        self._span_events = span_events
        if spans is None:
            env = _env(ENV_SPANS)
            if env is not None:
                names = [n.strip() for n in env.split(",") if n.strip()]
                spans = True if "*" in names else frozenset(names)
        self._all_spans = spans is True
        self._span_pick: Callable[[Any], bool] | None = None
        if spans is None or spans is False or spans is True:
            pass
        elif callable(spans):
            self._span_pick = spans
        elif isinstance(spans, Collection) and not isinstance(spans, (str, bytes)):
            names_set = frozenset(spans)
            if not all(isinstance(n, str) for n in names_set):
                raise TypeError("serla.otel: spans must hold span names (str)")
            self._span_pick = lambda span: span.name in names_set
        else:
            raise TypeError(
                "serla.otel: spans must be None, a bool, a collection of span names or a callable"
            )
        self._idle = not self._span_events and not self._all_spans and self._span_pick is None and not errors
        self._trace: tuple[int, str] = (-1, "")  # (the last trace id, its hex)

    def on_span(self, span: Any) -> None:
        """Track the events of one ended span (the hot path). Called by the processor and the exporter."""
        if self._idle:
            return
        fast = _FAST_SPAN_CLASSES.get(type(span))
        if fast is None:
            fast = _fast_class(type(span))
        ctx = span.context
        if ctx is None or not ctx.trace_flags.sampled:
            return
        events: Any = span.events if self._span_events or self._errors else ()
        pick = self._span_pick
        whole = self._all_spans or (pick is not None and pick(span))
        if not events and not whole:
            return
        client = self._client
        if client is None:
            client = self.client()
            if client is None:
                self._drop("no_client", len(events) + whole)
                return
        span_attrs = _plain(span.attributes)
        span_name = span.name
        resource = span.resource
        base = span_attrs if self._attr_all else self._span_properties(span_attrs)
        limit = self._limit[1] if self._limit[0] is client else self._queue_limit(client)
        pending = client.pending_count
        track = client.track
        # The SDK's own span and event classes hold immutable values once the span has ended: the ending
        # thread only decides (sampling, the user, room in the queue), and the client's flusher thread
        # builds the properties and the JSON when it takes the batch (see ``Serla._track_deferred``).
        deferred = client._track_deferred if fast and type(client) is Serla else None
        event_props = self._event_props
        keys = self._keys
        span_user: Any = _MISSING
        guarded = HOOK.active
        if guarded:
            GUARD.busy = True
        try:
            ev_attrs: Any
            for event in events:
                name = event.name
                ev_attrs = event.attributes
                ns = event.timestamp
                ev_attrs = _plain(ev_attrs)
                if name == "exception" and self._errors:
                    self._report_exception(client, ev_attrs, span_attrs, ctx, span_name, resource)
                if not self._span_events:
                    continue
                distinct_id = None
                if ev_attrs:
                    if TRACKED_MARKER in ev_attrs:
                        continue
                    distinct_id = _id_from(ev_attrs, keys)
                if distinct_id is None:
                    if span_user is _MISSING:
                        span_user = _id_from(span_attrs, keys) if span_attrs else None
                    distinct_id = span_user or get_distinct_id() or self._fallback
                    if distinct_id is None:
                        self._drop("no_distinct_id")
                        continue
                if deferred is None and limit and pending() >= limit:
                    self._drop("queue_full")
                    continue
                if name == "exception":
                    name = EXCEPTION_EVENT
                if deferred is not None and name and type(distinct_id) is str:
                    build = partial(event_props, base, ev_attrs, ctx, span_name, resource)
                    if not deferred(name, distinct_id, build, ns / 1e9 if ns else None, not limit):
                        # Refused: full (a processor never waits) or closed; the client counted it too.
                        self._drop("queue_full" if limit and pending() >= limit else "rejected")
                    continue
                props = event_props(base, ev_attrs, ctx, span_name, resource)
                if not track(name, distinct_id, props, ns / 1e9 if ns else None):
                    self._drop("rejected")
            if whole:
                trace_hex, span_hex, service = self._ids(ctx, resource)
                fixed = {"trace_id": trace_hex, "span_id": span_hex, "span_name": span_name}
                if service is not None:
                    fixed["service.name"] = service
                self._track_span(client, span, span_attrs, base, fixed)
        finally:
            if guarded:
                GUARD.busy = False

    def _report_exception(
        self,
        client: Serla,
        ev_attrs: Mapping[str, Any],
        span_attrs: Mapping[str, Any],
        ctx: Any,
        span_name: str,
        resource: Any,
    ) -> None:
        """Report an ``exception`` span event to error tracking (``errors=True``), with the trace in metadata.

        When the span ends while its exception is still in flight (``start_as_current_span`` records it,
        then ends the span, then re-raises), that exception object is reported: the same report as
        ``capture_exception`` (frames, chains, in-app by module), and it is not reported twice if a hook
        or the logging handler sees it later. Otherwise the report is built from the event's
        ``exception.type``, ``exception.message`` and ``exception.stacktrace`` (in-app by path only).
        """
        capture = getattr(client, "_capture", None)
        if capture is None:
            return
        trace_hex, span_hex, service = self._ids(ctx, resource)
        context: dict[str, Any] = {
            "mechanism": "opentelemetry",
            "trace_id": trace_hex,
            "span_id": span_hex,
            "span_name": span_name,
        }
        if service is not None:
            context["service.name"] = service
        distinct_id = _id_from(ev_attrs, self._keys) if ev_attrs else None
        if distinct_id is None and span_attrs:
            distinct_id = _id_from(span_attrs, self._keys)
        etype = ev_attrs.get("exception.type")
        message = ev_attrs.get("exception.message")
        live = sys.exc_info()[1]
        if live is not None and etype == _type_name(type(live)) and message == _safe_str(live):
            capture(live, distinct_id=distinct_id, context=context)
            return
        from serla._errors import build_report_from_text

        reporter = client._error_reporter()
        report = build_report_from_text(
            _safe_str(etype or "Exception"),
            _safe_str(message or ""),
            ev_attrs.get("exception.stacktrace")
            if isinstance(ev_attrs.get("exception.stacktrace"), str)
            else None,
            reporter.rules,
            reporter.allow,
        )
        if report is None:  # rate-limited (counted)
            return
        client._queue_report(
            reporter,
            report,
            exc=None,
            distinct_id=distinct_id,
            level="error",
            context=context,
            release=None,
            environment=None,
        )

    def _ids(self, ctx: Any, resource: Any) -> tuple[str, str, Any]:
        """The span's trace and span ids in hex, and its resource's ``service.name`` (cached)."""
        trace_id = ctx.trace_id
        cached = self._trace
        if cached[0] == trace_id:  # the spans of one trace often end one after another
            trace_hex = cached[1]
        else:
            trace_hex = trace_id.to_bytes(16, "big").hex()  # twice as fast as "%032x"
            self._trace = (trace_id, trace_hex)
        cached = self._service
        service = cached[1] if cached[0] is resource else self._service_name(resource)
        return trace_hex, ctx.span_id.to_bytes(8, "big").hex(), service

    def _event_props(
        self, base: Mapping[str, Any], ev_attrs: Any, ctx: Any, span_name: str, resource: Any
    ) -> dict[str, Any]:
        """One span event's properties: span attributes, then the event's, then the fixed keys."""
        trace_hex, span_hex, service = self._ids(ctx, resource)
        props = dict(base) if base else {}
        if ev_attrs:
            props.update(ev_attrs)
        props["trace_id"] = trace_hex
        props["span_id"] = span_hex
        props["span_name"] = span_name
        if service is not None:
            props["service.name"] = service
        return props

    def _span_properties(self, span_attrs: Mapping[str, Any]) -> Mapping[str, Any]:
        if self._attr_none or not span_attrs:
            return _EMPTY
        keep = self._attr_keep
        if keep is None:
            return span_attrs
        return {k: v for k, v in span_attrs.items() if keep(k)}

    def _track_span(
        self,
        client: Serla,
        span: Any,
        attributes: Mapping[str, Any],
        base: Mapping[str, Any],
        fixed: dict[str, Any],
    ) -> None:
        distinct_id = self._distinct_id(attributes)
        if distinct_id is None:
            self._drop("no_distinct_id")
            return
        if not self._room(client):
            self._drop("queue_full")
            return
        props = {**base, **fixed}
        start, end = span.start_time, span.end_time
        if start is not None and end is not None:
            props["duration_ms"] = (end - start) / 1e6
        with contextlib.suppress(Exception):
            props["status"] = _STATUS_NAMES.get(span.status.status_code.value, "unset")
        if not client.track(span.name, distinct_id, props, _from_ns(start)):
            self._drop("rejected")


class LogTranslator(_Base):
    """Translates log records that carry an event name; ordinary log lines are ignored.

    Args:
        client: See :class:`_Base`.
        distinct_id_key: See :class:`_Base`.
        fallback_distinct_id: See :class:`_Base`.
        wait_for_room: See :class:`_Base`.
    """

    def __init__(
        self,
        client: Optional[Serla],
        *,
        distinct_id_key: Optional[str] = None,
        fallback_distinct_id: Optional[str] = None,
        wait_for_room: bool = False,
    ) -> None:
        super().__init__(
            client,
            distinct_id_key=distinct_id_key,
            fallback_distinct_id=fallback_distinct_id,
            wait_for_room=wait_for_room,
        )

    def on_record(self, item: Any) -> None:
        """Track one log record if it is an event.

        ``item`` is what the installed SDK hands over: a ``ReadWriteLogRecord`` or ``ReadableLogRecord``
        (1.39+), a ``LogData`` (older), or a bare ``LogRecord``; each has (or is) a ``log_record``.
        """
        record = getattr(item, "log_record", item)
        attributes = _plain(record.attributes)
        name = getattr(record, "event_name", None)
        name_key = None
        if not name and attributes:
            for key in EVENT_NAME_ATTRIBUTES:
                value = attributes.get(key)
                if isinstance(value, str) and value:
                    name, name_key = value, key
                    break
        if not name or not isinstance(name, str):
            return
        client = self._client
        if client is None:
            client = self.client()
            if client is None:
                self._drop("no_client")
                return
        if name_key is not None:  # the attribute that named the event is not a property
            attributes = {k: v for k, v in attributes.items() if k != name_key}
        body = record.body
        if isinstance(body, Mapping):
            props = {str(k): v for k, v in body.items()}
            props.update(attributes)
        else:
            props = dict(attributes)
            if body is not None:
                props.setdefault("body", body)
        distinct_id = _id_from(props, self._keys) or get_distinct_id() or self._fallback
        if distinct_id is None:
            self._drop("no_distinct_id")
            return
        if not self._room(client):
            self._drop("queue_full")
            return
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            props["trace_id"] = "%032x" % trace_id
            span_id = getattr(record, "span_id", None)
            if span_id:
                props["span_id"] = "%016x" % span_id
        resource = getattr(item, "resource", None) or getattr(record, "resource", None)
        if resource is not None:
            cached = self._service
            service = cached[1] if cached[0] is resource else self._service_name(resource)
            if service is not None:
                props["service.name"] = service
        ns = record.timestamp or getattr(record, "observed_timestamp", None)
        guarded = HOOK.active
        if guarded:
            GUARD.busy = True
        try:
            if not client.track(name, distinct_id, props, ns / 1e9 if ns else None):
                self._drop("rejected")
        finally:
            if guarded:
                GUARD.busy = False
