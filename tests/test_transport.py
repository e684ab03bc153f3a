"""The HTTP transport against a raw TCP server on 127.0.0.1 that answers with scripted bytes.

``HttpTransport`` sends through the standard library's ``http.client``; these tests pin what the SDK relies
on, whatever parses the bytes: the exact request it writes (POST and GET), and what it makes of the
response shapes a server or proxy may send: ``Content-Length``, chunked, unframed, interim ``100
Continue``, ``Connection: close``, HTTP/1.0, bodies over the cap, responses split into tiny TCP segments,
and malformed ones; when a connection is kept and when it is replaced. The server is real (a listening
socket and a thread); nothing is mocked.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from serla._transport import MAX_RESPONSE_BYTES, USER_AGENT, HttpTransport, SendResult
from serla.devtools.server import SerlaServer

KEY = "sk_live_transport_test"


class RawServer:
    """Accepts connections; for each request (headers + Content-Length body) sends the next scripted reply.

    A reply is a list of byte strings, each sent with its own ``sendall`` (``[b"..."]`` for one segment).
    ``close_after`` in a script entry closes the connection after that reply.
    """

    def __init__(self, replies: list[tuple[list[bytes], bool]]) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the listening socket was shut down
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with conn, contextlib.suppress(OSError):  # a client that hangs up (or resets) ends the connection
            self._serve_connection(conn)

    def _serve_connection(self, conn: socket.socket) -> None:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, data = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(data) < length:
                data += conn.recv(65536)
            body, data = data[:length], data[length:]
            with self.lock:
                self.requests.append(head + b"\r\n\r\n" + body)
                parts, close = self.replies.pop(0) if self.replies else ([OK], False)
            for part in parts:
                conn.sendall(part)
            if close:
                return

    def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.thread.join(5)
        self.sock.close()


def outcome(result: SendResult) -> tuple[Optional[int], bytes, Optional[str], Optional[str]]:
    """Everything of a result but its headers."""
    return result.status, result.body, result.retry_after, result.error


OK = b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"success":true}'


@pytest.fixture
def serve() -> Iterator[list[RawServer]]:
    made: list[RawServer] = []
    yield made
    for s in made:
        s.close()


def start(serve: list[RawServer], *replies: tuple[list[bytes], bool]) -> tuple[RawServer, HttpTransport]:
    server = RawServer(list(replies))
    serve.append(server)
    return server, HttpTransport(server.url + "/prefix", KEY, timeout=5.0)


def test_request_bytes_are_exact_http_1_1(serve: list[RawServer]) -> None:
    server, t = start(serve)
    result = t.post("/api/v1/events/batch", b'{"events":[]}', {"X-Idempotency-Key": "k-1"})
    assert outcome(result) == (201, b'{"success":true}', None, None)
    assert dict(result.headers) == {"content-type": "application/json", "content-length": "16"}
    assert server.requests[0] == (
        b"POST /prefix/api/v1/events/batch HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{server.port}\r\n".encode()
        + b"Accept-Encoding: identity\r\n"
        + f"Authorization: Bearer {KEY}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + f"User-Agent: {USER_AGENT}\r\n".encode()
        + b"Accept: application/json\r\n"
        + b"X-Idempotency-Key: k-1\r\n"
        + b"Content-Length: 13\r\n\r\n"
        + b'{"events":[]}'
    )
    t.close()


def test_keep_alive_reuses_one_connection(serve: list[RawServer]) -> None:
    server, t = start(serve)
    assert [t.post("/a", b"{}", {}).status for _ in range(3)] == [201, 201, 201]
    assert (server.connections, len(server.requests)) == (1, 3)
    t.close()


def test_chunked_body_is_decoded_and_the_connection_kept(serve: list[RawServer]) -> None:
    chunked = (
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5;ext=1\r\n{"err\r\n6\r\nor":"x\r\n2\r\n"}\r\n0\r\nX-Trailer: 1\r\n\r\n'
    )
    server, t = start(serve, ([chunked], False))
    assert outcome(t.post("/a", b"{}", {})) == (400, b'{"error":"x"}', None, None)
    assert t.post("/a", b"{}", {}).status == 201
    assert server.connections == 1
    t.close()


def test_connection_close_and_http_1_0_end_the_connection(serve: list[RawServer]) -> None:
    close = b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    old = b"HTTP/1.0 201 Created\r\nContent-Length: 2\r\n\r\n{}"
    server, t = start(serve, ([close], True), ([old], True))
    assert [t.post("/a", b"{}", {}).status for _ in range(3)] == [201, 201, 201]
    assert server.connections == 3
    t.close()


def test_unframed_body_is_read_until_the_server_closes(serve: list[RawServer]) -> None:
    server, t = start(serve, ([b"HTTP/1.1 503 Service Unavailable\r\n\r\n", b"busy, try later"], True))
    assert outcome(t.post("/a", b"{}", {})) == (503, b"busy, try later", None, None)
    assert t.post("/a", b"{}", {}).status == 201
    assert server.connections == 2
    t.close()


def test_body_over_the_cap_is_cut_and_the_connection_not_reused(serve: list[RawServer]) -> None:
    big = b"x" * (MAX_RESPONSE_BYTES + 10)
    reply = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % len(big) + big
    server, t = start(serve, ([reply], False))
    result = t.post("/a", b"{}", {})
    assert (result.status, len(result.body)) == (500, MAX_RESPONSE_BYTES)
    assert t.post("/a", b"{}", {}).status == 201
    assert server.connections == 2
    t.close()


def test_interim_100_continue_is_skipped(serve: list[RawServer]) -> None:
    _, t = start(serve, ([b"HTTP/1.1 100 Continue\r\n\r\n" + OK], False))
    assert t.post("/a", b"{}", {}).status == 201
    t.close()


def test_a_response_in_one_byte_segments_is_parsed(serve: list[RawServer]) -> None:
    reply = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\nContent-Length: 4\r\n\r\nslow"
    _, t = start(serve, ([reply[i : i + 1] for i in range(len(reply))], False))
    result = t.post("/a", b"{}", {})
    assert outcome(result) == (429, b"slow", "7", None)
    assert dict(result.headers) == {"retry-after": "7", "content-length": "4"}
    t.close()


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"NOT HTTP\r\n\r\n", "BadStatusLine"),
        (b"HTTP/1.1 2x1 Created\r\n\r\n", "BadStatusLine"),
        (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "IncompleteRead"),
        (b"HTTP/1.1 201 Created\r\nX: " + b"y" * 70000 + b"\r\n\r\n", "LineTooLong"),
    ],
)
def test_a_malformed_response_is_a_failed_send(serve: list[RawServer], reply: bytes, error: str) -> None:
    _, t = start(serve, ([reply], True))
    result = t.post("/a", b"{}", {})
    assert result.status is None and (result.error or "").startswith(error)
    assert t.post("/a", b"{}", {}).status == 201  # a fresh connection
    t.close()


def test_a_keep_alive_connection_the_server_closed_is_replaced_transparently(serve: list[RawServer]) -> None:
    server, t = start(serve, ([OK], True))  # answers, then closes the idle connection
    assert t.post("/a", b"{}", {}).status == 201
    assert t.post("/a", b"{}", {}).status == 201  # the stale socket fails at once; resent on a new one
    assert server.connections == 2
    t.close()


def test_header_values_with_line_breaks_are_refused_before_sending(serve: list[RawServer]) -> None:
    server, t = start(serve)
    result = t.post("/a", b"{}", {"X-Idempotency-Key": "k\r\nX-Evil: 1"})
    assert result.status is None and "line breaks" in (result.error or "")
    assert server.requests == []
    t.close()


def test_connection_refused_is_a_failed_send_with_the_os_error() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        t = HttpTransport(f"http://127.0.0.1:{s.getsockname()[1]}", KEY, timeout=5.0)
        result = t.post("/a", b"{}", {})
    finally:
        s.close()
    assert result.status is None and (result.error or "").startswith("ConnectionRefusedError")


def test_get_request_bytes_are_exact_and_share_the_keep_alive_connection(serve: list[RawServer]) -> None:
    flags = b'HTTP/1.1 200 OK\r\nETag: "v1"\r\nContent-Length: 11\r\n\r\n{"flags":{}}'[:-1]
    server, t = start(serve, ([flags], False))
    result = t.get("/api/v1/flags?distinctId=u%201", {"If-None-Match": '"v0"'})
    assert outcome(result) == (200, b'{"flags":{}', None, None)
    assert result.headers["etag"] == '"v1"'
    assert t.post("/a", b"{}", {}).status == 201
    assert server.requests[0] == (
        b"GET /prefix/api/v1/flags?distinctId=u%201 HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{server.port}\r\n".encode()
        + b"Accept-Encoding: identity\r\n"
        + f"Authorization: Bearer {KEY}\r\n".encode()
        + f"User-Agent: {USER_AGENT}\r\n".encode()
        + b"Accept: application/json\r\n"
        + b'If-None-Match: "v0"\r\n\r\n'
    )
    assert server.connections == 1
    t.close()


def test_a_get_on_a_connection_the_server_closed_is_resent_on_a_new_one(serve: list[RawServer]) -> None:
    server, t = start(serve, ([OK], True))
    assert t.post("/a", b"{}", {}).status == 201
    assert t.get("/b", {}).status == 201
    assert server.connections == 2 and [r.split(b" ")[0] for r in server.requests] == [b"POST", b"GET"]
    t.close()


def test_the_api_key_echoed_in_a_malformed_response_is_not_in_the_error(serve: list[RawServer]) -> None:
    _, t = start(serve, ([f"HTTP/1.1 2x1 {KEY}\r\n\r\n".encode()], True))
    result = t.post("/a", b"{}", {})
    assert result.status is None and "BadStatusLine" in (result.error or "")
    assert KEY not in (result.error or "") and "[api key]" in (result.error or "")
    t.close()


def test_a_server_that_never_answers_is_a_timeout_and_the_next_send_reconnects(
    serve: list[RawServer],
) -> None:
    server = RawServer([([], False)])  # reads the request, answers nothing, waits for the next one
    serve.append(server)
    t = HttpTransport(server.url, KEY, timeout=0.2)
    result = t.post("/a", b"{}", {})
    assert result.status is None and "timed out" in (result.error or "")
    assert t.post("/a", b"{}", {}).status == 201
    assert server.connections == 2
    t.close()


def test_a_forked_childs_forget_drops_the_connection_without_closing_it(serve: list[RawServer]) -> None:
    server, t = start(serve)
    assert t.post("/a", b"{}", {}).status == 201
    conn = t._conn
    assert conn is not None and conn.sock is not None
    t.forget()
    assert conn.sock is not None  # still open: in a child it is the parent's
    assert t.post("/a", b"{}", {}).status == 201
    assert server.connections == 2
    conn.close()
    t.close()


FORK_SCRIPT = """
import os, sys, time
from serla import Serla

client = Serla("sk_live_x", host=sys.argv[1], flush_interval_seconds=0.0001, flush_on_exit=False)
client.track("parent", "u")  # the flusher starts its first send: it imports the network stack now
time.sleep(float(sys.argv[2]))
pid = os.fork()
if pid == 0:
    client.track("child", "u")
    ok = client.flush(5)
    os.write(1, b"child delivered" if ok else f"child failed: {client.stats()['last_error']}".encode())
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_during_the_first_send_leaves_the_child_a_working_transport(tmp_path: Path) -> None:
    # gunicorn --preload forks right after the app module created a client and tracked: the fork lands
    # while the parent's flusher imports http.client. Without serla._lazy.IMPORT_LOCK most of these
    # children inherited a half-imported module and never delivered anything.
    script = tmp_path / "fork_first_send.py"
    script.write_text(FORK_SCRIPT, encoding="utf-8")
    with SerlaServer(api_keys={"sk_live_x"}) as server:
        outcomes = [
            subprocess.run(
                [sys.executable, str(script), server.url, str(delay / 1000)],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
            for delay in range(0, 20, 2)
        ]
        assert outcomes == ["child delivered"] * len(outcomes)
        assert sorted(e["name"] for e in server.events).count("child") == len(outcomes)
