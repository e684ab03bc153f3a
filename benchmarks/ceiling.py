"""Benchmarks of the platform's ceiling: delivery against a server with the real Serla limits.

The real server takes at most 100 ``/events/batch`` requests a minute per project, of at most 100 events
each: 10,000 events a minute is the ceiling, whatever the client does. These scenarios measure how close
the SDK, at its default settings, gets to that ceiling, and what it keeps and loses on the way:

1. ``burst``: 100,000 events in a tight loop, then ``shutdown()``. Lost and duplicated events (counted in
   what the server stored) and the drain time against the physical limit, N / 10,000 windows.
2. ``memory``: 1,000,000 events in a tight loop. Peak RSS of the producing process against
   ``max_buffer_bytes`` plus a constant, and the drops (``stats()["dropped"]``).
3. ``fleet8``, ``fleet30``, ``fleet30_over``: fleets of separate processes sharing one project on one
   rate-limited server: 8 processes sending 9,600 events a minute in total, 30 processes at 5 events a
   second each, and 30 processes at 8 events a second each (14,400 a minute, above the ceiling). Lost,
   duplicated, 429 answers, events per request, delivery delay (median, p95) and throughput.

Time is scaled. The contract server (``serla.devtools.server.SerlaServer``, its real limits on) runs with
a window of ``--window`` seconds instead of 60: a factor ``k = window / 60``. Every duration of the client
that matters against the real window is scaled by the same ``k`` (the policy's ``pace_min``, ``pace_max``
and ``retry_after_max``, and ``flush_interval_seconds``), and every offered rate by ``1 / k``, so the
client behaves, event for event and request for request, as it would against the real one-minute window.
Reported times are scaled back (divided by ``k``) to real seconds. What doesn't scale: the server's
``Retry-After`` is whole seconds (rounded up), and the client waits at least 1 s on a 429; at ``k = 1/3``
a second is 3 real seconds (at ``--quick``'s ``k = 0.05``, 20), so holds are longer than against the real
server, and the fixed costs of a request (a few ms of loopback and parsing) weigh ``1 / k`` times more
against the pace. Both bias the results against the SDK: ``--quick`` is a smoke run, the full run's
figures are the ones to quote.

Everything runs on 127.0.0.1: the server in this process (threads), each producer in its own process
(``sys.executable`` running this file with ``--role producer``). Every wait is bounded, and a producer
that outlives its bound is killed and reported. Nothing here is part of the test suite.

Usage::

    python benchmarks/ceiling.py                  # full run, about 15 min (window 20 s, k = 1/3)
    python benchmarks/ceiling.py --quick          # under 3 min (window 3 s, k = 0.05, shorter fleets)
    python benchmarks/ceiling.py --only burst,fleet8 --json /tmp/ceiling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REAL_WINDOW = 60.0
REQUESTS_PER_WINDOW = 100
EVENTS_PER_REQUEST = 100
CEILING = REQUESTS_PER_WINDOW * EVENTS_PER_REQUEST  # events per window
RSS_CONSTANT_MIB = 16
"""The constant on top of ``max_buffer_bytes`` that the peak RSS may grow by in ``memory``: the flusher
thread's stack, one request in flight, the transport's buffers and the allocator's slack."""
KEY = "sk_live_ceiling"
SCENARIOS = ("burst", "memory", "fleet8", "fleet30", "fleet30_over")

# The baseline (issue 11, measured on the real server before the change), real seconds.
BASELINE = {
    "fleet8": {"429": 24, "median_s": 17.0, "p95_s": 44.0},
    "fleet30": {"429": 80, "median_s": 32.0, "p95_s": 64.0},
}


def log(msg: str) -> None:
    print(f"[ceiling {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- the producer (a separate process) ---------------------------------------------------------------


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def producer(params: dict[str, Any]) -> dict[str, Any]:
    """Track events as ``params`` says, shut down, and return what happened (JSON-able)."""
    from serla import Serla
    from serla._retry import RetryPolicy

    k = params["k"]
    defaults = RetryPolicy()
    policy = RetryPolicy(
        pace_min=defaults.pace_min * k,
        pace_max=defaults.pace_max * k,
        rate_window=defaults.rate_window * k,
        retry_after_max=defaults.retry_after_max * k,
    )
    src = params["src"]
    rss_before = _status_kb("VmRSS")
    client = Serla(
        KEY,
        host=params["url"],
        flush_interval_seconds=5.0 * k,  # the default 5 s, scaled
        flush_on_exit=False,
        _policy=policy,
        **({"batch_size": params["batch_size"]} if params.get("batch_size") else {}),
    )
    track = client.track
    clock = time.time
    perf = time.perf_counter
    accepted = 0
    slowest = 0.0
    n = params["n"]
    if params["mode"] == "burst":
        t0 = clock()
        for i in range(n):
            if track(
                "page_viewed",
                f"user_{i % 1000}",
                {"src": src, "seq": i, "t": clock(), "plan": "pro", "path": "/pricing"},
            ):
                accepted += 1
        produce_s = clock() - t0
    else:  # "rate": params["rate"] events per wall second, from params["start"] on
        rate = params["rate"]
        start = params["start"]
        while clock() < start:
            time.sleep(min(0.05, max(0.0, start - clock())))
        t0 = clock()
        for i in range(n):
            due = start + i / rate
            wait = due - clock()
            if wait > 0:
                time.sleep(wait)
            c0 = perf()
            ok = track(
                "page_viewed",
                f"user_{src}",
                {"src": src, "seq": i, "t": clock(), "plan": "pro", "path": "/pricing"},
            )
            slowest = max(slowest, perf() - c0)
            accepted += ok
        produce_s = clock() - t0
    stats_after_loop = client.stats()
    hwm_after_loop = _status_kb("VmHWM")
    t1 = clock()
    delivered_all = client.shutdown(timeout=params["drain_timeout"])
    drain_s = clock() - t1
    stats = client.stats()
    return {
        "src": src,
        "n": n,
        "accepted": accepted,
        "produce_s": produce_s,
        "drain_s": drain_s,
        "delivered_all": delivered_all,
        "slowest_track_ms": slowest * 1000,
        "rss_before_kb": rss_before,
        "hwm_after_loop_kb": hwm_after_loop,
        "hwm_end_kb": _status_kb("VmHWM"),
        "queued_bytes_after_loop": stats_after_loop["queued_bytes"],
        "queued_after_loop": stats_after_loop["queued"],
        "max_buffer_bytes": client.config.max_buffer_bytes,
        "stats": {key: stats[key] for key in ("accepted", "sent", "requests", "retried", "dropped", "state")},
    }


# ---- the orchestrator --------------------------------------------------------------------------------


BATCH_SIZE: int | None = None
"""``--batch-size``: passed to every producer's client (``None``: the SDK's default)."""


def run_producers(paramses: list[dict[str, Any]], bound: float) -> list[dict[str, Any]]:
    """Start one process per params, wait for all (at most ``bound`` s), return their results."""
    for p in paramses:
        p["batch_size"] = BATCH_SIZE
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERLA_") and "proxy" not in k.lower()}
    env["NO_PROXY"] = "127.0.0.1"
    procs = [
        subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--role", "producer", json.dumps(p)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for p in paramses
    ]
    deadline = time.monotonic() + bound
    results = []
    for p, proc in zip(paramses, procs):
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
            results.append({"src": p["src"], "killed": True, "stderr": err[-2000:]})
            continue
        line = [x for x in out.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            results.append({"src": p["src"], "failed": proc.returncode, "stderr": err[-2000:]})
        else:
            results.append(json.loads(line[-1][len("RESULT ") :]))
    return results


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def analyse(
    server: Any, results: list[dict[str, Any]], k: float, window: float, load_end: float | None = None
) -> dict[str, Any]:
    """What the server stored against what the producers accepted."""
    stored = server.stored
    seen: set[tuple[str, int]] = set()
    delays = []
    first = last = None
    for ev in stored:
        props = ev.data.get("properties") or {}
        seen.add((props.get("src"), props.get("seq")))
        delays.append(ev.received_at - props.get("t", ev.received_at))
        first = ev.received_at if first is None else min(first, ev.received_at)
        last = ev.received_at if last is None else max(last, ev.received_at)
    accepted = sum(r.get("accepted", 0) for r in results)
    requests = [r for r in server.requests if r.path == "/api/v1/events/batch"]
    ok = [r for r in requests if 200 <= r.status < 300]
    rejected = sum(1 for r in requests if r.status == 429)
    span = (last - first) if stored else 0.0
    return {
        "accepted": accepted,
        "stored": len(stored),
        "unique": len(seen),
        "lost": accepted - len(seen),
        "duplicated": len(stored) - len(seen),
        "requests": len(requests),
        "requests_2xx": len(ok),
        "answers_429": rejected,
        "other_statuses": sorted({r.status for r in requests} - {201, 200, 429}),
        "events_per_request": (sum(r.event_count for r in ok) / len(ok)) if ok else 0.0,
        "delay_median_s": statistics.median(delays) / k if delays else float("nan"),
        "delay_p95_s": pct(delays, 0.95) / k,
        "delay_max_s": max(delays) / k if delays else float("nan"),
        "first_stored": first,
        "last_stored": last,
        # events a window over the span from the first stored event to the last, against the ceiling
        "throughput_per_window": (len(stored) / span * window) if span > 0 else float("nan"),
        "dropped": _sum_dropped(results),
        "failed_producers": [r for r in results if r.get("killed") or r.get("failed") is not None],
        "timeline": timeline_figures(server, window, load_end),
    }


def _sum_dropped(results: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in results:
        for reason, count in (r.get("stats", {}).get("dropped") or {}).items():
            total[reason] = total.get(reason, 0) + count
    return total


def new_server(window: float) -> Any:
    """The contract server with its real limits (on by default) and a window of ``window`` seconds,
    recording ``(time, process, status, events)`` for each batch request in ``timeline``."""
    from serla.devtools.server import SerlaServer

    class TimedServer(SerlaServer):
        timeline: list[tuple[float, str, int, int]]

        def handle(self, request: Any) -> Any:
            response = super().handle(request)
            if request.path == "/api/v1/events/batch":
                # the idempotency key starts with a random prefix per process
                who = (request.idempotency_key or "")[:8]
                status = 0 if response is None else response.status
                self.timeline.append((time.time(), who, status, request.event_count))
            return response

    server = TimedServer(rate_limit_window=window)
    server.timeline = []
    return server.start()


def timeline_figures(server: Any, window: float, load_end: float | None = None) -> dict[str, Any]:
    """Where the request budget went: 2xx requests per (server) window, idle time, unequal shares."""
    rows = sorted(server.timeline)
    if not rows:
        return {}
    # the server's fixed windows: one starts at the first request after the previous one ended
    windows: list[list[tuple[float, str, int, int]]] = []
    starts: list[float] = []
    end = -1.0
    for row in rows:
        if row[0] >= end:
            windows.append([])
            starts.append(row[0])
            end = row[0] + window
        windows[-1].append(row)
    ok_per_window = [sum(1 for r in w if 200 <= r[2] < 300) for w in windows]
    events_per_window = [sum(r[3] for r in w if 200 <= r[2] < 300) for w in windows]
    inner = events_per_window[1:-1]  # the first (ramp) and last (drain) windows left out
    # the windows that started while the load was offered (the first included: its cost is the client's)
    loaded = [e for e, t in zip(events_per_window, starts) if load_end is None or t < load_end]
    span = rows[-1][0] - rows[0][0]
    per_proc: dict[str, list[int]] = {}
    for _, who, status, count in rows:
        p = per_proc.setdefault(who, [0, 0, 0])
        if 200 <= status < 300:
            p[0] += 1
            p[1] += count
        elif status == 429:
            p[2] += 1
    ok = [r for r in rows if 200 <= r[2] < 300]
    full = sum(1 for r in ok if r[3] >= EVENTS_PER_REQUEST)
    return {
        "windows": len(windows),
        "windows_per_span": span / window,
        "ok_per_window": ok_per_window,
        "ok_per_window_median": statistics.median(ok_per_window),
        "events_per_window": events_per_window,
        "inner_windows_share_of_ceiling": (statistics.mean(inner) / CEILING) if inner else float("nan"),
        "loaded_windows": len(loaded),
        "loaded_windows_share_of_ceiling": (statistics.mean(loaded) / CEILING) if loaded else float("nan"),
        "full_requests_share": full / len(ok) if ok else 0.0,
        "requests_per_process": sorted(p[0] for p in per_proc.values()),
        "answers_429_per_process": sorted(p[2] for p in per_proc.values()),
    }


def scenario_burst(n: int, window: float, k: float) -> dict[str, Any]:
    limit_windows = n / CEILING
    with new_server(window) as server:
        t0 = time.time()
        results = run_producers(
            [
                {
                    "mode": "burst",
                    "n": n,
                    "src": "burst",
                    "url": server.url,
                    "k": k,
                    "drain_timeout": limit_windows * window * 3 + 10 * window,
                }
            ],
            bound=limit_windows * window * 3 + 15 * window + 60,
        )
        a = analyse(server, results, k, window)
    r = results[0]
    drain_wall = (a["last_stored"] - t0) if a["last_stored"] else float("nan")
    a.update(
        n=n,
        producer=r,
        drain_s=drain_wall / k,
        drain_windows=drain_wall / window,
        limit_windows=limit_windows,
        limit_s=limit_windows * REAL_WINDOW,
        ratio=drain_wall / (limit_windows * window),
        met=a["lost"] == 0
        and a["duplicated"] == 0
        and r.get("accepted") == n
        and drain_wall <= 1.10 * limit_windows * window,
    )
    return a


def scenario_memory(n: int, window: float, k: float) -> dict[str, Any]:
    with new_server(window) as server:
        results = run_producers(
            [{"mode": "burst", "n": n, "src": "memory", "url": server.url, "k": k, "drain_timeout": 0.5}],
            bound=600,
        )
        a = analyse(server, results, k, window)
    r = results[0]
    if "accepted" not in r:
        return {"n": n, "producer": r, "met": False}
    growth = (r["hwm_after_loop_kb"] - r["rss_before_kb"]) * 1024
    bound = r["max_buffer_bytes"] + RSS_CONSTANT_MIB * 1024 * 1024
    dropped_at_track = n - r["accepted"]
    counted = r["stats"]["dropped"].get("queue_full", 0)
    return {
        "n": n,
        "producer": r,
        "accepted": r["accepted"],
        "dropped_at_track": dropped_at_track,
        "dropped": r["stats"]["dropped"],
        "stored": a["stored"],
        "peak_rss_growth_bytes": growth,
        "bound_bytes": bound,
        "met": growth <= bound and counted == dropped_at_track and dropped_at_track > 0,
    }


def scenario_fleet(
    name: str, procs: int, per_proc_per_s: float, minutes: float, window: float, k: float
) -> dict[str, Any]:
    rate_wall = per_proc_per_s / k
    n = round(per_proc_per_s * minutes * 60)
    duration_wall = minutes * window
    offered_per_window = procs * per_proc_per_s * REAL_WINDOW
    import random

    rnd = random.Random(11)
    with new_server(window) as server:
        start = time.time() + 3.0  # every process imported and connected before the load starts
        paramses = [
            {
                "mode": "rate",
                "n": n,
                "src": f"p{i}",
                "url": server.url,
                "k": k,
                "rate": rate_wall,
                # real processes don't start in step: spread the starts over one (scaled) flush interval
                "start": start + rnd.random() * 5.0 * k,
                "drain_timeout": duration_wall + 30 * window,
            }
            for i in range(procs)
        ]
        results = run_producers(paramses, bound=duration_wall + 40 * window + 60)
        load_end = max(
            (p["start"] + r.get("produce_s", 0.0) for p, r in zip(paramses, results)), default=None
        )
        a = analyse(server, results, k, window, load_end)
    over = offered_per_window > CEILING
    a.update(
        name=name,
        processes=procs,
        per_process_per_s=per_proc_per_s,
        minutes=minutes,
        offered_per_minute=offered_per_window,
        over_ceiling=over,
        answers_429_per_minute=a["answers_429"] / minutes,
        share_of_ceiling=a["throughput_per_window"] / CEILING,
        # events per server window, over the windows that began while the load was offered
        loaded_share_of_ceiling=a["timeline"].get("loaded_windows_share_of_ceiling", float("nan")),
        slowest_track_ms=max((r.get("slowest_track_ms", 0.0) for r in results), default=0.0),
        baseline=BASELINE.get(name),
    )
    a["met"] = (
        a["lost"] == 0
        and a["duplicated"] == 0
        and not a["failed_producers"]
        and (not over or a["loaded_share_of_ceiling"] >= 0.9)
    )
    return a


def machine() -> dict[str, Any]:
    import serla

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "serla": serla.__version__,
    }


def report(res: dict[str, Any]) -> str:
    k, window = res["k"], res["window"]
    out = [
        f"Window {window:g} s for the real 60 s (k = {k:g}); times in real (scaled-back) seconds; "
        f"batch_size {res.get('batch_size') or 'default'}.",
        f"Machine: {res['machine']['cpu']} ({res['machine']['cpus']} CPUs), Python "
        f"{res['machine']['python']}, load average at start {res['machine']['loadavg']}.",
        "",
    ]
    b = res.get("burst")
    if b:
        out += [
            "| burst | events | stored once | lost | duplicated | requests (429) | events/request | drain | "
            "physical limit | ratio | met |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            f"| {b['n']:,} events, tight loop | {b['producer'].get('accepted', 0):,} accepted | {b['unique']:,} | "
            f"{b['lost']} | {b['duplicated']} | {b['requests']} ({b['answers_429']}) | "
            f"{b['events_per_request']:.1f} | {b['drain_s']:.0f} s ({b['drain_windows']:.2f} windows) | "
            f"{b['limit_s']:.0f} s ({b['limit_windows']:g} windows) | {b['ratio']:.3f} | "
            f"{'met' if b['met'] else 'MISSED'} |",
            "",
        ]
    m = res.get("memory")
    if m and "accepted" in m:
        mib = 1024 * 1024
        out += [
            "| memory | accepted | dropped at track() (`queue_full`) | peak RSS growth | bound "
            "(`max_buffer_bytes` + constant) | met |",
            "|---|---|---|---|---|---|",
            f"| {m['n']:,} events, tight loop | {m['accepted']:,} | {m['dropped_at_track']:,} "
            f"({m['dropped'].get('queue_full', 0):,} counted) | {m['peak_rss_growth_bytes'] / mib:.1f} MiB | "
            f"{m['producer']['max_buffer_bytes'] / mib:.0f} + {RSS_CONSTANT_MIB} MiB | "
            f"{'met' if m['met'] else 'MISSED'} |",
            "",
        ]
    fleets = [res[name] for name in ("fleet8", "fleet30", "fleet30_over") if name in res]
    if fleets:
        out += [
            "| fleet | offered / min | minutes | stored once | lost | dup | 429 (per min) | baseline 429 | "
            "events/request | delay median | p95 | baseline median, p95 | share of ceiling (first to last "
            "stored; windows under load) | met |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for f in fleets:
            base = f["baseline"]
            baseline_delay = f"{base['median_s']:.0f} s, {base['p95_s']:.0f} s" if base else "-"
            out.append(
                f"| {f['processes']} processes x {f['per_process_per_s']:g}/s | {f['offered_per_minute']:,.0f} | "
                f"{f['minutes']:g} | {f['unique']:,} of {f['accepted']:,} | {f['lost']} | {f['duplicated']} | "
                f"{f['answers_429']} ({f['answers_429_per_minute']:.1f}) | "
                f"{base['429'] if base else '-'} | {f['events_per_request']:.1f} | "
                f"{f['delay_median_s']:.1f} s | {f['delay_p95_s']:.1f} s | "
                f"{baseline_delay} | "
                f"{f['share_of_ceiling'] * 100:.0f} %; {f['loaded_share_of_ceiling'] * 100:.0f} %"
                f"{'' if f['over_ceiling'] else ' (under)'} | "
                f"{'met' if f['met'] else 'MISSED'} |"
            )
        out.append("")
    return "\n".join(out)


def progress(res: dict[str, Any], name: str, path: str | None) -> None:
    """Log a finished scenario's headline figures; save what is done so far."""
    r = res[name]
    keys = (
        "met",
        "lost",
        "duplicated",
        "answers_429",
        "events_per_request",
        "ratio",
        "drain_s",
        "delay_median_s",
        "delay_p95_s",
        "share_of_ceiling",
        "loaded_share_of_ceiling",
        "peak_rss_growth_bytes",
        "dropped",
    )
    log(
        f"{name}: "
        + ", ".join(
            f"{key}={r[key]:.3g}" if isinstance(r[key], float) else f"{key}={r[key]}"
            for key in keys
            if key in r
        )
    )
    if path:
        Path(path).write_text(json.dumps(res, indent=1, default=str))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="under 3 min: window 3 s, shorter fleets")
    ap.add_argument("--window", type=float, help="seconds per rate-limit window (default 20, --quick 3)")
    ap.add_argument("--only", help="comma-separated: " + ",".join(SCENARIOS))
    ap.add_argument("--minutes", type=float, help="(scaled) minutes of load per fleet (default 5, --quick 1)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--batch-size", type=int, help="the clients' batch_size (default: the SDK's default)")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("params", nargs="?", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "producer":
        print("RESULT " + json.dumps(producer(json.loads(args.params))), flush=True)
        os._exit(0)
    global BATCH_SIZE
    BATCH_SIZE = args.batch_size
    window = args.window or (3.0 if args.quick else 20.0)
    k = window / REAL_WINDOW
    minutes = args.minutes or (1.0 if args.quick else 5.0)
    only = args.only.split(",") if args.only else list(SCENARIOS)
    res: dict[str, Any] = {
        "window": window,
        "k": k,
        "batch_size": BATCH_SIZE,
        "machine": machine(),
        "started": time.time(),
    }
    if "burst" in only:
        log(f"burst: 100,000 events, window {window:g} s")
        res["burst"] = scenario_burst(100_000, window, k)
        progress(res, "burst", args.json)
    if "memory" in only:
        log("memory: 1,000,000 events")
        res["memory"] = scenario_memory(1_000_000, window, k)
        progress(res, "memory", args.json)
    if "fleet8" in only:
        log(f"fleet8: 8 processes x 20/s for {minutes:g} min")
        res["fleet8"] = scenario_fleet("fleet8", 8, 20.0, minutes, window, k)
        progress(res, "fleet8", args.json)
    if "fleet30" in only:
        log(f"fleet30: 30 processes x 5/s for {minutes:g} min")
        res["fleet30"] = scenario_fleet("fleet30", 30, 5.0, minutes, window, k)
        progress(res, "fleet30", args.json)
    if "fleet30_over" in only:
        log(f"fleet30_over: 30 processes x 8/s for {minutes:g} min")
        res["fleet30_over"] = scenario_fleet("fleet30_over", 30, 8.0, minutes, window, k)
        progress(res, "fleet30_over", args.json)
    res["elapsed_s"] = time.time() - res["started"]
    text = report(res)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    log(f"done in {res['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
