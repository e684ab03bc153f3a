"""Every failure the Serla server (or the network in front of it) can produce, against a real client.

Each test drives a real :class:`serla.Serla` (real ``HttpTransport``, real flusher thread) against the real
loopback :class:`SerlaServer` with injected faults, then checks what the server stored, by idempotency key
and position, and what the client's ``stats()`` and WARNINGs say. Backoffs are milliseconds (the ``FAST``
policy); server-imposed pauses keep their real length, so "no retry storm" is checked by counting requests.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from reliability_support import (
    API_KEY,
    Clients,
    batch_requests,
    by_key_position,
    fast_policy,
    first_arrivals,
    read_http_request,
    seq_of,
)

from serla import Serla
from serla._retry import SendResult
from serla._transport import HttpTransport
from serla.devtools.server import BATCH_PATH, Fault, SerlaServer

pytestmark = pytest.mark.timeout(60)


def track_seq(client: Serla, n: int, start: int = 0, **props: object) -> None:
    for i in range(start, start + n):
        assert client.track("e", "u", {"seq": i, **props})


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "serla" and r.levelno >= logging.WARNING]


# -- transient failures: retried unchanged --------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_transient_status_is_retried_with_the_same_key_and_bytes(
    server: SerlaServer, make_client: Clients, status: int
) -> None:
    server.fail_next(2, status, path=BATCH_PATH)
    c = make_client(server.url, batch_size=10, flush_interval_seconds=60)
    track_seq(c, 5)
    assert c.flush(10) is True
    reqs = batch_requests(server)
    assert [r.status for r in reqs] == [status, status, 201]
    assert len({r.idempotency_key for r in reqs}) == 1  # frozen at the first send
    assert len({r.body for r in reqs}) == 1  # same bytes on every retry
    assert [seq_of(e) for e in server.stored] == [0, 1, 2, 3, 4]
    assert {(e.idempotency_key, e.position) for e in server.stored} == {
        (reqs[0].idempotency_key, p) for p in range(5)
    }
    st = c.stats()
    assert (st["sent"], st["requests"], st["retried"], st["dropped"], st["healthy"]) == (5, 3, 2, {}, True)
    assert st["last_error"] == f"HTTP {status}"


def test_a_500_that_persists_isolates_the_event_and_delivers_the_rest(
    server: SerlaServer, make_client: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    # The server 500s on a payload it can't store (SERLA_API.md section 5). Scripted here by request order,
    # which is deterministic because the client sends one batch at a time: [0..3] fails 5 times and is
    # split; [0,1] fails 5 times and is split; [0] goes through; [1] fails 5 times and is dropped; [2,3] goes.
    f500 = Fault(status=500, path=BATCH_PATH)
    server.inject(*[f500] * 10, Fault(), *[f500] * 5)
    c = make_client(server.url, batch_size=4, flush_interval_seconds=60)
    with caplog.at_level(logging.WARNING, logger="serla"):
        track_seq(c, 4)
        assert c.flush(10) is False  # one of the four was dropped
    key = batch_requests(server)[0].idempotency_key
    assert [r.idempotency_key for r in batch_requests(server)] == (
        [key] * 5 + [f"{key}.0"] * 5 + [f"{key}.0.0"] + [f"{key}.0.1"] * 5 + [f"{key}.1"]
    )
    assert [seq_of(e) for e in server.stored] == [0, 2, 3]
    assert c.stats()["dropped"] == {"server_error": 1}
    assert any("1 events dropped (server_error)" in m for m in warnings_of(caplog))
    track_seq(c, 1, start=4)
    assert c.flush(10) is True  # the pipeline is not wedged behind the bad event


# -- 429: the two kinds ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_with_retry_after_waits_that_long_then_delivers(
    server: SerlaServer, make_client: Clients, form: str
) -> None:
    header = "1" if form == "seconds" else email.utils.formatdate(time.time() + 2, usegmt=True)
    server.fail_next(1, 429, headers={"Retry-After": header}, path=BATCH_PATH)
    c = make_client(server.url, batch_size=10, flush_interval_seconds=60)
    start = time.monotonic()
    track_seq(c, 3)
    assert c.flush(20) is True  # a flush does not cut a server-imposed pause, it waits it out
    elapsed = time.monotonic() - start
    assert [r.status for r in batch_requests(server)] == [429, 201]  # one retry, not a storm
    assert elapsed >= 1.0  # the resend never comes before the server's Retry-After (at least 1 s)
    assert [seq_of(e) for e in server.stored] == [0, 1, 2]
    assert c.stats()["last_error"] == "429 Too many requests"


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_with_a_long_retry_after_is_not_hammered_and_flush_returns_early(
    server: SerlaServer, make_client: Clients, form: str
) -> None:
    header = "100" if form == "seconds" else email.utils.formatdate(time.time() + 100, usegmt=True)
    server.set_default_fault(Fault(status=429, headers={"Retry-After": header}, path=BATCH_PATH))
    c = make_client(server.url, batch_size=10, flush_interval_seconds=60)
    track_seq(c, 3)
    start = time.monotonic()
    assert c.flush(30) is False  # the pause outlasts the deadline: flush says so at once
    assert c.flush(0.2) is False
    assert time.monotonic() - start < 20  # it did not sit out its 30 s deadline
    assert len(batch_requests(server)) == 1
    st = c.stats()
    assert (st["healthy"], st["pending"], st["last_error"]) == (False, 3, "429 Too many requests")
    assert c.shutdown(0.5) is False
    assert c.stats()["dropped"] == {"shutdown": 3}
    assert len(batch_requests(server)) == 1


def test_quota_429_pauses_for_long_keeps_memory_bounded_and_warns_once(
    server: SerlaServer, make_client: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    server.set_default_fault(Fault(status=429, path=BATCH_PATH))  # no Retry-After: monthly quota
    c = make_client(server.url, batch_size=5, flush_interval_seconds=0.01, max_queue_size=20)
    with caplog.at_level(logging.WARNING, logger="serla"):
        track_seq(c, 5)
        assert server.wait_for_requests(1, timeout=10)
        assert c.flush(0.3) is False
        accepted = sum(c.track("e", "u", {"seq": 5 + i}) for i in range(200))
        assert c.flush(0.3) is False
    st = c.stats()
    assert len(batch_requests(server)) == 1  # a 1 h pause, not a retry storm
    assert accepted == 15 and st["pending"] == 20  # never more than max_queue_size held
    assert st["dropped"] == {"queue_full": 200 - accepted}
    assert "monthly event quota is exhausted" in (st["last_error"] or "")
    pauses = [m for m in warnings_of(caplog) if "sending paused for 3600 s" in m]
    assert len(pauses) == 1 and "Monthly event limit" in pauses[0]  # the server's own message
    assert any("max_queue_size" in m for m in warnings_of(caplog))
    assert c.shutdown(0.5) is False
    assert c.stats()["dropped"] == {"queue_full": 200 - accepted, "shutdown": 20}
    assert c.stats()["pending"] == 0


# -- 401 / 403 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_warns_once_holds_bounded_memory_and_recovers(
    server: SerlaServer, make_client: Clients, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    server.set_default_fault(Fault(status=status, path=BATCH_PATH))  # the key was revoked
    c = make_client(server.url, batch_size=10, flush_interval_seconds=0.01, max_queue_size=30)
    with caplog.at_level(logging.DEBUG, logger="serla"):
        track_seq(c, 10)
        assert server.wait_for_requests(4, timeout=10)  # probing every auth_delay (50 ms here)
        accepted = 10 + sum(c.track("e", "u", {"seq": 10 + i}) for i in range(100))
        assert c.pending_count() <= 30
        assert c.stats()["healthy"] is False
        server.set_default_fault(None)  # the key works again
        assert c.flush(10) is True
    assert accepted == 30
    refused = [m for m in warnings_of(caplog) if "API key was refused" in m]
    assert len(refused) == 1  # loud, but once
    assert API_KEY not in caplog.text
    stored = [seq_of(e) for e in server.stored]
    assert stored == list(range(30))  # the 30 held events, in order, once each
    assert c.stats()["dropped"] == {"queue_full": 80}
    assert all(n == 1 for n in by_key_position(server).values())


def test_refused_key_with_the_real_pause_sends_one_probe(server: SerlaServer, make_client: Clients) -> None:
    server.set_default_fault(Fault(status=401, path=BATCH_PATH))
    c = make_client(server.url, _policy=fast_policy(auth_delay=60.0), flush_interval_seconds=0.01)
    track_seq(c, 3)
    assert server.wait_for_requests(1, timeout=10)
    assert c.flush(5) is False  # returns at once: the pause outlasts the deadline
    assert c.flush(0.2) is False
    assert len(batch_requests(server)) == 1
    assert "API key was refused" in (c.stats()["last_error"] or "")


def test_wrong_key_from_the_start_never_leaks_and_identify_reports_it(
    server: SerlaServer, make_client: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    bad_key = "sk_live_revoked_9f8e7d6c5b4a"
    c = make_client(server.url, api_key=bad_key, flush_interval_seconds=0.01)
    with caplog.at_level(logging.DEBUG, logger="serla"):
        track_seq(c, 2)
        assert server.wait_for_requests(2, timeout=10)
        assert c.identify("u", {"plan": "pro"}) is False
    assert {r.status for r in server.requests} == {401}
    assert "identify() failed: HTTP 401" in caplog.text
    assert bad_key not in caplog.text
    assert bad_key not in repr(c) and bad_key not in str(c.stats())


# -- 400 and 413: split, isolate, drop only what the server named ----------------------------------------


class PoisoningTransport:
    """The real transport, with the event named ``poison`` made invalid on the wire (``"name": 42``).

    So the real server answers a real 400 with its real ``details`` for that one event.
    """

    def __init__(self, url: str) -> None:
        self.inner = HttpTransport(url, API_KEY, 5.0)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
        return self.inner.post(path, body.replace(b'"name":"poison"', b'"name":42'), headers)

    def close(self) -> None:
        self.inner.close()


def test_400_for_one_event_drops_only_that_event_and_names_the_servers_reason(
    server: SerlaServer, make_client: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    c = make_client(
        server.url,
        batch_size=6,
        flush_interval_seconds=60,
        _transport_factory=lambda: PoisoningTransport(server.url),
    )
    with caplog.at_level(logging.WARNING, logger="serla"):
        for i in range(6):
            assert c.track("poison" if i == 2 else "ok", "u", {"seq": i})
        assert c.flush(10) is False  # False: one event was dropped
    reqs = batch_requests(server)
    key = reqs[0].idempotency_key
    assert [(r.status, r.idempotency_key, r.event_count) for r in reqs] == [
        (400, key, 6),
        (201, f"{key}.r", 5),
    ]
    assert [seq_of(e) for e in server.stored] == [0, 1, 3, 4, 5]
    assert [e.position for e in server.stored] == [0, 1, 2, 3, 4]
    assert c.stats()["dropped"] == {"rejected": 1}
    rejected = [m for m in warnings_of(caplog) if "rejected an event" in m]
    assert len(rejected) == 1
    assert "name: Invalid input: expected string, received number" in rejected[0]  # the server's details
    track_seq(c, 2, start=6)
    assert c.flush(10) is True  # nothing stays wedged behind the bad event


def padded(n: int) -> str:
    return "x" * n


def test_413_splits_into_halves_with_derived_keys_in_order(make_client: Clients) -> None:
    # Each event is ~300 bytes: a body of 3 fits under 1000 bytes, 4 do not (Vercel's plain-text 413).
    with SerlaServer(api_keys={API_KEY}, max_body_size=1000) as srv:
        c = make_client(srv.url, batch_size=8, flush_interval_seconds=60)
        track_seq(c, 8, pad=padded(220))
        assert c.flush(10) is True
        reqs = batch_requests(srv)
        k = reqs[0].idempotency_key
        assert [(r.status, r.idempotency_key) for r in reqs] == [
            (413, k),
            (413, f"{k}.0"),
            (201, f"{k}.0.0"),
            (201, f"{k}.0.1"),
            (413, f"{k}.1"),
            (201, f"{k}.1.0"),
            (201, f"{k}.1.1"),
        ]
        assert [seq_of(e) for e in srv.stored] == list(range(8))
        assert [(e.idempotency_key, e.position) for e in srv.stored] == [
            (f"{k}.{half}.{quarter}", p) for half in (0, 1) for quarter in (0, 1) for p in (0, 1)
        ]
        assert c.stats()["dropped"] == {}


def test_413_for_a_lone_event_drops_it_and_delivers_its_neighbours(
    make_client: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    with SerlaServer(api_keys={API_KEY}, max_body_size=2000) as srv:
        c = make_client(srv.url, batch_size=4, flush_interval_seconds=60)
        with caplog.at_level(logging.WARNING, logger="serla"):
            for i in range(4):
                assert c.track("e", "u", {"seq": i, "pad": padded(5000 if i == 1 else 10)})
            assert c.flush(10) is False
        assert [seq_of(e) for e in srv.stored] == [0, 2, 3]
        assert c.stats()["dropped"] == {"too_large": 1}
        assert any("1 events dropped (too_large)" in m for m in warnings_of(caplog))


# -- lost connections and lost responses ------------------------------------------------------------------


def warm_up(client: Serla, server: SerlaServer) -> None:
    """Send one event so the next batch goes over a reused keep-alive connection."""
    assert client.track("warm", "u", {"seq": -1})
    assert client.flush(10)
    server.clear()


@pytest.mark.parametrize("reused", [False, True], ids=["fresh-connection", "keep-alive"])
def test_connection_dropped_without_response_is_retried_with_the_same_key(
    server: SerlaServer, make_client: Clients, reused: bool
) -> None:
    c = make_client(server.url, batch_size=5, flush_interval_seconds=60)
    if reused:
        warm_up(c, server)
    server.inject(
        Fault(close_connection=True, path=BATCH_PATH), Fault(close_connection=True, path=BATCH_PATH)
    )
    track_seq(c, 5)
    assert c.flush(10) is True
    reqs = batch_requests(server)
    assert [r.status for r in reqs] == [0, 0, 201]
    assert len({r.idempotency_key for r in reqs}) == 1
    assert [seq_of(e) for e in server.stored] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("reused", [False, True], ids=["fresh-connection", "keep-alive"])
def test_lost_response_after_store_resends_the_same_key_so_a_deduping_server_stores_once(
    dedupe_server: SerlaServer, make_client: Clients, reused: bool
) -> None:
    server = dedupe_server
    c = make_client(server.url, batch_size=5, flush_interval_seconds=60)
    if reused:
        warm_up(c, server)
    server.inject(Fault(store_then_drop=True, path=BATCH_PATH))
    track_seq(c, 5)
    assert c.flush(10) is True
    reqs = batch_requests(server)
    assert [r.status for r in reqs] == [0, 201]  # stored, response lost; resent; deduplicated
    assert reqs[0].idempotency_key == reqs[1].idempotency_key
    assert reqs[0].body == reqs[1].body
    assert [seq_of(e) for e in server.stored] == [0, 1, 2, 3, 4]
    assert set(by_key_position(server).values()) == {1}


def test_lost_response_after_store_duplicates_on_a_server_that_does_not_dedupe(
    server: SerlaServer, make_client: Clients
) -> None:
    # The real server ignores X-Idempotency-Key (SERLA_API.md section 5): at-least-once means duplicates
    # here, but every copy carries the same (key, position), so they can be told apart downstream.
    c = make_client(server.url, batch_size=5, flush_interval_seconds=60)
    server.inject(Fault(store_then_drop=True, path=BATCH_PATH))
    track_seq(c, 5)
    assert c.flush(10) is True
    counts = by_key_position(server)
    assert len(counts) == 5 and set(counts.values()) == {2}
    assert first_arrivals(server) == [0, 1, 2, 3, 4]
    assert c.stats()["sent"] == 5


def test_response_slower_than_the_timeout_is_resent_with_the_same_key(make_client: Clients) -> None:
    with SerlaServer(api_keys={API_KEY}) as srv:
        srv.inject(Fault(delay=1.0, path=BATCH_PATH))  # stored after 1 s; the client gives up at 0.2 s
        c = make_client(srv.url, batch_size=3, flush_interval_seconds=60, timeout=0.2)
        track_seq(c, 3)
        assert c.flush(10) is True
        assert srv.wait_for_events(6, timeout=10)  # the slow request is stored too, later
        counts = by_key_position(srv)
        assert len(counts) == 3 and set(counts.values()) == {2}
        assert "timed out" in (c.stats()["last_error"] or "")


class ResettingListener:
    """A raw TCP listener that answers each of the first ``n`` connections with a TCP RST.

    It reads the request (keeping its headers), then closes with ``SO_LINGER`` 0, so the client sees
    ``ConnectionResetError``; after ``n`` connections it stops listening (connection refused).
    """

    def __init__(self, n: int) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.port = int(self.sock.getsockname()[1])
        self.heads: list[bytes] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(n,), daemon=True)
        self.thread.start()

    def _run(self, n: int) -> None:
        try:
            for _ in range(n):
                conn, _ = self.sock.accept()
                with conn:
                    conn.settimeout(10)
                    head, _ = read_http_request(conn)
                    self.heads.append(head)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            self.sock.close()
            self.done.set()

    def keys(self) -> list[str]:
        out = []
        for head in self.heads:
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "x-idempotency-key":
                    out.append(value.strip())
        return out


def test_connection_reset_then_refused_then_up_delivers_once_with_one_key(make_client: Clients) -> None:
    listener = ResettingListener(3)
    c = make_client(f"http://127.0.0.1:{listener.port}", batch_size=4, flush_interval_seconds=0.01)
    track_seq(c, 4)
    assert listener.done.wait(10)  # three resets, then nobody listens: connection refused
    assert c.flush(0.1) is False
    assert "Connection" in (c.stats()["last_error"] or "")
    with SerlaServer(port=listener.port, api_keys={API_KEY}) as srv:  # the endpoint comes back
        assert c.flush(10) is True
        keys = listener.keys()
        assert len(keys) == 3 and len(set(keys)) == 1
        assert [(e.idempotency_key, seq_of(e)) for e in srv.stored] == [(keys[0], i) for i in range(4)]
        assert c.stats()["dropped"] == {}


# -- hangs: every wait is bounded --------------------------------------------------------------------------


@contextlib.contextmanager
def flusher_threads_started() -> Iterator[list[threading.Thread]]:
    before = set(threading.enumerate())
    new: list[threading.Thread] = []
    yield new
    new.extend(t for t in threading.enumerate() if t not in before and t.name == "serla-flusher")


def test_hanging_server_flush_and_shutdown_honour_their_timeouts(
    server: SerlaServer, make_client: Clients
) -> None:
    server.set_default_fault(Fault(hang=True, path=BATCH_PATH))
    c = make_client(
        server.url, batch_size=5, flush_interval_seconds=60, timeout=60.0
    )  # no socket timeout help
    track_seq(c, 5)
    start = time.monotonic()
    assert c.flush(0.3) is False
    assert server.wait_for_requests(1, timeout=10)  # the request is sitting in the server
    assert c.shutdown(0.3) is False
    assert time.monotonic() - start < 30  # bounded by the callers' timeouts, not by the 60 s socket timeout
    assert c.track("late", "u") is False  # closed
    assert c.stats()["pending"] == 5  # in flight on a stuck socket: not claimed as delivered or dropped


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs to a full accept queue")
def test_a_connect_that_hangs_holds_neither_flush_nor_shutdown_nor_identify(make_client: Clients) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)  # an accept queue of one, never drained
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    filler = socket.create_connection(listener.getsockname(), timeout=5)  # now the queue is full
    try:
        c = make_client(url, timeout=60.0, flush_interval_seconds=0.01)  # the connect would wait 60 s
        track_seq(c, 3)
        start = time.monotonic()
        assert c.flush(0.3) is False
        assert make_client(url, timeout=0.5).identify("u") is False  # identify is bounded by its timeout
        assert c.shutdown(0.3) is False
        assert time.monotonic() - start < 30
        st = c.stats()
        assert (st["sent"], st["in_flight"], st["last_error"]) == (0, 3, None)  # still inside connect()
    finally:
        filler.close()
        listener.close()


def test_shutdown_cuts_through_a_long_backoff(server: SerlaServer, make_client: Clients) -> None:
    server.set_default_fault(Fault(status=503, path=BATCH_PATH))
    slow = fast_policy(base_delay=30.0, max_delay=30.0)
    with flusher_threads_started() as threads:
        c = make_client(server.url, _policy=slow, batch_size=5, flush_interval_seconds=0.01)
        track_seq(c, 5)
        assert server.wait_for_requests(1, timeout=10)
    start = time.monotonic()
    assert c.shutdown(2.0) is False
    assert time.monotonic() - start < 25  # not the 30 s backoff
    assert len(threads) == 1
    threads[0].join(10)  # shutdown() gave it its whole budget; the thread leaves as soon as it wakes
    assert not threads[0].is_alive()  # the flusher is gone, not parked in a 30 s sleep
    assert c.stats()["dropped"] == {"shutdown": 5}


def test_flush_cuts_a_backoff_short_once(server: SerlaServer, make_client: Clients) -> None:
    server.fail_next(1, 503, path=BATCH_PATH)
    slow = fast_policy(base_delay=30.0, max_delay=30.0)
    c = make_client(server.url, _policy=slow, batch_size=5, flush_interval_seconds=0.01)
    track_seq(c, 5)
    assert server.wait_for_requests(1, timeout=10)
    assert c.flush(10) is True  # without the cut this would take 30 s
    assert [r.status for r in batch_requests(server)] == [503, 201]
    assert [seq_of(e) for e in server.stored] == [0, 1, 2, 3, 4]


def test_events_queued_behind_a_failing_batch_keep_their_order(
    server: SerlaServer, make_client: Clients
) -> None:
    server.fail_next(4, 503, path=BATCH_PATH)
    server.inject(Fault(store_then_drop=True, path=BATCH_PATH))
    c = make_client(server.url, batch_size=3, flush_interval_seconds=0.01)
    track_seq(c, 20)
    assert c.flush(10) is True
    assert first_arrivals(server) == list(range(20))
    keys = [r.idempotency_key for r in batch_requests(server)]
    assert keys[:6] == [keys[0]] * 6  # the first batch: 4 x 503, stored-but-lost, stored-again
