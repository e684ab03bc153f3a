"""Issue 17's figures: track() with and without a context, each integration's cost, the event loop's stall.

    python benchmarks/context_bench.py track            # track() paths of the SDK on sys.path
    PYTHONPATH=/path/to/other/checkout python benchmarks/context_bench.py track   # the same for another tree
    python benchmarks/context_bench.py middleware       # µs each middleware adds to one request
    python benchmarks/context_bench.py stall            # longest event-loop stall under a uvicorn load

Every figure is a median of several rounds. Times of a ``json.dumps`` reference, run interleaved, are printed
too: the VM's speed varies between processes, so compare ratios to the reference across runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable

PROPS = {"order_id": 1, "total": 42.5, "currency": "EUR", "items": 3, "coupon": None}


def per_call(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def rounds(cases: dict[str, Callable[[], Any]], n: int = 50_000, k: int = 7) -> dict[str, float]:
    ref = lambda: json.dumps(PROPS)  # noqa: E731
    samples: dict[str, list[float]] = {name: [] for name in ["json.dumps reference", *cases]}
    for _ in range(k):
        samples["json.dumps reference"].append(per_call(ref, n))
        for name, fn in cases.items():
            samples[name].append(per_call(fn, n))
    return {name: statistics.median(v) for name, v in samples.items()}


def bench_track() -> None:
    import serla

    print(f"serla from {os.path.dirname(serla.__file__)}")
    client = serla.Serla("sk_live_bench", disabled=True, flush_on_exit=False)
    cases: dict[str, Callable[[], Any]] = {
        "track(), no context": lambda: client.track("order_completed", "u1", PROPS)
    }
    if hasattr(serla, "context"):
        ctx = serla.context(
            distinct_id="u1", session_id="0123456789abcdef0123456789abcdef", groups={"company": "acme"}
        )

        def in_context() -> None:
            with ctx:
                for _ in range(10):
                    client.track("order_completed", properties=PROPS)

        hooked = serla.Serla("sk_live_bench", disabled=True, flush_on_exit=False, before_send=lambda e: e)
        cases["track() in a context (user, session, group)"] = lambda: None
        cases["track() with before_send (identity)"] = lambda: hooked.track("order_completed", "u1", PROPS)
        results = rounds({k: v for k, v in cases.items() if "in a context" not in k})
        ctx_samples = []
        for _ in range(7):
            ctx_samples.append(per_call(in_context, 5_000) / 10)
        results["track() in a context (user, session, group)"] = statistics.median(ctx_samples)
    else:
        results = rounds(cases)
    for name, us in results.items():
        print(f"{name:50s} {us:7.3f} µs  ({us / results['json.dumps reference']:.2f}x reference)")


def bench_middleware() -> None:
    from serla.integrations.asgi import SerlaMiddleware as AsgiMiddleware
    from serla.integrations.wsgi import SerlaMiddleware as WsgiMiddleware

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    environ = {"PATH_INFO": "/", "HTTP_X_USER": "u1", "HTTP_COOKIE": "a=1"}
    wrapped = WsgiMiddleware(wsgi_app, distinct_id=lambda e: e.get("HTTP_X_USER"))
    noop = lambda *a: None  # noqa: E731
    results = rounds(
        {
            "wsgi bare": lambda: wsgi_app(environ, noop),
            "wsgi + SerlaMiddleware": lambda: wrapped(environ, noop),
        },
        n=20_000,
    )

    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        return None

    scope = {
        "type": "http",
        "path": "/",
        "headers": [(b"host", b"x"), (b"x-user", b"u1"), (b"cookie", b"a=1")],
    }
    amw = AsgiMiddleware(asgi_app, distinct_id=lambda s: "u1")

    async def loop_of(app: Any, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await app(scope, None, None)
        return (time.perf_counter() - start) / n * 1e6

    bare, mw = [], []
    for _ in range(7):
        bare.append(asyncio.run(loop_of(asgi_app, 20_000)))
        mw.append(asyncio.run(loop_of(amw, 20_000)))
    results["asgi bare"] = statistics.median(bare)
    results["asgi + SerlaMiddleware"] = statistics.median(mw)

    try:
        import django
        from django.conf import settings

        settings.configure(ALLOWED_HOSTS=["*"], SECRET_KEY="x")
        django.setup()
        from django.http import HttpResponse
        from django.test import RequestFactory

        from serla.integrations.django import SerlaMiddleware as DjangoMiddleware

        request = RequestFactory().get("/")
        response = HttpResponse("ok")
        dmw = DjangoMiddleware(lambda r: response)
        results.update(
            rounds(
                {"django bare": lambda: response, "django + SerlaMiddleware": lambda: dmw(request)}, n=20_000
            )
        )
    except ImportError:
        pass
    for name, us in results.items():
        print(f"{name:30s} {us:7.3f} µs")
    for kind in ("wsgi", "asgi", "django"):
        if f"{kind} bare" in results:
            print(
                f"{kind}: +{results[f'{kind} + SerlaMiddleware'] - results[f'{kind} bare']:.2f} µs per request"
            )


STALL_APP = """
import asyncio, json, os, time
import serla
from serla.integrations.asgi import SerlaMiddleware

client = serla.Serla(os.environ["SERLA_API_KEY"], host=os.environ["SERLA_HOST"], flush_on_exit=False,
                     flush_interval_seconds=0.2, batch_size=50)
TRACK = os.environ.get("STALL_TRACK", "1") == "1"

lateness = []

async def watchdog():
    while True:
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        if len(lateness) < 2_000_000:
            lateness.append(time.perf_counter() - t - 0.001)

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                asyncio.get_running_loop().create_task(watchdog())
                await send({"type": "lifespan.startup.complete"})
            else:
                await client.ashutdown(10)
                await send({"type": "lifespan.shutdown.complete"})
                return
    await receive()
    if scope["path"] == "/reset":
        lateness.clear()
        body = b"0"
    elif scope["path"] == "/stall":
        xs = sorted(lateness)
        pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000
        body = json.dumps({"p50": pick(0.5), "p99": pick(0.99), "p999": pick(0.999), "max": xs[-1] * 1000,
                           "samples": len(xs), "dropped": client.stats()["dropped"]}).encode()
    elif scope["path"] == "/flush":
        body = b"%d" % await client.aflush(10) if TRACK else b"1"
        if TRACK:
            await client.aidentify("u1", {"plan": "pro"})
    else:
        if TRACK:
            for i in range(5):
                client.track("request_event", properties={"i": i})
        body = b"ok"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})

if TRACK:
    app = SerlaMiddleware(app, distinct_id=lambda scope: "u1")
"""


def bench_stall(seconds: float = 10.0, threads: int = 4) -> None:
    """Run the load twice: without the SDK (the machine's own stall floor), then with it."""
    for track in ("0", "1"):
        print(
            "without serla (baseline):"
            if track == "0"
            else "with serla (ASGI middleware, 5 track() per request):"
        )
        _stall_run(seconds, threads, track)


def _stall_run(seconds: float, threads: int, track: str) -> None:
    import http.client

    from serla.devtools.server import SerlaServer

    with SerlaServer(api_keys={"sk_live_bench"}) as server, tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "stall_app.py"), "w") as f:
            f.write(STALL_APP)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = dict(
            os.environ,
            SERLA_API_KEY="sk_live_bench",
            SERLA_HOST=server.url,
            PYTHONPATH=tmp,
            STALL_TRACK=track,
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "stall_app:app", "--port", str(port), "--log-level", "warning"],
            cwd=tmp,
            env=env,
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), 1).close()
                    break
                except OSError:
                    time.sleep(0.05)

            def get(path: str) -> bytes:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", path)
                data = conn.getresponse().read()
                conn.close()
                return data

            get("/reset")
            counts = [0] * threads
            stop = time.monotonic() + seconds

            def load(i: int) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                while time.monotonic() < stop:
                    conn.request("GET", "/track")
                    conn.getresponse().read()
                    counts[i] += 1
                    if counts[i] % 200 == 0:
                        conn.request("GET", "/flush")
                        conn.getresponse().read()
                conn.close()

            workers = [threading.Thread(target=load, args=(i,)) for i in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(seconds + 60)
            stall = json.loads(get("/stall"))
            total = sum(counts)
            print(
                f"{total} requests ({total * 5} events, aflush+aidentify every 200 requests per connection) "
                f"in {seconds:.0f} s over {threads} connections: {total / seconds:.0f} req/s"
            )
            print(
                "event-loop lateness of a 1 ms sleep (ms): "
                f"p50 {stall['p50']:.3f}, p99 {stall['p99']:.3f}, p99.9 {stall['p999']:.3f}, "
                f"max {stall['max']:.1f} over {stall['samples']} samples; dropped {stall['dropped']}"
            )
            print(f"events delivered: {len(server.events)}")
        finally:
            proc.terminate()
            proc.wait(20)


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "track"
    {"track": bench_track, "middleware": bench_middleware, "stall": bench_stall}[which]()
