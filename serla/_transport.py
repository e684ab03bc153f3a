"""HTTP requests to the Serla host over one keep-alive connection, on the standard library's ``http.client``.

No policy here: a transport sends one request and returns what came back (a :class:`SendResult`), and
never raises. The retry policy (``serla._retry``) and the worker decide what to do with it.

``http.client`` (and with it ``ssl``) is imported on the first send, not at ``import serla`` nor when a
client is created. One :class:`HttpTransport` keeps one ``HTTPConnection`` / ``HTTPSConnection`` open
between requests (HTTP/1.1 keep-alive); a connection the server closed while idle is replaced and the
request resent once (see :meth:`HttpTransport.post`). Response bodies are read up to
:data:`MAX_RESPONSE_BYTES`; a connection with unread bytes left on it is closed, not reused.

Redirects are never followed (``http.client`` doesn't): a 3xx is returned to the policy as a failed send,
so the API key never travels to another host. TLS certificates and host names are always verified: the
context is ``ssl.create_default_context()`` (the system's CA store, or ``ca_bundle``), made once per
client by :class:`TlsContext` and shared by all its transports, and there is no option to turn that off.

Through an HTTP proxy (a :class:`~serla._proxy.Proxy`, resolved once by the client from its ``proxy``
option or the environment), an https host is reached through a ``CONNECT host:port`` tunnel
(``set_tunnel``): the proxy sees that request and its own ``Proxy-Authorization``, and TLS (verified
against the Serla host) runs inside the tunnel, so the API key and the events never reach the proxy in
clear. An http host gets the request in absolute form (``POST http://host/path``) with
``Proxy-Authorization``, as HTTP/1.1 proxies expect. Any failure before the request is sent through a
proxy (connecting to it, its answer to ``CONNECT``, the TLS handshake inside the tunnel) is a
:class:`ProxyError` whose text names the proxy (``http://host:port``, never its credentials).

What ``http.client`` decides, named here because it differs from the SDK's earlier hand-written client:
the ``CONNECT`` request line says ``HTTP/1.0`` before Python 3.12 and ``HTTP/1.1`` from 3.12 (the transport
always adds ``Host``; proxies accept both); only a ``200`` answer opens the tunnel (any other status is a
refusal); a response's headers are parsed by ``email.parser`` (about 60 µs more CPU per request than the
hand-written parser, measured by ``benchmarks/transport_cpu.py``: at the server's 100 requests a minute,
a few milliseconds a minute); a ``Content-Length`` that is not a number, or negative, is read as no
length (the body ends with the connection).

Requests are marked so that OpenTelemetry instrumentations don't trace them
(:func:`suppress_instrumentation`). Tools that patch ``http.client`` itself (sentry-sdk's stdlib
integration, ddtrace) see the SDK's requests like any other: they may record them as breadcrumbs or spans
and add their trace headers (exclude the Serla host in their settings, e.g. sentry-sdk's
``trace_propagation_targets``). A :class:`HttpTransport` is not thread-safe: the worker owns one, and each
``identify()`` call uses its own (from the same client factory, sharing its proxy and TLS context).
"""

from __future__ import annotations

import contextlib
import sys
from types import MappingProxyType

from serla._config import split_host
from serla._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    import http.client
    import ssl
    from collections.abc import Iterator, Mapping
    from typing import Any, Final, Protocol

    from serla._proxy import Proxy

    class Transport(Protocol):
        """What the SDK needs from a transport. Every method but ``close`` returns, never raises.

        ``forget()`` (drop the connection without closing it, in a forked child) is optional: the worker
        calls it when the transport has it.
        """

        def post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
            """POST ``body`` (JSON) to ``path`` and return what came back (never raises)."""
            ...

        def get(self, path_with_query: str, headers: dict[str, str]) -> SendResult:
            """GET ``path_with_query`` and return what came back (never raises)."""
            ...

        def close(self) -> None:
            """Release the connection (idempotent)."""
            ...

else:

    class Transport:
        """What the SDK needs from a transport: ``post(path, body, headers) -> SendResult``,
        ``get(path_with_query, headers) -> SendResult`` (both never raise), ``close()`` (idempotent), and
        optionally ``forget()`` (drop the connection without closing it, in a forked child). A structural
        interface: type checkers see a ``typing.Protocol``; at run time this plain class avoids importing
        ``typing``.
        """


_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


class SendResult:
    """What one request returned (immutable; compares by value). Re-exported by ``serla._retry``.

    Attributes:
        status: The HTTP status, or ``None`` when no response arrived.
        body: The response body (read with a size cap).
        retry_after: The raw ``Retry-After`` header, if any.
        error: A short description of the network error when ``status`` is ``None``.
        headers: The response headers, names lowercased (repeated ones joined with ``", "``); read-only.
    """

    # A hand-written frozen value class: this module loads on the first send, and ``dataclasses`` (with
    # ``inspect`` behind it) would cost that send tens of milliseconds of GIL-holding imports.
    _fields = ("status", "body", "retry_after", "error", "headers")
    __slots__ = _fields

    status: int | None
    body: bytes
    retry_after: str | None
    error: str | None
    headers: Mapping[str, str]

    def __init__(
        self,
        status: int | None,
        body: bytes = b"",
        retry_after: str | None = None,
        error: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        init = object.__setattr__
        init(self, "status", status)
        init(self, "body", body)
        init(self, "retry_after", retry_after)
        init(self, "error", error)
        init(self, "headers", _NO_HEADERS if not headers else MappingProxyType(dict(headers)))

    def _values(self) -> tuple[Any, ...]:
        return (self.status, self.body, self.retry_after, self.error, dict(self.headers))

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
        return hash((self.status, self.body, self.retry_after, self.error, frozenset(self.headers.items())))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self._values()))
        return f"SendResult({fields})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (SendResult, self._values())


USER_AGENT: Final = f"serla-python/{__version__}"
MAX_RESPONSE_BYTES: Final = 64 * 1024
"""Response bodies are read up to this size; the rest is discarded with the connection."""


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


def import_network_stack() -> None:
    """Import what sending needs: ``http.client`` (with ``ssl`` and ``email.parser`` behind it) and the
    ``idna`` codec (``socket.getaddrinfo`` and ``ssl`` encode host names with it, importing it on first use).

    The client's transport factory calls it once per transport, holding ``serla._lazy.IMPORT_LOCK`` so
    that a fork can't leave a child with a half-imported module.
    """
    import encodings.idna  # noqa: F401
    import http.client  # noqa: F401


class TlsContext:
    """One ``ssl.SSLContext`` for a client, made on first use and shared by all of its transports.

    Making a context loads the CA store (the system's, or ``ca_bundle``): milliseconds of CPU that a
    client pays once, not per connection nor per ``identify()``. Thread-safe without a lock (a fork can't
    inherit one held): should two threads make the first context at once, both use the first published.

    Args:
        ca_bundle: Path to a PEM bundle of CA certificates to trust instead of the system's.
    """

    __slots__ = ("_ca_bundle", "_made")

    def __init__(self, ca_bundle: str | None = None) -> None:
        self._ca_bundle = ca_bundle
        self._made: list[ssl.SSLContext] = []

    def get(self) -> ssl.SSLContext:
        """The context: certificates and host names verified, ALPN ``http/1.1``.

        Raises:
            OSError: The CA bundle can't be read (the send that needed it fails with this error).
            ssl.SSLError: The CA bundle holds no usable certificate.
        """
        made = self._made
        if not made:
            import ssl

            context = ssl.create_default_context(cafile=self._ca_bundle)
            context.set_alpn_protocols(["http/1.1"])
            made.append(context)  # atomic; made[0] is the first one published
        return made[0]


class ProxyError(Exception):
    """The proxy could not be reached, refused the tunnel, or is unusable (its text has no credentials)."""


class HttpTransport:
    """Sends requests to one Serla host over a persistent connection (``http.client``).

    Args:
        host: Base URL, e.g. ``https://serla.dev`` (a path prefix is kept; no trailing slash).
        api_key: Sent as ``Authorization: Bearer <key>``.
        timeout: Socket timeout in seconds, for connecting and for each read.
        ca_bundle: Path to a PEM bundle of CA certificates to trust instead of the system's (used when
            ``tls`` is not given).
        proxy: The HTTP proxy to go through (``None``: connect directly). The transport does not read
            the environment itself: the client resolves the proxy once (``serla._proxy.resolve_proxy``).
        tls: The client's shared :class:`TlsContext` (default: one of this transport's own).
    """

    def __init__(
        self,
        host: str,
        api_key: str,
        timeout: float,
        ca_bundle: str | None = None,
        proxy: Proxy | None = None,
        *,
        tls: TlsContext | None = None,
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
        # Host names go on the wire in ASCII: an internationalised one IDNA-encoded, an IPv6 one bracketed.
        literal = _ascii_host(f"[{hostname}]" if ":" in hostname else hostname)
        self._host_header = literal if self._port == default_port else f"{literal}:{self._port}"
        self._target = f"{literal}:{self._port}"  # what CONNECT asks the proxy for
        self._timeout = timeout
        self._api_key = api_key
        self._tls = tls if tls is not None else TlsContext(ca_bundle)
        self._proxy = proxy
        self._conn: http.client.HTTPConnection | None = None
        # Through a proxy, an http request names its target in absolute form: ``POST http://host/path``.
        self._origin = "http://" + self._host_header if proxy is not None and scheme == "http" else ""
        auth = f"Bearer {api_key}"
        self._post_headers: tuple[tuple[str, str], ...] = (
            ("Host", self._host_header),
            ("Accept-Encoding", "identity"),
            ("Authorization", auth),
            ("Content-Type", "application/json"),
            ("User-Agent", USER_AGENT),
            ("Accept", "application/json"),
        )
        if self._origin and proxy is not None and proxy.authorization is not None:
            self._post_headers += (("Proxy-Authorization", proxy.authorization),)
        self._get_headers = tuple(h for h in self._post_headers if h[0] != "Content-Type")

    def __repr__(self) -> str:
        via = "" if self._proxy is None else f" via proxy {self._proxy.url}"  # never its credentials
        return f"<HttpTransport {self._scheme}://{self._netloc}{self._prefix}{via}>"

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
        """POST ``body`` to ``path`` (relative to the host) and return the result; never raises.

        A keep-alive connection that turns out stale (the server closed it while idle: the request can't
        be written, or the connection ends before any byte of a response) is replaced and the request sent
        once more. That is safe for every request the SDK makes: a batch carries its idempotency key, and
        identify and flag requests are idempotent.
        """
        if "opentelemetry.context" in sys.modules:
            with suppress_instrumentation():
                return self._send("POST", path, body, headers)
        return self._send("POST", path, body, headers)

    def get(self, path_with_query: str, headers: dict[str, str]) -> SendResult:
        """GET ``path_with_query`` (relative to the host, already encoded) and return the result; never
        raises. A stale keep-alive connection is replaced as for :meth:`post`."""
        if "opentelemetry.context" in sys.modules:
            with suppress_instrumentation():
                return self._send("GET", path_with_query, None, headers)
        return self._send("GET", path_with_query, None, headers)

    def close(self) -> None:
        """Close the connection; the next request opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def forget(self) -> None:
        """Drop the connection without closing it: used in a forked child, whose socket is the parent's."""
        self._conn = None

    # -- internals ---------------------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> SendResult:
        for name, value in headers.items():  # checked before anything is written to the connection
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                return SendResult(None, error=f"ValueError: header {name!r} must not contain line breaks")
        target = self._origin + self._prefix + path
        for fresh_retry in (False, True):
            reused = self._conn is not None and self._conn.sock is not None
            try:
                return self._exchange(method, target, body, headers)
            except Exception as exc:
                self.close()
                if not (reused and not fresh_retry and _is_stale_connection_error(exc)):
                    return SendResult(None, error=self._scrub(f"{type(exc).__name__}: {exc}"))
        return SendResult(None, error="unreachable")  # pragma: no cover - the loop always returns

    def _exchange(self, method: str, target: str, body: bytes | None, headers: dict[str, str]) -> SendResult:
        conn = self._conn
        if conn is None or conn.sock is None:
            conn = self._connect()
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in self._post_headers if body is not None else self._get_headers:
            conn.putheader(name, value)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        try:
            data = response.read(MAX_RESPONSE_BYTES)
            whole = response.isclosed()  # read to its end: the connection can carry the next request
            fields: dict[str, str] = {}
            for name, value in response.getheaders():
                key = name.lower()
                fields[key] = f"{fields[key]}, {value}" if key in fields else value
        finally:
            response.close()
        if not whole:
            self.close()
        status = response.status
        if not 200 <= status < 300:  # error bodies end up in logs: never with the key a proxy echoed back
            data = data.replace(self._api_key.encode("utf-8", "replace"), b"[api key]")
            if self._proxy is not None:
                for secret in self._proxy.secrets:
                    data = data.replace(secret.encode("utf-8", "replace"), b"[proxy credentials]")
        return SendResult(status, data, fields.get("retry-after"), None, fields)

    def _connect(self) -> http.client.HTTPConnection:
        """A new connected ``HTTPConnection`` (TCP, then CONNECT through a proxy, then TLS), kept."""
        import http.client

        self.close()
        proxy = self._proxy
        if proxy is not None and proxy.error is not None:
            raise ProxyError(proxy.error)
        https = self._scheme == "https"
        host, port = (self._hostname, self._port) if proxy is None else (proxy.host, proxy.port)
        conn: http.client.HTTPConnection
        if https:
            context = self._tls.get()
            conn = http.client.HTTPSConnection(host, port, timeout=self._timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        conn.auto_open = 0  # never reconnect behind the transport's back: connecting is done only here
        if proxy is None:
            try:
                conn.connect()  # TCP, and the TLS handshake for https (verified against the host name)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            return conn
        if https:
            # The CONNECT request carries the proxy's credentials, never the API key (that travels inside
            # the TLS session that follows, which the proxy cannot read).
            tunnel = {"Host": self._target, "User-Agent": USER_AGENT}
            if proxy.authorization is not None:
                tunnel["Proxy-Authorization"] = proxy.authorization
            name, _, port_text = self._target.rpartition(":")
            conn.set_tunnel(name, int(port_text), tunnel)
        try:
            http.client.HTTPConnection.connect(conn)  # TCP to the proxy, and CONNECT for https
        except Exception as exc:
            error = self._proxy_error(proxy, exc, connected=conn.sock is not None)
            conn.close()
            raise ProxyError(error) from None
        if https:
            try:
                conn.sock = context.wrap_socket(conn.sock, server_hostname=self._hostname)
            except Exception as exc:
                conn.close()
                error = f"{type(exc).__name__}: {exc}"
                hint = ""
                if "CERTIFICATE_VERIFY_FAILED" in error:
                    hint = " (a proxy that inspects TLS needs its CA certificate in ca_bundle)"
                raise ProxyError(
                    f"the proxy {proxy.url} opened a tunnel to {self._target}, but TLS with "
                    f"{self._hostname} through it failed: {error}{hint}"
                ) from None
        self._conn = conn
        return conn

    def _proxy_error(self, proxy: Proxy, exc: Exception, connected: bool) -> str:
        """The text of a failure to reach ``proxy`` (``connected``: the TCP connection was open)."""
        text = str(exc)
        refused = "Tunnel connection failed: "  # http.client's words for a non-200 answer to CONNECT
        if isinstance(exc, OSError) and text.startswith(refused):
            status = "".join(c for c in text[len(refused) :][:100] if c.isprintable())
            hint = " (check the user and password in the proxy URL)" if status.startswith("407") else ""
            return f"the proxy {proxy.url} refused CONNECT {self._target}: HTTP {status}{hint}"
        if connected:
            return f"the proxy {proxy.url} failed during CONNECT {self._target}: {type(exc).__name__}: {text}"
        return f"cannot connect to the proxy {proxy.url}: {type(exc).__name__}: {text}"

    def _scrub(self, text: str) -> str:
        """``text`` without the API key or the proxy's credentials (an error a server or proxy echoed)."""
        text = text.replace(self._api_key, "[api key]")
        if self._proxy is not None:
            for secret in self._proxy.secrets:
                text = text.replace(secret, "[proxy credentials]")
        return text


def _ascii_host(name: str) -> str:
    """A host name as it goes on the wire: ASCII as is, anything else IDNA-encoded."""
    return name if name.isascii() else name.encode("idna").decode("ascii")


def _is_stale_connection_error(exc: BaseException) -> bool:
    """True when a reused connection was found closed by the server before any of the response came.

    ``http.client`` raises ``RemoteDisconnected`` (a ``ConnectionResetError``) when the connection ends
    before the status line; writing to a closed connection raises ``BrokenPipeError`` or a reset; over TLS
    the peer's abrupt close may surface as ``SSLEOFError``.
    """
    if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
        return True
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError))
