"""The :class:`Serla` client: the public facade over the encoder and the delivery pipeline."""

from __future__ import annotations

import atexit
import sys
from _collections_abc import Mapping

from serla._config import (
    DEFAULT_HOST,
    DEFAULT_MAX_BUFFER_BYTES,
    DEFAULT_SPOOL_MAX_BYTES,
    Config,
    add_null_handler,
    env_disabled,
    log_debug,
    log_warning,
    resolve_proxy,
    serla_log,
    warn_limited,
)
from serla._encode import MAX_EVENT_BYTES, encode, encode_event, format_timestamp, sanitize, utc_now

# ``import serla`` loads this module, so it imports only what ``track()`` needs. The worker (and with it
# ``threading``) is imported when a client is created; the HTTP transport and the retry policy on the
# first send; ``logging`` only once something has loaded it (see ``serla._config.serla_log``).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

    from serla._encode import Timestamp
    from serla._retry import RetryPolicy
    from serla._transport import Transport

IDENTIFY_PATH = "/api/v1/identify"
_MAX_IDENTIFY_ID = 256


def _build_deferred(
    event: str,
    distinct_id: str,
    build_properties: Callable[[], dict[str, Any]],
    epoch_seconds: Optional[float],
    ts: Optional[str],
) -> bytes | None:
    """The JSON of a :meth:`Serla._track_deferred` event, built on the flusher thread; None drops it."""
    stamp = ts if ts is not None else format_timestamp(epoch_seconds)
    if stamp is None:
        return None
    return encode_event(event, distinct_id, stamp, build_properties())


class Serla:
    """A Serla client: ``track()`` queues events, one background thread delivers them in batches.

    Create one per process and reuse it. ``track()`` never raises and never does I/O: it checks the
    call, encodes the event on the spot (so later changes to your ``properties`` dict change nothing) and
    appends the bytes to a bounded buffer. A daemon thread, started on the first ``track()``, POSTs them
    to ``{host}/api/v1/events/batch`` as soon as ``batch_size`` events wait, and otherwise every
    ``flush_interval_seconds``. A request carries at most ``batch_size`` events; while the project is rate
    limited (a 429 with ``Retry-After``), up to 100, the server's cap, until the backlog is gone.

    Memory is bounded two ways. While the endpoint is *down* (network errors, timeouts, 5xx, a refused
    key, the monthly quota), at most ``max_queue_size`` events are held, as the 0.1.0 README promises:
    nobody knows when it comes back. While it is *up* but slow, or rate limiting with ``Retry-After``, the
    data is deliverable and the server says when: then the bound is ``max_buffer_bytes`` of encoded
    events (64 MiB by default: a burst of 200,000 typical events is accepted whole). Past a bound, events
    are dropped, counted in ``stats()["dropped"]["queue_full"]`` and warned about. ``track()`` never waits
    unless you opt in with ``block_on_full_seconds``.

    Args:
        api_key: Your project's API key (``sk_live_...`` or ``pk_live_...``).
        host: Base URL of the Serla deployment. A trailing slash is removed; a path prefix is kept.
            Plain ``http://`` is meant for a local server: for any other host it logs a warning.
        flush_interval_seconds: The longest an event waits in the buffer before it is sent.
        batch_size: The most events a request carries (the interval and ``flush()`` also trigger a
            send, with fewer). While the project is rate limited (429 with ``Retry-After``), requests
            carry up to 100 until the backlog is gone: the server's 100 requests a minute, not the event
            count, is then the limit. Values above 100 are lowered to 100, with a warning. For a fleet of
            processes sharing one project, ``batch_size=100`` makes the fewest requests.
        debug: Set the ``serla`` logger to DEBUG and attach a stderr handler to it.
        flush_on_exit: Register an ``atexit`` hook that flushes (bounded by ``shutdown_timeout``). The
            client stays usable after it, for hooks that run later (``logging.shutdown``, an
            OpenTelemetry provider's shutdown).
        max_queue_size: The most events held in memory (buffered + in flight) while the endpoint is down.
            Further events are refused, counted in ``stats()["dropped"]["queue_full"]`` and warned about.
        max_buffer_bytes: The most bytes of encoded events held while the endpoint is up but slow or
            rate limited (each event is charged its JSON plus 48 bytes of overhead).
        timeout: Seconds allowed for each HTTP request (connect and each read): bounds ``identify()`` and
            every batch POST.
        shutdown_timeout: How long the exit hook may spend delivering, in seconds (default 10: against
            an endpoint that is down, four attempts (1 + 2 + 4 s of backoff) fit; a script is not held
            noticeably longer than the outage's first retries). A backlog that needs longer (a rate-limited
            burst: 10,000 events a minute) wants ``shutdown(timeout=None)``.
        block_on_full_seconds: Opt-in backpressure (default 0: ``track()`` never waits). When the queue
            is full *and deliveries are succeeding*, ``track()`` waits up to this long for room instead
            of dropping. While the endpoint fails it never waits.
        ca_bundle: Path to a PEM file of CA certificates to trust instead of the system's. Certificate
            verification itself cannot be turned off.
        proxy: An HTTP proxy URL (``http://[user:password@]host:port``) for every request of this client;
            ``""`` connects directly. ``None`` (the default) reads ``https_proxy``/``HTTPS_PROXY`` (or
            ``http_proxy``/``HTTP_PROXY`` for an http host) and ``no_proxy``/``NO_PROXY`` once, here,
            the way ``urllib`` does. An https host is reached through a ``CONNECT`` tunnel, TLS inside.
        capture_trace_context: When OpenTelemetry is already imported and a span is active, add its
            ``trace_id`` and ``span_id`` (hex) to the event's properties (unless you set those keys).
        disabled: Accept and check calls but send nothing and start no thread. ``None`` (the default)
            reads the ``SERLA_DISABLED`` environment variable.
        spool_dir: A directory for a durable spool (see ``docs/spool.md``): accepted events are written
            there (by the flusher thread, within about a second) and delivered from there, so what can't
            be delivered before exit, during an outage or a rate limit, or before a ``kill -9`` is sent
            by the next client with the same directory, host and API key. Several processes may share
            one. ``None`` (the default) reads ``SERLA_SPOOL_DIR``; ``""`` or unset: no spool. A spool
            that can't be used gives one warning and the client works in memory.
        spool_max_bytes: The most bytes of events the spool directory holds (default 100 MiB); past it
            events are dropped, counted (``stats()["dropped"]["spool_full"]``) and warned about.

    Raises:
        ValueError: For an empty ``api_key`` or any other bad option value.
        TypeError: For an option of the wrong type.
    """

    def __init__(
        self,
        api_key: str,
        *,
        host: str = DEFAULT_HOST,
        flush_interval_seconds: float = 5.0,
        batch_size: int = 50,
        debug: bool = False,
        flush_on_exit: bool = True,
        max_queue_size: int = 1000,
        timeout: float = 10.0,
        shutdown_timeout: float = 10.0,
        block_on_full_seconds: float = 0.0,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        ca_bundle: Optional[str] = None,
        proxy: Optional[str] = None,
        capture_trace_context: bool = True,
        disabled: Optional[bool] = None,
        spool_dir: Optional[str] = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        _transport_factory: Optional[Callable[[], Transport]] = None,
        _policy: Optional[RetryPolicy] = None,
        _clock: Optional[Callable[[], float]] = None,
    ) -> None:
        self._config = Config(
            api_key=api_key,
            host=host,
            flush_interval_seconds=flush_interval_seconds,
            batch_size=batch_size,
            debug=debug,
            flush_on_exit=flush_on_exit,
            max_queue_size=max_queue_size,
            timeout=timeout,
            shutdown_timeout=shutdown_timeout,
            block_on_full_seconds=block_on_full_seconds,
            max_buffer_bytes=max_buffer_bytes,
            ca_bundle=ca_bundle,
            capture_trace_context=capture_trace_context,
            disabled=env_disabled() if disabled is None else bool(disabled),
            proxy=proxy,
            spool_dir=_env_spool_dir() if spool_dir is None else spool_dir,
            spool_max_bytes=spool_max_bytes,
        )
        cfg = self._config
        if debug:
            log = serla_log(force=True)
            assert log is not None
            log.enable_debug()
        elif "logging" in sys.modules:
            add_null_handler()
        from serla._worker import BatchWorker, Deferred

        self._deferred = Deferred
        self._now = utc_now(_clock) if _clock is not None else utc_now()
        self._capture_trace = cfg.capture_trace_context
        self._invalid = 0  # guarded by the worker's lock, which a forked child re-creates
        self._shut = False
        self._disabled = cfg.disabled
        factory = _transport_factory or _default_transport_factory(cfg)
        self._transport_factory = factory
        self._worker = BatchWorker(
            factory,
            batch_size=cfg.batch_size,
            flush_interval=cfg.flush_interval_seconds,
            max_queue_size=cfg.max_queue_size,
            max_buffer_bytes=cfg.max_buffer_bytes,
            block_on_full=cfg.block_on_full_seconds,
            policy=_policy,
            spool_opener=None if cfg.spool_dir is None or cfg.disabled else _spool_opener(cfg),
        )
        self._put = self._worker.put
        self._atexit: Callable[[], None] | None = None
        if cfg.flush_on_exit and not cfg.disabled:
            # The hook holds the worker, not the client: a client that lived in a function and was
            # collected still has its events delivered at exit (the worker outlives it with its thread).
            worker = self._worker
            exit_timeout = cfg.shutdown_timeout
            state = self._exit_state = [False]  # [shut down]: set by shutdown(), read by the hook

            def _flush_at_exit() -> None:
                if state[0]:
                    return
                if not worker.flush_at_exit(exit_timeout):
                    log_warning("serla: %d events were not delivered at exit", worker.pending())

            self._atexit = _flush_at_exit
            atexit.register(_flush_at_exit)
        if cfg.disabled:
            log = serla_log()
            if log is not None:
                log.logger.info(
                    "serla: disabled (SERLA_DISABLED or disabled=True): events are checked, not sent"
                )
        log_debug("serla: client created: %r", self)

    # -- public API --------------------------------------------------------------------------------------

    def track(
        self,
        event: str,
        distinct_id: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        timestamp: Timestamp = None,
    ) -> bool:
        """Queue an event for delivery. Never blocks on the network, never raises.

        Args:
            event: The event's name, a non-empty string.
            distinct_id: Who did it, a non-empty string (``str()`` your numeric IDs). ``None`` uses the
                context default set with :func:`serla.set_distinct_id` / :func:`serla.distinct_id_context`;
                if there is none, the call is dropped.
            properties: A dict of JSON-like values; other values are coerced (see the README). It is
                copied now: changing it afterwards changes nothing.
            timestamp: When it happened: a ``datetime`` (naive = UTC), a ``date``, an ISO-8601 string or
                epoch seconds. ``None`` means now. Sent as UTC with ``Z``.

        Returns:
            True if the event was accepted for delivery; False if it was dropped (a wrong call, a full
            queue, a closed client). Every drop is counted in :meth:`stats` and logged as a WARNING.
        """
        try:
            if not isinstance(event, str) or not event or ("\x00" in event and not event.strip("\x00")):
                # NULs are scrubbed on the wire (the server's database rejects them): all-NUL is empty.
                return self._reject("event must be a non-empty string, got %r", event)
            if distinct_id is None:
                distinct_id = _context_distinct_id()
                if distinct_id is None:
                    return self._reject(
                        "distinct_id is required (or set one with serla.set_distinct_id()) for event %r",
                        event,
                    )
            if (
                not isinstance(distinct_id, str)
                or not distinct_id
                or ("\x00" in distinct_id and not distinct_id.strip("\x00"))
            ):
                return self._reject(
                    "distinct_id must be a non-empty string (use str(user.id)), got %r for event %r",
                    distinct_id,
                    event,
                )
            ts: str | None
            if timestamp is None:
                ts = self._now()
            else:
                ts = format_timestamp(timestamp)
                if ts is None:
                    return self._reject(
                        "timestamp %r of event %r is not a datetime, ISO-8601 string or epoch seconds "
                        "within 1970-2100",
                        timestamp,
                        event,
                    )
            if properties is None:
                props: Any = {}
            elif type(properties) is dict:
                props = properties
            else:
                props = _as_properties(properties)
                if props is None:
                    return self._reject(
                        "properties must be a dict, got %s for event %r", type(properties).__name__, event
                    )
            if self._capture_trace and "opentelemetry.trace" in sys.modules:
                props = _with_trace_context(props)
            data = encode_event(event, distinct_id, ts, props)
            if len(data) > MAX_EVENT_BYTES:
                return self._reject(
                    "event %r is %d bytes of JSON, over the %d-byte limit", event, len(data), MAX_EVENT_BYTES
                )
            if self._disabled:
                return True
            return self._put(data)
        except Exception:
            _warn_exc("serla: track() failed unexpectedly; the event is dropped")
            return False

    def _track_deferred(
        self,
        event: str,
        distinct_id: str,
        build_properties: Callable[[], dict[str, Any]],
        epoch_seconds: Optional[float],
        wait: bool = True,
    ) -> bool:
        """Accept an event whose JSON is built on the flusher thread (for the OpenTelemetry bridge).

        The caller guarantees what :meth:`track` would otherwise check and snapshot: ``event`` and
        ``distinct_id`` are non-empty strings, ``build_properties`` returns a new dict built from values
        that can't change (an ended span's attributes: strings, numbers, booleans and tuples of them; it
        runs on the flusher thread), and
        ``epoch_seconds`` is a time (``None``: now, read at this call). The JSON is then built when its
        batch is taken; an event that can't be encoded there is dropped and counted (``internal_error``,
        ``too_large``). ``wait=False``: refuse at once when the queue is full. Never raises.
        """
        try:
            if self._disabled:
                return True
            ts = self._now() if epoch_seconds is None else None
            return self._put(
                self._deferred(_build_deferred, event, distinct_id, build_properties, epoch_seconds, ts), wait
            )
        except Exception:
            _warn_exc("serla: track() failed unexpectedly; the event is dropped")
            return False

    def identify(self, distinct_id: str, properties: Optional[Mapping[str, Any]] = None) -> bool:
        """Set properties on a person, synchronously (``POST /api/v1/identify``). Never raises.

        The server shallow-merges ``properties`` into what it has for ``distinct_id``. The request runs
        on a short-lived helper thread and this call waits at most ``timeout`` seconds for it (so even a
        hanging DNS lookup cannot hold your code longer).

        Args:
            distinct_id: A non-empty string of at most 256 UTF-16 code units.
            properties: A dict; values are coerced like ``track()``'s.

        Returns:
            True when the server confirmed it; False otherwise (the reason is logged).
        """
        try:
            if self._shut:
                warn_limited("closed", "serla: identify() after shutdown() is dropped")
                return False
            if not isinstance(distinct_id, str) or not distinct_id.strip("\x00"):
                return self._reject("identify: distinct_id must be a non-empty string, got %r", distinct_id)
            if len(distinct_id.encode("utf-16-le")) // 2 > _MAX_IDENTIFY_ID:
                return self._reject("identify: distinct_id is longer than %d characters", _MAX_IDENTIFY_ID)
            props = {} if properties is None else _as_properties(properties)
            if props is None:
                return self._reject("identify: properties must be a dict, got %s", type(properties).__name__)
            body = encode({"distinctId": distinct_id, "properties": props})
            if self._disabled:
                return True
            return self._identify_post(body)
        except Exception:
            _warn_exc("serla: identify() failed unexpectedly")
            return False

    def flush(self, timeout: Optional[float] = 30.0) -> bool:
        """Wait until every event queued before this call has been delivered.

        Call it before a serverless handler returns. A flush also cuts short a retry backoff (once); it
        does not override a server's rate-limit or quota pause, and returns False at once if that pause
        outlasts ``timeout``.

        Args:
            timeout: Seconds to wait at most. ``None`` waits without bound.

        Returns:
            True when all of them were delivered; False on timeout or if any was dropped.
        """
        if self._disabled:
            return True
        try:
            return self._worker.flush(timeout)
        except Exception:
            _warn_exc("serla: flush() failed unexpectedly")
            return False

    def shutdown(self, timeout: Optional[float] = 30.0) -> bool:
        """Flush, stop the worker thread and unregister the atexit hook. Safe to call more than once.

        After it, ``track()`` and ``identify()`` are dropped with a warning.

        Args:
            timeout: Seconds to spend at most. ``None`` waits without bound.

        Returns:
            True when everything accepted was delivered.
        """
        try:
            self._shut = True
            if self._atexit is not None:
                self._exit_state[0] = True
                atexit.unregister(self._atexit)
                self._atexit = None
            if self._disabled:
                return True
            return self._worker.close(timeout)
        except Exception:
            _warn_exc("serla: shutdown() failed unexpectedly")
            return False

    close = shutdown
    """An alias of :meth:`shutdown`, for ``contextlib.closing`` and habit."""

    def pending_count(self) -> int:
        """The number of events accepted and not yet delivered or dropped (buffered + in flight)."""
        return self._worker.pending()

    def stats(self) -> dict[str, Any]:
        """Counters for health checks and tests.

        Returns:
            A dict with ``queued`` (in the buffer), ``in_flight``, ``pending`` (both), ``accepted``,
            ``sent`` (events the server confirmed), ``batches_sent``, ``requests``, ``retried``
            (resends of a batch), ``dropped`` (a dict: reason -> events; reasons are ``invalid_call``,
            ``queue_full``, ``rejected`` (400), ``too_large``, ``server_error``, ``shutdown``),
            ``healthy`` (the last send succeeded) and ``last_error``.
        """
        out = self._worker.stats()
        if self._invalid:
            out["dropped"]["invalid_call"] = self._invalid
        return out

    @property
    def host(self) -> str:
        """The base URL events are sent to."""
        return self._config.host

    @property
    def config(self) -> Config:
        """The checked options (the API key is kept out of its ``repr``)."""
        return self._config

    def __enter__(self) -> Serla:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        key = self._config.api_key
        shown = key[:8] + "..." if key.startswith(("sk_live_", "pk_live_")) else "***"
        return f"<Serla host={self._config.host!r} api_key={shown!r} pending={self._worker.pending()}>"

    # -- internals ---------------------------------------------------------------------------------------

    def _reject(self, msg: str, *args: Any) -> bool:
        with self._worker._lock:  # not a lock of our own: a fork would inherit it held
            self._invalid += 1
        warn_limited("invalid_call", "serla: call dropped: " + msg, *args)
        return False

    def _flush_at_exit(self) -> None:
        if self._atexit is not None:
            self._atexit()

    def _submit(self, lane: str, body: bytes) -> bool:
        """Queue one record for a single-record lane (``"errors"``, ``"llm"``); never raises or waits.

        Args:
            lane: The lane's name.
            body: The complete JSON request body of the record.

        Returns:
            True if it was accepted for delivery (always, when the client is disabled).
        """
        if self._disabled:
            return True
        if self._shut:
            warn_limited("closed", "serla: a %s record after shutdown() is dropped", lane)
            return False
        return self._worker.submit(lane, body)

    def _identify_post(self, body: bytes) -> bool:
        cfg = self._config
        box: list[Any] = []

        def run() -> None:
            transport = self._transport_factory()
            try:
                box.append(transport.post(IDENTIFY_PATH, body, {}))
            finally:
                transport.close()

        import threading  # loaded with the worker already

        try:
            thread = threading.Thread(target=run, name="serla-identify", daemon=True)
            thread.start()
        except RuntimeError:  # interpreter shutdown: no new threads; do it here
            run()
        else:
            thread.join(cfg.timeout)
        if not box:
            log_warning("serla: identify() timed out after %.1f s", cfg.timeout)
            return False
        result = box[0]
        if result.status == 200:
            return True
        log_warning(
            "serla: identify() failed: %s",
            result.error if result.status is None else f"HTTP {result.status} {result.body[:200]!r}",
        )
        return False


def _default_transport_factory(cfg: Config) -> Callable[[], Transport]:
    """The production transport factory; ``serla._transport`` (and ``socket``) load on its first call.

    The proxy is resolved here, once per client (the option, else the environment), so every transport
    it makes (the flusher's, each ``identify()``'s, a forked child's) uses the same one.
    """
    proxy = None if cfg.disabled else resolve_proxy(cfg.proxy, cfg.host)
    if proxy is not None:
        if proxy.error is not None:
            log_warning("serla: %s. Until then every send fails and events wait in the queue", proxy.error)
        else:
            log_debug("serla: sending through the proxy %s (from %s)", proxy.url, proxy.source)

    def factory() -> Transport:
        from serla._transport import HttpTransport

        return HttpTransport(cfg.host, cfg.api_key, cfg.timeout, cfg.ca_bundle, proxy)

    return factory


def _env_spool_dir() -> Optional[str]:
    import os

    return os.environ.get("SERLA_SPOOL_DIR") or None


def _spool_opener(cfg: Config) -> Callable[[Any], Any]:
    """Opens the spool (``serla._spool`` loads ``sqlite3`` then, on the flusher thread) for a worker."""

    def opener(worker: Any) -> Any:
        from serla._spool import Spool, SpoolPump

        lease = max(30.0, 3 * cfg.timeout)  # outlives a request; a holder's death is noticed after it
        spool = Spool(
            cfg.spool_dir or "", cfg.host, cfg.api_key, max_bytes=cfg.spool_max_bytes, lease_seconds=lease
        )
        return SpoolPump(worker, spool)

    return opener


_get_context_id: Callable[[], str | None] | None = None


def _context_distinct_id() -> str | None:
    """``serla._context.get_distinct_id()``; the module is imported on the first call that needs it."""
    global _get_context_id
    if _get_context_id is None:
        from serla._context import get_distinct_id

        _get_context_id = get_distinct_id
    return _get_context_id()


def _warn_exc(msg: str) -> None:
    log = serla_log()
    if log is not None:
        log.logger.warning(msg, exc_info=True)


def _as_properties(value: Any) -> dict[str, Any] | None:
    """Coerce a non-dict ``properties`` argument (Mapping, dataclass, pydantic model) or return None."""
    if isinstance(value, Mapping):
        return dict(value)
    coerced = sanitize(value)
    return coerced if isinstance(coerced, dict) else None


def _with_trace_context(props: dict[str, Any]) -> dict[str, Any]:
    """Add the active OpenTelemetry span's ids (hex) unless the caller set them."""
    if "trace_id" in props:
        return props
    try:
        trace = sys.modules["opentelemetry.trace"]
        ctx = trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return props
        extra = {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
        return {**extra, **props}
    except Exception:
        return props
