"""A permissive loopback ingest server for the benchmarks (stdlib only).

It accepts any POST on 127.0.0.1, answers with the status and small JSON body that each SDK's client
treats as success, counts the events in the body, and records when the last event arrived
(``time.monotonic()``, which on Linux is comparable across processes).

Success responses, by path (checked against each client's source):

- ``/api/v1/events/batch`` (serla, serla-py 0.1.0): ``201 {"success":true,"count":n}``
- ``/batch/`` (posthog v0 capture): ``200 {"status":1}``; posthog accepts exactly 200
- ``/v1/batch`` (segment): ``200 {"success":true}``; segment accepts any 2xx
- ``/2/httpapi`` (amplitude): ``200 {"code":200,...}``; amplitude reads ``code`` from the JSON body
- ``/api/<project>/envelope/`` (sentry-sdk): ``200 {"success":true}``; the envelope is parsed item by item
  (see ``sentry_envelope``): ``event`` items and each entry of ``log`` items count as events, with the
  ``order_id`` of the event's ``extra`` or the log's attributes; other items (``session``, ``sessions``,
  ``client_report``) are counted by type in ``item_types``, and the discards that sentry-sdk reports about
  itself in ``client_report`` items are summed in ``sentry_discarded`` (items, not the ``*_byte``
  categories)
- anything else: ``200 {"success":true}``

Events are counted from the JSON body: ``events`` (serla, amplitude) or ``batch`` (posthog, segment);
see ``do_POST`` for the fast path that counts the drivers' ``order_id`` markers and checks itself.
Gzip and deflate ``Content-Encoding`` are decoded. Each event's properties may carry an integer
``order_id`` (the drivers set one per event); distinct ids are counted too, so retried duplicates show.

``delay`` adds a fixed pause before every response (``--wan`` gives 50 ms, a far-away server).

Run it alone with ``python benchmarks/sink.py --port 8000 [--wan]``; the runner imports it instead.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Stats:
    """Counters for one benchmark run; the handler threads update them under ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests = 0  # POSTs that carried an events/batch list
        self.other_requests = 0  # anything else (GETs, bodies without events)
        self.events = 0
        self.ids: set[int] = set()
        self.bad_bodies = 0
        self.first_event_at: float | None = None
        self.last_event_at: float | None = None
        self.bytes_in = 0
        self.max_events_per_request = 0
        self.bodies = 0
        self.verified = 0  # bodies also parsed with json.loads
        self.count_mismatches = 0  # regex count != JSON count (should stay 0)
        self.item_types: dict[str, int] = {}  # sentry envelope items by type
        self.sentry_discarded = 0  # sum of client_report discarded_events quantities

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "other_requests": self.other_requests,
                "events": self.events,
                "unique_ids": len(self.ids),
                "bad_bodies": self.bad_bodies,
                "first_event_at": self.first_event_at,
                "last_event_at": self.last_event_at,
                "bytes_in": self.bytes_in,
                "max_events_per_request": self.max_events_per_request,
                "verified_bodies": self.verified,
                "count_mismatches": self.count_mismatches,
                "item_types": dict(self.item_types),
                "sentry_discarded": self.sentry_discarded,
            }


_ORDER_ID = re.compile(rb'"order_id"\s*:\s*(\d+)')


def _order_id(event: Any) -> int | None:
    if not isinstance(event, dict):
        return None
    for key in ("properties", "event_properties"):
        props = event.get(key)
        if isinstance(props, dict):
            oid = props.get("order_id")
            if isinstance(oid, int):
                return oid
    return None


class _Parsed(Exception):
    """Raised inside ``do_POST`` when a body has been fully parsed by a format-specific reader."""


def _attr_order_id(attributes: Any) -> int | None:
    """``order_id`` from a sentry log's attributes (``{"value": 3, "type": "integer"}`` or plain)."""
    if not isinstance(attributes, dict):
        return None
    for key, value in attributes.items():
        if key == "order_id" or key.endswith(".order_id"):
            if isinstance(value, dict):
                value = value.get("value")
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if isinstance(value, int):
                return value
    return None


def sentry_envelope(raw: bytes) -> tuple[int, list[int], dict[str, int], int]:
    """Parse a sentry envelope: (events, their order ids, item counts by type, discards reported).

    An envelope is a JSON header line, then items: a JSON item header line, then the payload, either
    ``length`` bytes (when the item header says so) or up to the next newline.
    """
    n = 0
    ids: list[int] = []
    types: dict[str, int] = {}
    discarded = 0
    pos = raw.find(b"\n")
    if pos < 0:
        return 0, ids, types, 0
    pos += 1
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        if end < 0:
            end = len(raw)
        line = raw[pos:end].strip()
        pos = end + 1
        if not line:
            continue
        header = json.loads(line)
        length = header.get("length")
        if isinstance(length, int):
            payload = raw[pos : pos + length]
            pos += length + 1
        else:
            end = raw.find(b"\n", pos)
            if end < 0:
                end = len(raw)
            payload = raw[pos:end]
            pos = end + 1
        kind = str(header.get("type"))
        types[kind] = types.get(kind, 0) + 1
        if kind == "event":
            doc = json.loads(payload)
            n += 1
            extra = doc.get("extra") if isinstance(doc, dict) else None
            oid = extra.get("order_id") if isinstance(extra, dict) else None
            if isinstance(oid, int):
                ids.append(oid)
        elif kind == "log":
            doc = json.loads(payload)
            for item in doc.get("items", []) if isinstance(doc, dict) else []:
                n += 1
                oid = _attr_order_id(item.get("attributes") if isinstance(item, dict) else None)
                if oid is not None:
                    ids.append(oid)
        elif kind == "client_report":
            doc = json.loads(payload)
            for d in doc.get("discarded_events", []) if isinstance(doc, dict) else []:
                # Items, not bytes: sentry-sdk also reports e.g. ``log_byte`` (the bytes of dropped logs).
                if (
                    isinstance(d, dict)
                    and isinstance(d.get("quantity"), int)
                    and not str(d.get("category", "")).endswith("_byte")
                ):
                    discarded += d["quantity"]
    return n, ids, types, discarded


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    # Without TCP_NODELAY, a response written in two segments waits for the client's delayed ACK
    # (40 ms on Linux) and the sink, not the SDK, sets the pace.
    disable_nagle_algorithm = True
    server: SinkServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes) -> None:
        if self.server.delay > 0:
            time.sleep(self.server.delay)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # One write for headers and body (end_headers() would write the headers on their own).
        self._headers_buffer.append(b"\r\n" + body)
        self.flush_headers()

    def do_GET(self) -> None:
        with self.server.stats.lock:
            self.server.stats.other_requests += 1
        self._reply(200, b"{}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        now = time.monotonic()
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        srv = self.server
        stats = srv.stats
        n = 0
        ids: list[int] = []
        has_events = False
        try:
            if encoding == "gzip":
                raw = gzip.decompress(raw)
            elif encoding == "deflate":
                raw = zlib.decompress(raw)
            if self.path.split("?", 1)[0].endswith("/envelope/"):
                n, ids, types, discarded = sentry_envelope(raw)
                has_events = n > 0
                with stats.lock:
                    stats.bodies += 1
                    stats.verified += 1
                    stats.sentry_discarded += discarded
                    for kind, count in types.items():
                        stats.item_types[kind] = stats.item_types.get(kind, 0) + count
                raise _Parsed
            # Fast path: every benchmark event carries a unique integer ``order_id``, so a C-speed regex
            # counts events for a fraction of ``json.loads``'s cost (60 vs 260 us per 100 events),
            # which keeps the sink well above the SDKs' rates. Bodies without the marker, the first
            # bodies of a run and every 64th are parsed in full and the two counts compared.
            ids = [int(x) for x in _ORDER_ID.findall(raw)]
            n = len(ids)
            has_events = n > 0
            with stats.lock:
                stats.bodies += 1
                verify = srv.strict or n == 0 or stats.bodies <= 2 or stats.bodies % 64 == 0
            if verify:
                doc = json.loads(raw) if raw else None
                events = doc.get("events", doc.get("batch")) if isinstance(doc, dict) else None
                if isinstance(events, list):
                    has_events = True
                    with stats.lock:
                        stats.verified += 1
                        if len(events) != n:
                            stats.count_mismatches += 1
                    n = len(events)
                    ids = [oid for oid in map(_order_id, events) if oid is not None]
        except _Parsed:
            pass
        except Exception:
            with stats.lock:
                stats.bad_bodies += 1
        with stats.lock:
            stats.bytes_in += length
            if not has_events:
                stats.other_requests += 1
            else:
                stats.requests += 1
                if n:
                    stats.events += n
                    if stats.first_event_at is None:
                        stats.first_event_at = now
                    stats.last_event_at = now
                    stats.max_events_per_request = max(stats.max_events_per_request, n)
                    stats.ids.update(ids)
        path = self.path.split("?", 1)[0]
        if path.startswith("/api/v1/"):
            self._reply(201, b'{"success":true,"count":%d}' % n)
        elif path.startswith("/batch") or path.startswith("/i/"):
            self._reply(200, b'{"status":1}')
        elif path.startswith("/2/"):
            body = b'{"code":200,"events_ingested":%d,"payload_size_bytes":%d,"server_upload_time":%d}' % (
                n,
                length,
                int(time.time() * 1000),
            )
            self._reply(200, body)
        else:
            self._reply(200, b'{"success":true}')


class SinkServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on 127.0.0.1 with a ``Stats`` object and an optional response delay."""

    daemon_threads = True
    request_queue_size = 256  # amplitude opens up to 16 connections at once

    def __init__(self, port: int = 0, delay: float = 0.0, strict: bool = False) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.stats = Stats()
        self.delay = delay
        self.strict = strict  # parse every body with json.loads
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> SinkServer:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name="bench-sink", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)


def load(url: str, per_request: int = 100, requests: int = 1000) -> dict[str, float]:
    """Calibrate the sink: POST pre-encoded serla batches over one keep-alive connection, as fast as it goes.

    Runs in a separate process (``python sink.py --load URL``) so the sink's ceiling is measured with
    the same two-process layout as the SDK runs.
    """
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    events = [
        {
            "name": "order_completed",
            "distinctId": "user_12345",
            "properties": {
                "plan": "pro",
                "price": 49.99,
                "seats": 3,
                "order_id": i,
                "utm": {"source": "newsletter", "medium": "email", "campaign": "spring_sale"},
            },
            "timestamp": "2026-01-01T00:00:00.000Z",
        }
        for i in range(per_request)
    ]
    body = json.dumps({"events": events}).encode()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    headers = {"Content-Type": "application/json"}
    t0 = time.monotonic()
    for _ in range(requests):
        conn.request("POST", "/api/v1/events/batch", body, headers)
        conn.getresponse().read()
    dt = time.monotonic() - t0
    conn.close()
    return {
        "events_per_s": per_request * requests / dt,
        "ms_per_request": dt * 1e3 / requests,
        "per_request": per_request,
        "requests": requests,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--wan", action="store_true", help="add 50 ms to every response")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to add to every response")
    ap.add_argument("--strict", action="store_true", help="json.loads every body (slower)")
    ap.add_argument("--seconds", type=float, default=600.0, help="stop after this long (default 600)")
    ap.add_argument("--load", metavar="URL", help="act as a load client against a running sink and exit")
    ap.add_argument("--requests", type=int, default=1000, help="with --load: requests to send")
    args = ap.parse_args()
    if args.load:
        print(json.dumps(load(args.load, 100, args.requests)))
        return
    delay = 0.05 if args.wan else args.delay
    srv = SinkServer(args.port, delay, args.strict).start()
    print(
        f"sink listening on {srv.url} (delay {delay * 1000:.0f} ms, stops after {args.seconds:.0f} s)",
        flush=True,
    )
    deadline = time.monotonic() + args.seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            print(json.dumps(srv.stats.snapshot()), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
