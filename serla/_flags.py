"""Feature flags, evaluated by the server (``GET /api/v1/flags``), cached so they never slow the app.

One :class:`FlagClient` per :class:`~serla.Serla` client, created on the first flag call (this module is
not imported by ``import serla``). What it guarantees, and the choices made where the issue is silent:

* **Cache.** One answer (every flag of the project) per ``(distinct_id, properties)`` is kept for the
  server's ``Cache-Control: max-age`` (30 s on Serla; clamped to 1 s .. 1 h; 30 s when absent), in an LRU
  of ``flags_cache_size`` entries. A hit takes the client's lock for a dict lookup and costs a few
  microseconds (``benchmarks/flags_cache_hit.py``). ``properties`` are part of the key as canonical JSON
  (sorted keys), so ``{"a": 1, "b": 2}`` and ``{"b": 2, "a": 1}`` share an entry.
* **Stale while revalidate.** For up to :data:`STALE_SECONDS` after it expired, an entry is still returned
  at once while one background request refreshes it. Past that, the call is a miss.
* **Coalescing.** Concurrent misses for one key share one request; the waiters all get its answer.
* **Bounded waits.** A miss waits at most ``flags_timeout`` (default 1 s) and then returns the caller's
  fallback; the request carries on in the background and fills the cache for the next call.
* **Failures are cached too.** A failed request leaves a failure entry for :data:`FAILURE_TTL` seconds
  (the fallback is returned at once meanwhile), and network errors, timeouts and 5xx answers pause every
  new request for 1, 2, 4 ... up to 30 s (reset by the next success), so an outage costs one request per
  pause rather than one per call. 429 pauses until ``Retry-After`` (at least 1 s); 401 pauses 5 minutes;
  402 (the plan has no feature flags) turns flags off for an hour, with one WARNING. While paused, cached
  answers (fresh or stale) are still served and misses return the fallback immediately.
* **Own threads and connections.** Requests run on up to :data:`MAX_FETCHERS` daemon threads of this
  module, each with its own keep-alive connection: never behind the event backlog of the batch worker,
  and the batch worker never waits for them. Every reason a fallback was returned is counted in
  ``Serla.stats()["flags"]["fallbacks"]`` and logged (at most once a minute per kind).
* **Exposure events** (``send_flag_events=True``; off by default): ``$feature_flag_called`` with
  ``$feature_flag`` and ``$feature_flag_response``, at most once per user, flag and value per cache period
  (max-age), only for values the server answered (never for fallbacks), and only from
  ``get_feature_flag``/``is_feature_enabled`` (``get_all_feature_flags`` sends none).

The HTTP GET goes through the client's transport when it has a ``get(path, headers)`` method, else
through :class:`HttpGetter` (``http.client``, honouring ``host``, ``timeout``, ``ca_bundle`` and the proxy).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import time
import weakref
from collections import OrderedDict, deque
from urllib.parse import quote

from serla._config import log_debug, log_exception, log_warning, warn_limited
from serla._encode import _clean_str, sanitize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Callable, Final, Optional, Union

    from serla._proxy import Proxy

    FlagValue = Union[bool, str]

FLAGS_PATH: Final = "/api/v1/flags"
DEFAULT_MAX_AGE: Final = 30.0
"""Seconds an answer is fresh when the server sends no ``max-age``."""
MIN_MAX_AGE: Final = 1.0
MAX_MAX_AGE: Final = 3600.0
STALE_SECONDS: Final = 300.0
"""How long after expiring an answer is still served while a refresh runs (or fails)."""
FAILURE_TTL: Final = 5.0
"""How long a failed request's outcome is remembered for its key (the fallback is returned meanwhile)."""
BACKOFF_MAX: Final = 30.0
"""The longest pause after consecutive network errors, timeouts or 5xx answers."""
UNAUTHORIZED_PAUSE: Final = 300.0
PLAN_PAUSE: Final = 3600.0
MAX_FETCHERS: Final = 4
"""Threads making flag requests in parallel (each with its own connection)."""
FETCHER_IDLE_EXIT: Final = 60.0
"""Seconds a fetcher thread waits for work before it ends (and closes its connection)."""
MAX_QUEUED: Final = 256
"""Keys waiting for a fetcher; a miss beyond that returns the fallback at once (reason ``busy``)."""
MAX_PROPERTIES_BYTES: Final = 6000
"""The largest ``properties`` JSON sent (8,000 characters of base64url in the query string)."""
MAX_DISTINCT_ID: Final = 500
"""The longest ``distinct_id`` sent: with the properties, a request line stays well under the 16 KB of
headers Node accepts (a longer one would be refused, or its connection reset, for every user)."""
EXPOSURE_EVENT: Final = "$feature_flag_called"


class _Entry:
    """One cached answer (``flags``) or failure (``flags is None``, with ``reason``)."""

    __slots__ = ("expires", "flags", "max_age", "reason", "retry_at", "stale_until")

    def __init__(
        self,
        flags: Optional[dict[str, FlagValue]],
        expires: float,
        stale_until: float,
        reason: Optional[str] = None,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self.flags = flags
        self.expires = expires
        self.stale_until = stale_until
        self.reason = reason
        self.retry_at = 0.0  # no background refresh before this (set after a failed refresh)
        self.max_age = max_age


class _Pending:
    """A request in flight for one key; every caller that misses on that key waits for it."""

    __slots__ = ("callbacks", "done", "flags", "reason")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.flags: Optional[dict[str, FlagValue]] = None
        self.reason: Optional[str] = None
        self.callbacks: list[Callable[[], None]] = []


class GetResult:
    """What one GET returned (the shape of the transport's ``SendResult``, with headers).

    Attributes:
        status: The HTTP status, or ``None`` when no response arrived.
        body: The response body.
        headers: Response headers, lower-case names.
        retry_after: The ``Retry-After`` header, if any.
        error: The network error when ``status`` is ``None``.
    """

    __slots__ = ("body", "error", "headers", "retry_after", "status")

    def __init__(
        self,
        status: Optional[int],
        body: bytes = b"",
        headers: Optional[dict[str, str]] = None,
        error: Optional[str] = None,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.retry_after = self.headers.get("retry-after")
        self.error = error


class HttpGetter:
    """GETs from one Serla host over a keep-alive ``http.client`` connection (one per fetcher thread).

    Args:
        host: The base URL (a path prefix is kept).
        api_key: Sent as ``Authorization: Bearer <key>``.
        timeout: Socket timeout (connect and each read), seconds.
        ca_bundle: A PEM bundle to trust instead of the system's CAs.
        proxy: The HTTP proxy to go through (``None``: direct); https goes through a ``CONNECT`` tunnel.
    """

    def __init__(
        self,
        host: str,
        api_key: str,
        timeout: float,
        ca_bundle: Optional[str] = None,
        proxy: Optional[Proxy] = None,
    ) -> None:
        from serla._config import split_host
        from serla._transport import USER_AGENT

        scheme, netloc, hostname, path = split_host(host)
        self._https = scheme == "https"
        self._hostname = hostname
        port_text = netloc.rpartition("]")[2] if netloc.startswith("[") else netloc
        port_text = port_text.partition(":")[2]
        self._port = int(port_text) if port_text else (443 if self._https else 80)
        self._prefix = path.rstrip("/")
        self._timeout = timeout
        self._ca_bundle = ca_bundle
        self._proxy = proxy
        self._origin = ""
        if proxy is not None and not self._https:
            self._origin = f"http://{netloc}"
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Accept-Encoding": "identity",
        }
        if proxy is not None and not self._https and proxy.authorization:
            self._headers["Proxy-Authorization"] = proxy.authorization
        self._api_key = api_key
        self._conn: Any = None
        self._ssl_context: Any = None

    def _connect(self) -> Any:
        import http.client

        proxy = self._proxy
        if proxy is not None and proxy.error is not None:
            raise OSError(proxy.error)
        if self._https:
            ctx = self._ssl_context
            if ctx is None:  # once per getter: loading the CA store costs milliseconds
                import ssl

                ctx = self._ssl_context = ssl.create_default_context(cafile=self._ca_bundle)
            if proxy is None:
                return http.client.HTTPSConnection(
                    self._hostname, self._port, timeout=self._timeout, context=ctx
                )
            conn = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=self._timeout, context=ctx)
            tunnel_headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
            conn.set_tunnel(self._hostname, self._port, headers=tunnel_headers)
            return conn
        if proxy is None:
            return http.client.HTTPConnection(self._hostname, self._port, timeout=self._timeout)
        return http.client.HTTPConnection(proxy.host, proxy.port, timeout=self._timeout)

    def get(self, path: str, headers: Mapping[str, str]) -> GetResult:
        """GET ``path`` (with its query, relative to the host); never raises.

        A keep-alive connection the server closed while idle is retried once on a fresh one.
        """
        all_headers = {**self._headers, **headers}
        for attempt in (0, 1):
            reused = self._conn is not None
            try:
                if self._conn is None:
                    self._conn = self._connect()
                conn = self._conn
                conn.request("GET", f"{self._origin}{self._prefix}{path}", headers=all_headers)
                response = conn.getresponse()
                body = response.read(64 * 1024)
                result_headers = {k.lower(): v for k, v in response.getheaders()}
                if response.will_close or len(body) == 64 * 1024:
                    self.close()
                return GetResult(response.status, body, result_headers)
            except Exception as exc:
                self.close()
                stale = reused and attempt == 0 and isinstance(exc, (ConnectionError, _remote_closed()))
                if not stale:
                    message = f"{type(exc).__name__}: {exc}".replace(self._api_key, "[api key]")
                    return GetResult(None, error=message)
        return GetResult(None, error="unreachable")  # pragma: no cover - the loop always returns

    def close(self) -> None:
        """Close the connection (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _remote_closed() -> type[Exception]:
    import http.client

    return http.client.RemoteDisconnected


def is_enabled_value(value: object) -> bool:
    """serla-js's reading of a flag value as on/off: anything but ``False``, ``""``, ``"off"``, ``None``."""
    return value is not None and value is not False and value != "" and value != "off"


def properties_json(properties: Optional[Mapping[str, Any]]) -> str:
    """The canonical JSON of ``properties`` (sorted keys, compact; ``""`` for none): the cache key part.

    Raises:
        TypeError: When ``properties`` is not a mapping.
    """
    if not properties and (properties is None or hasattr(properties, "keys")):
        return ""
    if not hasattr(properties, "keys"):
        raise TypeError(f"properties must be a dict, not {type(properties).__name__}")
    if type(properties) is dict:  # the fast path: plain JSON values need no sanitising
        try:
            text = _dumps(properties)
            if "\\u0000" not in text:
                text.encode("utf-8")  # a lone surrogate raises: sanitise it below
                return text
        except (TypeError, ValueError, RecursionError):
            pass
    return _dumps(sanitize(dict(properties)))


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def flags_path(distinct_id: str, props_json: str) -> str:
    """``/api/v1/flags?distinct_id=...&properties=<base64url JSON>`` (properties left out when empty)."""
    # NULs dropped and lone surrogates made U+FFFD, as in events (the same user on both sides).
    path = f"{FLAGS_PATH}?distinct_id={quote(_clean_str(distinct_id), safe='')}"
    if props_json:
        encoded = base64.urlsafe_b64encode(props_json.encode("utf-8")).rstrip(b"=").decode("ascii")
        path += f"&properties={encoded}"
    return path


def parse_max_age(cache_control: Optional[str]) -> float:
    """Seconds of freshness from a ``Cache-Control`` value, clamped to 1 s .. 1 h (30 s when absent)."""
    if not cache_control:
        return DEFAULT_MAX_AGE
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "max-age":
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                return DEFAULT_MAX_AGE
            return min(max(seconds, MIN_MAX_AGE), MAX_MAX_AGE)
    return DEFAULT_MAX_AGE


def parse_flags(body: bytes) -> Optional[dict[str, FlagValue]]:
    """The ``flags`` map of a 200 answer, or ``None`` if the body is not one. Odd values are left out."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("flags"), dict):
        return None
    return {k: v for k, v in data["flags"].items() if isinstance(v, (bool, str))}


def _retry_after_seconds(value: Optional[str]) -> float:
    try:
        seconds = float(value) if value is not None else 60.0
    except ValueError:
        seconds = 60.0
    return min(max(seconds, 1.0), 3600.0) if seconds == seconds else 60.0


_instances: weakref.WeakSet[FlagClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_instances):
        client._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FlagClient:
    """The flag cache and its fetcher threads (see the module docstring). Thread-safe; never raises.

    Args:
        getter_factory: Makes one getter (an object with ``get(path, headers)`` and ``close()``) per
            fetcher thread.
        flags_timeout: The longest a miss waits, seconds.
        cache_size: The most ``(distinct_id, properties)`` answers kept.
        track: Called as ``track(event, distinct_id, properties)`` for exposure events.
        send_events: Send ``$feature_flag_called`` exposure events.
        clock: A monotonic clock, seconds (inject one in tests).
    """

    def __init__(
        self,
        getter_factory: Callable[[], Any],
        *,
        flags_timeout: float = 1.0,
        cache_size: int = 10_000,
        track: Optional[Callable[[str, str, dict[str, Any]], Any]] = None,
        send_events: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._getter_factory = getter_factory
        self._timeout = flags_timeout
        self._cache_size = cache_size
        self._track = track
        self._send_events = send_events
        self._clock = clock
        self._local: Optional[dict[str, dict[str, FlagValue]]] = None  # serla.testing's values
        self._init_state()
        _instances.add(self)

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # fetchers wait here for jobs
        self._settled = threading.Condition(self._lock)  # wait_idle() waits here
        self._cache: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._inflight: dict[tuple[str, str], _Pending] = {}
        self._jobs: deque[tuple[tuple[str, str], _Pending]] = deque()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False
        self._hold_until = 0.0
        self._hold_reason: Optional[str] = None
        self._failures = 0  # consecutive network errors / timeouts / 5xx
        self._plan_warned = False
        self._no_id_warned = False
        self._exposed: OrderedDict[tuple[str, str, FlagValue], float] = OrderedDict()
        self._counts = {
            "requests": 0,
            "cache_hits": 0,
            "cache_misses": 0,
            "stale_served": 0,
            "coalesced": 0,
            "exposure_events": 0,
        }
        self._fallbacks: dict[str, int] = {}
        self._last_error: Optional[str] = None
        self._max_age = DEFAULT_MAX_AGE

    def _reset_after_fork(self) -> None:
        """In a forked child: the parent's threads, lock and in-flight requests are not ours."""
        cache = self._cache
        local = self._local
        self._init_state()
        self._cache = cache  # answers stay valid; the connections were the parent's
        self._local = local

    # -- the public operations (called by ``Serla``) -----------------------------------------------------

    def get_flag(
        self,
        key: str,
        fallback: Any,
        distinct_id: Optional[str],
        properties: Optional[Mapping[str, Any]],
    ) -> Any:
        """The flag's value for the user, or ``fallback``; never raises, waits at most ``flags_timeout``."""
        try:
            flags, reason, pending, user = self._begin(distinct_id, properties)
            if pending is not None:
                flags, reason = self._wait(pending)
            return self._pick(key, fallback, user, flags, reason)
        except Exception:
            self._count_fallback("internal_error")
            _warn_exc("serla: get_feature_flag() failed unexpectedly; returning the fallback")
            return fallback

    def is_enabled(
        self, key: str, distinct_id: Optional[str], properties: Optional[Mapping[str, Any]]
    ) -> bool:
        """:func:`is_enabled_value` of :meth:`get_flag` with ``False`` as the fallback."""
        return is_enabled_value(self.get_flag(key, False, distinct_id, properties))

    async def ais_enabled(
        self, key: str, distinct_id: Optional[str], properties: Optional[Mapping[str, Any]]
    ) -> bool:
        """:meth:`is_enabled` for asyncio."""
        return is_enabled_value(await self.aget_flag(key, False, distinct_id, properties))

    def get_all(self, distinct_id: Optional[str], properties: Optional[Mapping[str, Any]]) -> dict[str, Any]:
        """Every flag for the user (a copy), or ``{}``; never raises."""
        try:
            flags, reason, pending, _user = self._begin(distinct_id, properties)
            if pending is not None:
                flags, reason = self._wait(pending)
            if flags is None:
                self._count_fallback(reason or "unknown")
                return {}
            return dict(flags)
        except Exception:
            self._count_fallback("internal_error")
            _warn_exc("serla: get_all_feature_flags() failed unexpectedly; returning {}")
            return {}

    async def aget_flag(
        self,
        key: str,
        fallback: Any,
        distinct_id: Optional[str],
        properties: Optional[Mapping[str, Any]],
    ) -> Any:
        """:meth:`get_flag` for asyncio: a miss is awaited, never blocking the event loop."""
        try:
            flags, reason, pending, user = self._begin(distinct_id, properties)
            if pending is not None:
                flags, reason = await self._await(pending)
            return self._pick(key, fallback, user, flags, reason)
        except Exception:
            self._count_fallback("internal_error")
            _warn_exc("serla: aget_feature_flag() failed unexpectedly; returning the fallback")
            return fallback

    async def aget_all(
        self, distinct_id: Optional[str], properties: Optional[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """:meth:`get_all` for asyncio."""
        try:
            flags, reason, pending, _user = self._begin(distinct_id, properties)
            if pending is not None:
                flags, reason = await self._await(pending)
            if flags is None:
                self._count_fallback(reason or "unknown")
                return {}
            return dict(flags)
        except Exception:
            self._count_fallback("internal_error")
            _warn_exc("serla: aget_all_feature_flags() failed unexpectedly; returning {}")
            return {}

    def set_local(self, values: Optional[Mapping[str, FlagValue]], distinct_id: Optional[str] = None) -> None:
        """Answer from ``values`` instead of the server (for ``serla.testing``).

        ``set_local(None)`` goes back to the server.

        Args:
            values: Flag key -> value. With ``distinct_id``, for that user only (merged over the values
                for every user); without, for every user.
            distinct_id: The user, or ``None`` for everyone.
        """
        with self._lock:
            if values is None and distinct_id is None:
                self._local = None
                return
            local = dict(self._local or {})
            local[distinct_id or ""] = dict(values or {})
            self._local = local

    def stats(self) -> dict[str, Any]:
        """Counters: requests, cache hits/misses, stale answers served, coalesced waits, fallbacks by reason.

        Also ``cached`` (entries), ``in_flight``, ``paused`` (the reason new requests are paused, or
        ``None``), ``paused_for`` (seconds left) and ``last_error``.
        """
        with self._lock:
            now = self._clock()
            paused = self._hold_reason if now < self._hold_until else None
            return {
                **self._counts,
                "fallbacks": dict(self._fallbacks),
                "cached": len(self._cache),
                "in_flight": len(self._inflight),
                "paused": paused,
                "paused_for": round(self._hold_until - now, 3) if paused else 0.0,
                "last_error": self._last_error,
            }

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no flag request is in flight (for tests and benchmarks); False on timeout."""
        with self._lock:
            return self._settled.wait_for(lambda: not self._inflight, timeout)

    def clear(self) -> None:
        """Forget every cached answer and pause (the next call of each user makes a request)."""
        with self._lock:
            self._cache.clear()
            self._exposed.clear()
            self._hold_until = 0.0
            self._hold_reason = None
            self._failures = 0

    def close(self) -> None:
        """Stop the fetcher threads (they finish the request in hand) and forget the cache."""
        with self._cond:
            self._closed = True
            jobs = list(self._jobs)
            self._jobs.clear()
            self._cond.notify_all()
        for cache_key, pending in jobs:
            self._finish(cache_key, pending, None, "shutdown")

    # -- the cache ---------------------------------------------------------------------------------------

    def _begin(
        self, distinct_id: Optional[str], properties: Optional[Mapping[str, Any]]
    ) -> tuple[Optional[dict[str, FlagValue]], Optional[str], Optional[_Pending], str]:
        """Look up the cache: ``(flags, reason, pending, distinct_id)``; wait on ``pending`` if set."""
        if distinct_id is None:
            from serla._context import get_distinct_id

            distinct_id = get_distinct_id()
            if distinct_id is None:
                return None, self._no_distinct_id(), None, ""
        if type(distinct_id) is not str or not distinct_id or len(distinct_id) > MAX_DISTINCT_ID:
            warn_limited(
                "flags_invalid_call",
                "serla: feature flag call with distinct_id=%.80r: a non-empty string of at most %d "
                "characters is needed; returning the fallback",
                distinct_id,
                MAX_DISTINCT_ID,
            )
            return None, "invalid_call", None, ""
        local = self._local
        if local is not None:
            merged = {**local.get("", {}), **local.get(distinct_id, {})}
            return merged, None, None, distinct_id
        props = ""
        if properties is not None:
            try:
                props = properties_json(properties)
            except TypeError as exc:
                warn_limited("flags_invalid_call", "serla: feature flag call dropped: %s", exc)
                return None, "invalid_call", None, distinct_id
        if len(props) > MAX_PROPERTIES_BYTES and len(props.encode("utf-8")) > MAX_PROPERTIES_BYTES:
            warn_limited(
                "flags_too_large",
                "serla: feature flag properties are over %d bytes of JSON; returning the fallback",
                MAX_PROPERTIES_BYTES,
            )
            return None, "properties_too_large", None, distinct_id
        cache_key = (distinct_id, props)
        with self._lock:
            now = self._clock()
            entry = self._cache.get(cache_key)
            if entry is not None:
                if now < entry.expires:
                    if entry.flags is not None:
                        self._cache.move_to_end(cache_key)
                        self._counts["cache_hits"] += 1
                        return entry.flags, None, None, distinct_id
                    return None, entry.reason, None, distinct_id
                if entry.flags is not None and now < entry.stale_until:
                    self._counts["stale_served"] += 1
                    self._cache.move_to_end(cache_key)
                    if now >= entry.retry_at and now >= self._hold_until and cache_key not in self._inflight:
                        self._enqueue(cache_key)
                    return entry.flags, None, None, distinct_id
            self._counts["cache_misses"] += 1
            if now < self._hold_until:
                return None, self._hold_reason, None, distinct_id
            pending = self._inflight.get(cache_key)
            if pending is not None:
                self._counts["coalesced"] += 1
                return None, None, pending, distinct_id
            pending = self._enqueue(cache_key)
            if pending is None:
                return None, "shutdown" if self._closed else "busy", None, distinct_id
            return None, None, pending, distinct_id

    def _no_distinct_id(self) -> str:
        if not self._no_id_warned:
            self._no_id_warned = True
            log_warning(
                "serla: feature flag call without distinct_id and none set in the context "
                "(serla.set_distinct_id()); returning the fallback (said once)"
            )
        return "no_distinct_id"

    def _enqueue(self, cache_key: tuple[str, str]) -> Optional[_Pending]:
        """Queue a request for ``cache_key`` (the caller holds the lock); ``None`` when the queue is full."""
        if self._closed or len(self._jobs) >= MAX_QUEUED:
            return None
        pending = _Pending()
        self._inflight[cache_key] = pending
        self._jobs.append((cache_key, pending))
        if self._idle == 0 and len(self._threads) < MAX_FETCHERS:
            thread = threading.Thread(target=self._run, name="serla-flags", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # interpreter shutdown: no new threads
                del self._inflight[cache_key]
                self._jobs.pop()
                return None
            self._threads.append(thread)
        else:
            self._cond.notify()
        return pending

    def _wait(self, pending: _Pending) -> tuple[Optional[dict[str, FlagValue]], Optional[str]]:
        if not pending.done.wait(self._timeout):
            self._warn_timeout()
            return None, "timeout"
        return pending.flags, pending.reason

    def _warn_timeout(self) -> None:
        warn_limited(
            "flags_wait",
            "serla: no feature flag answer within flags_timeout=%g s; returning the fallback "
            "(the answer fills the cache when it comes)",
            self._timeout,
        )

    async def _await(self, pending: _Pending) -> tuple[Optional[dict[str, FlagValue]], Optional[str]]:
        import asyncio

        if pending.done.is_set():
            return pending.flags, pending.reason
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            def settle() -> None:
                if not future.done():
                    future.set_result(None)

            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(settle)

        with self._lock:
            if not pending.done.is_set():
                pending.callbacks.append(wake)
                waiting = True
            else:
                waiting = False
        if waiting:
            try:
                await asyncio.wait_for(future, self._timeout)
            except asyncio.TimeoutError:
                self._warn_timeout()
                return None, "timeout"
        return pending.flags, pending.reason

    def _pick(
        self,
        key: str,
        fallback: Any,
        distinct_id: str,
        flags: Optional[dict[str, FlagValue]],
        reason: Optional[str],
    ) -> Any:
        if flags is None:
            self._count_fallback(reason or "unknown")
            return fallback
        value = flags.get(key, _MISSING)
        if value is _MISSING:
            self._count_fallback("unknown_flag")
            return fallback
        if self._send_events and self._track is not None and self._local is None:
            self._expose(distinct_id, key, value)  # type: ignore[arg-type]
        return value

    def _expose(self, distinct_id: str, key: str, value: FlagValue) -> None:
        now = self._clock()
        mark = (distinct_id, key, value)
        with self._lock:
            until = self._exposed.get(mark)
            if until is not None and now < until:
                return
            self._exposed[mark] = now + self._max_age  # the cache period of the last answer
            self._exposed.move_to_end(mark)
            while len(self._exposed) > self._cache_size:
                self._exposed.popitem(last=False)
            self._counts["exposure_events"] += 1
        assert self._track is not None
        self._track(EXPOSURE_EVENT, distinct_id, {"$feature_flag": key, "$feature_flag_response": value})

    def _count_fallback(self, reason: str) -> None:
        with self._lock:
            self._fallbacks[reason] = self._fallbacks.get(reason, 0) + 1

    # -- the fetcher threads -----------------------------------------------------------------------------

    def _run(self) -> None:
        getter: Any = None
        try:
            while True:
                with self._cond:
                    while not self._jobs and not self._closed:
                        self._idle += 1
                        woken = self._cond.wait(FETCHER_IDLE_EXIT)
                        self._idle -= 1
                        if not woken and not self._jobs:
                            return  # idle: the next miss starts a thread again
                    if self._closed:
                        return
                    cache_key, pending = self._jobs.popleft()
                    held = self._hold_reason if self._clock() < self._hold_until else None
                    if held is None:
                        self._counts["requests"] += 1
                if held is not None:
                    self._finish(cache_key, pending, None, held)
                    continue
                try:
                    if getter is None:
                        getter = self._getter_factory()
                    result = getter.get(flags_path(*cache_key), {})
                except Exception as exc:  # a getter must not raise, but a thread must not die
                    result = GetResult(None, error=f"{type(exc).__name__}: {exc}")
                try:
                    self._handle(cache_key, pending, result)
                except Exception:  # pragma: no cover - a bug: the waiters must still be woken
                    log_exception("serla: unexpected error handling a feature flag answer")
                    self._finish(cache_key, pending, None, "internal_error")
        finally:
            if getter is not None:
                with contextlib.suppress(Exception):
                    getter.close()
            with self._lock:
                current = threading.current_thread()
                if current in self._threads:
                    self._threads.remove(current)

    def _handle(self, cache_key: tuple[str, str], pending: _Pending, result: Any) -> None:
        status = result.status
        if status == 200:
            flags = parse_flags(result.body)
            if flags is not None:
                headers = getattr(result, "headers", None) or {}
                max_age = parse_max_age(_header(headers, "cache-control"))
                self._finish(cache_key, pending, flags, None, max_age)
                return
            self._fail(
                cache_key, pending, "bad_response", f"HTTP 200 with an unexpected body {result.body[:100]!r}"
            )
            return
        if status is None:
            error = str(result.error)
            reason = (
                "timeout" if "timed out" in error.lower() or "timeout" in error.lower() else "network_error"
            )
            self._fail(cache_key, pending, reason, error, backoff=True)
        elif status == 402:
            with self._lock:
                first = not self._plan_warned
                self._plan_warned = True
            if first:
                log_warning(
                    "serla: feature flags are not in this project's plan (HTTP 402: Hobby plan or above); "
                    "every flag call returns its fallback, without requests, for the next hour"
                )
            self._fail(cache_key, pending, "plan", "HTTP 402", pause=PLAN_PAUSE)
        elif status == 401:
            warn_limited(
                "flags_401",
                "serla: the API key was refused for feature flags (HTTP 401); fallbacks for 5 minutes",
            )
            self._fail(cache_key, pending, "unauthorized", "HTTP 401", pause=UNAUTHORIZED_PAUSE)
        elif status == 429:
            seconds = _retry_after_seconds(result.retry_after)
            warn_limited(
                "flags_429",
                "serla: the project's feature flag rate limit is used up (HTTP 429); cached answers and "
                "fallbacks for %.0f s",
                seconds,
            )
            error = f"HTTP 429 (Retry-After {result.retry_after})"
            self._fail(cache_key, pending, "rate_limited", error, pause=seconds)
        elif status >= 500:
            self._fail(
                cache_key, pending, "server_error", f"HTTP {status} {result.body[:100]!r}", backoff=True
            )
        else:
            self._fail(cache_key, pending, "bad_status", f"HTTP {status} {result.body[:100]!r}")

    def _fail(
        self,
        cache_key: tuple[str, str],
        pending: _Pending,
        reason: str,
        error: str,
        *,
        backoff: bool = False,
        pause: float = 0.0,
    ) -> None:
        with self._lock:
            now = self._clock()
            self._last_error = error
            if backoff:
                self._failures += 1
                pause = min(2.0 ** (self._failures - 1), BACKOFF_MAX)
            if pause:
                until = now + pause
                if until > self._hold_until or self._hold_reason != reason:
                    self._hold_until, self._hold_reason = until, reason
        if reason in ("timeout", "network_error", "server_error", "bad_response", "bad_status"):
            warn_limited(
                "flags_" + reason, "serla: feature flag request failed (%s); fallbacks meanwhile", error
            )
        log_debug("serla: feature flag request for %r failed: %s", cache_key[0], error)
        self._finish(cache_key, pending, None, reason)

    def _finish(
        self,
        cache_key: tuple[str, str],
        pending: _Pending,
        flags: Optional[dict[str, FlagValue]],
        reason: Optional[str],
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        with self._lock:
            now = self._clock()
            old = self._cache.get(cache_key)
            if flags is not None:
                self._failures = 0
                self._max_age = max_age
                self._cache[cache_key] = _Entry(
                    flags, now + max_age, now + max_age + STALE_SECONDS, None, max_age
                )
            elif old is not None and old.flags is not None:
                old.retry_at = now + FAILURE_TTL  # keep serving the last answer; retry later
            else:
                self._cache[cache_key] = _Entry(None, now + FAILURE_TTL, now + FAILURE_TTL, reason)
            self._cache.move_to_end(cache_key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            if self._inflight.get(cache_key) is pending:
                del self._inflight[cache_key]
                if not self._inflight:
                    self._settled.notify_all()
            pending.flags, pending.reason = flags, reason
            pending.done.set()
            callbacks, pending.callbacks = pending.callbacks, []
        for callback in callbacks:
            with contextlib.suppress(Exception):  # they only schedule on a loop
                callback()


_MISSING: Final = object()


def _header(headers: Any, name: str) -> Optional[str]:
    try:
        value = headers.get(name)
        if value is None:
            for k, v in headers.items():
                if k.lower() == name:
                    return str(v)
        return None if value is None else str(value)
    except Exception:
        return None


def _warn_exc(msg: str) -> None:
    from serla._config import serla_log

    log = serla_log()
    if log is not None:
        log.logger.warning(msg, exc_info=True)


def getter_factory(
    transport_factory: Callable[[], Any],
    host: str,
    api_key: str,
    timeout: float,
    ca_bundle: Optional[str],
) -> Callable[[], Any]:
    """The getter factory of a client: its transport when that has ``get()``, else :class:`HttpGetter`.

    The seam to unify once the transport speaks GET: each fetcher thread gets a fresh getter. The
    :class:`HttpGetter` goes through the proxy the client's transport was given (resolved once per client
    from the ``proxy`` option or the environment).
    """

    def make() -> Any:
        transport = transport_factory()
        if callable(getattr(transport, "get", None)):
            return transport
        proxy = getattr(transport, "_proxy", None)
        with contextlib.suppress(Exception):
            transport.close()
        return HttpGetter(host, api_key, timeout, ca_bundle, proxy)

    return make
