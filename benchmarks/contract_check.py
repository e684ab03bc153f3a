"""How many of an SDK's events a contract-faithful Serla server accepts (runs in this SDK's venv).

It starts ``serla.devtools.server.SerlaServer`` (the project's local server, which validates like the real one:
at most 100 events per request, strict timestamps, ...) on 127.0.0.1, runs one driver's end-to-end
scenario against it in a fresh process, and prints one ``BENCH_RESULT`` line: events sent, events
stored, and the status codes the server answered.

Usage (the runner calls it): ``python contract_check.py DRIVER_PYTHON DRIVER_SCRIPT N CAP_SECONDS``
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import time


def _emit(out: dict) -> None:
    sys.stdout.write("BENCH_RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()


def main() -> None:
    py, driver, n, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    try:
        from serla.devtools.server import SerlaServer
    except ImportError as exc:
        _emit({"available": False, "reason": f"{type(exc).__name__}: {exc}"})
        return
    server = SerlaServer(max_recorded_requests=None, rate_limits=False)  # the e2e figure has no limit
    server.start()
    try:
        params = {"scenario": "e2e", "host": server.url, "n": n, "cap": None, "flush_timeout": 30.0}
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory() as cwd:
            try:
                proc = subprocess.run(
                    [py, driver, json.dumps(params)], capture_output=True, text=True, cwd=cwd, timeout=cap
                )
                err = None if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr[-300:]}"
            except subprocess.TimeoutExpired:
                err = f"killed after {cap:.0f} s (wall-clock cap)"
        elapsed = time.monotonic() - t0
        statuses = collections.Counter(r.status for r in server.requests if r.method == "POST")
        rejected_events = sum(
            r.event_count for r in server.requests if r.method == "POST" and not 200 <= r.status < 300
        )
        stored = server.store.event_count()
        out = {
            "available": True,
            "sent": n,
            "stored": stored,
            "posts": sum(statuses.values()),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "events_in_rejected_posts": rejected_events,
            "elapsed_s": elapsed,
        }
        if err:
            out["driver_error"] = err
        _emit(out)
    finally:
        server.stop()
        os._exit(0)


if __name__ == "__main__":
    main()
