"""The durable spool's costs: ``track()`` with and without a spool, and the flusher's cost per event.

::

    python3 benchmarks/spool_bench.py [--events 100000] [--rounds 3]

Each measurement runs against the contract server (``SerlaServer``) on 127.0.0.1, in this process:

* ``track()``: the caller's time per call while the flusher runs (median of rounds). A spool must not
  change it: the flusher writes to disk, never the caller.
* ``flush``: the time to deliver everything tracked (what the flusher thread spends, sends included),
  per event, with and without a spool, and the spool's share of the flusher's CPU time.

This is a report, not a test: it prints numbers and never fails.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from typing import Any

from serla import Serla
from serla.devtools.server import SerlaServer

KEY = "sk_live_spool_bench_key_000001"


def _thread_cpu(name: str) -> float:
    """CPU seconds of the flusher thread, from /proc (Linux); 0.0 where unavailable."""
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            try:
                with open(f"/proc/self/task/{thread.native_id}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                import os

                tick = os.sysconf("SC_CLK_TCK")
                return (int(fields[11]) + int(fields[12])) / tick
            except OSError:
                return 0.0
    return 0.0


def run_once(events: int, spool: bool) -> dict[str, float]:
    with SerlaServer(api_keys={KEY}) as server, tempfile.TemporaryDirectory() as directory:
        client = Serla(
            KEY,
            host=server.url,
            flush_on_exit=False,
            spool_dir=directory if spool else "",
            batch_size=100,
        )
        client.track("warmup", "u")
        client.flush(30)
        cpu0 = _thread_cpu("serla-flusher")
        props: dict[str, Any] = {"plan": "pro", "n": 1}
        start = time.perf_counter()
        for _ in range(events):
            client.track("bench", "user-42", props)
        tracked = time.perf_counter()
        ok = client.flush(300)
        done = time.perf_counter()
        cpu = _thread_cpu("serla-flusher") - cpu0
        client.shutdown(10)
        assert ok and len(server.events) == events + 1, "every event delivered"
    return {
        "track_us": (tracked - start) / events * 1e6,
        "deliver_us": (done - start) / events * 1e6,
        "flusher_cpu_us": cpu / events * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for spool in (False, True):
        results = [run_once(args.events, spool) for _ in range(args.rounds)]
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        rows.append(("with spool" if spool else "without spool", med))
    print(f"{args.events:,} events, median of {args.rounds} rounds, contract server on 127.0.0.1\n")
    print("| | track() per call (caller) | tracked -> delivered, per event | flusher CPU per event |")
    print("|---|---|---|---|")
    for name, med in rows:
        print(
            f"| {name} | {med['track_us']:.2f} µs | {med['deliver_us']:.2f} µs | {med['flusher_cpu_us']:.2f} µs |"
        )


if __name__ == "__main__":
    main()
