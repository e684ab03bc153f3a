"""One HTTP POST at a time over one persistent keep-alive connection. No policy here.

The transport speaks the small part of HTTP/1.1 the SDK needs, on a plain socket (``socket``, and ``ssl``
for https, both imported on the first send so ``import serla`` stays cheap). Each request goes out in one
``sendall``; the response is read by a small parser: status line, headers, then a body framed by
``Content-Length``, ``Transfer-Encoding: chunked`` or the end of the connection, read up to
``MAX_RESPONSE_BYTES``. Keep-alive follows HTTP/1.1 (``Connection: close`` and HTTP/1.0 end it).
``http.client`` did the same work through ``email.parser`` and a buffered file object: on a loopback
endpoint that was about half the flusher's time per request, holding the GIL that ``track()`` needs.

Redirects are never followed: a 3xx is returned to the policy as a failed send, so the API key never
travels to another host. TLS certificates and host names are always verified
(``ssl.create_default_context()``, optionally with a CA bundle).

Through an HTTP proxy (a :class:`~serla._config.Proxy`, resolved by the client from its ``proxy`` option or
the environment), an https host is reached through a ``CONNECT host:port`` tunnel: the proxy sees that
line and its own ``Proxy-Authorization``, and TLS (verified against the Serla host) runs inside the
tunnel, so the API key and the events never reach the proxy in clear. An http host gets the request in
absolute form (``POST http://host/path``), as HTTP/1.1 proxies expect. The tunnel is kept alive like a
direct connection; after any error the next send opens a new one.

A :class:`HttpTransport` is not thread-safe: the worker owns one, and ``identify()`` uses its own.
"""

from __future__ import annotations

import contextlib
import sys

from serla._config import split_host
from serla._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Iterator
    from typing import Any, Final, Optional, Protocol

    from serla._config import Proxy

    class Transport(Protocol):
        """What the worker needs from a transport: POST bytes to a path, and close."""

        def post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
            """Send one request and return what came back (never raises)."""
            ...

        def close(self) -> None:
            """Release the connection (idempotent)."""
            ...

else:

    class Transport:
        """What the worker needs from a transport: ``post(path, body, headers) -> SendResult`` (never
        raises) and ``close()`` (idempotent). A structural interface: any object with both methods will do
        (type checkers see a ``typing.Protocol``; at run time this plain class avoids importing ``typing``).
        """


class SendResult:
    """What one POST returned (immutable; compares by value). Re-exported by ``serla._retry``.

    Attributes:
        status: The HTTP status, or ``None`` when no response arrived.
        body: The response body (read with a size cap).
        retry_after: The raw ``Retry-After`` header, if any.
        error: A short description of the network error when ``status`` is ``None``.
    """

    # A hand-written frozen value class: this module loads on the first send, and ``dataclasses`` (with
    # ``inspect`` behind it) would cost that send tens of milliseconds of GIL-holding imports.
    _fields = ("status", "body", "retry_after", "error")
    __slots__ = _fields

    status: Optional[int]
    body: bytes
    retry_after: Optional[str]
    error: Optional[str]

    def __init__(
        self,
        status: Optional[int],
        body: bytes = b"",
        retry_after: Optional[str] = None,
        error: Optional[str] = None,
    ) -> None:
        init = object.__setattr__
        init(self, "status", status)
        init(self, "body", body)
        init(self, "retry_after", retry_after)
        init(self, "error", error)

    def _values(self) -> tuple[Any, ...]:
        return (self.status, self.body, self.retry_after, self.error)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"SendResult is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"SendResult is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not SendResult:
            return NotImplemented
        assert isinstance(other, SendResult)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self._values()))
        return f"SendResult({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (SendResult, self._values())


USER_AGENT: Final = f"serla-python/{__version__}"
MAX_RESPONSE_BYTES: Final = 64 * 1024
"""Response bodies are read up to this size; the rest is discarded with the connection."""

_MAX_HEAD: Final = 64 * 1024
"""A response whose status line and headers are longer than this is refused (a protocol error)."""
_RECV: Final = 65536


def is_loopback(hostname: str) -> bool:
    """True for ``localhost``, ``::1`` and addresses in 127.0.0.0/8."""
    from serla._config import is_loopback as check

    return check(hostname)


@contextlib.contextmanager
def suppress_instrumentation() -> Iterator[None]:
    """Mark the current context so OpenTelemetry instrumentations don't trace the SDK's own requests.

    Costs a dictionary lookup in apps that don't use OpenTelemetry: only when ``opentelemetry.context``
    is already imported is the suppression key set (the key OTel's own exporters use).
    """
    context = sys.modules.get("opentelemetry.context")
    key = getattr(context, "_SUPPRESS_INSTRUMENTATION_KEY", None) if context is not None else None
    if context is None or key is None:
        yield
        return
    ctx = context.set_value(key, True)
    # Older contrib instrumentations read a plain string key, and the HTTP-client ones their own key.
    ctx = context.set_value("suppress_instrumentation", True, ctx)
    http_key = getattr(context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None)
    if http_key is not None:
        ctx = context.set_value(http_key, True, ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


class HttpTransport:
    """POSTs to one Serla host over a persistent connection.

    Args:
        host: Base URL, e.g. ``https://serla.dev`` (a path prefix is kept; no trailing slash).
        api_key: Sent as ``Authorization: Bearer <key>``.
        timeout: Socket timeout in seconds, for connecting and for each read.
        ca_bundle: Path to a PEM bundle of CA certificates to trust instead of the system's.
        proxy: The HTTP proxy to go through (``None``: connect directly). The transport does not read
            the environment itself: the client resolves the proxy once (``serla._config.resolve_proxy``).
    """

    def __init__(
        self,
        host: str,
        api_key: str,
        timeout: float,
        ca_bundle: str | None = None,
        proxy: Proxy | None = None,
    ) -> None:
        scheme, netloc, hostname, path = split_host(host)
        self._scheme = scheme
        self._netloc = netloc
        self._prefix = path.rstrip("/")
        self._hostname = hostname
        default_port = 443 if scheme == "https" else 80
        port_text = netloc.rpartition("]")[2] if netloc.startswith("[") else netloc
        port_text = port_text.partition(":")[2]
        self._port = int(port_text) if port_text else default_port
        literal = f"[{hostname}]" if ":" in hostname else hostname
        self._host_header = literal if self._port == default_port else f"{literal}:{self._port}"
        self._timeout = timeout
        self._ca_bundle = ca_bundle
        self._api_key = api_key
        self._fixed: bytes | None = None  # the request's constant headers, encoded on the first send
        self._ssl_context: ssl.SSLContext | None = None
        self._sock: socket.socket | None = None
        self._proxy = proxy
        # Through a proxy, an http request names its target in absolute form: ``POST http://host/path``.
        self._origin = ""
        if proxy is not None and scheme == "http":
            self._origin = "http://" + _ascii_host(self._host_header)

    def __repr__(self) -> str:
        via = "" if self._proxy is None else f" via proxy {self._proxy.url}"  # never its credentials
        return f"<HttpTransport {self._scheme}://{self._netloc}{self._prefix}{via}>"

    def _connect(self) -> socket.socket:
        import socket

        proxy = self._proxy
        if proxy is None:
            name, port = self._hostname, self._port
        elif proxy.error is not None:
            raise ProxyError(proxy.error)
        else:
            name, port = proxy.host, proxy.port
        # An ASCII name goes as bytes: that skips the resolver's IDNA encoding (and importing its codec).
        host: str | bytes = name.encode("ascii") if name.isascii() else name
        try:
            sock = socket.create_connection((host, port), self._timeout)  # type: ignore[arg-type]
        except OSError as exc:
            if proxy is None:
                raise
            error = f"cannot connect to the proxy {proxy.url}: {type(exc).__name__}: {exc}"
            raise ProxyError(error) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if proxy is not None and self._scheme == "https":
                self._open_tunnel(sock, proxy)
            if self._scheme == "https":
                ctx = self._ssl_context
                if ctx is None:
                    import ssl

                    ctx = ssl.create_default_context(cafile=self._ca_bundle)
                    ctx.set_alpn_protocols(["http/1.1"])
                    self._ssl_context = ctx
                sock = ctx.wrap_socket(sock, server_hostname=self._hostname)
        except BaseException:
            sock.close()
            raise
        return sock

    def _open_tunnel(self, sock: socket.socket, proxy: Proxy) -> None:
        """Ask the proxy for a tunnel to the Serla host (``CONNECT``); raise :class:`ProxyError` unless 2xx.

        The request carries the proxy's own credentials, never the API key (that goes inside the TLS
        session that follows, which the proxy cannot read).
        """
        name = self._hostname
        target = f"{_ascii_host(f'[{name}]' if ':' in name else name)}:{self._port}"
        head = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {USER_AGENT}\r\n"
        if proxy.authorization is not None:
            head += f"Proxy-Authorization: {proxy.authorization}\r\n"
        try:
            sock.sendall((head + "\r\n").encode("latin-1"))
            status, reason = _read_connect_response(sock)
        except (OSError, ProtocolError) as exc:
            error = f"the proxy {proxy.url} failed during CONNECT {target}: {type(exc).__name__}: {exc}"
        else:
            if 200 <= status < 300:
                return
            hint = " (check the user and password in the proxy URL)" if status == 407 else ""
            error = f"the proxy {proxy.url} refused CONNECT {target}: HTTP {status} {reason}{hint}"
        for secret in proxy.secrets:  # in case the proxy echoed them back
            error = error.replace(secret, "[proxy credentials]")
        raise ProxyError(error)

    def _request(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        """The request's bytes: request line, headers, body (one buffer, one ``sendall``)."""
        fixed = self._fixed
        if fixed is None:
            try:
                host = self._host_header.encode("ascii")
            except UnicodeEncodeError:
                host = self._host_header.encode("idna")
            fixed = self._fixed = (
                b"Host: "
                + host
                + (
                    f"\r\nAccept-Encoding: identity\r\nAuthorization: Bearer {self._api_key}"
                    f"\r\nContent-Type: application/json\r\nUser-Agent: {USER_AGENT}"
                    "\r\nAccept: application/json\r\n"
                ).encode("latin-1")
            )
            proxy = self._proxy
            if self._origin and proxy is not None and proxy.authorization is not None:
                auth = f"Proxy-Authorization: {proxy.authorization}\r\n"
                fixed = self._fixed = fixed + auth.encode("latin-1")
        extra = ""
        for name, value in headers.items():
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} must not contain line breaks")
            extra += f"{name}: {value}\r\n"
        head = f"POST {self._origin}{self._prefix}{path} HTTP/1.1\r\n".encode("ascii")
        tail = f"{extra}Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
        return head + fixed + tail + body

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
        """POST ``body`` to ``path`` (relative to the host) and return the result; never raises.

        A stale keep-alive connection (the server closed it while idle) is retried once on a fresh
        connection when nothing of the request can have been processed.
        """
        if "opentelemetry.context" in sys.modules:
            with suppress_instrumentation():
                return self._post(path, body, headers)
        return self._post(path, body, headers)

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
        try:
            request = self._request(path, body, headers)
        except Exception as exc:
            return SendResult(None, error=f"{type(exc).__name__}: {exc}")
        for fresh_retry in (False, True):
            reused = self._sock is not None
            try:
                return self._exchange(request)
            except Exception as exc:
                self.close()
                stale = reused and not fresh_retry and _is_stale_connection_error(exc)
                if not stale:
                    return SendResult(None, error=f"{type(exc).__name__}: {exc}")
        return SendResult(None, error="unreachable")  # pragma: no cover - the loop always returns

    def _exchange(self, request: bytes) -> SendResult:
        sock = self._sock
        if sock is None:
            sock = self._sock = self._connect()
        sock.sendall(request)
        status, fields, body, keep = _read_response(sock)
        if not keep:
            self.close()
        if not 200 <= status < 300:  # error bodies end up in logs: never with the key a proxy echoed back
            body = body.replace(self._api_key.encode("utf-8", "replace"), b"[api key]")
            if self._proxy is not None:
                for secret in self._proxy.secrets:
                    body = body.replace(secret.encode("utf-8", "replace"), b"[proxy credentials]")
        return SendResult(status, body, fields.get("retry-after"))

    def close(self) -> None:
        """Close the connection; the next ``post`` opens a new one."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.close()

    def forget(self) -> None:
        """Drop the connection without closing it: used in a forked child, whose socket is the parent's."""
        self._sock = None


class RemoteDisconnected(ConnectionResetError):
    """The server closed the connection before sending any byte of a response (as ``http.client``'s)."""


class ProtocolError(Exception):
    """The response is not well-formed HTTP/1.x (or its headers are unreasonably long)."""


class ProxyError(Exception):
    """The proxy could not be reached, refused the tunnel, or is unusable (its text has no credentials)."""


def _ascii_host(name: str) -> str:
    """A host name as it goes on the wire: ASCII as is, anything else IDNA-encoded."""
    return name if name.isascii() else name.encode("idna").decode("ascii")


def _read_connect_response(sock: socket.socket) -> tuple[int, str]:
    """Read the proxy's answer to ``CONNECT`` up to its blank line: ``(status, reason)``.

    Interim 1xx answers are skipped. A 2xx has no body: every byte after it belongs to the tunnel, and
    none may come before the TLS handshake (the server speaks second). Anything else is not read further:
    the connection is closed.
    """
    buf = b""
    while True:
        end = buf.find(b"\r\n\r\n")
        while end == -1:
            if len(buf) > _MAX_HEAD:
                raise ProtocolError("the proxy's response headers are longer than 64 KiB")
            chunk = sock.recv(_RECV)
            if not chunk:
                raise RemoteDisconnected("the proxy closed the connection without a response")
            buf += chunk
            end = buf.find(b"\r\n\r\n")
        head, buf = buf[:end], buf[end + 4 :]
        parts = head.split(b"\r\n", 1)[0].split(None, 2)
        version = parts[0] if parts else b""
        code = parts[1] if len(parts) >= 2 else b""
        if not version.startswith(b"HTTP/") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"bad status line {head[:100]!r} (is it an HTTP proxy?)")
        status = int(code)
        if status >= 200:
            break
    if 200 <= status < 300 and buf:
        raise ProtocolError("the proxy sent data into the tunnel before the TLS handshake")
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    return status, "".join(c for c in reason[:100] if c.isprintable())


class _Reader:
    """Buffered reads from a socket, for one response."""

    __slots__ = ("buf", "recv")

    def __init__(self, sock: socket.socket, first: bytes) -> None:
        self.recv = sock.recv
        self.buf = first

    def more(self) -> bool:
        chunk = self.recv(_RECV)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def line(self) -> bytes:
        """The next CRLF-terminated line, without the CRLF."""
        while True:
            i = self.buf.find(b"\r\n")
            if i != -1:
                line, self.buf = self.buf[:i], self.buf[i + 2 :]
                return line
            if len(self.buf) > _MAX_HEAD:
                raise ProtocolError("response line too long")
            if not self.more():
                raise ProtocolError("connection closed inside a chunked body")

    def take(self, n: int) -> tuple[bytes, bool]:
        """Up to ``n`` bytes; the flag is False when the connection closed first."""
        while len(self.buf) < n:
            if not self.more():
                data, self.buf = self.buf, b""
                return data, False
        data, self.buf = self.buf[:n], self.buf[n:]
        return data, True


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes, bool]:
    """Read one response: ``(status, headers (lowercased names), body up to the cap, keep_alive)``."""
    first = sock.recv(_RECV)
    if not first:
        raise RemoteDisconnected("Remote end closed connection without response")
    reader = _Reader(sock, first)
    while True:  # 1xx interim responses are skipped, as http.client does
        while True:
            end = reader.buf.find(b"\r\n\r\n")
            if end != -1:
                break
            if len(reader.buf) > _MAX_HEAD:
                raise ProtocolError("response headers longer than 64 KiB")
            if not reader.more():
                raise ProtocolError("connection closed inside the response headers")
        head, reader.buf = reader.buf[:end], reader.buf[end + 4 :]
        lines = head.split(b"\r\n")
        parts = lines[0].split(None, 2)
        version = parts[0] if parts else b""
        code = parts[1] if len(parts) >= 2 else b""
        if not version.startswith(b"HTTP/") or len(code) != 3 or not code.isdigit():
            raise ProtocolError(f"bad status line {lines[0][:100]!r}")
        status = int(code)
        if status >= 200 or status == 101:
            break
    fields: dict[str, str] = {}
    for raw in lines[1:]:
        name, sep, value = raw.partition(b":")
        if not sep:
            continue
        key = name.strip().lower().decode("latin-1")
        text = value.strip().decode("latin-1")
        fields[key] = f"{fields[key]}, {text}" if key in fields else text
    conn = fields.get("connection", "").lower()
    keep = "close" not in conn if version != b"HTTP/1.0" else "keep-alive" in conn
    if status in (101, 204, 304):
        return status, fields, b"", keep and not reader.buf
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body, complete = _read_chunked(reader)
        return status, fields, body, keep and complete and not reader.buf
    length = fields.get("content-length")
    if length is not None:
        try:
            n = int(length.split(",")[0])
        except ValueError:
            raise ProtocolError(f"bad Content-Length {length[:50]!r}") from None
        if n < 0:
            raise ProtocolError(f"bad Content-Length {length[:50]!r}")
        body, complete = reader.take(min(n, MAX_RESPONSE_BYTES))
        # Reuse the connection only when the body was read whole and nothing follows it.
        return status, fields, body, keep and complete and n <= MAX_RESPONSE_BYTES and not reader.buf
    body, _ = reader.take(MAX_RESPONSE_BYTES)  # unframed: the body ends with the connection
    return status, fields, body, False


def _read_chunked(reader: _Reader) -> tuple[bytes, bool]:
    """A chunked body, up to the cap; the flag is True when it was read whole (trailers included)."""
    out: list[bytes] = []
    size = 0
    while True:
        line = reader.line()
        try:
            n = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {line[:50]!r}") from None
        if n < 0:
            raise ProtocolError(f"bad chunk size {line[:50]!r}")
        if n == 0:
            while reader.line():  # trailers, up to the empty line
                pass
            return b"".join(out), True
        if size + n > MAX_RESPONSE_BYTES:
            data, _ = reader.take(MAX_RESPONSE_BYTES - size)
            out.append(data)
            return b"".join(out), False
        data, complete = reader.take(n + 2)
        out.append(data[:n])
        size += n
        if not complete:
            return b"".join(out), False


def _is_stale_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError))


def make_transport(
    host: str, api_key: str, timeout: float, ca_bundle: str | None = None, proxy: Proxy | None = None
) -> Any:
    """The default transport factory (the ``transport_factory`` seam of the worker)."""
    return HttpTransport(host, api_key, timeout, ca_bundle, proxy)
