"""Proxies: real clients through a real forwarding proxy on 127.0.0.1, nothing mocked.

The pieces, all real sockets and threads on loopback, every wait bounded:

* :class:`ForwardProxy`, a small HTTP proxy (a threaded ``socketserver``): ``CONNECT`` tunnels and
  absolute-form forwarding, optional ``Proxy-Authorization`` check, refusals (407/403), tunnels cut on
  demand. It records every request head it read and every byte clients sent into its tunnels.
* :class:`TlsFront`, a TLS terminator with a self-signed certificate for ``localhost`` / ``127.0.0.1``
  (made by the ``openssl`` CLI), relaying to the contract server: ``SerlaServer`` speaks plain HTTP only,
  and the client verifies the certificate through ``ca_bundle`` (verification stays on).
* :class:`serla.devtools.server.SerlaServer`, the contract server, which records what really arrived.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import select
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import pytest

from serla import Serla
from serla._proxy import bypass_proxy, environment_proxies, resolve_proxy
from serla._transport import HttpTransport
from serla.devtools.server import SerlaServer

KEY = "sk_live_proxy_0123456789abcdef"
WAIT = 5.0  # every socket operation of the test servers is bounded by this


# -- the test servers -----------------------------------------------------------------------------------


def relay(
    a: socket.socket, b: socket.socket, stop: threading.Event, inspect: Callable[[bytes], bool]
) -> None:
    """Copy bytes both ways until one side closes (or ``stop``). ``inspect`` sees what ``a`` sends and
    returns False to cut the relay instead of forwarding it. Both sockets have timeouts."""
    socks = [a, b]
    while not stop.is_set():
        ready = [s for s in socks if isinstance(s, ssl.SSLSocket) and s.pending()]
        if not ready:
            ready, _, _ = select.select(socks, [], [], 0.1)
        for s in ready:
            data = s.recv(65536)
            if not data:
                return
            if s is a:
                if not inspect(data):
                    return
                b.sendall(data)
            else:
                a.sendall(data)


class Buffered:
    """Reads request/response heads and exact-length bodies from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def head(self) -> Optional[bytes]:
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside a body")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


def fields_of(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return lines[0], fields


# http.client writes ``CONNECT host:port HTTP/1.0`` before Python 3.12 and ``HTTP/1.1`` from 3.12 on; both
# carry the ``Host`` header (the transport sends it), and proxies accept either.
CONNECT_VERSIONS = ("HTTP/1.0", "HTTP/1.1")


def tunnels(proxy: ForwardProxy) -> list[str]:
    """The targets of the ``CONNECT`` requests ``proxy`` read, each checked to be a well-formed line."""
    targets = []
    for line in proxy.connects:
        method, target, version = line.split(" ")
        assert method == "CONNECT" and version in CONNECT_VERSIONS, line
        targets.append(target)
    return targets


REASONS = {403: "Forbidden", 407: "Proxy Authentication Required"}


class _ProxyServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    owner: ForwardProxy


class _ProxyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        proxy = self.server.owner  # type: ignore[attr-defined]
        proxy._track(self.request)
        try:
            proxy._serve(self.request)
        except (OSError, ValueError):
            pass  # a client or a cut tunnel went away: the connection ends
        finally:
            proxy._untrack(self.request)


class ForwardProxy:
    """An HTTP/1.1 forwarding proxy on 127.0.0.1 that only forwards to 127.0.0.1.

    Attributes:
        refuse: When set, the status (407, 403) every ``CONNECT`` gets instead of a tunnel.
        require_auth: When set, the ``Proxy-Authorization`` value required (else 407).
        drop_next: When set, the next bytes a client sends into a tunnel are not forwarded: the tunnel is
            cut both ways (a proxy dying in the middle of a request).
    """

    def __init__(self, port: int = 0, *, require_auth: Optional[str] = None) -> None:
        self.lock = threading.Lock()
        self.heads: list[bytes] = []  # every request head read from clients (CONNECT and forwarded)
        self.connects: list[str] = []
        self.forwarded: list[str] = []
        self.auth: list[Optional[str]] = []
        self.tunnel_bytes = bytearray()  # everything clients sent into tunnels
        self.connections = 0
        self.refuse: Optional[int] = None
        self.require_auth = require_auth
        self.drop_next = False
        self.stopping = threading.Event()
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self.server = _ProxyServer(("127.0.0.1", port), _ProxyHandler)
        self.server.owner = self
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="test-proxy", daemon=True
        )
        self.thread.start()

    def _track(self, sock: socket.socket) -> None:
        sock.settimeout(WAIT)
        with self.lock:
            self.connections += 1
            self._socks.add(sock)
            self._threads.append(threading.current_thread())

    def _untrack(self, sock: socket.socket) -> None:
        with self.lock:
            self._socks.discard(sock)

    def _open(self, host: Optional[str], port: int) -> socket.socket:
        assert host in ("127.0.0.1", "localhost"), host  # loopback only
        up = socket.create_connection(("127.0.0.1", port), WAIT)
        up.settimeout(WAIT)
        with self.lock:
            self._socks.add(up)
        return up

    def _inspect(self, data: bytes) -> bool:
        with self.lock:
            self.tunnel_bytes += data
            if self.drop_next:
                self.drop_next = False
                return False
        return True

    def _serve(self, conn: socket.socket) -> None:
        reader = Buffered(conn)
        upstream: Optional[socket.socket] = None
        up_reader: Optional[Buffered] = None
        try:
            while True:
                head = reader.head()
                if head is None:
                    return
                line, fields = fields_of(head)
                method, target, _ = line.split(" ", 2)
                auth = fields.get("proxy-authorization")
                with self.lock:
                    self.heads.append(head)
                    self.auth.append(auth)
                    (self.connects if method == "CONNECT" else self.forwarded).append(line)
                status = 407 if self.require_auth is not None and auth != self.require_auth else None
                if method == "CONNECT" and self.refuse is not None:
                    status = self.refuse
                if status is not None:
                    conn.sendall(
                        f'HTTP/1.1 {status} {REASONS[status]}\r\nProxy-Authenticate: Basic realm="test"\r\n'
                        "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
                    )
                    return
                if method == "CONNECT":
                    host, _, port = target.rpartition(":")
                    upstream = self._open(host, int(port))
                    conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    relay(conn, upstream, self.stopping, self._inspect)
                    return
                split = urlsplit(target)  # the absolute form: http://host:port/path
                assert split.scheme == "http", target
                body = reader.exactly(int(fields.get("content-length", "0")))
                if upstream is None or up_reader is None:
                    upstream = self._open(split.hostname, split.port or 80)
                    up_reader = Buffered(upstream)
                kept = [
                    h
                    for h in head.split(b"\r\n")[1:]
                    if not h.lower().startswith((b"proxy-authorization:", b"proxy-connection:"))
                ]
                request_line = f"{method} {split.path} HTTP/1.1".encode()
                upstream.sendall(b"\r\n".join([request_line, *kept]) + b"\r\n\r\n" + body)
                answer = up_reader.head()
                if answer is None:
                    return
                _, answer_fields = fields_of(answer)
                answer_body = up_reader.exactly(int(answer_fields.get("content-length", "0")))
                conn.sendall(answer + b"\r\n\r\n" + answer_body)
        finally:
            if upstream is not None:
                with self.lock:
                    self._socks.discard(upstream)
                upstream.close()

    def cut(self) -> None:
        """Break every open connection, both ways (tunnels die under their clients)."""
        with self.lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.cut()
        self.thread.join(WAIT)
        with self.lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(WAIT)
        assert not any(t.is_alive() for t in threads)


class TlsFront:
    """Terminates TLS (a certificate for localhost and 127.0.0.1) and relays the bytes to ``backend_port``."""

    def __init__(self, cert: Path, key: Path, backend_port: int) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.backend_port = backend_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = int(self.listener.getsockname()[1])
        self.url = f"https://localhost:{self.port}"
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.socks: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []
        self.thread = threading.Thread(target=self._accept, name="test-tls-front", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # the listener was shut down
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self.lock:
                self.socks.add(conn)
                self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(WAIT)
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                backend = socket.create_connection(("127.0.0.1", self.backend_port), WAIT)
                with backend:
                    backend.settimeout(WAIT)
                    with self.lock:
                        self.socks.add(backend)
                    relay(tls, backend, self.stopping, lambda data: True)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(WAIT)
        with self.lock:
            socks, threads = list(self.socks), list(self.threads)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(WAIT)


# -- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(make_certificate: Callable[[str, str], tuple[Path, Path]]) -> tuple[Path, Path]:
    return make_certificate("localhost", "DNS:localhost,IP:127.0.0.1")


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY}) as srv:
        yield srv


@pytest.fixture
def front(server: SerlaServer, certificate: tuple[Path, Path]) -> Iterator[TlsFront]:
    tls = TlsFront(*certificate, server.port)
    yield tls
    tls.stop()


@pytest.fixture
def proxies() -> Iterator[Callable[..., ForwardProxy]]:
    made: list[ForwardProxy] = []

    def make(port: int = 0, **options: Any) -> ForwardProxy:
        made.append(ForwardProxy(port, **options))
        return made[-1]

    yield make
    for p in made:
        p.stop()


@pytest.fixture
def clients(certificate: tuple[Path, Path]) -> Iterator[Callable[..., Serla]]:
    """``clients(host, **options)``: real clients trusting the test certificate, shut down afterwards."""
    made: list[Serla] = []

    def make(host: str, **options: Any) -> Serla:
        options.setdefault("flush_on_exit", False)
        options.setdefault("flush_interval_seconds", 60.0)  # sends happen on flush()
        options.setdefault("timeout", WAIT)
        if host.startswith("https:"):
            options.setdefault("ca_bundle", str(certificate[0]))
        made.append(Serla(KEY, host=host, **options))
        return made[-1]

    yield make
    for c in made:
        c.shutdown(0.5)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


# -- https through a CONNECT tunnel ---------------------------------------------------------------------


def test_https_goes_through_a_connect_tunnel_with_the_key_only_inside_it(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
) -> None:
    proxy = proxies()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    c = clients(front.url)
    c.track("signup", "u1", {"plan": "pro"})
    assert c.flush(10) is True
    c.track("login", "u1")
    assert c.flush(10) is True  # the same tunnel, kept alive
    assert c.identify("u1", {"email": "a@example.com"}) is True  # identify() opens its own

    assert [e["name"] for e in server.events] == ["signup", "login"]
    assert server.identities == {"u1": {"email": "a@example.com"}}
    target = f"localhost:{front.port}"
    assert tunnels(proxy) == [target] * 2
    assert all(f"Host: {target}".encode() in head for head in proxy.heads)
    # The proxy saw only CONNECT heads and TLS records: neither the key nor any header in clear.
    seen = b"".join(proxy.heads) + bytes(proxy.tunnel_bytes)
    assert KEY.encode() not in seen and b"Authorization" not in seen and b"signup" not in seen
    assert proxy.tunnel_bytes[:1] == b"\x16"  # a TLS handshake record went through the tunnel
    assert proxy.auth == [None, None]
    # ...and the key did arrive, inside the tunnel, verified against the Serla host's certificate.
    assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {KEY}"] * 3
    assert repr(c._transport_factory()) == f"<HttpTransport {front.url} via proxy {proxy.url}>"


def test_the_certificate_is_still_verified_against_the_serla_host_through_the_tunnel(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
) -> None:
    proxy = proxies()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    c = clients(front.url, ca_bundle=None)  # the system's CAs: the self-signed certificate is refused
    c.track("e", "u")
    assert c.flush(1.0) is False
    assert "CERTIFICATE_VERIFY_FAILED" in (c.stats()["last_error"] or "")
    assert len(proxy.connects) >= 1 and server.requests == []


@pytest.mark.parametrize("through_proxy", [False, True])
def test_one_tls_context_per_client_is_shared_by_the_flusher_and_every_identify(
    tmp_path: Path,
    server: SerlaServer,
    front: TlsFront,
    certificate: tuple[Path, Path],
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
    through_proxy: bool,
) -> None:
    # The CA bundle is read once, when the client's first TLS connection is made: after it is gone,
    # identify() (a new connection each time, from the same factory) still verifies with that context.
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(certificate[0].read_bytes())
    proxy = proxies().url if through_proxy else ""
    c = clients(front.url, ca_bundle=str(bundle), proxy=proxy)
    c.track("e", "u")
    assert c.flush(10) is True
    bundle.unlink()
    assert c.identify("u1", {"n": 1}) is True
    assert c.identify("u2", {"n": 2}) is True
    assert server.identities == {"u1": {"n": 1}, "u2": {"n": 2}}
    late = clients(front.url, ca_bundle=str(bundle), proxy=proxy)  # another client: its own context
    assert late.identify("u3") is False
    assert "u3" not in server.identities


# -- http through a proxy: the absolute form ------------------------------------------------------------


def test_http_host_is_sent_to_the_proxy_in_absolute_form(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
) -> None:
    proxy = proxies(require_auth=basic("alice", "s3cret"))
    monkeypatch.setenv("HTTP_PROXY", f"http://alice:s3cret@127.0.0.1:{proxy.port}")
    c = clients(server.url)
    c.track("a", "u")
    assert c.flush(10) is True
    c.track("b", "u")
    assert c.flush(10) is True
    assert c.identify("u", {"n": 1}) is True

    assert [e["name"] for e in server.events] == ["a", "b"]
    assert server.identities == {"u": {"n": 1}}
    base = f"http://127.0.0.1:{server.port}"
    assert proxy.forwarded == [
        f"POST {base}/api/v1/events/batch HTTP/1.1",
        f"POST {base}/api/v1/events/batch HTTP/1.1",
        f"POST {base}/api/v1/identify HTTP/1.1",
    ]
    assert proxy.auth == [basic("alice", "s3cret")] * 3
    assert proxy.connections == 2  # the flusher's connection kept alive, and identify()'s
    # Plain http: the proxy reads the whole request, key included (documented; https avoids it).
    assert all(f"Authorization: Bearer {KEY}".encode() in head for head in proxy.heads)
    assert all("proxy-authorization" not in r.headers for r in server.requests)


# -- credentials ------------------------------------------------------------------------------------------


def test_percent_encoded_credentials_are_decoded_and_sent_only_to_the_proxy(
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
) -> None:
    expected = basic("us@er", "p:ss wörd/%")
    proxy = proxies(require_auth=expected)
    url = f"http://us%40er:p%3Ass%20w%C3%B6rd%2F%25@127.0.0.1:{proxy.port}"
    c = clients(front.url, proxy=url)
    c.track("e", "u")
    assert c.flush(10) is True
    assert proxy.auth == [expected]
    assert [e["name"] for e in server.events] == ["e"]
    assert all("proxy-authorization" not in r.headers for r in server.requests)
    assert "p%3Ass" not in repr(c.config) and "***@127.0.0.1" in repr(c.config)


def test_wrong_credentials_are_a_clear_failed_send_without_the_credentials(
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="serla")
    proxy = proxies(require_auth=basic("alice", "right-password"))
    c = clients(front.url, proxy=f"http://alice:wrong-password@127.0.0.1:{proxy.port}", debug=True)
    c.track("e", "u")
    assert c.flush(1.0) is False
    assert c.identify("u", {"a": 1}) is False
    error = c.stats()["last_error"] or ""
    assert f"the proxy {proxy.url} refused CONNECT localhost:{front.port}: HTTP 407" in error
    assert "check the user and password" in error
    assert c.pending_count() == 1 and c.stats()["dropped"] == {}
    token = basic("alice", "wrong-password").split()[1]
    texts = [caplog.text, error, repr(c), repr(c.config), str(c.stats()), repr(c._transport_factory())]
    assert "refused CONNECT" in caplog.text  # the failure is logged...
    for text in texts:  # ...never with the credentials (nor the API key)
        assert "wrong-password" not in text and token not in text and KEY not in text
    assert server.requests == []


# -- which proxy: the environment as urllib reads it -------------------------------------------------------


@pytest.mark.parametrize("no_proxy", ["*", "localhost", "example.com, .localhost", "LOCALHOST:{port}"])
def test_no_proxy_sends_matching_hosts_direct(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
    no_proxy: str,
) -> None:
    proxy = proxies()
    proxy.refuse = 403  # would fail every send if it were used
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port=front.port))
    c = clients(front.url)
    c.track("e", "u")
    assert c.flush(10) is True
    assert proxy.heads == [] and [e["name"] for e in server.events] == ["e"]


@pytest.mark.parametrize("no_proxy", ["example.com", "localhost:1", "*.localhost", "host"])
def test_no_proxy_that_does_not_match_keeps_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
    no_proxy: str,
) -> None:
    proxy = proxies()
    monkeypatch.setenv("https_proxy", proxy.url)
    monkeypatch.setenv("no_proxy", no_proxy)
    c = clients(front.url)
    c.track("e", "u")
    assert c.flush(10) is True
    assert tunnels(proxy) == [f"localhost:{front.port}"]


@pytest.mark.parametrize(
    ("host", "no_proxy", "proxied"),
    [
        ("https://api.serla.dev", "serla.dev", False),  # a domain suffix
        ("https://api.serla.dev", ".serla.dev", False),  # a leading dot is ignored
        ("https://serla.dev", "serla.dev", False),
        ("https://xserla.dev", "serla.dev", True),  # a suffix only at a dot
        ("https://api.serla.dev:8443", "api.serla.dev:8443", False),  # with the port
        ("https://api.serla.dev:8443", "api.serla.dev:443", True),
        ("https://API.Serla.dev", "api.serla.DEV", False),  # case-insensitive
        ("https://serla.dev", " other.dev , serla.dev ", False),
        ("https://serla.dev", "*", False),
        ("https://serla.dev", "*,other.dev", True),  # '*' works only alone, as in urllib
        ("https://serla.dev", "", True),
    ],
)
def test_no_proxy_matching_is_urllibs(
    monkeypatch: pytest.MonkeyPatch, host: str, no_proxy: str, proxied: bool
) -> None:
    import urllib.request

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    netloc = urlsplit(host).netloc
    assert (resolve_proxy(None, host) is not None) is proxied
    assert urllib.request.proxy_bypass_environment(netloc) is not proxied  # type: ignore[attr-defined]


HOSTS = ["serla.dev", "api.serla.dev", "API.serla.dev:443", "localhost:8000", "127.0.0.1:9", "[::1]:8080"]
HOSTS += ["[::1]", "host:", "a.b.c:notaport", "xserla.dev"]
NO_PROXY = ["*", " * ", "*,x", "", ",", "serla.dev", ".serla.dev", "SERLA.dev", "api.serla.dev:443"]
NO_PROXY += ["localhost", "localhost:8000", "localhost:1", "::1", "[::1]", "127.0.0.1", "0.0.1", "host"]
NO_PROXY += ["a, b ,serla.dev ,", "..serla.dev", "dev", "c:notaport"]


def test_no_proxy_matching_is_the_same_as_urllibs_for_every_pair() -> None:
    import urllib.request

    for host in HOSTS:
        for no_proxy in NO_PROXY:
            expected = urllib.request.proxy_bypass_environment(host, {"no": no_proxy})  # type: ignore[attr-defined]
            assert bypass_proxy(host, {"no": no_proxy}) is bool(expected), (host, no_proxy)
        assert bypass_proxy(host, {"https": "http://p:1"}) is False  # no no_proxy: never bypassed


@pytest.mark.parametrize(
    "env",
    [
        {"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2"},
        {"HTTPS_PROXY": "http://upper:1", "https_proxy": ""},
        {"HTTPS_PROXY": "", "Https_Proxy": "http://mixed:3"},
        {"HTTP_PROXY": "http://upper:1", "REQUEST_METHOD": "GET"},
        {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:2", "REQUEST_METHOD": "POST"},
        {"NO_PROXY": "a", "no_proxy": "b", "ALL_PROXY": "http://all:1", "ftp_proxy": "http://f:1"},
        {"no_proxy": "", "NO_PROXY": "a"},
    ],
)
def test_reading_the_variables_is_the_same_as_urllibs(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    import urllib.request

    monkeypatch.delenv("REQUEST_METHOD", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert environment_proxies() == urllib.request.getproxies_environment()


def test_lowercase_variables_win_and_an_empty_one_unsets_the_uppercase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:1")
    monkeypatch.setenv("https_proxy", "http://lower:2")
    found = resolve_proxy(None, "https://serla.dev")
    assert found is not None and (found.url, found.source) == ("http://lower:2", "https_proxy")
    monkeypatch.setenv("https_proxy", "")
    assert resolve_proxy(None, "https://serla.dev") is None  # urllib: an empty lowercase value unsets both
    monkeypatch.delenv("https_proxy")
    found = resolve_proxy(None, "https://serla.dev")
    assert found is not None and (found.url, found.source) == ("http://upper:1", "HTTPS_PROXY")
    monkeypatch.setenv("NO_PROXY", "serla.dev")
    monkeypatch.setenv("no_proxy", "other.dev")  # wins over NO_PROXY
    assert resolve_proxy(None, "https://serla.dev") is not None


def test_each_scheme_reads_its_own_variable_and_cgi_ignores_http_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://plain:1")
    assert resolve_proxy(None, "https://serla.dev") is None
    found = resolve_proxy(None, "http://serla.dev")
    assert found is not None and found.url == "http://plain:1"
    monkeypatch.setenv("ALL_PROXY", "http://all:3")  # urllib ignores it, and so does the SDK
    monkeypatch.delenv("HTTP_PROXY")
    assert resolve_proxy(None, "http://serla.dev") is None
    monkeypatch.setenv("HTTP_PROXY", "http://from-a-client-header:1")
    monkeypatch.setenv("REQUEST_METHOD", "GET")  # a CGI script: HTTP_PROXY may come from a "Proxy:" header
    assert resolve_proxy(None, "http://serla.dev") is None
    monkeypatch.setenv("http_proxy", "http://plain:1")
    found = resolve_proxy(None, "http://serla.dev")
    assert found is not None and found.url == "http://plain:1"


def test_the_lowercase_variable_wins_end_to_end(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
) -> None:
    good, refusing = proxies(), proxies()
    refusing.refuse = 403
    monkeypatch.setenv("https_proxy", good.url)
    monkeypatch.setenv("HTTPS_PROXY", refusing.url)
    c = clients(front.url)
    c.track("e", "u")
    assert c.flush(10) is True
    assert len(good.connects) == 1 and refusing.heads == []


def test_the_proxy_option_wins_over_the_environment_and_empty_means_direct(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
) -> None:
    chosen, from_env = proxies(), proxies()
    from_env.refuse = 403
    monkeypatch.setenv("HTTPS_PROXY", from_env.url)
    monkeypatch.setenv("NO_PROXY", "*")  # the option is not subject to NO_PROXY
    through = clients(front.url, proxy=chosen.url)
    through.track("via-option", "u")
    assert through.flush(10) is True
    monkeypatch.delenv("NO_PROXY")
    direct = clients(front.url, proxy="")
    direct.track("direct", "u")
    assert direct.flush(10) is True
    assert [e["name"] for e in server.events] == ["via-option", "direct"]
    assert len(chosen.connects) == 1 and from_env.heads == []


# -- failures: nothing is lost ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [407, 403])
def test_a_refused_connect_keeps_the_events_queued_until_the_proxy_accepts(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
    status: int,
) -> None:
    # A failed CONNECT is a network error to the retry policy: RETRY with backoff (1, 2, 4 ... 30 s),
    # the batch and its idempotency key kept, never dropped; flush() cuts one backoff short.
    proxy = proxies()
    proxy.refuse = status
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    c = clients(front.url)
    for i in range(3):
        c.track("e", "u", {"i": i})
    assert c.flush(1.0) is False
    stats = c.stats()
    assert (stats["pending"], stats["sent"], stats["dropped"], stats["healthy"]) == (3, 0, {}, False)
    assert f"ProxyError: the proxy {proxy.url} refused CONNECT localhost:{front.port}: HTTP {status}" in (
        stats["last_error"] or ""
    )
    assert server.requests == []
    proxy.refuse = None
    assert c.flush(10) is True
    assert [e["properties"]["i"] for e in server.events] == [0, 1, 2]
    assert len({e.idempotency_key for e in server.stored}) == 1  # the same batch, resent


def test_a_tunnel_cut_mid_request_is_replaced_by_a_new_connect(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
) -> None:
    proxy = proxies()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    c = clients(front.url)
    c.track("first", "u")
    assert c.flush(10) is True
    proxy.drop_next = True  # the proxy dies with the next request inside the tunnel
    c.track("second", "u")
    assert c.flush(10) is True
    proxy.cut()  # and every open tunnel breaks while idle
    c.track("third", "u")
    assert c.flush(10) is True
    assert [e["name"] for e in server.events] == ["first", "second", "third"]
    assert len(proxy.connects) == 3


def test_a_proxy_that_goes_away_and_comes_back(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
) -> None:
    proxy = proxies()
    port = proxy.port
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    c = clients(front.url)
    c.track("before", "u")
    assert c.flush(10) is True
    proxy.stop()
    c.track("during", "u")
    assert c.flush(1.0) is False
    error = c.stats()["last_error"] or ""
    assert error.startswith(
        f"ProxyError: cannot connect to the proxy http://127.0.0.1:{port}: ConnectionRefused"
    )
    again = proxies(port)  # restarted on the same port
    assert c.flush(10) is True
    assert [e["name"] for e in server.events] == ["before", "during"]
    assert len(again.connects) == 1


# -- configuration --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://user:secret@proxy:3128", "https:// proxies (TLS to the proxy itself) are not supported"),
        ("socks5://user:secret@proxy:1080", "only http:// proxies are supported, not socks5://"),
        ("http://user:secret@proxy:notaport", "bad proxy port"),
        ("http://user:secret@proxy:70000", "bad proxy port"),
        ("http://user:secret@", "no valid host name"),
        ("http://user:secret@proxy:3128/proxy.pac", "no path"),
        ("http://user:secret@proxy 1:3128", "a proxy URL such as"),
    ],
)
def test_a_bad_proxy_option_raises_at_construction_without_the_credentials(url: str, message: str) -> None:
    with pytest.raises(ValueError, match="Serla: proxy=") as info:
        Serla(KEY, proxy=url)
    assert message in str(info.value)
    assert "secret" not in str(info.value) and "***@" in str(info.value)


def test_a_proxy_option_of_the_wrong_type_raises_type_error() -> None:
    with pytest.raises(TypeError, match="proxy must be a URL"):
        Serla(KEY, proxy=3128)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("proxy.corp:3128", "http://proxy.corp:3128"),  # no scheme: http, as urllib and curl read it
        ("http://proxy.corp", "http://proxy.corp:80"),
        ("HTTP://Proxy.Corp:3128/", "http://proxy.corp:3128"),
        ("http://[::1]:3128", "http://[::1]:3128"),
        ("  http://u:p@proxy:1  ", "http://proxy:1"),
    ],
)
def test_good_proxy_urls(url: str, shown: str) -> None:
    found = resolve_proxy(Serla(KEY, proxy=url, disabled=True).config.proxy, "https://serla.dev")
    assert found is not None and found.url == shown


def test_an_unusable_proxy_variable_does_not_raise_but_every_send_fails_clearly(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    clients: Callable[..., Serla],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The environment is shared with other tools (curl reads socks5:// here): the client is still
    # created, says why in a WARNING, and keeps the events queued rather than going around the proxy.
    caplog.set_level(logging.DEBUG, logger="serla")
    monkeypatch.setenv("HTTP_PROXY", "socks5://user:secret@127.0.0.1:1080")
    c = clients(server.url)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("HTTP_PROXY='socks5://***@127.0.0.1:1080': only http:// proxies" in w for w in warnings)
    c.track("e", "u")
    assert c.flush(0.5) is False
    assert (c.stats()["last_error"] or "").startswith("ProxyError: Serla: HTTP_PROXY='socks5://***@")
    assert c.pending_count() == 1 and server.requests == []
    assert "secret" not in caplog.text and "secret" not in repr(c._transport_factory())


def test_an_https_proxy_variable_without_credentials_is_used_as_urllib_used_it(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # serla-py 0.1.0 (urllib) spoke plain HTTP CONNECT to HTTPS_PROXY=https://...: keep that working.
    caplog.set_level(logging.WARNING, logger="serla")
    proxy = proxies()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "https://"))
    c = clients(front.url)
    c.track("e", "u")
    assert c.flush(10) is True
    assert [e["name"] for e in server.events] == ["e"]
    assert tunnels(proxy) == [f"localhost:{front.port}"]
    assert any(
        "https:// proxies (TLS to the proxy) are not supported; connecting" in r.getMessage()
        for r in caplog.records
    )


def test_an_https_proxy_variable_with_credentials_is_refused(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
) -> None:
    # The credentials would travel in clear to a proxy the user believes is reached over TLS.
    proxy = proxies()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "https://user:secret@"))
    c = clients(front.url)
    c.track("e", "u")
    assert c.flush(0.5) is False
    assert "https:// proxies (TLS to the proxy itself) are not supported" in (c.stats()["last_error"] or "")
    assert proxy.heads == [] and server.events == []


def test_a_disabled_client_ignores_the_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy:1080")
    with Serla(KEY, disabled=True) as c:
        assert c.track("e", "u") is True


# -- the transport alone: what a proxy may answer to CONNECT ------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", "failed during CONNECT serla.test:443: RemoteDisconnected"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "failed during CONNECT serla.test:443: BadStatusLine"),
        (  # a 200 that is no tunnel: the TLS handshake fails, and the error says it happened in the tunnel
            b"HTTP/1.1 200 OK\r\n\r\nearly bytes",
            "opened a tunnel to serla.test:443, but TLS with serla.test through it failed",
        ),
        (
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nbad",
            "refused CONNECT serla.test:443: HTTP 502 Bad Gateway",
        ),
    ],
)
def test_what_a_proxy_answers_to_connect(answer: bytes, error: str) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(WAIT)
    heads: list[bytes] = []

    def answer_once() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(WAIT)
            head = Buffered(conn).head()
            heads.append(head or b"")
            conn.sendall(answer)

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    try:
        proxy = resolve_proxy(f"http://127.0.0.1:{listener.getsockname()[1]}", "https://serla.test")
        transport = HttpTransport("https://serla.test", KEY, WAIT, proxy=proxy)
        result = transport.post("/api/v1/events/batch", b"{}", {})
        transport.close()
    finally:
        thread.join(WAIT)
        listener.close()
    assert result.status is None and result.error is not None
    assert result.error.startswith("ProxyError: the proxy http://127.0.0.1:") and error in result.error
    line, fields = fields_of(heads[0])
    assert line in [f"CONNECT serla.test:443 {version}" for version in CONNECT_VERSIONS]
    assert fields["host"] == "serla.test:443" and fields["user-agent"].startswith("serla-python/")
    assert KEY.encode() not in heads[0]


# -- feature flag requests (serla._flags): their own connections, the same host, CA bundle and proxy ------


def test_flag_requests_use_https_with_the_ca_bundle_directly_and_through_a_tunnel(
    monkeypatch: pytest.MonkeyPatch,
    server: SerlaServer,
    front: TlsFront,
    proxies: Callable[..., ForwardProxy],
    clients: Callable[..., Serla],
) -> None:
    server.flags.define("new-checkout")
    direct = clients(front.url, flags_timeout=WAIT)
    assert direct.get_all_feature_flags(distinct_id="u1") == {"new-checkout": True}
    assert direct.get_all_feature_flags(distinct_id="u2") == {"new-checkout": True}  # the same connection
    proxy = proxies()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    tunnelled = clients(front.url, flags_timeout=WAIT)
    assert tunnelled.is_feature_enabled("new-checkout", distinct_id="u1") is True
    assert [c.rsplit(" ", 1)[0] for c in proxy.connects] == [f"CONNECT localhost:{front.port}"]
    assert KEY.encode() not in b"".join(proxy.heads) + bytes(proxy.tunnel_bytes)
    flag_requests = [r for r in server.requests if r.path == "/api/v1/flags"]
    assert [r.headers["authorization"] for r in flag_requests] == [f"Bearer {KEY}"] * 3


def test_flag_requests_verify_the_certificate(
    server: SerlaServer, front: TlsFront, clients: Callable[..., Serla]
) -> None:
    server.flags.define("new-checkout")
    c = clients(front.url, ca_bundle=None, flags_timeout=WAIT)  # the system's CAs refuse the test certificate
    assert c.get_feature_flag("new-checkout", "fb", distinct_id="u1") == "fb"
    stats = c.stats()["flags"]
    assert stats["fallbacks"] == {"network_error": 1}
    assert "CERTIFICATE_VERIFY_FAILED" in str(stats["last_error"])
    assert not [r for r in server.requests if r.path == "/api/v1/flags"]


def test_flag_requests_to_an_http_host_go_through_the_proxy_in_absolute_form(
    server: SerlaServer, proxies: Callable[..., ForwardProxy], clients: Callable[..., Serla]
) -> None:
    server.flags.define("new-checkout")
    proxy = proxies()
    c = clients(server.url, proxy=proxy.url, flags_timeout=WAIT)
    assert c.is_feature_enabled("new-checkout", distinct_id="u1") is True
    assert proxy.forwarded == [f"GET {server.url}/api/v1/flags?distinct_id=u1 HTTP/1.1"]
