"""Where serla's per-request CPU goes: the web app's two calls, one at a time, in a loop (no web server).

    taskset -c 0 benchmarks/.venvs/web_serla/bin/python benchmarks/webapp/split.py

Times, in one process, blocks of ``n`` requests' worth of work, alternating: the log call through a
``NullHandler`` (the apps' baseline), the same call through ``SerlaHandler``, ``track()`` alone, and both
(what ``GET /`` does in the ``serla`` configuration). Each figure is process CPU time (all threads, so the
flusher's encoding and HTTP to the sink are in it, flushed at the end of each block) per request; the
median over the blocks. The sink (``../sink.py``) runs in a child process on CPU 1, so its work is not
counted.
"""

from __future__ import annotations

import json
import logging
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from serla import Serla
from serla.logging_handler import SerlaHandler

SINK = Path(__file__).resolve().parent.parent / "sink.py"


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    blocks = int(sys.argv[2]) if len(sys.argv) > 2 else 7
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sink = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(SINK), "--port", str(port), "--seconds", "600"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    client = Serla("sk_live_bench", host=f"http://127.0.0.1:{port}")
    null_log = logging.getLogger("split.null")
    null_log.addHandler(logging.NullHandler())
    serla_log = logging.getLogger("split.serla")
    serla_log.addHandler(SerlaHandler(client))
    for lg in (null_log, serla_log):
        lg.setLevel(logging.INFO)
        lg.propagate = False
    track = client.track
    counter = iter(range(10**9))

    def null_only() -> None:
        i = next(counter)
        null_log.info("request served", extra={"event": "request_served", "distinct_id": "u", "order_id": i})

    def handler_only() -> None:
        i = next(counter)
        serla_log.info("request served", extra={"event": "request_served", "distinct_id": "u", "order_id": i})

    def track_only() -> None:
        i = next(counter)
        track("page_view", "u", {"path": "/", "order_id": i})
        null_log.info("request served", extra={"event": "request_served", "distinct_id": "u", "order_id": i})

    def both() -> None:
        i = next(counter)
        track("page_view", "u", {"path": "/", "order_id": i})
        serla_log.info("request served", extra={"event": "request_served", "distinct_id": "u", "order_id": i})

    variants = {"log via NullHandler": null_only, "log via SerlaHandler": handler_only}
    variants["track() + log via NullHandler"] = track_only
    variants["track() + log via SerlaHandler"] = both
    results: dict[str, list[float]] = {k: [] for k in variants}
    for b in range(blocks + 1):
        for name, fn in variants.items() if b % 2 else reversed(list(variants.items())):
            t0 = time.process_time()
            for _ in range(n):
                fn()
            client.flush(timeout=30)
            if b:  # block 0 warms up
                results[name].append((time.process_time() - t0) * 1e6 / n)
    out = {k: round(statistics.median(v), 2) for k, v in results.items()}
    base = out["log via NullHandler"]
    print(
        json.dumps(
            {
                "cpu_us_per_request": out,
                "added_over_null_log": {k: round(v - base, 2) for k, v in out.items()},
            }
        )
    )
    client.shutdown()
    sink.terminate()
    sink.wait(10)


if __name__ == "__main__":
    main()
