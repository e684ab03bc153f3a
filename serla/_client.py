"""The :class:`Serla` client: the public facade over the encoder and the delivery pipeline."""

from __future__ import annotations

import sys
from _collections_abc import Iterable, Mapping

from serla._config import (
    Config,
    add_null_handler,
    env_disabled,
    env_text,
    log_debug,
    log_warning,
    serla_log,
    warn_limited,
)
from serla._encode import MAX_EVENT_BYTES, encode, encode_event, format_timestamp, sanitize, utc_now

# ``import serla`` loads this module, so it imports only what ``track()`` needs. The worker (and with it
# ``threading``) is imported when a client is created; the HTTP transport and the retry policy on the
# first send; ``logging`` only once something has loaded it (see ``serla._config.serla_log``).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta
    from types import FrameType
    from typing import Any, Callable, Final, Optional

    from serla._encode import Timestamp
    from serla._errors import ErrorReporter, Report
    from serla._flags import FlagClient
    from serla._retry import RetryPolicy
    from serla._stats import Stats
    from serla._transport import Transport

    RecordHook = Callable[[dict[str, Any]], Optional[dict[str, Any]]]
    """A ``before_send`` hook: a record as a dict in, a changed dict or ``None`` (drop it) out."""

_DEFAULTS: Final[dict[str, Any]] = Config.__init__.__kwdefaults__ or {}
"""The one source of option defaults: ``Config``'s keyword-only signature. ``Serla``'s signature reads
them from here, so it shows every option and its value without restating it."""

IDENTIFY_PATH = "/api/v1/identify"
_MAX_IDENTIFY_ID = 256


def _build_deferred(
    event: str,
    distinct_id: str,
    build_properties: Callable[[], dict[str, Any]],
    epoch_seconds: float | None,
    ts: str | None,
    session_id: str | None = None,
) -> bytes | None:
    """The JSON of a :meth:`Serla._track_deferred` event, built on the flusher thread; None drops it."""
    stamp = ts if ts is not None else format_timestamp(epoch_seconds)
    if stamp is None:
        return None
    data = encode_event(event, distinct_id, stamp, build_properties())
    if session_id is not None:  # checked when the scope was made
        data = data[:-1] + b',"sessionId":"' + session_id.encode("ascii") + b'"}'
    return data


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
        flush_on_exit: Deliver what is queued at exit (bounded by ``shutdown_timeout``): from an
            ``atexit`` hook, and on ``SIGTERM`` (a handler that delivers, then chains to the one it
            replaced; see ``serla._exit``). The client stays usable after it, for hooks that run later
            (``logging.shutdown``, an OpenTelemetry provider's shutdown).
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
        transport: A factory of transports, the seam for tests and custom delivery: called with no
            argument, it returns an object with ``post(path, body, headers)`` and ``get(path, headers)``
            (each returning a ``serla._transport.SendResult``) and ``close()``. ``None`` (the default):
            the SDK's HTTP transport. :mod:`serla.testing` uses it to capture requests in process.
        before_send: A last look at each event before it is encoded: called (on the calling thread) with
            a dict named like ``track()``'s arguments (``event``, ``distinct_id``, ``properties``,
            ``timestamp`` (the ISO string), ``session_id``), after the context and super properties were
            merged in. Return the dict (changed or not) to send it, or ``None`` to drop it (counted in
            ``stats()["dropped"]["before_send"]``). If it raises, the exception is logged (rate-limited)
            and the event goes out unchanged. ``None`` (the default) costs nothing.
        flags_timeout: The longest a feature flag call waits for the server on a cache miss, in seconds;
            then it returns the caller's fallback (the answer still fills the cache). See ``docs/flags.md``.
        flags_cache_size: How many ``(distinct_id, properties)`` flag answers are cached (an LRU).
        send_flag_events: Track a ``$feature_flag_called`` event (``$feature_flag``,
            ``$feature_flag_response``) the first time in a cache period a user gets a flag's value.
        release: The version of your application, sent with every error report (``None``: read
            ``SERLA_RELEASE``).
        environment: ``production``, ``staging``..., sent with every error report (``None``: read
            ``SERLA_ENVIRONMENT``).
        capture_exceptions: Report uncaught exceptions: ``sys.excepthook``, ``threading.excepthook`` and
            asyncio's loop exception handler, each chaining what was installed before.
            ``KeyboardInterrupt`` and ``SystemExit`` are not reported. An uncaught exception in the main
            thread is delivered before the process exits (a flush bounded by ``shutdown_timeout``).
        before_send_error: ``(report, exception) -> report | None``, called with each error report (the
            wire fields, a dict) before it is queued: return it (changed or not) to send it, ``None`` to
            drop it. If it raises, the report is dropped.
        in_app_include: Module name prefixes whose frames are your code (``["myapp"]``), wherever they are
            installed. See the README's "Error tracking" section for how in-app is decided otherwise.
        in_app_exclude: Module name prefixes whose frames are never your code.
        project_root: Frames under this directory are shown relative to it. ``None``: relative to their
            ``sys.path`` entry.
        capture_llm_content: Whether :meth:`track_llm` (and the ``serla.llm`` wrappers and the
            OpenTelemetry GenAI bridge) send prompts and responses. ``False`` leaves ``input`` and
            ``output`` out of every LLM record: they often hold personal data.
        before_send_llm: Called with every LLM record (a dict with the wire's camelCase keys) on the
            caller's thread before it is queued; return the record (changed or not) or ``None`` to drop
            it. What it returns is checked again; if it raises, the record is dropped.
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
        host: str = _DEFAULTS["host"],
        flush_interval_seconds: float = _DEFAULTS["flush_interval_seconds"],
        batch_size: int = _DEFAULTS["batch_size"],
        debug: bool = _DEFAULTS["debug"],
        flush_on_exit: bool = _DEFAULTS["flush_on_exit"],
        max_queue_size: int = _DEFAULTS["max_queue_size"],
        timeout: float = _DEFAULTS["timeout"],
        shutdown_timeout: float = _DEFAULTS["shutdown_timeout"],
        block_on_full_seconds: float = _DEFAULTS["block_on_full_seconds"],
        max_buffer_bytes: int = _DEFAULTS["max_buffer_bytes"],
        ca_bundle: str | None = _DEFAULTS["ca_bundle"],
        proxy: str | None = _DEFAULTS["proxy"],
        capture_trace_context: bool = _DEFAULTS["capture_trace_context"],
        disabled: bool | None = None,
        before_send: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
        flags_timeout: float = _DEFAULTS["flags_timeout"],
        flags_cache_size: int = _DEFAULTS["flags_cache_size"],
        send_flag_events: bool = _DEFAULTS["send_flag_events"],
        release: str | None = _DEFAULTS["release"],
        environment: str | None = _DEFAULTS["environment"],
        capture_exceptions: bool = _DEFAULTS["capture_exceptions"],
        before_send_error: Callable[..., Any] | None = _DEFAULTS["before_send_error"],
        in_app_include: Sequence[str] = _DEFAULTS["in_app_include"],
        in_app_exclude: Sequence[str] = _DEFAULTS["in_app_exclude"],
        project_root: str | None = _DEFAULTS["project_root"],
        capture_llm_content: bool = _DEFAULTS["capture_llm_content"],
        before_send_llm: Callable[[dict[str, Any]], dict[str, Any] | None] | None = _DEFAULTS[
            "before_send_llm"
        ],
        spool_dir: str | None = _DEFAULTS["spool_dir"],
        spool_max_bytes: int = _DEFAULTS["spool_max_bytes"],
        transport: Callable[[], Transport] | None = None,
        _transport_factory: Callable[[], Transport] | None = None,
        _policy: RetryPolicy | None = None,
        _clock: Callable[[], float] | None = None,
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
            flags_timeout=flags_timeout,
            flags_cache_size=flags_cache_size,
            send_flag_events=send_flag_events,
            release=release if release is not None else env_text("SERLA_RELEASE"),
            environment=environment if environment is not None else env_text("SERLA_ENVIRONMENT"),
            capture_exceptions=capture_exceptions,
            before_send_error=before_send_error,
            in_app_include=in_app_include,
            in_app_exclude=in_app_exclude,
            project_root=project_root,
            capture_llm_content=capture_llm_content,
            before_send_llm=before_send_llm,
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
        if before_send is not None and not callable(before_send):
            raise TypeError(f"before_send must be a callable or None, got {type(before_send).__name__}")
        self._before_send = before_send
        self._before_send_dropped = 0  # guarded like _invalid
        self._super: dict[str, Any] | None = None  # replaced whole (copy on write), never mutated
        self._extra = before_send is not None  # super properties or a hook: track() takes the slow path
        from serla import _context

        self._scope_get = _context.get_scope
        self._empty_scope = _context.EMPTY
        factory = transport or _transport_factory or _default_transport_factory(cfg)
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
        self._flags: FlagClient | None = None  # serla._flags.FlagClient, made by the first flag call
        self._exit_token: int | None = None  # serla._exit's token for this client's exit hook
        if cfg.flush_on_exit and not cfg.disabled:
            # The hook holds the worker, not the client: a client that lived in a function and was
            # collected still has its events delivered at exit (the worker outlives it with its thread).
            # shutdown() unregisters it.
            worker = self._worker
            exit_timeout = cfg.shutdown_timeout

            def _flush_at_exit() -> None:
                if not worker.flush_at_exit(exit_timeout):
                    log_warning("serla: %d events were not delivered at exit", worker.pending())

            from serla import _exit

            self._exit_token = _exit.register(_flush_at_exit)
        self._clock = _clock
        self._errors: ErrorReporter | None = None
        self._hooks: Any = None
        if cfg.capture_exceptions:
            from serla._hooks import install_hooks

            self._hooks = install_hooks(self)
        if cfg.disabled:
            log = serla_log()
            if log is not None:
                log.logger.info(
                    "serla: disabled (SERLA_DISABLED or disabled=True): events are checked, not sent"
                )
        log_debug("serla: client created: %r", self)

    @classmethod
    def from_config(cls, config: Config, **options: Any) -> Serla:
        """A client with the options of ``config`` (for example ``Config.from_env()``).

        Args:
            config: Checked options.
            **options: Options that are not part of a ``Config`` (``before_send``), or that win over it.

        Returns:
            The client.
        """
        from serla._config import _FIELDS

        values = {name: getattr(config, name) for name in _FIELDS}
        values.update(options)
        return cls(**values)

    # -- public API --------------------------------------------------------------------------------------

    def track(
        self,
        event: str,
        distinct_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
        timestamp: Timestamp = None,
        *,
        session_id: str | None = None,
    ) -> bool:
        """Queue an event for delivery. Never blocks on the network, never raises.

        What the current context (:func:`serla.context`, a web integration) and the client's super
        properties (:meth:`set_properties`) hold is added; for each field an explicit argument wins over the
        context, and the context over the client. ``properties`` are merged key by key in that order, and
        the context's groups go in ``properties["$groups"]``.

        Args:
            event: The event's name, a non-empty string.
            distinct_id: Who did it, a non-empty string (``str()`` your numeric IDs). ``None`` uses the
                context's (:func:`serla.context`, :func:`serla.set_distinct_id`, an integration); if there is
                none, the call is dropped.
            properties: A dict of JSON-like values; other values are coerced (see the README). It is
                copied now: changing it afterwards changes nothing.
            timestamp: When it happened: a ``datetime`` (naive = UTC), a ``date``, an ISO-8601 string or
                epoch seconds. ``None`` means now. Sent as UTC with ``Z``.
            session_id: The session, 32 hex digits (sent as ``sessionId``). ``None`` uses the context's;
                without one the server makes a session of this event alone. Anything other than 32 hex
                digits is not sent (a WARNING says so); the event still is.

        Returns:
            True if the event was accepted for delivery; False if it was dropped (a wrong call, a full
            queue, a closed client, ``before_send``). Every drop is counted in :meth:`stats`.
        """
        try:
            if not isinstance(event, str) or not event or ("\x00" in event and not event.strip("\x00")):
                # NULs are scrubbed on the wire (the server's database rejects them): all-NUL is empty.
                return self._reject("event must be a non-empty string, got %r", event)
            scope = self._scope_get()
            if distinct_id is None:
                distinct_id = scope.distinct_id
                if distinct_id is None:
                    return self._reject(
                        "distinct_id is required (or set one with serla.context()) for event %r", event
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
            if self._extra or scope is not self._empty_scope:  # else: nothing to merge, no hook
                sup = self._super
                if scope is not self._empty_scope or sup is not None:
                    props = _merged(props, scope, sup)
                    if session_id is None:
                        session_id = scope.session_id
                if self._before_send is not None:
                    hooked = self._run_before_send(event, distinct_id, props, ts, session_id)
                    if hooked is None:
                        return False
                    event, distinct_id, props, ts, session_id = hooked
            data = encode_event(event, distinct_id, ts, props)
            if session_id is not None:
                if type(session_id) is str and len(session_id) == 32 and not session_id.strip(_HEX):
                    data = data[:-1] + b',"sessionId":"' + session_id.encode("ascii") + b'"}'
                else:
                    warn_limited(
                        "bad_session_id",
                        "serla: session_id must be 32 hex digits (what the server keeps), got %r for event "
                        "%r; it is not sent",
                        session_id,
                        event,
                    )
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

    def group(self, group_type: str, group_id: str, properties: Mapping[str, Any] | None = None) -> bool:
        """Put the current context in a group: later events in it carry ``$groups: {group_type: group_id}``.

        As serla-js's ``group()``: the association is added to the current context (a request handled by
        an integration, a :func:`serla.context` block, else the current thread or asyncio task) and lasts
        until that scope ends. With ``properties``, a ``$group_identify`` event is sent too
        (``{"$groupType", "$groupId", "$groupProperties"}``, under the context's user, as serla-js
        sends it; without a user it is dropped like any ``track()`` without one). Never raises.

        Args:
            group_type: The kind of group (``"company"``, ``"team"``), a non-empty string.
            group_id: The group's id, a non-empty string (an int is ``str()``-ed).
            properties: The group's properties, sent once with ``$group_identify``.

        Returns:
            True when the group was set (and the ``$group_identify`` event, if any, accepted).
        """
        try:
            from serla._context import add_group, check_group

            pair = check_group(group_type, group_id, "group()")
            if pair is None:
                with self._worker._lock:
                    self._invalid += 1
                return False
            add_group(*pair)
            if not properties:
                return True
            props = properties if type(properties) is dict else _as_properties(properties)
            if props is None:
                return self._reject("group: properties must be a dict, got %s", type(properties).__name__)
            payload = {"$groupType": pair[0], "$groupId": pair[1], "$groupProperties": props}
            return self.track("$group_identify", properties=payload)
        except Exception:
            _warn_exc("serla: group() failed unexpectedly")
            return False

    def set_properties(self, properties: Mapping[str, Any]) -> None:
        """Add super properties: sent with every later event of this client (any thread, any context).

        Merged into what was set before. An event's own properties and the context's win over them
        (explicit > context > client). The values are copied now. Never raises; a non-dict is ignored
        with a WARNING.
        """
        try:
            props = properties if type(properties) is dict else _as_properties(properties)
            if props is None:
                warn_limited(
                    "bad_super", "serla: set_properties() needs a dict, got %s", type(properties).__name__
                )
                return
            self._super = {**(self._super or {}), **sanitize(props)}
            self._extra = True
        except Exception:
            _warn_exc("serla: set_properties() failed unexpectedly")

    def unset_properties(self, keys: Iterable[str] | str) -> None:
        """Remove super properties by key (one key or an iterable of keys; unknown keys are ignored)."""
        try:
            from serla._context import keys_of

            left = {k: v for k, v in (self._super or {}).items() if k not in set(keys_of(keys))}
            self._super = left or None
            self._extra = self._super is not None or self._before_send is not None
        except Exception:
            _warn_exc("serla: unset_properties() failed unexpectedly")

    def get_super_properties(self) -> dict[str, Any]:
        """A copy of the super properties (see :meth:`set_properties`)."""
        return dict(self._super or {})

    async def aflush(self, timeout: float | None = 30.0) -> bool:
        """:meth:`flush` for asyncio code: waits in a worker thread, so the event loop keeps running."""
        return bool(await _in_thread(self.flush, timeout))

    async def ashutdown(self, timeout: float | None = 30.0) -> bool:
        """:meth:`shutdown` for asyncio code (a lifespan handler): the loop keeps running meanwhile."""
        return bool(await _in_thread(self.shutdown, timeout))

    async def aidentify(self, distinct_id: str, properties: Mapping[str, Any] | None = None) -> bool:
        """:meth:`identify` for asyncio code: the request runs in a worker thread, the loop keeps running."""
        return bool(await _in_thread(self.identify, distinct_id, properties))

    def _apply_before_send(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Show ``record`` to ``before_send``: what to send (``record`` itself when the hook fails), or None.

        The one place the hook runs, for events and for the other lanes' records (error reports, LLM
        records: their dict is named like the arguments of the call that made them). ``None``: the hook
        dropped it (counted as ``before_send``). A hook that raises, or returns neither a dict nor
        ``None``, is logged (rate-limited) and the record goes out unchanged.
        """
        hook = self._before_send
        if hook is None:
            return record
        try:
            out = hook(dict(record))
        except Exception as exc:
            warn_limited(
                "before_send_error",
                "serla: before_send raised %r for %r; it is sent unchanged",
                exc,
                record.get("event", record.get("kind")),
            )
            return record
        if out is None:
            with self._worker._lock:
                self._before_send_dropped += 1
            log_debug("serla: before_send dropped %r", record.get("event", record.get("kind")))
            return None
        if not isinstance(out, Mapping):
            warn_limited(
                "before_send_result",
                "serla: before_send returned %s (not a dict or None) for %r; it is sent unchanged",
                type(out).__name__,
                record.get("event", record.get("kind")),
            )
            return record
        return dict(out)

    def _run_before_send(
        self, event: str, distinct_id: str, props: dict[str, Any], ts: str, session_id: str | None
    ) -> tuple[str, str, dict[str, Any], str, str | None] | None:
        """Call ``before_send`` on an event; the (checked) fields to send, or None when it is dropped."""
        record = {
            "event": event,
            "distinct_id": distinct_id,
            "properties": dict(props),
            "timestamp": ts,
            "session_id": session_id,
        }
        out = self._apply_before_send(record)
        if out is None:
            return None
        if out is record:
            return event, distinct_id, props, ts, session_id
        new_event = out.get("event", event)
        new_id = out.get("distinct_id", distinct_id)
        if not isinstance(new_event, str) or not new_event or not isinstance(new_id, str) or not new_id:
            self._reject("before_send returned an empty or non-string event or distinct_id: %r", out)
            return None
        new_props = out.get("properties") or {}
        if type(new_props) is not dict:
            new_props = _as_properties(new_props)
            if new_props is None:
                self._reject("before_send returned properties that are not a dict for event %r", new_event)
                return None
        new_ts = out.get("timestamp", ts)
        if new_ts is None:
            new_ts = self._now()
        elif new_ts != ts:
            new_ts = format_timestamp(new_ts)
            if new_ts is None:
                self._reject("before_send returned a timestamp that is not a time for event %r", new_event)
                return None
        return new_event, new_id, new_props, new_ts, out.get("session_id", session_id)

    def track_llm(
        self,
        model: str,
        *,
        provider: str | None = None,
        distinct_id: str | None = None,
        trace_id: str | None = None,
        parent_id: str | None = None,
        input: Any = None,
        output: Any = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        total_tokens: int | None = None,
        cost_usd: float | None = None,
        latency_ms: float | timedelta | None = None,
        status: str = "success",
        error_message: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: Timestamp = None,
    ) -> bool:
        """Queue one LLM generation for ``POST /api/v1/llm`` (Hobby plan and up). Never blocks, never raises.

        The record is checked, copied and encoded now, and sent by the worker on its own ``llm`` lane (one
        record per request). The rules (limits, coercions, the 256 KiB truncation) are in
        :mod:`serla._llm` and the README's LLM section. A ``402`` from the server (a Free-plan project)
        turns LLM reporting off with one WARNING; events go on.

        Args:
            model: The model's name (1-200 characters), e.g. ``"gpt-4o-mini"``; the server prices it.
            provider: ``"openai"``, ``"anthropic"``, ...
            distinct_id: The user; ``None`` uses the context's (:func:`serla.set_distinct_id`), else none.
            trace_id: Groups the steps of one chain or agent run.
            parent_id: A free-form reference to the parent step.
            input: The prompt or messages (any JSON-like value). Left out when ``capture_llm_content``
                is off.
            output: The completion. Left out when ``capture_llm_content`` is off.
            input_tokens: Prompt tokens, a non-negative int.
            output_tokens: Completion tokens, a non-negative int.
            total_tokens: ``None`` lets the server add the two.
            cost_usd: ``None`` lets the server compute it from its price table (when both token counts
                are given and it knows the model).
            latency_ms: Milliseconds (a float is rounded; a ``timedelta`` works too).
            status: ``"success"`` or ``"error"``.
            error_message: What went wrong (an exception is written as ``"Type: message"``).
            metadata: A dict of anything else.
            timestamp: When the call started or ended; ``None`` means now.

        Returns:
            True if the record was queued; False if it was dropped (a wrong call, a hook that dropped it,
            LLM reporting turned off by a 402, a full lane, a closed client).
        """
        try:
            from serla._llm import track_llm

            return track_llm(
                self,
                model,
                provider=provider,
                distinct_id=distinct_id,
                trace_id=trace_id,
                parent_id=parent_id,
                input=input,
                output=output,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                total_tokens=total_tokens,
                cost_usd=cost_usd,
                latency_ms=latency_ms,
                status=status,
                error_message=error_message,
                metadata=metadata,
                timestamp=timestamp,
            )
        except Exception:
            _warn_exc("serla: track_llm() failed unexpectedly; the record is dropped")
            return False

    def _track_deferred(
        self,
        event: str,
        distinct_id: str,
        build_properties: Callable[[], dict[str, Any]],
        epoch_seconds: float | None,
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
            if self._before_send is not None:  # the hook runs on the caller's thread, as for track()
                return self.track(event, distinct_id, build_properties(), epoch_seconds)
            ts = self._now() if epoch_seconds is None else None
            scope = self._scope_get()
            sup = self._super
            session_id = None
            if scope is not self._empty_scope or sup is not None:
                build = build_properties
                session_id = scope.session_id

                def build_properties() -> dict[str, Any]:
                    return _merged(build(), scope, sup)

            return self._put(
                self._deferred(
                    _build_deferred, event, distinct_id, build_properties, epoch_seconds, ts, session_id
                ),
                wait,
            )
        except Exception:
            _warn_exc("serla: track() failed unexpectedly; the event is dropped")
            return False

    def identify(self, distinct_id: str, properties: Mapping[str, Any] | None = None) -> bool:
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

    def capture_exception(
        self,
        exc: Any = None,
        *,
        distinct_id: str | None = None,
        level: Any = "error",
        context: Mapping[str, Any] | None = None,
        release: str | None = None,
        environment: str | None = None,
    ) -> bool:
        """Report an exception to Serla's error tracking (``POST /api/v1/errors``). Never raises or waits.

        Like :meth:`track`, it checks, builds and queues at once; the report is sent by the same
        background thread, in its own lane (one report per request). The stack is written so the server
        groups reports by the exception's type and the file and function of the innermost frame of your
        own code (see the README's "Error tracking" section). Local variables are never sent.

        Each exception is reported once, whichever path sees it first (this method, the logging handler,
        the uncaught-exception hooks). At most ``serla._errors.ERRORS_PER_MINUTE`` reports per group leave
        the process per minute; the rest are counted in ``stats()["errors"]["rate_limited"]``.

        Args:
            exc: The exception. ``None`` takes the one being handled (``sys.exc_info()``); an
                ``exc_info`` tuple is accepted too. An exception that was never raised is reported
                with the caller's stack.
            distinct_id: Who hit it. ``None`` uses the context's (:func:`serla.set_distinct_id`), if any.
            level: ``"error"`` (the default), ``"warning"`` or ``"info"``; ``"critical"``/``"fatal"``
                are sent as ``error``, ``"debug"`` as ``info``; ``logging`` levels (numbers) map the
                same way.
            context: A dict sent as the report's ``metadata``.
            release: Overrides the client's ``release`` for this report.
            environment: Overrides the client's ``environment`` for this report.

        Returns:
            True if the report was queued; False if there was nothing to report, the exception was
            already reported, the report was rate-limited or dropped by ``before_send_error``, or the
            errors lane refused it (off after a 402, full, closed).
        """
        try:
            if exc is None:
                exc = sys.exc_info()[1]
                if exc is None:
                    return self._reject("capture_exception() called with no exception being handled")
            elif isinstance(exc, tuple) and len(exc) == 3:
                exc = exc[1]
            if not isinstance(exc, BaseException):
                return self._reject("capture_exception() needs an exception, got %s", type(exc).__name__)
            return self._capture(
                exc,
                distinct_id=distinct_id,
                level=level,
                context=context,
                release=release,
                environment=environment,
                caller=sys._getframe(1),
            )
        except Exception:
            _warn_exc("serla: capture_exception() failed unexpectedly; the report is dropped")
            return False

    def _error_reporter(self) -> ErrorReporter:
        """The error reporter (options, path rules, rate limit, counters), created on first use."""
        reporter = self._errors
        if reporter is not None:
            return reporter
        from serla._errors import ErrorReporter

        with self._worker._lock:  # one reporter even when two threads capture their first error at once
            reporter = self._errors
            if reporter is not None:
                return reporter
            cfg = self._config
            reporter = ErrorReporter(
                release=cfg.release,
                environment=cfg.environment,
                before_send=cfg.before_send_error,
                in_app_include=cfg.in_app_include,
                in_app_exclude=cfg.in_app_exclude,
                project_root=cfg.project_root,
                clock=self._clock,
            )
            self._errors = reporter
            return reporter

    def _capture(
        self,
        exc: BaseException,
        *,
        distinct_id: str | None = None,
        level: Any = "error",
        context: Mapping[str, Any] | None = None,
        release: str | None = None,
        environment: str | None = None,
        caller: FrameType | None = None,
    ) -> bool:
        """Build and queue a report for ``exc`` (the paths that see exceptions call this). Never raises."""
        try:
            from serla._errors import build_report, mark_reported

            if not mark_reported(exc):
                self._error_reporter().count("duplicate")
                return False
            reporter = self._error_reporter()
            report = build_report(exc, reporter.rules, caller=caller, allow=reporter.allow)
            if report is None:  # rate-limited (counted)
                return False
            return self._queue_report(
                reporter,
                report,
                exc=exc,
                distinct_id=distinct_id,
                level=level,
                context=context,
                release=release,
                environment=environment,
            )
        except Exception:
            _warn_exc("serla: building an error report failed; it is dropped")
            return False

    def _queue_report(
        self,
        reporter: ErrorReporter,
        report: Report,
        *,
        exc: BaseException | None,
        distinct_id: Any,
        level: Any,
        context: Any,
        release: Any,
        environment: Any,
    ) -> bool:
        """Check the call's options, finish the report, encode it and hand it to the errors lane."""
        from serla._errors import encode_report, map_level

        if self._shut:
            warn_limited("closed", "serla: capture_exception() after shutdown() is dropped")
            return False
        mapped = map_level(level)
        if mapped is None:
            warn_limited("error_level", "serla: unknown error level %r; sending it as 'error'", level)
            mapped = "error"
        scope = self._scope_get()  # the request context: its user, session, groups and properties
        if distinct_id is None:
            distinct_id = scope.distinct_id
        elif not isinstance(distinct_id, str):
            coerced = _as_id(distinct_id)
            if coerced is None:
                warn_limited(
                    "error_distinct_id",
                    "serla: capture_exception(): distinct_id must be a string, got %s; sent without it",
                    type(distinct_id).__name__,
                )
            distinct_id = coerced
        if context is not None and not isinstance(context, Mapping):
            coerced_context = _as_properties(context)
            if coerced_context is None:
                warn_limited(
                    "error_context",
                    "serla: capture_exception(): context must be a dict, got %s; sent without it",
                    type(context).__name__,
                )
            context = coerced_context
        for name, value in (("release", release), ("environment", environment)):
            if value is not None and not isinstance(value, str):
                warn_limited("error_" + name, "serla: capture_exception(): %s must be a string", name)
                if name == "release":
                    release = None
                else:
                    environment = None
        if scope.properties or scope.groups:  # explicit context wins over the request context's
            context = _merged(dict(context) if context else {}, scope, None)
        fields = reporter.finish(
            report,
            exc=exc,
            level=mapped,
            distinct_id=distinct_id or None,
            context=context,
            release=release,
            environment=environment,
            timestamp=self._now(),
            session_id=scope.session_id,
        )
        if fields is None:
            return False
        body = encode_report(fields)
        if self._disabled:
            reporter.count("captured")
            return True
        if self._submit("errors", body):
            reporter.count("captured")
            return True
        reporter.count("refused")
        return False

    def flush(self, timeout: float | None = 30.0) -> bool:
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

    def shutdown(self, timeout: float | None = 30.0) -> bool:
        """Flush, stop the worker thread and unregister the atexit hook. Safe to call more than once.

        After it, ``track()`` and ``identify()`` are dropped with a warning.

        Args:
            timeout: Seconds to spend at most. ``None`` waits without bound.

        Returns:
            True when everything accepted was delivered.
        """
        try:
            self._shut = True
            if self._hooks is not None:
                self._hooks.uninstall()
                self._hooks = None
            if self._exit_token is not None:
                from serla import _exit

                _exit.unregister(self._exit_token)
                self._exit_token = None
            if self._flags is not None:
                self._flags.close()
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

    def stats(self) -> Stats:
        """Counters for health checks and tests.

        Returns:
            A :class:`serla.Stats` dict: ``queued`` (in the buffer), ``queued_bytes``, ``in_flight``,
            ``pending`` (both), ``accepted``, ``sent`` (events the server confirmed), ``batches_sent``,
            ``requests``, ``retried`` (resends of a batch), ``dropped`` (reason -> events: ``invalid_call``,
            ``queue_full``, ``rejected`` (400), ``too_large``, ``server_error``, ``shutdown``,
            ``before_send``),
            ``healthy`` (the last send succeeded), ``state`` (``up``, ``rate_limited``, ``paused``,
            ``down``), ``last_error``, ``lanes`` (the error and LLM lanes' counters) and ``errors`` (error
            reports before their lane: ``captured``, ``rate_limited``, ``duplicate``...). After the first
            feature flag call, ``flags`` too: requests, cache hits and misses, fallbacks by reason (see
            ``docs/flags.md``). With ``spool_dir``, ``spool`` too: spooled, sent from the spool, left on
            disk (see ``docs/spool.md``).
        """
        out = self._worker.stats()
        if self._invalid:
            out["dropped"]["invalid_call"] = self._invalid
        if self._before_send_dropped:
            out["dropped"]["before_send"] = self._before_send_dropped
        if self._flags is not None:
            out["flags"] = self._flags.stats()
        # Error reports before the errors lane: captured, rate_limited, duplicate, dropped_by_hook...
        out["errors"] = self._errors.stats() if self._errors is not None else {}
        return out

    # -- feature flags (serla._flags; docs/flags.md) -----------------------------------------------------

    def get_feature_flag(
        self,
        key: str,
        fallback: Any = False,
        *,
        distinct_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> Any:
        """A feature flag's value for a user: ``True``, ``False`` or the variant key. Never raises.

        Evaluated by the server (``GET /api/v1/flags``) and cached per ``(distinct_id, properties)`` for
        the server's ``max-age`` (30 s). A cached answer returns in microseconds; a miss waits at most
        ``flags_timeout``. Any failure (network, timeout, 401, 402, 429, 5xx) returns ``fallback``; the
        reason is counted in ``stats()["flags"]["fallbacks"]``.

        Args:
            key: The flag's key.
            fallback: Returned when the server's answer is unavailable or has no such flag.
            distinct_id: The user; ``None`` takes the context's (:func:`serla.set_distinct_id`). With
                none at all, the fallback and a warning (once).
            properties: Values for the flags' ``property_equals`` conditions.

        Returns:
            The value, or ``fallback``.
        """
        return self._flag_client().get_flag(key, fallback, distinct_id, properties)

    def is_feature_enabled(
        self,
        key: str,
        *,
        distinct_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> bool:
        """Whether a flag is on for the user (``True`` or any variant but ``""``/``"off"``); else False.

        Same caching and failure handling as :meth:`get_feature_flag` (the fallback is ``False``).
        """
        return self._flag_client().is_enabled(key, distinct_id, properties)

    def get_all_feature_flags(
        self, *, distinct_id: str | None = None, properties: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Every flag of the project for the user (key -> ``True``/``False``/variant), or ``{}`` on failure.

        Same caching and failure handling as :meth:`get_feature_flag`. Sends no exposure events.
        """
        return self._flag_client().get_all(distinct_id, properties)

    async def aget_feature_flag(
        self,
        key: str,
        fallback: Any = False,
        *,
        distinct_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> Any:
        """:meth:`get_feature_flag` for asyncio: a miss is awaited without blocking the event loop."""
        return await self._flag_client().aget_flag(key, fallback, distinct_id, properties)

    async def ais_feature_enabled(
        self,
        key: str,
        *,
        distinct_id: str | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> bool:
        """:meth:`is_feature_enabled` for asyncio."""
        return await self._flag_client().ais_enabled(key, distinct_id, properties)

    async def aget_all_feature_flags(
        self, *, distinct_id: str | None = None, properties: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """:meth:`get_all_feature_flags` for asyncio."""
        return await self._flag_client().aget_all(distinct_id, properties)

    def _flag_client(self) -> FlagClient:
        """The client's :class:`serla._flags.FlagClient`, made on first use (``serla._flags`` loads then)."""
        flags = self._flags
        if flags is None:
            with self._worker._lock:
                flags = self._flags
                if flags is None:
                    flags = self._flags = _make_flag_client(self)
        return flags

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


def _make_flag_client(client: Serla) -> FlagClient:
    """The client's flag cache. It holds the client weakly: its threads must not keep a client alive."""
    import weakref

    from serla._flags import FlagClient

    cfg = client._config
    ref = weakref.ref(client)

    def transport() -> Transport:
        owner = ref()
        if owner is None:
            raise RuntimeError("the client was garbage-collected")
        return owner._transport_factory()  # read at each call: serla.testing swaps it

    def track(event: str, distinct_id: str, properties: dict[str, Any]) -> bool:
        owner = ref()
        return owner.track(event, distinct_id, properties) if owner is not None else False

    flags = FlagClient(
        transport,
        flags_timeout=cfg.flags_timeout,
        cache_size=cfg.flags_cache_size,
        track=track,
        send_events=cfg.send_flag_events,
    )
    if cfg.disabled:
        flags.set_local({})  # a disabled client sends nothing: every flag call returns its fallback
    if client._shut:
        flags.close()
    return flags


def _default_transport_factory(cfg: Config) -> Callable[[], Transport]:
    """The production transport factory; ``serla._transport`` (and ``http.client``) load on its first call.

    Everything a connection needs is set up once per client and shared by every transport the factory
    makes (the flusher's, each ``identify()``'s, a forked child's): the proxy, resolved here (the option,
    else the environment), and the TLS context (``ssl.SSLContext``, with the CA store or ``ca_bundle``
    loaded), made by the first https connection of any of them.
    """
    from serla._lazy import IMPORT_LOCK
    from serla._proxy import resolve_proxy

    proxy = None if cfg.disabled else resolve_proxy(cfg.proxy, cfg.host)
    if proxy is not None:
        if proxy.error is not None:
            log_warning("serla: %s. Until then every send fails and events wait in the queue", proxy.error)
        else:
            log_debug("serla: sending through the proxy %s (from %s)", proxy.url, proxy.source)
    shared: dict[str, Any] = {}  # the client's one TlsContext (``dict.setdefault`` is atomic)

    def factory() -> Transport:
        with IMPORT_LOCK:  # the network stack loads whole before any fork (see serla._lazy)
            from serla._transport import HttpTransport, TlsContext, import_network_stack

            import_network_stack()
        tls = shared.get("tls") or shared.setdefault("tls", TlsContext(cfg.ca_bundle))
        return HttpTransport(cfg.host, cfg.api_key, cfg.timeout, proxy=proxy, tls=tls)

    return factory


def _env_spool_dir() -> str | None:
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


def _warn_exc(msg: str) -> None:
    log = serla_log()
    if log is not None:
        log.logger.warning(msg, exc_info=True)


def _as_id(value: Any) -> str | None:
    """An ``int`` or ``UUID`` user id as text; None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    uuid = sys.modules.get("uuid")
    if uuid is not None and isinstance(value, uuid.UUID):
        return str(value)
    return None


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


_HEX = "0123456789abcdefABCDEF"


def _merged(props: dict[str, Any], scope: Any, sup: dict[str, Any] | None) -> dict[str, Any]:
    """Explicit ``props`` over the context's properties and groups over the client's super properties."""
    out = dict(sup) if sup is not None else {}
    if scope.properties:
        out.update(scope.properties)
    if scope.groups:
        out["$groups"] = scope.groups
    out.update(props)
    return out


async def _in_thread(func: Callable[..., Any], *args: Any) -> Any:
    """``asyncio.to_thread`` (3.9+): run ``func`` in the loop's default executor, in a copy of the context."""
    import asyncio
    import contextvars
    import functools

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(contextvars.copy_context().run, func, *args))
