"""Cost of the logging and OpenTelemetry bridges (runs in this SDK's venv, one variant per process).

Params (JSON in argv[1]): ``kind`` (``log`` | ``span``), ``variant``, ``n``, ``warmup``, ``host``.

- ``log``: ``logger.info("x", extra={...})`` through one handler:
  ``null`` (``logging.NullHandler``), ``serla`` (``serla.logging_handler.SerlaHandler``),
  ``otel`` (OTel ``LoggingHandler`` + ``BatchLogRecordProcessor`` + ``InMemoryLogRecordExporter``).
- ``span``: one span with one event, ended, through one processor:
  ``none`` (a ``TracerProvider`` with no processor), ``otel`` (``BatchSpanProcessor`` +
  ``InMemorySpanExporter``), ``serla`` (``serla.otel.SerlaSpanProcessor``).

Every variant does the same work per call: the log record names an event and a user
(``extra={"event": ..., "distinct_id": ..., "order_id": i, "plan": "pro"}``, so SerlaHandler turns it into
an event rather than skipping it), and the span carries ``user.id`` (so SerlaSpanProcessor can track its
event). Both serla bridges drop rather than wait when the client's queue is full, and OTel's batch
processors drop when theirs is, so every queue is raised to ``n + warmup`` and the number of records that
came out the other end (sink events, or the in-memory exporter's count) is reported as ``delivered``.

Reports the caller-thread wall time per call (median, p99, mean) and the process CPU per record,
flush included. A variant whose serla module is missing reports ``{"available": false}``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from array import array
from typing import Any

import _common


def _emit(out: dict[str, Any]) -> None:
    sys.stdout.write("BENCH_RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


def _serla_client(host: str, cap: int) -> Any:
    from serla import Serla

    return Serla("sk_live_bench", host=host, max_queue_size=cap)


def _build_log(variant: str, host: str, cap: int) -> tuple[logging.Handler, Any, str]:
    """Return (handler, flush callable returning the delivered count or None, description)."""
    if variant == "null":
        return logging.NullHandler(), (lambda: None), "logging.NullHandler"
    if variant == "serla":
        from serla.logging_handler import SerlaHandler

        client = _serla_client(host, cap)
        handler = SerlaHandler(client)

        def flush() -> None:
            handler.flush()
            client.flush(timeout=60)
            client.shutdown(timeout=60)
            return None  # the sink counts

        return handler, flush, "SerlaHandler -> Serla client -> sink"
    if variant == "otel":
        from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter

        provider = LoggerProvider()
        exporter = InMemoryLogRecordExporter()
        provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_queue_size=cap))
        handler = LoggingHandler(logger_provider=provider)

        def flush() -> int:
            provider.force_flush(60_000)
            provider.shutdown()
            return len(exporter.get_finished_logs())

        return handler, flush, "OTel LoggingHandler + BatchLogRecordProcessor + InMemoryLogRecordExporter"
    raise SystemExit(f"unknown log variant {variant!r}")


def _build_span(variant: str, host: str, cap: int) -> tuple[Any, Any, str]:
    """Return (tracer, flush callable returning the delivered count or None, description)."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    desc = "TracerProvider, no processor"
    if variant == "otel":
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=cap))
        desc = "BatchSpanProcessor + InMemorySpanExporter"

        def flush_otel() -> int:
            provider.force_flush(60_000)
            provider.shutdown()
            return len(exporter.get_finished_spans())

        return provider.get_tracer("bench"), flush_otel, desc
    elif variant == "serla":
        import serla.otel as so

        client = _serla_client(host, cap)
        proc_cls = getattr(so, "SerlaSpanProcessor", None)
        if proc_cls is not None:
            try:
                proc = proc_cls(client=client)
            except TypeError:
                proc = proc_cls(client)
            desc = "SerlaSpanProcessor -> Serla client -> sink"
        else:  # fall back to the exporter behind OTel's batch processor
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            try:
                exp = so.SerlaSpanExporter(client=client)
            except TypeError:
                exp = so.SerlaSpanExporter(client)
            proc = BatchSpanProcessor(exp)
            desc = "BatchSpanProcessor + SerlaSpanExporter -> Serla client -> sink"
        provider.add_span_processor(proc)

        def flush_serla() -> None:
            provider.force_flush(60_000)
            provider.shutdown()
            client.flush(timeout=60)
            client.shutdown(timeout=60)
            return None  # the sink counts

        return provider.get_tracer("bench"), flush_serla, desc
    elif variant != "none":
        raise SystemExit(f"unknown span variant {variant!r}")

    def flush() -> None:
        provider.force_flush(60_000)
        provider.shutdown()
        return None

    return provider.get_tracer("bench"), flush, desc


def main() -> None:
    p = json.loads(sys.argv[1])
    kind, variant, n, warmup = p["kind"], p["variant"], int(p["n"]), int(p["warmup"])
    out: dict[str, Any] = {"kind": kind, "variant": variant, "n": n, "python": sys.version.split()[0]}
    cap = n + warmup
    try:
        if kind == "log":
            handler, flush, desc = _build_log(variant, p["host"], cap)
            logger = logging.getLogger("bench.bridge")
            logger.propagate = False
            logger.setLevel(logging.INFO)
            logger.addHandler(handler)
            info = logger.info

            def one(i: int) -> None:
                info(
                    "checkout done",
                    extra={
                        "event": _common.EVENT,
                        "distinct_id": _common.DISTINCT_ID,
                        "order_id": i,
                        "plan": "pro",
                    },
                )

        elif kind == "span":
            tracer, flush, desc = _build_span(variant, p["host"], cap)
            start = tracer.start_as_current_span
            span_attrs = {"user.id": _common.DISTINCT_ID}

            def one(i: int) -> None:
                with start("checkout", attributes=span_attrs) as span:
                    span.add_event(_common.EVENT, {"order_id": i, "plan": "pro"})

        else:
            raise SystemExit(f"unknown kind {kind!r}")
    except ImportError as exc:
        out.update(available=False, reason=f"{type(exc).__name__}: {exc}")
        _emit(out)
        return
    out["description"] = desc
    for i in range(warmup):
        one(i)
    samples = array("q", bytes(8 * n))
    ref = array("q", bytes(8 * n))
    pc = time.perf_counter_ns
    dumps = json.dumps
    props = _common.props
    cpu = 0.0
    loop_s = 0.0
    # Blocks of timed calls alternate with blocks of timed json.dumps of the benchmark's properties dict
    # (the latency scenario's reference): the VM's speed drifts, and both loops see the same phases, so
    # median ÷ reference compares variants that ran in different processes.
    block = 500
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        cpu0 = time.process_time()
        t0 = time.monotonic()
        for j in range(lo, hi):
            a = pc()
            one(warmup + j)
            samples[j] = pc() - a
        loop_s += time.monotonic() - t0
        cpu += time.process_time() - cpu0
        for j in range(lo, hi):
            pr = props(j)
            a = pc()
            dumps(pr)
            ref[j] = pc() - a
    t1 = time.monotonic()
    cpu0 = time.process_time()
    delivered = flush()
    t2 = time.monotonic()
    cpu += time.process_time() - cpu0
    ref_median = float(sorted(ref)[n // 2])
    s = sorted(samples)
    out.update(
        available=True,
        sent=n + warmup,
        delivered=delivered,
        median_ns=float(s[n // 2]),
        ref_dumps_median_ns=ref_median,
        over_ref=float(s[n // 2]) / ref_median,
        p99_ns=float(s[min(n - 1, int(0.99 * (n - 1)))]),
        mean_ns=sum(s) / n,
        loop_s=loop_s,
        flush_s=t2 - t1,
        cpu_us_per_record=cpu * 1e6 / n,
        maxrss_kb=_common._maxrss_kb(),
    )
    _emit(out)


if __name__ == "__main__":
    main()
