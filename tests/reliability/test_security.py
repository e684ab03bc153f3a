"""Security: the API key stays secret, never travels to another host, TLS is verified, reads are capped."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability_support import API_KEY, Clients, free_port, read_http_request, run_script, write_script

from serla import Serla
from serla._transport import MAX_RESPONSE_BYTES
from serla.devtools.server import BATCH_PATH, Fault, SerlaServer

pytestmark = pytest.mark.timeout(60)

SECRET = "sk_live_S3cr3t_d0_n0t_l0g_me_0123456789"


# -- the key never shows ---------------------------------------------------------------------------------


def test_key_never_appears_in_debug_logs_reprs_stats_or_warnings(server: SerlaServer, tmp_path: Path) -> None:
    """A real process with ``debug=True`` (the SDK's own stderr handler at DEBUG) goes through every error.

    Connection refused, a read timeout, 401 from the real server, 5xx, a redirect, identify failures.
    All of stdout and stderr is then searched for the key, and the output is checked to hold the errors
    (so the search is over a log that really talks about them).
    """
    server.set_default_fault(Fault(status=401))  # every request: the real "Invalid API key" answer
    hang = SerlaServer().start()
    hang.set_default_fault(Fault(hang=True))
    redirect = SerlaServer().start()
    redirect.set_default_fault(Fault(status=307, headers={"Location": f"{server.url}{BATCH_PATH}"}))
    try:
        path = write_script(
            tmp_path,
            f"""
            import json, logging, sys, time, warnings
            warnings.simplefilter("always")
            logging.basicConfig(level=logging.DEBUG)  # the root logger too, at DEBUG
            from serla import Serla
            from serla._retry import RetryPolicy

            fast = RetryPolicy(base_delay=0.01, max_delay=0.02, jitter=0.0, auth_delay=0.02)
            out = {{}}
            with warnings.catch_warnings(record=True) as caught:
                for label, url, timeout in [("refused", sys.argv[1], 5), ("timeout", sys.argv[2], 0.2),
                                            ("auth", sys.argv[3], 5), ("redirect", sys.argv[4], 5)]:
                    c = Serla({SECRET!r}, host=url, debug=True, timeout=timeout, flush_interval_seconds=0.01,
                              flush_on_exit=False, _policy=fast)
                    c.track("e", "u", {{"label": label}})
                    flushed = c.flush(1.0)
                    identified = c.identify("u", {{"label": label}})
                    out[label] = {{"repr": repr(c), "stats": c.stats(), "config": repr(c.config),
                                   "flushed": flushed, "identified": identified}}
                    c.shutdown(0.2)
            out["warnings"] = [str(w.message) for w in caught]
            print(json.dumps(out))
            """,
        )
        refused = f"http://127.0.0.1:{free_port()}"
        proc = run_script(path, refused, hang.url, server.url, redirect.url, timeout=60)
    finally:
        hang.stop()
        redirect.stop()
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    everything = proc.stdout + proc.stderr
    assert SECRET not in everything
    assert SECRET[8:] not in everything and SECRET[-12:] not in everything  # not even partly
    # The log and the stats really are about those failures (the search above is not vacuous).
    assert "Connection refused" in out["refused"]["stats"]["last_error"]
    assert "timed out" in out["timeout"]["stats"]["last_error"]
    assert "API key was refused" in out["auth"]["stats"]["last_error"]
    assert "redirects are never followed" in out["redirect"]["stats"]["last_error"]
    assert "DEBUG" in proc.stderr and "send failed" in proc.stderr and "HTTP 401" in proc.stderr
    assert all(not o["flushed"] and not o["identified"] for k, o in out.items() if k != "warnings")
    assert out["auth"]["repr"].startswith("<Serla") and "sk_live_..." in out["auth"]["repr"]


@pytest.mark.parametrize("status", [400, 401, 500, 503, 307])
def test_an_error_body_that_echoes_the_key_does_not_leak_it(
    server: SerlaServer, make_client: Clients, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    """Some proxies and debug pages echo the request's headers in their error page: the SDK quotes error
    bodies in its WARNINGs and ``last_error``, so it must not quote the key with them."""
    echo = {"error": f"Invalid API key {SECRET}", "message": f"Authorization: Bearer {SECRET}"}
    server.set_default_fault(Fault(status=status, body=echo))
    c = make_client(server.url, api_key=SECRET, flush_interval_seconds=0.01)
    with caplog.at_level(logging.DEBUG, logger="serla"):
        c.track("e", "u")
        assert server.wait_for_requests(1, timeout=10)
        assert c.identify("u", {"a": 1}) is False
        assert c.flush(0.2) is False or status == 400  # a 400 drops the event: nothing left to flush
    assert "Invalid API key [api key]" in caplog.text  # the body is quoted...
    assert SECRET not in caplog.text  # ...without the key
    assert SECRET not in str(c.stats()) and SECRET not in repr(c)


def test_key_is_kept_out_of_repr_and_config_repr() -> None:
    c = Serla(SECRET, host="http://127.0.0.1:9", flush_on_exit=False)
    other = Serla("my-self-hosted-key-abcdef", host="http://127.0.0.1:9", flush_on_exit=False)
    assert SECRET not in repr(c) and SECRET not in repr(c.config) and SECRET not in str(c.stats())
    assert "my-self-hosted-key" not in repr(other) and "***" in repr(other)


# -- the key never travels to another host ----------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_is_never_followed_so_the_key_never_reaches_the_other_host(
    server: SerlaServer, make_client: Clients, status: int
) -> None:
    with SerlaServer() as elsewhere:
        server.set_default_fault(Fault(status=status, headers={"Location": f"{elsewhere.url}{BATCH_PATH}"}))
        c = make_client(server.url, flush_interval_seconds=0.01)  # auth_delay (the pause) is 50 ms here
        c.track("e", "u")
        assert server.wait_for_requests(3, timeout=10)  # several probes, each answered with a redirect
        assert c.identify("u", {"a": 1}) is False
        assert c.flush(0.2) is False
        assert elsewhere.requests == []  # nothing, let alone an Authorization header, went there
        assert {r.status for r in server.requests} == {status}
        assert "redirects are never followed" in (c.stats()["last_error"] or "")


# -- plain http --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["http://example.com", "http://10.1.2.3:8080", "http://127.0.0.1.nip.io", "http://localhost.example.com"],
)
def test_plain_http_to_a_non_loopback_host_warns_at_construction(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = set(threading.enumerate())
    with caplog.at_level(logging.WARNING, logger="serla"):
        c = Serla(API_KEY, host=host, flush_on_exit=False)
    assert any("plain http" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert set(threading.enumerate()) == before  # constructed only: no thread, no connection
    assert API_KEY not in caplog.text
    c.shutdown(0)


@pytest.mark.parametrize(
    "host",
    [
        "https://example.com",
        "http://127.0.0.1:9",
        "http://127.8.9.10",
        "http://localhost:9",
        "http://[::1]:9",
    ],
)
def test_https_and_loopback_http_do_not_warn(host: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="serla"):
        c = Serla(API_KEY, host=host, flush_on_exit=False)
    assert not [r for r in caplog.records if "plain http" in r.getMessage()]
    c.shutdown(0)


# -- response bodies are read with a cap -------------------------------------------------------------------


class EndlessBodyServer:
    """A raw HTTP server that answers each request with a huge declared body and streams it.

    It counts the bytes it managed to write before the client hung up. A client that read the whole body
    would take all 100 MB; a capped reader hangs up after a little more than its cap.
    """

    DECLARED = 100_000_000

    def __init__(self, status: int = 201) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(15)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.status = status
        self.written: list[int] = []
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        chunk = b"x" * 65536
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            sent = 0
            with conn:
                conn.settimeout(15)
                try:
                    _, body = read_http_request(conn)
                    self.requests.append(body)
                    conn.sendall(
                        f"HTTP/1.1 {self.status} X\r\nContent-Length: {self.DECLARED}\r\n\r\n".encode("ascii")
                    )
                    while sent < self.DECLARED:
                        sent += conn.send(chunk)
                except OSError:
                    pass  # the client hung up
                self.written.append(sent)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close() alone may not)
        self.sock.close()
        self.thread.join(20)
        assert not self.thread.is_alive()


@pytest.fixture
def endless() -> Iterator[EndlessBodyServer]:
    srv = EndlessBodyServer()
    yield srv
    srv.close()


def test_a_huge_response_body_is_read_only_up_to_the_cap(
    endless: EndlessBodyServer, make_client: Clients
) -> None:
    c = make_client(endless.url, flush_interval_seconds=60, timeout=10)
    c.track("first", "u")
    assert c.flush(20) is True  # a 2xx is a delivery, whatever its body
    c.track("second", "u")
    assert c.flush(20) is True
    assert [json.loads(b)["events"][0]["name"] for b in endless.requests] == ["first", "second"]
    # The connection with unread bytes on it was dropped, not reused; the client stopped reading early.
    assert len(endless.written) >= 1
    assert all(n < endless.DECLARED // 2 for n in endless.written), endless.written
    assert MAX_RESPONSE_BYTES <= 1024 * 1024


def test_a_huge_error_body_is_capped_and_the_client_recovers(
    server: SerlaServer, make_client: Clients
) -> None:
    server.fail_next(1, 503, body=b"E" * (8 * 1024 * 1024), path=BATCH_PATH)
    c = make_client(server.url, flush_interval_seconds=60)
    c.track("e", "u")
    assert c.flush(20) is True
    assert len(c.stats()["last_error"] or "") < 1000
    assert [r.status for r in server.requests] == [503, 201]


# -- TLS is verified ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(make_certificate: Callable[[str, str], tuple[Path, Path]]) -> tuple[Path, Path]:
    return make_certificate("127.0.0.1", "IP:127.0.0.1")


class TlsServer:
    """A one-route HTTPS server (201 to every POST) with a self-signed certificate; records what it read."""

    def __init__(self, cert: Path, key: str | Path) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        raw = socket.socket()
        raw.bind(("127.0.0.1", 0))
        raw.listen(8)
        raw.settimeout(15)
        self.sock = raw
        self.ctx = ctx
        self.url = f"https://127.0.0.1:{raw.getsockname()[1]}"
        self.heads: list[bytes] = []
        self.handshake_errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(15)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                head, _ = read_http_request(tls)
                self.heads.append(head)
                tls.sendall(b'HTTP/1.1 201 Created\r\nContent-Length: 16\r\n\r\n{"success":true}')
        except (OSError, ssl.SSLError) as exc:
            self.handshake_errors.append(type(exc).__name__)
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close() alone may not)
        self.sock.close()
        self.thread.join(20)
        assert not self.thread.is_alive()


def test_tls_certificates_are_verified_and_a_ca_bundle_is_honoured(
    self_signed: tuple[Path, Path], make_client: Clients
) -> None:
    cert, key = self_signed
    srv = TlsServer(cert, key)
    try:
        untrusting = make_client(srv.url, flush_interval_seconds=0.01)
        untrusting.track("e", "u")
        assert untrusting.flush(1.0) is False
        assert "CERTIFICATE_VERIFY_FAILED" in (untrusting.stats()["last_error"] or "")
        assert untrusting.shutdown(0.5) is False
        assert srv.heads == []  # no request (and no Authorization header) went over the unverified channel
        trusting = make_client(srv.url, flush_interval_seconds=0.01, ca_bundle=str(cert))
        trusting.track("e", "u")
        assert trusting.flush(10) is True
        assert len(srv.heads) == 1 and b"Authorization: Bearer " in srv.heads[0]
    finally:
        srv.close()


def test_the_host_name_is_verified_even_with_a_trusted_certificate(
    self_signed: tuple[Path, Path], make_client: Clients
) -> None:
    # The certificate names only IP:127.0.0.1; reaching the same server as "localhost" must fail, even
    # though the CA (the certificate itself) is trusted through ca_bundle.
    cert, key = self_signed
    srv = TlsServer(cert, key)
    try:
        port = srv.url.rsplit(":", 1)[1]
        c = make_client(f"https://localhost:{port}", flush_interval_seconds=0.01, ca_bundle=str(cert))
        c.track("e", "u")
        assert c.flush(1.0) is False
        error = c.stats()["last_error"] or ""
        assert "CERTIFICATE_VERIFY_FAILED" in error and "localhost" in error
        assert c.identify("u", {"a": 1}) is False
        assert srv.heads == []  # no request (and no key) went over the connection
    finally:
        srv.close()
