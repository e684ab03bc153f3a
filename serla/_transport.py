"""One HTTP POST at a time over one persistent keep-alive connection. No policy here.

The HTTP stack (``http.client``, and ``ssl`` for https) is imported on the first send, so ``import serla``
stays cheap. Redirects are never followed: ``http.client`` doesn't follow them, and a 3xx is returned to
the policy as a failed send, so the API key never travels to another host. TLS certificates and host names
are always verified (``ssl.create_default_context()``, optionally with a CA bundle).

A :class:`HttpTransport` is not thread-safe: the worker owns one, and ``identify()`` uses its own.
"""

from __future__ import annotations

import contextlib
import sys
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, Optional, Protocol

from serla._retry import SendResult
from serla._version import __version__

if TYPE_CHECKING:
    import http.client

USER_AGENT: Final = f"serla-python/{__version__}"
MAX_RESPONSE_BYTES: Final = 64 * 1024
"""Response bodies are read up to this size; the rest is discarded with the connection."""

_LOOPBACK_HOSTS: Final = frozenset({"localhost", "::1", "[::1]"})


class Transport(Protocol):
    """What the worker needs from a transport: POST bytes to a path, and close."""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
        """Send one request and return what came back (never raises)."""
        ...

    def close(self) -> None:
        """Release the connection (idempotent)."""
        ...


def is_loopback(hostname: str) -> bool:
    """True for ``localhost``, ``::1`` and addresses in 127.0.0.0/8."""
    hostname = hostname.lower()
    if hostname in _LOOPBACK_HOSTS:
        return True
    parts = hostname.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)


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
    """POSTs to one Serla host with ``http.client`` and a persistent connection.

    Args:
        host: Base URL, e.g. ``https://serla.dev`` (a path prefix is kept; no trailing slash).
        api_key: Sent as ``Authorization: Bearer <key>``.
        timeout: Socket timeout in seconds, for connecting and for each read.
        ca_bundle: Path to a PEM bundle of CA certificates to trust instead of the system's.
    """

    def __init__(self, host: str, api_key: str, timeout: float, ca_bundle: str | None = None) -> None:
        parts = urllib.parse.urlsplit(host)
        self._scheme = parts.scheme
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._ca_bundle = ca_bundle
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }
        self._conn: Optional[http.client.HTTPConnection] = None

    def __repr__(self) -> str:
        return f"<HttpTransport {self._scheme}://{self._netloc}{self._prefix}>"

    def _connect(self) -> http.client.HTTPConnection:
        import http.client

        if self._scheme == "https":
            import ssl

            ctx = ssl.create_default_context(cafile=self._ca_bundle)
            return http.client.HTTPSConnection(self._netloc, timeout=self._timeout, context=ctx)
        return http.client.HTTPConnection(self._netloc, timeout=self._timeout)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
        """POST ``body`` to ``path`` (relative to the host) and return the result; never raises.

        A stale keep-alive connection (the server closed it while idle) is retried once on a fresh
        connection when nothing of the request can have been processed.
        """
        with suppress_instrumentation():
            for fresh_retry in (False, True):
                reused = self._conn is not None
                try:
                    return self._post_once(path, body, headers)
                except Exception as exc:
                    self.close()
                    stale = reused and not fresh_retry and _is_stale_connection_error(exc)
                    if not stale:
                        return SendResult(None, error=f"{type(exc).__name__}: {exc}")
        return SendResult(None, error="unreachable")  # pragma: no cover - the loop always returns

    def _post_once(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        all_headers = dict(self._headers)
        all_headers.update(headers)
        all_headers["Content-Length"] = str(len(body))
        conn.request("POST", self._prefix + path, body=body, headers=all_headers)
        resp = conn.getresponse()
        data = resp.read(MAX_RESPONSE_BYTES)
        if not resp.isclosed():
            # A body over the cap (or unframed): don't reuse a connection with unread bytes on it.
            self.close()
        elif resp.will_close:
            self.close()
        return SendResult(resp.status, data, resp.getheader("Retry-After"))

    def close(self) -> None:
        """Close the connection; the next ``post`` opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def forget(self) -> None:
        """Drop the connection without closing it: used in a forked child, whose socket is the parent's."""
        self._conn = None


def _is_stale_connection_error(exc: BaseException) -> bool:
    import http.client

    return isinstance(
        exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
    )


def make_transport(host: str, api_key: str, timeout: float, ca_bundle: str | None = None) -> Any:
    """The default transport factory (the ``transport_factory`` seam of the worker)."""
    return HttpTransport(host, api_key, timeout, ca_bundle)
