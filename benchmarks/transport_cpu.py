"""CPU per request of the transport: this tree's (``http.client``) against an older one (a git revision).

Not a test: it prints figures. Both transports POST the same 50-event batch to the contract server
(``serla.devtools.server.SerlaServer``, plain HTTP on 127.0.0.1) over one keep-alive connection, in
alternating rounds (A, B, A, B...) so drift in the machine hits both alike. The figure is the sending
thread's CPU time (``time.thread_time``) per request: what the flusher spends, and so at most what it
can take from the application's threads (blocking socket reads release the GIL). The server's threads
are not counted.

    python benchmarks/transport_cpu.py                  # against main's transport, 8 rounds of 400
    python benchmarks/transport_cpu.py --ref HEAD~1 --rounds 12 --requests 1000
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from serla._encode import encode  # noqa: E402
from serla._transport import HttpTransport  # noqa: E402
from serla.devtools.server import BATCH_PATH, SerlaServer  # noqa: E402

KEY = "sk_live_bench_transport_cpu"


def load_old(ref: str, workdir: Path) -> Any:
    """``serla/_transport.py`` at ``ref``, imported as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{ref}:serla/_transport.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = workdir / "old_transport.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_transport", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def batch(n: int) -> bytes:
    events = [
        {
            "name": "page_view",
            "distinctId": f"user-{i}",
            "timestamp": "2026-12-05T12:00:00.000Z",
            "properties": {"path": f"/docs/{i}", "plan": "pro", "n": i, "ok": True},
        }
        for i in range(n)
    ]
    return encode({"events": events})


def cpu_per_request(transport: Any, body: bytes, requests: int) -> float:
    """Microseconds of this thread's CPU per POST (every answer checked to be a 201)."""
    start = time.thread_time()
    for i in range(requests):
        result = transport.post(BATCH_PATH, body, {"X-Idempotency-Key": f"bench-{id(transport)}-{i}"})
        if result.status != 201:
            raise SystemExit(f"unexpected answer: {result!r}")
    return (time.thread_time() - start) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ref", default="main", help="git revision of the transport to compare with")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400, help="requests per round and transport")
    parser.add_argument("--events", type=int, default=50, help="events per request")
    args = parser.parse_args()
    body = batch(args.events)
    with tempfile.TemporaryDirectory() as tmp, SerlaServer(api_keys={KEY}) as server:
        old_module = load_old(args.ref, Path(tmp))
        old = old_module.HttpTransport(server.url, KEY, 10.0)
        new = HttpTransport(server.url, KEY, 10.0)
        for t in (old, new):  # warm up: imports, the connection, the server's code paths
            cpu_per_request(t, body, 50)
        runs: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.rounds):
            runs["old"].append(cpu_per_request(old, body, args.requests))
            runs["new"].append(cpu_per_request(new, body, args.requests))
        old.close()
        new.close()
    print(
        f"{args.rounds} alternating rounds of {args.requests} POSTs of {len(body):,} bytes ({args.events} events)"
    )
    for name, label in (("old", f"{args.ref} (hand-written HTTP/1.1)"), ("new", "this tree (http.client)")):
        values = runs[name]
        print(
            f"  {label:34} median {statistics.median(values):7.1f} µs CPU/request"
            f"  (min {min(values):.1f}, max {max(values):.1f})"
        )
    diffs = [n - o for o, n in zip(runs["old"], runs["new"])]
    print(f"  difference (new - old), per round: median {statistics.median(diffs):+.1f} µs")


if __name__ == "__main__":
    main()
