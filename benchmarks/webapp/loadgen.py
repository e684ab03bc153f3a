"""A fixed-rate HTTP/1.1 load generator (stdlib asyncio), for p99 latency below saturation.

    python loadgen.py URL --rate 300 --seconds 3

Neither ``wrk2`` nor any other fixed-rate generator is packaged in Debian 12 or on PyPI in a usable form,
and ``wrk`` itself runs closed-loop (each connection sends its next request when the previous one
returns), which hides queueing delay. This sends request ``k`` at ``t0 + k / rate`` whatever happened
before, like wrk2, and measures each latency from that *scheduled* send time to the last byte of the
response, so a stall in the app shows up in every request it delays (no coordinated omission).

Connections: keep-alive connections are reused from an idle pool; a response with ``Connection: close``
(gunicorn's sync worker) closes its connection, and the next request opens a new one, whose connect time
is part of its latency. At most ``--max-inflight`` requests are in flight; a request scheduled while that
many are in flight waits, and the wait counts in its latency.

Prints one JSON line: ``sent``, ``ok``, ``errors``, latency percentiles in microseconds (``p50``,
``p90``, ``p99``, ``p999``, ``max``), the achieved rate, and ``late_sends`` (requests whose send started
more than 1 ms after schedule because this process was busy: if that is more than a few, the generator and
not the app limited the run). The runner pins it to the core the app is not on (``taskset -c 1``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from urllib.parse import urlsplit


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
        elif name == b"transfer-encoding":
            raise ValueError("chunked responses are not supported")
    if length:
        await reader.readexactly(length)
    return status, close


async def run(url: str, rate: float, seconds: float, max_inflight: int) -> dict[str, object]:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    request = f"GET {u.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: webbench-loadgen\r\n\r\n".encode()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    sem = asyncio.Semaphore(max_inflight)
    latencies: list[float] = []
    errors = 0
    late = 0
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()

    async def one(scheduled: float) -> None:
        nonlocal errors
        async with sem:
            conn = idle.pop() if idle else None
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
                reader, writer = conn
                writer.write(request)
                status, close = await asyncio.wait_for(_read_response(reader), 10)
                done = loop.time()
                if status != 200:
                    errors += 1
                else:
                    latencies.append(done - scheduled)
                if close:
                    writer.close()
                else:
                    idle.append(conn)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
                errors += 1
                if conn is not None:
                    conn[1].close()

    tasks = []
    t0 = loop.time() + 0.05
    for k in range(total):
        scheduled = t0 + k / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.001:
            late += 1
        tasks.append(asyncio.ensure_future(one(scheduled)))
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    elapsed = loop.time() - t0
    for _, writer in idle:
        writer.close()
    lat = sorted(latencies)

    def pct(p: float) -> float | None:
        if not lat:
            return None
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e6, 1)

    return {
        "sent": total,
        "ok": len(lat),
        "errors": errors,
        "late_sends": late,
        "rate": rate,
        "achieved_rate": round(len(lat) / elapsed, 1) if elapsed > 0 else None,
        "p50": pct(50),
        "p90": pct(90),
        "p99": pct(99),
        "p999": pct(99.9),
        "max": round(lat[-1] * 1e6, 1) if lat else None,
        "latencies_us": [round(x * 1e6, 1) for x in lat],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--rate", type=float, default=300.0, help="requests per second (default 300)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--max-inflight", type=int, default=64)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.rate, args.seconds, args.max_inflight))), flush=True)


if __name__ == "__main__":
    main()
