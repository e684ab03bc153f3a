"""What ``capture_exception()`` costs the caller, next to ``track()``; and what the hooks cost when nothing fails.

A standalone script (not part of ``run.py``)::

    python benchmarks/errors_bench.py [--n 2000] [--rounds 5] [--depth 10]

It starts ``benchmarks/sink.py`` in its own process on 127.0.0.1 (so the server's work never competes with
the measured process), and reports really go through the errors lane.
Each figure is the mean time per call in microseconds over ``n`` calls, for the best round and the median
round of ``--rounds`` (the best is the one least disturbed by other processes), measured on the calling thread (the sending happens on the client's own thread). The cases, interleaved round by round:

* ``track``: ``client.track("order_paid", "user_1", {"amount": 12.5, "currency": "EUR"})``.
* ``build_report``: walking a traceback ``--depth`` frames deep and writing the report (no queueing).
* ``capture_exception``: the whole call (walk, build, rate limit, encode, queue), the per-fingerprint
  limit raised so every call takes the full path.
* ``capture_exception, rate-limited``: the same exception group past its limit (the hot-loop case).
* ``raise+catch`` with and without ``capture_exceptions=True``: the hooks cost nothing while no exception
  goes uncaught (they are not on any code path until then).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serla import Serla
from serla._errors import PathRules, build_report


def nest(depth: int) -> None:
    if depth <= 1:
        raise ValueError("card 4242 declined")
    nest(depth - 1)


def caught(depth: int) -> BaseException:
    try:
        nest(depth)
    except ValueError as exc:
        return exc
    raise AssertionError


def per_call(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--depth", type=int, default=10)
    args = parser.parse_args()
    n, depth = args.n, args.depth

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("sink.py")), "--port", str(port), "--seconds", "900"],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):  # bounded: about 10 s
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        client = Serla("sk_live_bench", host=url, flush_on_exit=False, max_queue_size=100_000)
        reporter = client._error_reporter()
        rules = PathRules()
        props = {"amount": 12.5, "currency": "EUR"}

        def track() -> None:
            client.track("order_paid", "user_1", props)

        def build() -> None:
            build_report(caught(depth), rules)

        def capture() -> None:
            reporter.limiter.limit = 10**9
            client.capture_exception(caught(depth))

        def capture_limited() -> None:
            reporter.limiter.limit = 0
            client.capture_exception(caught(depth))

        def raise_catch() -> None:
            caught(depth)

        cases: dict[str, Callable[[], Any]] = {
            "track": track,
            f"raise+catch ({depth} frames), no hooks": raise_catch,
            f"build_report ({depth} frames)": build,
            f"capture_exception ({depth} frames)": capture,
            "capture_exception, rate-limited": capture_limited,
        }
        results: dict[str, list[float]] = {name: [] for name in cases}
        hooked: list[float] = []
        for _ in range(args.rounds):
            for name, fn in cases.items():
                results[name].append(per_call(fn, n))
                client.flush(60)
            with_hooks = Serla("sk_live_bench", host=url, flush_on_exit=False, capture_exceptions=True)
            hooked.append(per_call(raise_catch, n))
            with_hooks.shutdown(5)
        results[f"raise+catch ({depth} frames), capture_exceptions=True"] = hooked
        client.shutdown(60)
    finally:
        sink.terminate()
        sink.wait(10)

    print(f"Python {sys.version.split()[0]}, n={n} calls x {args.rounds} rounds, best and median round\n")
    print("| case | µs per call, best round | median round |")
    print("|---|---:|---:|")
    for name, values in results.items():
        print(f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()
