"""What each configuration of the web benchmark does per request (shared by both apps).

Chosen by environment variables, read once at import (before the app object exists, because sentry-sdk
patches the frameworks in ``sentry_sdk.init``):

- ``WEBBENCH_SDK``: one of :data:`CONFIGS`.
- ``WEBBENCH_SINK``: the loopback sink's base URL (``http://127.0.0.1:PORT``).

Every configuration makes the same log call per request, on the ``webapp`` logger at INFO, which
propagates nowhere and has one handler: ``logging.NullHandler`` by default, ``SerlaHandler`` for
``serla``. So the cost of building a ``LogRecord`` is part of the baseline and only what an SDK adds to it
is measured. The record names an event and a user (``extra={"event": ..., "distinct_id": ..., "order_id":
...}``) so that SerlaHandler turns it into an event rather than skipping it.

Per request, on top of that log call:

- ``none_a``, ``none_b``: nothing (two identical baselines: the A/A pair that shows the noise).
- ``serla``: ``client.track("page_view", user, {"path": "/", "order_id": ...})``; the log line goes
  through ``SerlaHandler(client)``. Two events per request reach the sink.
- ``serla_alt``: the same as ``serla``, in a venv holding another revision of this SDK
  (``run.py --serla-alt GIT_REF``), to compare two revisions under the same load.
- ``otel_spans``: one OpenTelemetry span (``TracerProvider`` with no processor) with one event carrying
  ``user.id``: the cost of the span itself, for the next row.
- ``serla_spans``: the same span, with ``serla.otel.SerlaSpanProcessor(client)`` on the provider. One
  event per request reaches the sink.
- ``posthog``: ``Posthog.capture("page_view", distinct_id=user, properties=...)``. posthog has no logging
  handler, so the log line stays on the NullHandler. One event per request.
- ``sentry``: ``sentry_sdk.init(dsn=<sink>, enable_logs=True)`` with its default integrations (logging,
  the framework's, ...) and no tracing, plus ``sentry_sdk.capture_message(...)``. Its logging integration
  sees the log line (a breadcrumb, and with ``enable_logs`` a Sentry log shipped in batches: the closest
  equivalent of SerlaHandler shipping the line); ``capture_message`` is its closest equivalent of
  ``track()`` (one event, sent in its own envelope). Two items per request reach the sink.

Each delivered item carries a unique integer ``order_id``: ``2n`` for the track-like call, ``2n + 1`` for
the log line, where ``n`` counts served requests in the process (the apps run one worker process).
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any, Callable

CONFIGS = ("none_a", "none_b", "serla", "serla_alt", "otel_spans", "serla_spans", "posthog", "sentry")
ITEMS_PER_REQUEST = {
    "none_a": 0,
    "none_b": 0,
    "serla": 2,
    "serla_alt": 2,
    "otel_spans": 0,
    "serla_spans": 1,
    "posthog": 1,
    "sentry": 2,
}

CONFIG = os.environ.get("WEBBENCH_SDK", "none_a")
if CONFIG not in CONFIGS:
    raise SystemExit(f"WEBBENCH_SDK must be one of {CONFIGS}, not {CONFIG!r}")
SINK = os.environ.get("WEBBENCH_SINK", "http://127.0.0.1:9")

log = logging.getLogger("webapp")
log.setLevel(logging.INFO)
log.propagate = False

_served = itertools.count()
served = 0  # requests handled by work(); read by the control endpoints


def _none(n: int, user: str) -> None:
    log.info("request served", extra={"event": "request_served", "distinct_id": user, "order_id": 2 * n + 1})


def _noop_flush(timeout: float) -> None:
    return None


def _setup() -> tuple[Callable[[int, str], None], Callable[[float], None]]:
    """Build the SDK for ``CONFIG``: (per-request work, flush(timeout))."""
    if CONFIG in ("none_a", "none_b"):
        log.addHandler(logging.NullHandler())
        return _none, _noop_flush

    if CONFIG in ("serla", "serla_alt"):  # serla_alt: the same work, another revision of the SDK
        from serla import Serla
        from serla.logging_handler import SerlaHandler

        client = Serla("sk_live_bench", host=SINK)
        log.addHandler(SerlaHandler(client))
        track = client.track

        def work(n: int, user: str) -> None:
            track("page_view", user, {"path": "/", "order_id": 2 * n})
            _none(n, user)

        return work, lambda timeout: client.flush(timeout=timeout)

    if CONFIG in ("otel_spans", "serla_spans"):
        from opentelemetry.sdk.trace import TracerProvider

        provider = TracerProvider()
        flush: Callable[[float], Any] = _noop_flush
        if CONFIG == "serla_spans":
            from serla import Serla
            from serla.otel import SerlaSpanProcessor

            client = Serla("sk_live_bench", host=SINK)
            provider.add_span_processor(SerlaSpanProcessor(client))
            flush = lambda timeout: client.flush(timeout=timeout)  # noqa: E731
        tracer = provider.get_tracer("webapp")
        log.addHandler(logging.NullHandler())

        def work(n: int, user: str) -> None:
            with tracer.start_as_current_span("GET /") as span:
                span.add_event("page_view", {"user.id": user, "path": "/", "order_id": 2 * n})
            _none(n, user)

        return work, flush

    if CONFIG == "posthog":
        from posthog import Posthog

        ph = Posthog("phc_bench", host=SINK)
        capture = ph.capture
        log.addHandler(logging.NullHandler())

        def work(n: int, user: str) -> None:
            capture("page_view", distinct_id=user, properties={"path": "/", "order_id": 2 * n})
            _none(n, user)

        return work, lambda timeout: ph.flush(timeout_seconds=timeout)

    if CONFIG == "sentry":
        import sentry_sdk

        port = SINK.rsplit(":", 1)[1]
        sentry_sdk.init(dsn=f"http://public@127.0.0.1:{port}/1", enable_logs=True)
        log.addHandler(logging.NullHandler())
        capture_message = sentry_sdk.capture_message

        def work(n: int, user: str) -> None:
            capture_message("page_view", extras={"path": "/", "user": user, "order_id": 2 * n})
            _none(n, user)

        return work, lambda timeout: sentry_sdk.flush(timeout=timeout)

    raise AssertionError(CONFIG)


_work, _flush = _setup()


def handle() -> None:
    """The per-request work of this configuration (called once by the app's ``GET /``)."""
    global served
    n = next(_served)
    served = n + 1
    _work(n, f"user_{n % 1000}")


def flush(timeout: float = 30.0) -> dict[str, Any]:
    """Deliver what the SDK holds (``GET /__flush``); returns the control endpoints' answer."""
    _flush(timeout)
    return stats()


def stats() -> dict[str, Any]:
    return {
        "config": CONFIG,
        "served": served,
        "items_per_request": ITEMS_PER_REQUEST[CONFIG],
        "pid": os.getpid(),
    }
