"""A local Serla server that answers and stores what the real server does.

The server speaks the contract in ``SERLA_API.md`` over real HTTP/1.1 with keep-alive: the same routes,
status codes, JSON bodies, validation ``details``, the payloads that pass validation but fail in the real
database with a 500, and the real limits, by default:

* keys belong to projects (:class:`~serla.devtools.limits.Project`; several keys may share one), with
  secret and public scopes;
* per-minute rate limits per project and endpoint (batch 100, events 1,000, ...; ``/identify`` none), in
  fixed windows that start at the first request, answered with the real 429 and its headers. Lift them
  with ``rate_limits=False``, or shorten the window with ``rate_limit_window`` so a test of a one-minute
  scenario runs in seconds;
* the monthly quota and the plan gates (402) of projects configured with a plan;
* what is stored is what the real server stores (see :mod:`serla.devtools.validation`): timestamps cut to
  milliseconds, integers beyond +-(2^53-1) rounded like JavaScript doubles, ``1e400`` as ``null``, a
  ``__proto__`` property dropped, a malformed or foreign ``sessionId`` replaced, bodies of any depth.

It has three users:

* the SDK's test-suite, which runs it on ``127.0.0.1`` instead of mocking HTTP;
* the benchmarks, which push large volumes of events through it;
* ``serla dev``, which adds a persistent store and a web page on top (see :meth:`SerlaServer.add_route`).

On top of the contract it records every request (:attr:`SerlaServer.requests`) and every stored event
(:attr:`SerlaServer.events`, :attr:`SerlaServer.stored`), and it can inject faults (:class:`Fault`) such as
error statuses, delays, dropped connections and "stored, then the response was lost".

Routing is the table :data:`ROUTES` (path -> :class:`~serla.devtools.wire.Endpoint`); an endpoint's handler
gets the server and the request and uses :meth:`SerlaServer.authorize` for the checks every route makes in
the real server's order (key 401, plan 402, per-minute 429, monthly quota 429). The ingest routes are in
:mod:`serla.devtools.ingest`.

Only the standard library is used. Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import selectors
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final, Union, cast
from urllib.parse import parse_qs, urlsplit

from serla._version import __version__
from serla.devtools import ingest
from serla.devtools.flags import FlagRoute
from serla.devtools.limits import (
    PLAN_FEATURES,
    RATE_LIMIT_WINDOW,
    RATE_LIMITS,
    Limited,
    Project,
    RateLimiter,
    month_start,
)
from serla.devtools.store import DEFAULT_PROJECT, MemoryStore, Store, StoredEvent
from serla.devtools.validation import is_valid_timestamp
from serla.devtools.wire import (
    BATCH_PATH,
    CORS_HEADERS,
    ERRORS_PATH,
    EVENTS_PATH,
    FLAGS_PATH,
    IDENTIFY_PATH,
    JSON_TYPE,
    LLM_PATH,
    TEXT_TYPE,
    Caller,
    Endpoint,
    RecordedRequest,
    Response,
    json_response,
    parsed_body,
)

if TYPE_CHECKING:
    from serla.devtools.errors import ErrorsEndpoint
    from serla.devtools.llm import LlmEndpoint

__all__ = [
    "BATCH_PATH",
    "EVENTS_PATH",
    "IDENTIFY_PATH",
    "ROUTES",
    "Caller",
    "Endpoint",
    "Fault",
    "MemoryStore",
    "Project",
    "RecordedRequest",
    "Response",
    "SerlaServer",
    "Store",
    "StoredEvent",
    "is_valid_timestamp",
    "serve",
]

FLAGS_CORS: Final[Mapping[str, str]] = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Idempotency-Key",
}
ROUTES: Final[dict[str, Endpoint]] = {
    BATCH_PATH: ingest.BATCH,
    EVENTS_PATH: ingest.EVENTS,
    IDENTIFY_PATH: ingest.IDENTIFY,
    ERRORS_PATH: Endpoint(("POST",), lambda server, request: server.errors.handle(request), "errors", 204),
    LLM_PATH: Endpoint(("POST",), lambda server, request: server.llm.handle(request), "llm", 204),
    FLAGS_PATH: Endpoint(
        ("GET",), lambda server, request: server.flags.handle(request), "flags", 204, FLAGS_CORS
    ),
}
# Registering an endpoint module is one line above: ``PATH: Endpoint(methods, handler, bucket, preflight)``.
"""The Serla routes: path -> endpoint. A new endpoint module adds one line here, e.g.
``ERRORS_PATH: errors.ENDPOINT`` where ``ENDPOINT = Endpoint(("POST",), handle, bucket="errors",
preflight_status=204)`` and ``handle(server, request)`` starts with ``server.authorize(request,
bucket="errors", quota_error="Monthly limit exceeded")``."""

_RATE_LIMIT_CORS: Final[Mapping[str, str]] = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Idempotency-Key",
}
# What Vercel answers for a body over its 4.5 MB cap: plain text, not Serla JSON.
_VERCEL_413_BODY: Final = b"Request Entity Too Large\n\nFUNCTION_PAYLOAD_TOO_LARGE\n"
_QUOTA_MESSAGE: Final = "Monthly event limit of {quota:,} exceeded. Please upgrade your plan."

FaultBody = Union[bytes, str, Mapping[str, Any], Sequence[Any], None]
"""What :attr:`Fault.body` accepts: raw bytes, text, or a JSON-serialisable object."""


@dataclass(frozen=True)
class Fault:
    """A fault to inject into request handling, for reliability tests.

    At most one of ``status``, ``close_connection``, ``store_then_drop`` and ``hang`` may be set. A fault
    with none of them (only ``delay``) delays the request and then handles it normally.

    Attributes:
        status: Answer with this status, ``headers`` and ``body`` instead of processing the request. Nothing
            is stored.
        body: The body for ``status``. ``None`` picks a realistic default: Serla JSON for the codes the
            application sends (``429`` is the per-minute body when ``headers`` has ``Retry-After`` and the
            monthly-quota body otherwise), plain text for ``413`` (like Vercel's cap) and for
            ``502``/``503``/``504`` (like a gateway). ``bytes`` and ``str`` are sent as ``text/plain``
            unless ``headers`` sets ``Content-Type``; mappings and sequences are sent as JSON.
        headers: Extra response headers for ``status``.
        delay: Seconds to wait before acting (``0`` means no delay). :meth:`SerlaServer.stop` interrupts
            the wait, and the connection is then dropped without a response.
        close_connection: Close the connection without any response (a lost connection). Nothing is stored.
        store_then_drop: Process and store the request normally, then close the connection without
            responding ("the response was lost after the server stored the batch").
        hang: Never answer; the connection is closed when the server stops.
        path: Only requests to this exact path (no query string) consume the fault; ``None`` matches any.
    """

    status: int | None = None
    body: FaultBody = None
    headers: Mapping[str, str] | None = None
    delay: float = 0.0
    close_connection: bool = False
    store_then_drop: bool = False
    hang: bool = False
    path: str | None = None

    def __post_init__(self) -> None:
        """Reject contradictory faults.

        Raises:
            ValueError: If more than one action is set, ``delay`` is negative, or ``status`` is out of range.
        """
        actions = (self.status is not None) + self.close_connection + self.store_then_drop + self.hang
        if actions > 1:
            raise ValueError("set at most one of status, close_connection, store_then_drop and hang")
        if self.delay < 0 or not math.isfinite(self.delay):
            raise ValueError(f"delay must be a finite number >= 0, got {self.delay!r}")
        if self.status is not None and not 200 <= self.status <= 599:
            raise ValueError(f"status must be in 200..599, got {self.status!r}")


# --------------------------------------------------------------------------------------------------------
# Responses


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _fault_response(fault: Fault, path: str) -> Response:
    """Build the response for a ``status`` fault."""
    status = cast(int, fault.status)
    headers = dict(fault.headers or {})
    body = fault.body
    if body is None:
        body = _default_fault_body(status, path, headers)
    if isinstance(body, (bytes, bytearray)):
        data, content_type = bytes(body), TEXT_TYPE
    elif isinstance(body, str):
        data, content_type = body.encode("utf-8"), TEXT_TYPE
    else:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        content_type = JSON_TYPE
    if _header(headers, "Content-Type") is None:
        headers["Content-Type"] = content_type
    return Response(status, data, headers)


def _default_fault_body(status: int, path: str, headers: Mapping[str, str]) -> FaultBody:
    if status == 413:
        return _VERCEL_413_BODY
    if status in (502, 503, 504):
        return f"{status} {_phrase(status)}\n"
    if status == 400:
        return {"error": _INVALID_DATA.get(path, "Invalid batch data"), "details": []}
    if status == 401:
        return {"error": "Invalid API key"}
    if status == 402:
        endpoint = ROUTES.get(path)
        bucket = endpoint.bucket if endpoint is not None and endpoint.bucket in PLAN_FEATURES else "errors"
        return {"error": PLAN_FEATURES[bucket or "errors"][1]}
    if status == 403:
        return {"error": "This endpoint requires a secret key"}
    if status == 429:
        retry_after = _header(headers, "Retry-After")
        if retry_after is None:
            return {"error": "Rate limit exceeded", "message": _QUOTA_MESSAGE.format(quota=25_000)}
        try:
            seconds = int(retry_after)
        except ValueError:
            seconds = 1
        return {"error": "Too many requests", "retryAfter": seconds}
    if status >= 500:
        return {"error": "Internal server error"}
    if status < 300:
        return {"success": True}
    return {"error": _phrase(status) or f"HTTP {status}"}


_INVALID_DATA: Final = ingest.INVALID_DATA
_NOT_FOUND: Final = Response(
    404, b"404: This page could not be found.", {"Content-Type": "text/html; charset=utf-8"}
)


# --------------------------------------------------------------------------------------------------------
# The server


RouteHandler = Callable[[RecordedRequest], Response]
"""A function that answers an extra route registered with :meth:`SerlaServer.add_route`."""


class SerlaServer:
    """A local Serla server on a background thread.

    Example::

        with SerlaServer(api_keys={"sk_live_test"}) as server:
            client = serla.Serla("sk_live_test", host=server.url)
            ...
            assert server.wait_for_events(1, timeout=5)
            assert server.events[0]["name"] == "signup"

    The real limits are on by default; a test that floods the server on purpose lifts them
    (``rate_limits=False``) or shortens the window (``rate_limit_window=1.0``).

    All public methods are thread-safe.

    Attributes:
        errors: ``POST /api/v1/errors`` (:class:`serla.devtools.errors.ErrorsEndpoint`): its reports.
        llm: ``POST /api/v1/llm`` (:class:`serla.devtools.llm.LlmEndpoint`): its rows.
        flags: ``GET /api/v1/flags`` (:class:`serla.devtools.flags.FlagRoute`): its definitions.
    """

    errors: ErrorsEndpoint
    llm: LlmEndpoint
    flags: FlagRoute

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_keys: Iterable[str] | None = None,
        projects: Iterable[Project] | None = None,
        plan: str | None = None,
        store: Store | None = None,
        rate_limits: bool | Mapping[str, int | None] = True,
        rate_limit_window: float = RATE_LIMIT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        dedupe: bool = False,
        max_body_size: int | None = None,
        max_recorded_requests: int | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """Configure the server. Nothing is bound until :meth:`start`.

        Args:
            host: Interface to bind. An address containing ``:`` is treated as IPv6.
            port: TCP port; ``0`` picks a free one (read it from :attr:`port` after :meth:`start`).
            api_keys: Keys of one project (``"default"``, no plan): ``pk_``-prefixed keys are public, the
                others secret; other keys get 401. With neither ``api_keys`` nor ``projects``, any non-empty
                key is accepted (everything after exactly ``"Bearer "``), all in the ``"default"`` project.
            projects: Projects with their own keys and plans (:class:`~serla.devtools.limits.Project`).
                Limits, quotas, sessions and people are per project, as on the real server.
            plan: The plan of the ``"default"`` project (the one of ``api_keys``, or of any key):
                ``"free"`` brings the 25,000-event monthly quota and the 402 of ``/errors``, ``/llm`` and
                ``/flags``. ``None`` (the default): no quota, every feature.
            store: Where events and identities go. ``None`` uses a fresh :class:`MemoryStore`.
            rate_limits: ``True`` (the default): the real per-minute limits per project and endpoint
                (:data:`~serla.devtools.limits.RATE_LIMITS`: batch 100, events/errors/llm/flags 1,000;
                ``/identify`` none). ``False``: no per-minute limit. A mapping: the real limits with these
                buckets replaced (``None`` lifts one bucket), e.g. ``{"batch": 5}``.
            rate_limit_window: Seconds per fixed window (60 on the real server). A shorter window lets a
                test of a one-minute scenario run in seconds; ``Retry-After`` then counts to its end.
            clock: Monotonic clock in seconds used for rate-limit windows; inject one to step time in tests.
            wall_clock: Clock for ``X-RateLimit-Reset`` and the monthly quota's calendar month.
            dedupe: If ``True``, an events request whose ``X-Idempotency-Key`` was already stored is answered
                with success but not stored again. The real server never dedupes (``False``, the default).
            max_body_size: Reject bodies larger than this many bytes with Vercel's plain-text 413 and close
                the connection. ``None`` (the default) means no cap, like a self-hosted server; the hosted
                service caps at 4.5 MB.
            max_recorded_requests: Keep only the newest this-many :attr:`requests` (``None``: keep all).
            log: Called with one line per handled request and per connection error. ``None`` is silent.

        Raises:
            ValueError: If ``max_body_size`` or ``max_recorded_requests`` is negative, a limit is negative,
                ``rate_limit_window`` is not positive, a key belongs to two projects or two projects share
                an ID.
        """
        for name, value in (
            ("max_body_size", max_body_size),
            ("max_recorded_requests", max_recorded_requests),
        ):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 or None, got {value!r}")
        if rate_limits is True:
            limits: dict[str, int | None] = dict(RATE_LIMITS)
        elif rate_limits is False:
            limits = {}
        else:
            limits = {**RATE_LIMITS, **rate_limits}
        self._host = host
        self._requested_port = port
        self._projects: dict[str, Project] = {}
        self._keys: dict[str, tuple[Project, str]] | None = None
        if api_keys is not None or projects is not None:
            self._keys = {}
            listed = list(projects or ())
            if api_keys is not None:
                keys = list(api_keys)
                listed.insert(
                    0,
                    Project(
                        DEFAULT_PROJECT,
                        keys=[k for k in keys if not k.startswith("pk_")],
                        public_keys=[k for k in keys if k.startswith("pk_")],
                        plan=plan,
                    ),
                )
            for project in listed:
                if project.id in self._projects:
                    raise ValueError(f"two projects have the ID {project.id!r}")
                self._projects[project.id] = project
                for key, scope in [(k, "secret") for k in project.keys] + [
                    (k, "public") for k in project.public_keys
                ]:
                    if key in self._keys:
                        raise ValueError(f"a key belongs to two projects ({project.id!r} and another)")
                    self._keys[key] = (project, scope)
        self._default_project = Project(DEFAULT_PROJECT, plan=plan)
        self._store: Store = MemoryStore() if store is None else store
        self._limiter = RateLimiter(limits, window=rate_limit_window, clock=clock, wall_clock=wall_clock)
        self._clock = clock
        self._wall_clock = wall_clock
        self._dedupe = dedupe
        self._max_body_size = max_body_size
        self._log = log

        self._cond = threading.Condition()  # guards everything below, and every call into the store
        self._requests: deque[RecordedRequest] = deque(maxlen=max_recorded_requests)
        self._request_total = 0
        self._rate_limited = 0
        self._faults: deque[Fault] = deque()
        self._default_fault: Fault | None = None
        self._routes: dict[tuple[str, str], RouteHandler] = {}
        self.flags = FlagRoute(self)  # GET /api/v1/flags, with the real evaluation (serla.devtools.flags)

        self._lifecycle = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._conn_lock = threading.Lock()
        self._conns: dict[threading.Thread, socket.socket] = {}
        from serla.devtools.errors import register as register_errors  # issue 14: POST /api/v1/errors

        self.errors = register_errors(self)
        from serla.devtools.llm import LlmEndpoint  # POST /api/v1/llm, as the real route

        self.llm = LlmEndpoint(self)

    # ---- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> SerlaServer:
        """Bind the socket and serve on a daemon thread named ``serla-server``.

        Returns:
            The server itself, for chaining.

        Raises:
            RuntimeError: If the server was already started (a stopped server can't be restarted).
            OSError: If the address can't be bound.
        """
        with self._lifecycle:
            if self._address is not None:
                raise RuntimeError("SerlaServer can only be started once")
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            httpd = _HTTPServer((self._host, self._requested_port), self, family)
            self._wake_r, self._wake_w = socket.socketpair()
            self._httpd = httpd
            self._address = (self._host, int(httpd.server_address[1]))
            self._thread = threading.Thread(target=self._serve_loop, name="serla-server", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every connection and join the server's threads.

        Requests waiting in a ``delay`` or ``hang`` fault are dropped without a response. Safe to call twice
        and on a server that was never started.

        Args:
            timeout: Upper bound in seconds for joining the threads.
        """
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None or thread is None:
            return
        deadline = time.monotonic() + timeout
        self._stopping.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        thread.join(timeout)
        httpd.server_close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        with self._conn_lock:
            conns = list(self._conns.items())
        for _, sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for conn_thread, _ in conns:
            conn_thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> SerlaServer:
        """Start the server if needed.

        Returns:
            The server itself.
        """
        if self._address is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop the server."""
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port.

        Raises:
            RuntimeError: If the server was never started.
        """
        if self._address is None:
            raise RuntimeError("SerlaServer is not started")
        return self._address[1]

    @property
    def url(self) -> str:
        """The base URL to configure a client with, e.g. ``"http://127.0.0.1:54321"`` (no trailing slash).

        It stays valid after :meth:`stop`, so tests can check "connection refused" handling.

        Raises:
            RuntimeError: If the server was never started.
        """
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    # ---- recorded data -----------------------------------------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """The stored events' wire fields (:attr:`StoredEvent.data`), in arrival order (a new list)."""
        with self._cond:
            stored = self._store.events()
        return [event.data for event in stored]

    @property
    def stored(self) -> list[StoredEvent]:
        """The stored events with their metadata, in arrival order (a new list)."""
        with self._cond:
            return self._store.events()

    @property
    def identities(self) -> dict[str, dict[str, Any]]:
        """Each identified person's merged properties, keyed by ``distinctId`` (a copy)."""
        with self._cond:
            return self._store.identities()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, including rejected and dropped ones, in arrival order (a new list)."""
        with self._cond:
            return list(self._requests)

    @property
    def store(self) -> Store:
        """The store the server writes to."""
        return self._store

    def wait_for_events(self, n: int, timeout: float | None = 5.0) -> bool:
        """Block until at least ``n`` events are stored.

        Args:
            n: The number of stored events to wait for.
            timeout: Seconds to wait at most; ``None`` waits forever.

        Returns:
            ``True`` if ``n`` events are stored, ``False`` on timeout.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._store.event_count() >= n, timeout)

    def wait_for_requests(self, n: int, timeout: float | None = 5.0) -> bool:
        """Block until at least ``n`` requests have arrived (since the last :meth:`clear`).

        A request counts as soon as its body is read, before it is answered, so this also works for
        requests held by a ``delay`` or ``hang`` fault.

        Args:
            n: The number of requests to wait for.
            timeout: Seconds to wait at most; ``None`` waits forever.

        Returns:
            ``True`` if ``n`` requests arrived, ``False`` on timeout.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._request_total >= n, timeout)

    def clear(self) -> None:
        """Forget stored events, identities, recorded requests and rate-limit windows.

        Queued and default faults are kept; see :meth:`clear_faults`.
        """
        with self._cond:
            self._store.clear()
            self._requests.clear()
            self._request_total = 0
            self._rate_limited = 0
            self._limiter.clear()

    # ---- faults ----------------------------------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        """Queue one-shot faults.

        Each request consumes the first queued fault whose :attr:`Fault.path` matches it (``None`` matches
        everything), in FIFO order. Requests that match no queued fault get the default fault, if any.

        Args:
            *faults: Faults to append to the queue.
        """
        with self._cond:
            self._faults.extend(faults)

    def fail_next(
        self,
        n: int,
        status: int,
        headers: Mapping[str, str] | None = None,
        body: FaultBody = None,
        *,
        path: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests with ``status`` instead of processing them.

        Args:
            n: How many requests to fail.
            status: The status code to send.
            headers: Extra response headers (e.g. ``{"Retry-After": "1"}``).
            body: The response body; ``None`` picks a realistic default (see :attr:`Fault.body`).
            path: Only fail requests to this path; ``None`` matches every path.
        """
        fault = Fault(status=status, headers=headers, body=body, path=path)
        self.inject(*([fault] * n))

    def set_default_fault(self, fault: Fault | None) -> None:
        """Apply a fault to every request that matches no queued fault ("endpoint down" tests).

        Args:
            fault: The permanent fault, or ``None`` to go back to normal processing.
        """
        with self._cond:
            self._default_fault = fault

    def clear_faults(self) -> None:
        """Drop every queued fault and the default fault."""
        with self._cond:
            self._faults.clear()
            self._default_fault = None

    @property
    def pending_faults(self) -> list[Fault]:
        """The queued one-shot faults not consumed yet (a new list)."""
        with self._cond:
            return list(self._faults)

    # ---- extension -----------------------------------------------------------------------------------

    def add_route(self, method: str, path: str, handler: RouteHandler) -> None:
        """Serve an extra route (e.g. the ``serla dev`` web page).

        Extra routes are matched after the trailing-slash redirect and before the Serla routes, without
        authentication. ``handler`` runs on a connection thread, outside the server's lock; it may read
        :attr:`events` or :attr:`store`.

        Args:
            method: The HTTP method, e.g. ``"GET"``.
            path: The exact path, without query string.
            handler: Called with the recorded request; returns the response.
        """
        with self._cond:
            self._routes[(method.upper(), path)] = handler

    # ---- request handling (connection threads) -------------------------------------------------------

    def _serve_loop(self) -> None:
        """Accept connections until :meth:`stop` writes to the wake-up socket (serve thread)."""
        httpd = self._httpd
        wake = self._wake_r
        if httpd is None or wake is None:  # pragma: no cover - start() sets both first
            return
        # A custom loop instead of serve_forever(): its shutdown() waits up to poll_interval, which would
        # add up to 0.5 s to every test's teardown.
        with selectors.DefaultSelector() as selector:
            selector.register(httpd.socket, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is httpd.socket and not self._stopping.is_set():
                        httpd.handle_request()  # timeout 0: never blocks if the client went away

    def _track(self, thread: threading.Thread, sock: socket.socket) -> None:
        with self._conn_lock:
            self._conns[thread] = sock

    def _untrack(self, thread: threading.Thread) -> None:
        with self._conn_lock:
            self._conns.pop(thread, None)

    def _emit_log(self, line: str) -> None:
        if self._log is not None:
            # A broken log callback must not break request handling.
            with contextlib.suppress(Exception):
                self._log(line)

    def _take_fault(self, path: str) -> Fault | None:
        """Pop the first queued fault matching ``path``; caller holds ``_cond``."""
        for index, fault in enumerate(self._faults):
            if fault.path is None or fault.path == path:
                del self._faults[index]
                return fault
        return self._default_fault

    def _finish(self, request: RecordedRequest, response: Response | None) -> Response | None:
        with self._cond:
            request.status = 0 if response is None else response.status
        return response

    def handle(self, request: RecordedRequest) -> Response | None:
        """Answer one request as the server would (used by the HTTP loop and by :mod:`serla.testing`).

        Args:
            request: The request, already read off the wire (or built by hand).

        Returns:
            The response, or ``None``: close the connection without one (an injected fault).
        """
        endpoint = ROUTES.get(request.path)
        if endpoint is not None and endpoint.counts_events and request.method == "POST":
            request.event_count = _count_events(request.path, parsed_body(request))
        with self._cond:
            fault = self._take_fault(request.path)
            request.fault = fault
            self._requests.append(request)
            self._request_total += 1
            self._cond.notify_all()
        if fault is not None:
            if fault.delay and self._stopping.wait(fault.delay):
                return self._finish(request, None)
            if fault.hang:
                self._stopping.wait()
                return self._finish(request, None)
            if fault.close_connection:
                return self._finish(request, None)
            if fault.status is not None:
                return self._finish(request, _fault_response(fault, request.path))
        response = self._process(request)
        if response.status == 429:
            with self._cond:
                self._rate_limited += 1
        if fault is not None and fault.store_then_drop:
            return self._finish(request, None)
        return self._finish(request, response)

    def _process(self, request: RecordedRequest) -> Response:
        """Route and answer a request the way the real server does (no faults here)."""
        path, method = request.path, request.method
        if (path != "/" and path.endswith("/")) or "//" in path:
            # Next.js redirects a trailing slash and repeated slashes to the normalised path.
            location = re.sub("/{2,}", "/", path).rstrip("/") or "/"
            if request.query:
                location = f"{location}?{request.query}"
            return Response(308, location.encode("utf-8"), {"Location": location, "Content-Type": TEXT_TYPE})
        with self._cond:
            route = self._routes.get((method, path))
        if route is not None:
            return route(request)
        endpoint = ROUTES.get(path)
        if endpoint is None:
            return _NOT_FOUND
        if method == "OPTIONS":
            return Response(endpoint.preflight_status, b"", endpoint.cors)
        if method not in endpoint.methods:
            return Response(405, b"", {})  # Next.js: no Allow, no CORS headers
        return endpoint.handler(self, request)

    # ---- for endpoint handlers -----------------------------------------------------------------------

    def authorize(
        self,
        request: RecordedRequest,
        *,
        bucket: str | None,
        quota_error: str | None = None,
        query_key: bool = False,
        scope: str | None = None,
        cors: Mapping[str, str] | None = None,
    ) -> Caller | Response:
        """Make the checks the real routes make before reading the body, in their order.

        The key (401 ``Invalid API key``; 403 for a public key when ``scope="secret"``), the plan (402 for
        the plan-gated buckets ``errors``, ``llm``, ``flags``, ``recordings``), the per-minute limit of
        ``bucket`` (429 with ``Retry-After`` and ``X-RateLimit-*``), then the monthly quota (429 without).
        :meth:`authenticate` and :meth:`check_limits` are its two halves, for a route that checks
        something in between.

        Args:
            request: The request.
            bucket: The rate-limit bucket, or ``None`` for a route without limit (``/identify``).
            quota_error: The ``error`` of the quota's 429 (``"Rate limit exceeded"`` on the event routes,
                ``"Monthly limit exceeded"`` on errors/llm); ``None``: the route has no quota check.
            query_key: Accept ``?api_key=`` when the ``Authorization`` header is absent or empty
                (``/events/batch`` only).
            scope: ``"secret"`` when the route needs a secret key (``/export``).
            cors: The route's CORS headers for the 401/402/quota answers (``None``: the ingest routes').

        Returns:
            The :class:`~serla.devtools.wire.Caller`, or the refusal to send.
        """
        caller = self.authenticate(request, query_key=query_key, scope=scope, cors=cors)
        if isinstance(caller, Response):
            return caller
        refused = self.check_limits(caller, bucket=bucket, quota_error=quota_error, cors=cors)
        return caller if refused is None else refused

    def authenticate(
        self,
        request: RecordedRequest,
        *,
        query_key: bool = False,
        scope: str | None = None,
        cors: Mapping[str, str] | None = None,
    ) -> Caller | Response:
        """Find the project of the request's key: the first half of :meth:`authorize` (401, 403).

        Args:
            request: The request.
            query_key: As for :meth:`authorize`.
            scope: As for :meth:`authorize`.
            cors: As for :meth:`authorize`.

        Returns:
            The :class:`~serla.devtools.wire.Caller`, or the refusal to send.
        """
        headers = CORS_HEADERS if cors is None else cors
        header = request.headers.get("authorization") or None
        if header is None and query_key and request.query:
            found = parse_qs(request.query).get("api_key")
            if found and found[0]:
                header = f"Bearer {found[0]}"
        found_key = self._lookup(header)
        if found_key is None:
            return json_response(401, {"error": "Invalid API key"}, headers)
        project, key, key_scope = found_key
        if scope == "secret" and key_scope != "secret":
            return json_response(
                403,
                {
                    "error": "This endpoint requires a secret key",
                    "message": "Public keys (pk_live_...) cannot read data. Create a secret key in "
                    "Settings > API Keys and use it only from a server.",
                },
                headers,
            )
        return Caller(project, key, key_scope)

    def check_limits(
        self,
        caller: Caller,
        *,
        bucket: str | None,
        quota_error: str | None = None,
        cors: Mapping[str, str] | None = None,
    ) -> Response | None:
        """The second half of :meth:`authorize`: the plan (402), the per-minute limit and the quota (429).

        Args:
            caller: From :meth:`authenticate`.
            bucket: As for :meth:`authorize`.
            quota_error: As for :meth:`authorize`.
            cors: As for :meth:`authorize`.

        Returns:
            ``None`` when the request may proceed, else the refusal to send.
        """
        headers = CORS_HEADERS if cors is None else cors
        project = caller.project
        if bucket is not None and not project.allows(bucket):
            return json_response(402, {"error": PLAN_FEATURES[bucket][1]}, headers)
        if bucket is not None:
            with self._cond:
                limited = self._limiter.hit(bucket, project.id)
            if limited is not None:
                return _rate_limited(limited)
        quota = project.quota
        if quota_error is not None and quota is not None:
            accounts = [p.id for p in self._projects.values() if p.account == project.account] or [project.id]
            with self._cond:
                used = self._store.count_events_since(accounts, month_start(self._wall_clock()))
            if used >= quota:
                message = _QUOTA_MESSAGE.format(quota=quota)
                return json_response(429, {"error": quota_error, "message": message}, headers)
        return None

    def _lookup(self, header: str | None) -> tuple[Project, str, str] | None:
        if not header or not header.startswith("Bearer "):
            return None
        key = header[7:]
        if self._keys is None:
            if not key:
                return None
            return self._default_project, key, "public" if key.startswith("pk_") else "secret"
        found = self._keys.get(key)
        if found is None:
            return None
        return found[0], key, found[1]

    @contextlib.contextmanager
    def locked_store(self) -> Iterator[Store]:
        """Use the store under the server's lock; waiters (:meth:`wait_for_events`) are woken afterwards.

        Yields:
            The store.
        """
        with self._cond:
            yield self._store
            self._cond.notify_all()

    @property
    def dedupe(self) -> bool:
        """Whether events requests are deduplicated by ``X-Idempotency-Key`` (never on the real server)."""
        return self._dedupe

    @property
    def rate_limited(self) -> int:
        """How many requests were answered 429 (per-minute limit or quota) since the last :meth:`clear`."""
        with self._cond:
            return self._rate_limited

    @property
    def projects(self) -> dict[str, Project]:
        """The configured projects by ID (empty when any key is accepted)."""
        return dict(self._projects)

    @property
    def plan(self) -> str | None:
        """The plan of the ``"default"`` project (``None``: no quota, every feature)."""
        return self._default_project.plan

    @property
    def rate_limits(self) -> dict[str, int | None]:
        """The per-minute limits by bucket (empty when lifted)."""
        return self._limiter.limits

    @property
    def rate_limit_window(self) -> float:
        """Seconds per rate-limit window."""
        return self._limiter.window


def _rate_limited(limited: Limited) -> Response:
    """The real ``rateLimitResponse``."""
    headers = {
        "X-RateLimit-Limit": str(limited.limit),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(limited.reset_ms),
        "Retry-After": str(limited.retry_after),
        **_RATE_LIMIT_CORS,
    }
    return json_response(429, {"error": "Too many requests", "retryAfter": limited.retry_after}, headers)


def _count_events(path: str, parsed: Any) -> int:
    if path == BATCH_PATH:
        if type(parsed) is dict:
            events = parsed.get("events")
            if type(events) is list:
                return len(events)
        return 0
    if path == EVENTS_PATH and type(parsed) is dict:
        return 1
    return 0


def serve(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> SerlaServer:
    """Create and start a :class:`SerlaServer`.

    Args:
        host: Interface to bind.
        port: TCP port; ``0`` picks a free one.
        **kwargs: Keyword arguments for :class:`SerlaServer`.

    Returns:
        The running server; call :meth:`SerlaServer.stop` (or use it as a context manager) when done.
    """
    return SerlaServer(host, port, **kwargs).start()


# --------------------------------------------------------------------------------------------------------
# HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with named, tracked daemon connection threads and no reverse DNS on bind."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: SerlaServer, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.owner = owner
        super().__init__(address, _Handler)
        self.timeout = 0.0  # handle_request() is only called when the socket is readable

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="serla-server-conn",
            daemon=True,
        )
        self.owner._track(thread, request)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.owner._untrack(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; clients that hang up mid-response are normal here.
        self.owner._emit_log(f"connection error from {client_address}")


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, hands it to :meth:`SerlaServer.handle` and writes the answer."""

    protocol_version = "HTTP/1.1"
    server_version = f"SerlaDev/{__version__}"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are closed after this many seconds

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def log_message(self, format: str, *args: Any) -> None:
        owner = cast(_HTTPServer, self.server).owner
        if owner._log is not None:
            owner._emit_log(f"{self.address_string()} {format % args}")

    def _dispatch(self, method: str) -> None:
        owner = cast(_HTTPServer, self.server).owner
        split = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, raw in self.headers.items():
            key = name.lower()
            value = raw.strip(" \t")
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request = RecordedRequest(
            method=method,
            path=split.path,
            headers=headers,
            body=b"",
            idempotency_key=headers.get("x-idempotency-key") or None,
            query=split.query,
        )
        body = self._read_body(headers, owner, request)
        if body is None:
            return
        request.body = body
        response = owner.handle(request)
        if response is None:
            self.close_connection = True
            return
        self._write(response, method)

    def _read_body(
        self, headers: Mapping[str, str], owner: SerlaServer, request: RecordedRequest
    ) -> bytes | None:
        """Read the request body; on a framing error answer (or drop) and return ``None``."""
        limit = owner._max_body_size
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._read_chunked(limit, owner, request)
        length_header = headers.get("content-length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError(length_header)
        except ValueError:
            self.close_connection = True
            self._write(Response(400, b"Bad Request", {"Content-Type": TEXT_TYPE}), request.method)
            return None
        if limit is not None and length > limit:
            self._reject_too_large(owner, request)
            return None
        body = self.rfile.read(length)
        if len(body) < length:  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def _read_chunked(self, limit: int | None, owner: SerlaServer, request: RecordedRequest) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                return None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if limit is not None and total > limit:
                self._reject_too_large(owner, request)
                return None
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                self.close_connection = True
                return None
            parts.append(chunk)
            self.rfile.readline(65537)  # the CRLF after the chunk

    def _reject_too_large(self, owner: SerlaServer, request: RecordedRequest) -> None:
        # The body is not read, so the connection can't be reused.
        self.close_connection = True
        response = Response(413, _VERCEL_413_BODY, {"Content-Type": TEXT_TYPE})
        request.status = 413
        with owner._cond:
            owner._requests.append(request)
            owner._request_total += 1
            owner._cond.notify_all()
        self._write(response, request.method)

    def _write(self, response: Response, method: str) -> None:
        status = response.status
        lines = [
            f"HTTP/1.1 {status} {_phrase(status)}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
        ]
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                lines.append(f"{name}: {value}")
        body = response.body
        if status == 204 or status == 304 or status < 200:
            body = b""  # these responses must not carry Content-Length or a body
        else:
            lines.append(f"Content-Length: {len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        elif self.request_version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.wfile.write(head if method == "HEAD" else head + body)
        self.log_request(status, len(body))
