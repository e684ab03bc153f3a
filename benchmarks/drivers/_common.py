"""Shared scenario code for the per-SDK drivers (stdlib only; runs inside each SDK's own venv).

A driver module defines a small adapter and calls ``run(adapter)``:

- ``DIST``: the distribution name (for ``importlib.metadata.version``)
- ``make(host, cap)``: build a client pointed at ``host``; ``cap`` is ``None`` for the SDK's
  default queue cap, or an int to raise the cap to (only when ``RAISE_CAP`` is true)
- ``tracker(client)``: return ``f(i, props) -> accepted`` that tracks one event; ``accepted`` is
  a bool when the SDK reports one, else ``None``
- ``flush(client, timeout)``, ``shutdown(client, timeout)``
- ``default_cap()``: ``(int | None, note)`` — the default max queue size read from the SDK itself
- ``RAISE_CAP``: whether the SDK has a knob to raise its queue cap
- ``IMPORT``: the module a user imports (its file is reported, to catch a shadowed import)

The parent runs ``python <driver> '<json params>'`` in a fresh process and reads the last stdout line,
which starts with ``BENCH_RESULT``.

Params: ``scenario`` (``latency`` | ``e2e`` | ``down`` | ``info``), ``host``, ``n``, ``warmup``,
``cap`` (null or int), ``flush_timeout``, ``settle``.

The ``cold`` scenario runs this file itself, ``python _common.py '{"scenario": "cold", "driver": ...}'``:
it notes the time, imports the driver (which imports the SDK), builds a client, tracks one event and
flushes. The runner reports the time from that first note to the sink receiving the event: what a
short-lived process (a CLI, a cron job, a serverless cold start) pays for the SDK before its first
event is delivered. This file's own stdlib imports (json, os, time...) are loaded before the clock
starts, for every SDK alike.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from array import array
from typing import Any

EVENT = "order_completed"
DISTINCT_ID = "user_12345"  # amplitude needs ids of 5+ characters


def props(i: int) -> dict[str, Any]:
    """A realistic 5-key properties dict with one nested dict; ``order_id`` lets the sink count uniques."""
    return {
        "plan": "pro",
        "price": 49.99,
        "seats": 3,
        "order_id": i,
        "utm": {"source": "newsletter", "medium": "email", "campaign": "spring_sale"},
    }


def _rss_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _maxrss_kb() -> int:
    """Peak RSS of this process, in KiB: ``VmHWM`` from /proc/self/status.

    Not ``getrusage().ru_maxrss``: on Linux that survives ``execve`` (the kernel keeps the larger of the
    old and new address space's peak in ``signal->maxrss``), so a freshly spawned child reports at least
    the parent's RSS at fork time (here, the runner with its sink). ``VmHWM`` belongs to the new address
    space. ``ru_maxrss`` is the fallback off Linux.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _version(dist: str) -> str:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "?"


def _emit(result: dict[str, Any]) -> None:
    sys.stdout.write("BENCH_RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()


def _percentile(sorted_vals: Any, q: float) -> float:
    if not len(sorted_vals):
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return float(sorted_vals[k])


def _scenario_latency(ad: Any, p: dict[str, Any], out: dict[str, Any]) -> None:
    client = ad.make(p["host"], p.get("cap"))
    track = ad.tracker(client)
    warmup, n = int(p["warmup"]), int(p["n"])
    for i in range(warmup):
        track(i, props(i))
    samples = array("q", bytes(8 * n))
    ref = array("q", bytes(8 * n))
    accepted = 0
    unknown = False
    pc = time.perf_counter_ns
    dumps = json.dumps
    cpu = 0.0
    # The machine's speed, measured alongside: blocks of timed track() calls alternate with blocks of the
    # same loop around json.dumps of the same properties (the "one dict build plus one JSON encode" that
    # issue 2 compares track() with; the dict build is outside the timed window in both). This VM's
    # speed drifts over seconds, so both loops must see the same phases: track() ÷ reference is then a
    # speed-independent figure, comparable across processes and SDKs.
    block = 500
    for start in range(0, n, block):
        stop = min(n, start + block)
        cpu0 = time.process_time()
        for j in range(start, stop):
            pr = props(warmup + j)
            t0 = pc()
            ok = track(warmup + j, pr)
            samples[j] = pc() - t0
            if ok is None:
                unknown = True
            elif ok:
                accepted += 1
        cpu += time.process_time() - cpu0
        for j in range(start, stop):
            pr = props(warmup + j)
            t0 = pc()
            dumps(pr)
            ref[j] = pc() - t0
    t_f0 = time.monotonic()
    ad.flush(client, p["flush_timeout"])
    ad.shutdown(client, p["flush_timeout"])
    out["flush_s"] = time.monotonic() - t_f0
    out["ref_dumps_median_ns"] = _percentile(sorted(ref), 0.5)
    s = sorted(samples)
    out.update(
        sent=warmup + n,
        measured=n,
        accepted=None if unknown else accepted,
        median_ns=_percentile(s, 0.5),
        p90_ns=_percentile(s, 0.9),
        p99_ns=_percentile(s, 0.99),
        p999_ns=_percentile(s, 0.999),
        max_ns=float(s[-1]),
        mean_ns=sum(s) / n,
        track_over_ref=_percentile(s, 0.5) / out["ref_dumps_median_ns"],
        cpu_us_per_call=cpu * 1e6 / n,
        maxrss_kb=_maxrss_kb(),
    )


def _scenario_e2e(ad: Any, p: dict[str, Any], out: dict[str, Any]) -> None:
    client = ad.make(p["host"], p.get("cap"))
    track = ad.tracker(client)
    n = int(p["n"])
    accepted = 0
    unknown = False
    cpu0 = time.process_time()
    t0 = time.monotonic()
    for i in range(n):
        ok = track(i, props(i))
        if ok is None:
            unknown = True
        elif ok:
            accepted += 1
    t1 = time.monotonic()
    ad.flush(client, p["flush_timeout"])
    t2 = time.monotonic()
    ad.shutdown(client, p["flush_timeout"])
    t3 = time.monotonic()
    cpu1 = time.process_time()
    out.update(
        sent=n,
        accepted=None if unknown else accepted,
        t_first_track=t0,
        t_last_track=t1,
        t_flushed=t2,
        t_shutdown=t3,
        track_s=t1 - t0,
        flush_s=t2 - t1,
        shutdown_s=t3 - t2,
        cpu_s=cpu1 - cpu0,
        cpu_us_per_event=(cpu1 - cpu0) * 1e6 / n,
        maxrss_kb=_maxrss_kb(),
    )
    stats = getattr(ad, "stats", None)
    if stats is not None:
        try:
            out["sdk_stats"] = stats(client)
        except Exception as exc:  # report, don't fail the run
            out["sdk_stats"] = {"error": repr(exc)}


def _scenario_down(ad: Any, p: dict[str, Any], out: dict[str, Any]) -> None:
    """Endpoint down: ``host`` is a closed port. Track ``n`` events, let the SDK retry for ``settle`` s."""
    client = ad.make(p["host"], p.get("cap"))
    track = ad.tracker(client)
    n = int(p["n"])
    gc.collect()
    rss0 = _rss_kb()
    t0 = time.monotonic()
    accepted = 0
    unknown = False
    for i in range(n):
        ok = track(i, props(i))
        if ok is None:
            unknown = True
        elif ok:
            accepted += 1
    t1 = time.monotonic()
    time.sleep(float(p.get("settle", 1.0)))
    gc.collect()
    out.update(
        sent=n,
        accepted=None if unknown else accepted,
        track_s=t1 - t0,
        rss_before_kb=rss0,
        rss_after_kb=_rss_kb(),
        maxrss_kb=_maxrss_kb(),
    )
    pending = getattr(ad, "pending", None)
    if pending is not None:
        try:
            out["pending"] = pending(client)
        except Exception as exc:
            out["pending"] = repr(exc)


def run(ad: Any) -> None:
    p = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {"scenario": "info"}
    cap, note = ad.default_cap()
    out: dict[str, Any] = {
        "scenario": p["scenario"],
        "dist": ad.DIST,
        "version": _version(ad.DIST),
        "python": sys.version.split()[0],
        "default_cap": cap,
        "default_cap_note": note,
        "can_raise_cap": bool(ad.RAISE_CAP),
        "cap_used": p.get("cap"),
        "n": p.get("n"),
        "module_file": getattr(sys.modules.get(ad.IMPORT), "__file__", None),
    }
    sc = p["scenario"]
    if sc == "latency":
        _scenario_latency(ad, p, out)
    elif sc == "e2e":
        _scenario_e2e(ad, p, out)
    elif sc == "down":
        _scenario_down(ad, p, out)
    elif sc != "info":
        raise SystemExit(f"unknown scenario {sc!r}")
    _emit(out)
    # Skip atexit hooks: the run is over and measured, and some SDKs retry a dead endpoint at exit.
    sys.stderr.flush()
    os._exit(0)


def _scenario_cold(p: dict[str, Any]) -> None:
    """Import the SDK (through its driver), build a client, track one event, flush (see the docstring)."""
    t0 = time.monotonic()
    ad = __import__(p["driver"])
    client = ad.make(p["host"], None)
    t_made = time.monotonic()
    ad.tracker(client)(0, props(0))
    ad.flush(client, p["flush_timeout"])
    t1 = time.monotonic()
    _emit(
        {
            "scenario": "cold",
            "sent": 1,
            "t_start": t0,
            "import_and_client_ms": (t_made - t0) * 1e3,
            "flush_returned_ms": (t1 - t0) * 1e3,
            "maxrss_kb": _maxrss_kb(),
        }
    )
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    _scenario_cold(json.loads(sys.argv[1]))
