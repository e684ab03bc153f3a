"""``SerlaHandler``: log records that name an event become ``Serla.track()`` calls.

The mapping is documented in the README's Logging section.

Thread invariants:

* ``emit`` runs on the logging thread with the handler lock held (``Handler.handle`` takes it), so the
  drop counters, which only ``emit`` changes, need no lock of their own.
* Every check that decides whether a record is handled at all runs in :meth:`SerlaHandler.filter`,
  *before* ``Handler.handle`` takes the handler lock: records of the SDK's own loggers and threads, records
  emitted while this thread is already inside the handler, and records that name no event are dropped
  there. The SDK's flusher thread therefore never
  waits for the handler lock, so ``logging.shutdown()`` can hold that lock while :meth:`SerlaHandler.flush`
  waits for the flusher without deadlocking (a thread-local guard alone cannot prevent this: the flusher
  is another thread).
* ``flush`` and ``close`` never take the handler lock themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import traceback
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

from serla import _registry, _worker
from serla._client import Serla
from serla._config import DEFAULT_HOST, env_disabled
from serla._context import get_distinct_id
from serla._log import logger, warn_limited

DEFAULT_EVENT_KEYS: Final = ("event", "event_name", "event.name", "otel.event.name")
"""Record keys that name an event, tried in this order (``event.name``/``otel.event.name`` are OTel's)."""

DEFAULT_DISTINCT_ID_KEYS: Final = ("distinct_id", "enduser.id", "user.id")
"""Record keys that name the user, tried in this order (``enduser.id``/``user.id`` are OTel's)."""

PROPERTIES_KEY: Final = "properties"
"""A record key whose dict is merged into the event's properties (it wins over loose extras)."""

IGNORED_LOGGERS: Final = ("serla", "urllib3", "http.client")
"""Records of these loggers and their children never become events: the SDK's own logger and the HTTP
stack it uses (``http.client``, and ``urllib3`` for apps that route it through the same root handler)."""

SDK_THREAD_PREFIX: Final = "serla-"
"""Records emitted on the SDK's own threads (``serla-flusher``, ``serla-identify``) are dropped too."""

DEFAULT_FLUSH_TIMEOUT: Final = 5.0
"""Seconds ``flush()``/``close()`` wait by default: bounded, because ``logging.shutdown()`` holds the
handler lock (and so blocks other threads' records to this handler) while it calls them."""

_BLANK: Final = logging.LogRecord("", logging.NOTSET, "", 0, "", (), None)
RESERVED_ATTRIBUTES: Final[frozenset[str]] = frozenset(vars(_BLANK)) | {"message", "asctime"}
"""Attribute names of a bare ``LogRecord`` on this Python (so ``taskName`` on 3.12+), plus the two a
``Formatter`` adds. Every other attribute of a record is a user ``extra``."""

_INIT_ATTRIBUTES: Final = frozenset(vars(_BLANK))  # what LogRecord.__init__ sets, in every record
_N_INIT: Final = len(_INIT_ATTRIBUTES)
_IGNORED_NAMES: Final = frozenset(IGNORED_LOGGERS)
_IGNORED_PREFIXES: Final = tuple(name + "." for name in IGNORED_LOGGERS)
del _BLANK


class _Guard(threading.local):
    """Per-thread flag: True while this thread is inside :meth:`SerlaHandler.emit`."""

    active = False


_GUARD: Final = _Guard()


def _from_the_sdk(record: logging.LogRecord) -> bool:
    """True for a record that would feed the SDK's own activity back into it.

    That is a record of a logger in :data:`IGNORED_LOGGERS` (or a child), a record emitted on one of the
    SDK's own threads, or one emitted on a thread that is already inside a ``SerlaHandler.emit`` (for
    example by a property value whose ``__str__`` logs). :meth:`SerlaHandler.filter` checks this first,
    before your filters and before ``Handler.handle`` takes the handler lock.
    """
    if _GUARD.active:
        return True
    name = record.name
    if name in _IGNORED_NAMES or name.startswith(_IGNORED_PREFIXES):
        return True
    thread_name = record.threadName
    if thread_name is None:  # logging.logThreads = False
        thread_name = threading.current_thread().name
    return thread_name.startswith(SDK_THREAD_PREFIX)


def _extra_keys(values: dict[str, Any]) -> Iterable[str]:
    """The keys of a record's ``__dict__`` that may be extras, in order (the caller still filters them).

    ``LogRecord.__init__`` sets its attributes first; ``extra``, ``makeLogRecord`` and formatters add
    theirs after. So the keys after the last ``__init__`` attribute are usually all there is to check,
    which saves scanning the twenty-odd standard ones. When the count shows anything else before that
    point (a record factory that sets attributes first), every key is returned.
    """
    tail: list[str] = []
    for key in reversed(values):
        if key in _INIT_ATTRIBUTES:
            break
        tail.append(key)
    if len(values) - len(tail) != _N_INIT:
        return values
    tail.reverse()
    return tail


def _check_keys(option: str, keys: Any) -> tuple[str, ...]:
    if isinstance(keys, str) or not isinstance(keys, Iterable):
        raise TypeError(f"SerlaHandler: {option} must be a list of strings, not {type(keys).__name__}")
    out = tuple(keys)
    if not out or not all(isinstance(k, str) and k for k in out):
        raise ValueError(f"SerlaHandler: {option} must be a non-empty list of non-empty strings: {out!r}")
    reserved = [k for k in out if k in RESERVED_ATTRIBUTES]
    if reserved:
        raise ValueError(f"SerlaHandler: {option} names standard LogRecord attributes: {reserved!r}")
    return out


def _check_name(option: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"SerlaHandler: {option} must be a non-empty string or None, not {value!r}")
    return value


def _as_id(value: Any) -> str | None:
    """A usable distinct_id from a record value: a non-empty string, or an int or UUID as text."""
    if isinstance(value, str):
        return value or None
    if (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, uuid.UUID):
        return str(value)
    return None


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _exc_tuple(value: Any) -> Any:
    """Normalise an ``exc_info`` value as ``Logger._log`` does: True, an exception, or a 3-tuple."""
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple):
        return value
    if value:
        return sys.exc_info()
    return None


def _exception_properties(props: dict[str, Any], exc_info: Any, exc_text: str | None) -> None:
    """Add ``exception.type``, ``exception.message`` and ``exception.stacktrace`` (OTel's names)."""
    if not exc_info or len(exc_info) != 3 or exc_info[0] is None:
        return
    etype, value, tb = exc_info
    module = getattr(etype, "__module__", None)
    qualname = getattr(etype, "__qualname__", None) or _safe_str(etype)
    props["exception.type"] = qualname if module in (None, "builtins") else f"{module}.{qualname}"
    props["exception.message"] = _safe_str(value)
    if exc_text:  # a Formatter of another handler already rendered it: reuse that work
        props["exception.stacktrace"] = exc_text
    else:
        with contextlib.suppress(Exception):
            props["exception.stacktrace"] = "".join(traceback.format_exception(etype, value, tb)).rstrip("\n")


def _level_number(option: str, value: Any) -> int | None:
    """A logging level given as a number or a name, or None; ValueError/TypeError for anything else."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"SerlaHandler: {option} must be a logging level (int or name), not {value!r}")
    if isinstance(value, int):
        return value
    number = logging.getLevelName(value.strip().upper())
    if not isinstance(number, int):
        raise ValueError(f"SerlaHandler: {option}={value!r} is not a logging level name")
    return number


def _inside_logging_configuration() -> bool:
    """True when this thread holds the ``logging`` module lock.

    ``dictConfig``/``fileConfig`` hold it while they flush and close the handlers they replace; the SDK's
    flusher thread may need the same lock to log (``Logger.isEnabledFor`` takes it on a cache miss), so
    waiting for the flusher there could stall the reconfiguration until the timeout.
    """
    is_owned = getattr(getattr(logging, "_lock", None), "_is_owned", None)
    if is_owned is None:
        return False
    try:
        return bool(is_owned())
    except Exception:
        return False


class SerlaHandler(logging.Handler):
    """A ``logging.Handler`` that turns log records naming an event into ``Serla.track()`` calls.

    Safe on the root logger: a record becomes an event only when it names one
    (``logger.info("signed up", extra={"event": "signup_completed", "distinct_id": "user_123"})``), or, with
    ``all_records_as``, every record does. The full mapping (event name, ``distinct_id``, properties,
    timestamp) is in the README's Logging section.

    Which client the events go to:

    * ``SerlaHandler(client)`` uses that client (for example ``"client": "ext://myapp.analytics.serla"``
      in ``dictConfig``) and never shuts it down.
    * ``SerlaHandler(api_key=..., host=...)`` (either, or ``client_options``) creates its own client, reading
      whichever of the two is not given from ``SERLA_API_KEY`` / ``SERLA_HOST``; :meth:`close` shuts it
      down.
    * ``SerlaHandler()`` uses the process-wide default client, looked up at each record: the one
      registered with :func:`serla.set_default_client`, else one created (and registered) from
      ``SERLA_API_KEY`` / ``SERLA_HOST`` on the first event. Your own ``serla.get_default_client().track()``
      calls and the OpenTelemetry bridge share that client and its batching worker. The handler never
      shuts it down.

    Never hurts the application: ``emit`` does no network I/O and does not wait for room in a full queue
    (the event is dropped and counted instead). An error while turning a record into an event goes to
    :meth:`~logging.Handler.handleError`, which respects ``logging.raiseExceptions``. The handler ignores
    the SDK's own logging (see :data:`IGNORED_LOGGERS`); the filter doing that runs before the handler lock,
    so a ``flush()`` under ``logging.shutdown()`` cannot deadlock with the SDK's worker thread. It keeps
    working in a forked child (the client starts a fresh pipeline there).

    Args:
        client: The :class:`~serla.Serla` client to track with.
        api_key: Create and own a client with this key (``None``: ``SERLA_API_KEY``).
        host: The owned client's host (``None``: ``SERLA_HOST``, else ``https://serla.dev``).
        client_options: More keyword arguments for the owned client (``flush_interval_seconds``, ...).
        level: The handler's level. ``NOTSET`` (the default) passes every level; the loggers' levels still
            apply, and the root logger's default is WARNING.
        all_records_as: ``None`` (the default): only records that name an event become events. A string:
            every record that reaches the handler becomes an event, named by the record if it names one,
            else named this (for example ``"log_line"``). Use it with ``level`` and filters.
        default_distinct_id: Used when neither the record nor the context
            (:func:`serla.set_distinct_id`) names the user. ``None``: such records are dropped and counted
            as ``no_distinct_id``.
        event_keys: The record keys that name an event, tried in order (a non-empty string value names
            one). Default :data:`DEFAULT_EVENT_KEYS`. Narrow it (``["analytics_event"]``) if your logs
            already use ``extra={"event": ...}`` for something else.
        distinct_id_keys: The record keys that name the user, tried in order. Default
            :data:`DEFAULT_DISTINCT_ID_KEYS`. A string value is used as is, an ``int`` or ``UUID`` as its
            text; other values are skipped.
        include_message: Put the formatted message (``record.getMessage()``) into the ``message``
            property. Turn it off if your messages may carry personal data you don't want in analytics.
        flush_timeout: The longest :meth:`flush` and :meth:`close` wait for delivery, in seconds.
            ``logging.shutdown()`` (at exit) calls both while holding the handler lock. ``0`` starts the
            delivery without waiting; ``None`` waits without bound.
        errors_level: Records at or above this level (a number or a name such as ``"ERROR"``) that carry
            ``exc_info`` (``logger.exception(...)``, ``exc_info=True``) are also reported to error tracking
            (:meth:`serla.Serla.capture_exception`), whether or not they name an event. The report's
            ``metadata`` holds the logger's name and the formatted message (unless ``include_message`` is
            off); its level follows the record's. Each exception is reported once, whichever path sees it
            first (this handler, ``capture_exception``, the uncaught-exception hooks). ``None`` (the
            default): no error reports.

    Raises:
        ValueError: For a bad option, for ``client`` together with ``api_key``/``host``/``client_options``,
            or for ``SerlaHandler()`` when no default client is registered and ``SERLA_API_KEY`` is unset.
        TypeError: For an option of the wrong type (for example a ``client`` given as a dotted-path string
            in ``dictConfig`` without the ``ext://`` prefix).
    """

    def __init__(
        self,
        client: Serla | None = None,
        *,
        api_key: str | None = None,
        host: str | None = None,
        client_options: Mapping[str, Any] | None = None,
        level: int | str = logging.NOTSET,
        all_records_as: str | None = None,
        default_distinct_id: str | None = None,
        event_keys: Iterable[str] = DEFAULT_EVENT_KEYS,
        distinct_id_keys: Iterable[str] = DEFAULT_DISTINCT_ID_KEYS,
        include_message: bool = True,
        flush_timeout: float | None = DEFAULT_FLUSH_TIMEOUT,
        errors_level: int | str | None = None,
    ) -> None:
        self._errors_level = _level_number("errors_level", errors_level)
        self._errors_reported = 0
        self._all_records_as = _check_name("all_records_as", all_records_as)
        self._default_distinct_id = _check_name("default_distinct_id", default_distinct_id)
        self._event_keys = _check_keys("event_keys", event_keys)
        self._id_keys = _check_keys("distinct_id_keys", distinct_id_keys)
        if not isinstance(include_message, bool):
            raise TypeError("SerlaHandler: include_message must be a bool")
        self._include_message = include_message
        if flush_timeout is not None and (
            isinstance(flush_timeout, bool)
            or not isinstance(flush_timeout, (int, float))
            or not flush_timeout >= 0
        ):
            raise ValueError(
                f"SerlaHandler: flush_timeout must be >= 0 seconds or None, not {flush_timeout!r}"
            )
        self._flush_timeout = None if flush_timeout is None else float(flush_timeout)
        # Keys that are never copied into properties as loose extras.
        self._skip: frozenset[str] = RESERVED_ATTRIBUTES.union(
            self._event_keys, self._id_keys, (PROPERTIES_KEY,)
        )
        self._closed = False
        self._dropped: dict[str, int] = {}
        self._tracked = 0
        self._owned = False
        self._client: Serla | None = None
        self._limit: tuple[Any, int] = (None, 0)  # (client, see _queue_limit), replaced whole
        super().__init__(level)  # checks the level before a client is created
        self._client = self._resolve_client(client, api_key, host, client_options)

    # -- construction ----------------------------------------------------------------------------------

    def _resolve_client(
        self,
        client: Serla | None,
        api_key: str | None,
        host: str | None,
        client_options: Mapping[str, Any] | None,
    ) -> Serla | None:
        if client is not None:
            if isinstance(client, str):
                raise TypeError(
                    "SerlaHandler: client must be a serla.Serla, not a string; in dictConfig write "
                    f"'ext://{client}' to refer to an object by its dotted path"
                )
            if not callable(getattr(client, "track", None)) or not callable(getattr(client, "flush", None)):
                raise TypeError(f"SerlaHandler: client must be a serla.Serla, not {type(client).__name__}")
            if api_key is not None or host is not None or client_options is not None:
                raise ValueError("SerlaHandler: pass either client or api_key/host/client_options, not both")
            return client
        if api_key is None and host is None and client_options is None:
            if _registry.get_default_client(create=False) is None and not (
                os.environ.get("SERLA_API_KEY") or env_disabled()
            ):
                raise ValueError(
                    "SerlaHandler: no client: pass client=..., api_key=..., register one with "
                    "serla.set_default_client() before configuring logging, or set SERLA_API_KEY"
                )
            return None  # the process-wide default client, looked up at each record
        if client_options is not None and not isinstance(client_options, Mapping):
            raise TypeError("SerlaHandler: client_options must be a dict of Serla keyword arguments")
        options = dict(client_options or {})
        key = api_key if api_key is not None else os.environ.get("SERLA_API_KEY", "")
        if not key and env_disabled():
            key = "disabled"
        if host is None:
            host = os.environ.get("SERLA_HOST", "").strip() or DEFAULT_HOST
        if not key:
            raise ValueError("SerlaHandler: api_key is required (or set SERLA_API_KEY)")
        owned = Serla(key, host=host, **options)
        self._owned = True
        return owned

    # -- public API ------------------------------------------------------------------------------------

    @property
    def client(self) -> Serla | None:
        """The client events go to now (``None`` if it is the default client and none exists yet)."""
        if self._client is not None:
            return self._client
        return _registry.get_default_client(create=False)

    @property
    def owns_client(self) -> bool:
        """True when this handler created its client, and so shuts it down in :meth:`close`."""
        return self._owned

    def stats(self) -> dict[str, Any]:
        """Counters for health checks and tests.

        Returns:
            ``{"tracked": n, "dropped": {reason: n}}``: records handed to the client, and records that
            named an event but were dropped by the handler. Reasons: ``no_distinct_id``, ``no_client``
            (no default client and none configurable from the environment), ``queue_full`` (the client's
            queue was full: the handler never waits for room), ``rejected`` (the client refused the event;
            its own ``stats()`` says why), ``closed`` (after :meth:`close`) and ``error`` (see
            ``handleError``). ``errors_reported`` (only with ``errors_level``): records queued as error
            reports.
        """
        out: dict[str, Any] = {"tracked": self._tracked, "dropped": dict(self._dropped)}
        if self._errors_level is not None:
            out["errors_reported"] = self._errors_reported
        return out

    def filter(self, record: logging.LogRecord) -> Any:
        """Drop the SDK's own records, run your filters, then keep the record only if it names an event.

        ``Handler.handle`` calls this before it takes the handler lock, so ordinary log lines on the root
        logger cost no lock, and the SDK's flusher thread never waits for it. The SDK's loop guard (see
        :data:`IGNORED_LOGGERS`) runs first and can't be removed; filters you add run after it and may
        still add the event's keys to the record (they run before the event check).

        Returns:
            What the filters returned (a record replacing this one, on Python 3.12+) when the record names
            an event, else False.
        """
        if _from_the_sdk(record):
            return False
        rv = logging.Filterer.filter(self, record) if self.filters else True
        if not rv:
            return rv
        if self._all_records_as is not None:
            return rv
        checked = rv if isinstance(rv, logging.LogRecord) else record
        if self._errors_level is not None and self._wants_error(checked):
            return rv
        return rv if self._event_name(checked) is not None else False

    def emit(self, record: logging.LogRecord) -> None:
        """Track the record as an event. Never blocks and never raises (errors go to ``handleError``).

        Called by ``Handler.handle`` with the handler lock held, for records that passed :meth:`filter`.
        """
        guard = _GUARD
        if guard.active:
            return
        guard.active = True
        try:
            if self._errors_level is not None and self._wants_error(record):
                self._report_error(record)
            self._track(record)
        except RecursionError:  # as the stdlib handlers do (bpo-36272)
            raise
        except Exception:
            self._drop("error")
            self.handleError(record)
        finally:
            guard.active = False

    def flush(self) -> None:
        """Deliver what was tracked so far, waiting at most ``flush_timeout`` seconds.

        Doesn't take the handler lock. When called by ``dictConfig``/``fileConfig`` while they replace this
        handler (they hold the ``logging`` module lock), it starts the delivery and returns at once.
        """
        client = self.client
        if client is None:
            return
        client.flush(self._wait_budget())

    def close(self) -> None:
        """Flush (bounded by ``flush_timeout``) and, if this handler created its client, shut it down.

        A client passed in or the default client stays open. Safe to call twice and on a client that was
        already shut down (``logging.shutdown()`` at exit may run after the client's own exit hook).
        Records that still reach the handler afterwards are dropped and counted as ``closed``. When
        ``dictConfig``/``fileConfig`` closes the handler, it doesn't wait: an owned client finishes
        delivering in the background.
        """
        try:
            self.acquire()
            try:
                if self._closed:
                    return
                self._closed = True
            finally:
                self.release()
            client = self.client
            if client is None:
                return
            budget = self._wait_budget()
            if self._owned:
                client.shutdown(budget)
            else:
                client.flush(budget)
        except Exception:
            logger.warning("serla: closing the logging handler failed", exc_info=True)
        finally:
            super().close()

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        target = repr(self._client) if self._client is not None else "default client"
        return f"<{type(self).__name__} ({level}) -> {target}>"

    # -- internals -------------------------------------------------------------------------------------

    def _wait_budget(self) -> float | None:
        return 0.0 if _inside_logging_configuration() else self._flush_timeout

    def _queue_limit(self, client: Serla) -> int:
        """The pending count at which a record is dropped rather than tracked; 0: never.

        ``track()`` waits for room in a full queue only when the client's ``block_on_full_seconds`` is
        above zero; only then does ``emit`` check the pending count first (racy but cheap).
        """
        config = client.config
        limit = config.max_queue_size if config.block_on_full_seconds > 0 else 0
        self._limit = (client, limit)
        return limit

    def _drop(self, reason: str) -> None:
        """Count a dropped record (caller: ``emit``, under the handler lock)."""
        self._dropped[reason] = self._dropped.get(reason, 0) + 1
        if reason == "no_distinct_id":
            warn_limited(
                "logging_no_distinct_id",
                "serla: log event dropped: no distinct_id (set extra %s, serla.set_distinct_id() or the "
                "handler's default_distinct_id)",
                " / ".join(self._id_keys),
            )
        elif reason == "no_client":
            warn_limited(
                "logging_no_client",
                "serla: log events dropped: no client (pass one, call serla.set_default_client() or set "
                "SERLA_API_KEY)",
            )
        elif reason == "queue_full":
            warn_limited("logging_queue_full", "serla: log event dropped: the client's queue is full")

    def _wants_error(self, record: logging.LogRecord) -> bool:
        level = self._errors_level
        exc_info = record.exc_info
        return (
            level is not None
            and record.levelno >= level
            and isinstance(exc_info, tuple)
            and len(exc_info) == 3
            and isinstance(exc_info[1], BaseException)
        )

    def _client_or_default(self) -> Serla | None:
        """The handler's client, else the default one (made on first use); None is dropped as no_client."""
        client = self._client
        if client is None:
            client = _registry.get_default_client()
            if client is None:
                client = _registry.get_default_client(create=True)
                if client is None:
                    self._drop("no_client")
        return client

    def _report_error(self, record: logging.LogRecord) -> None:
        """Queue the record's exception as an error report (caller: ``emit``, under the handler lock)."""
        if self._closed:
            return
        exc = record.exc_info[1]  # type: ignore[index]  # checked by _wants_error
        client = self._client_or_default()
        if client is None:
            return
        values = record.__dict__
        distinct_id = None
        for key in self._id_keys:
            if key in values:
                distinct_id = _as_id(values[key])
                if distinct_id is not None:
                    break
        context: dict[str, Any] = {"mechanism": "logging", "logger": record.name}
        if self._include_message:
            context["log_message"] = record.getMessage()
        capture = getattr(client, "_capture", None)
        if capture is not None and capture(
            exc,
            distinct_id=distinct_id or get_distinct_id() or self._default_distinct_id,
            level=record.levelno,
            context=context,
        ):
            self._errors_reported += 1

    def _event_name(self, record: logging.LogRecord) -> str | None:
        """The event a record names (see :data:`DEFAULT_EVENT_KEYS`), else ``all_records_as``."""
        values = record.__dict__
        for key in self._event_keys:
            value = values.get(key)
            if value and isinstance(value, str):
                return value
        msg = record.msg
        if type(msg) is not str and isinstance(msg, Mapping) and not record.args:
            structlog = "_logger" in values  # structlog's ProcessorFormatter.wrap_for_formatter
            for key in self._event_keys:
                if structlog and key == "event":
                    continue  # structlog's "event" is the log message
                value = msg.get(key)
                if value and isinstance(value, str):
                    return value
        return self._all_records_as

    def _track(self, record: logging.LogRecord) -> None:
        """Build the event once and hand it to ``client.track`` once (caller: ``emit``)."""
        if self._closed:
            self._drop("closed")
            return
        values = record.__dict__
        msg = record.msg
        exc_info: Any = record.exc_info
        message: str | None
        if type(msg) is not str and isinstance(msg, Mapping) and not record.args:
            # A dict message (structlog's wrap_for_formatter, JSON-logger style): its items are fields.
            fields = dict(msg)
            if "_logger" in values:
                event_text = fields.pop("event", None)
                message = None if event_text is None else _safe_str(event_text)
            else:
                message = None
            if "exc_info" in fields:
                extra_exc = _exc_tuple(fields.pop("exc_info"))
                if not exc_info:
                    exc_info = extra_exc
            for key, value in values.items():
                if key not in RESERVED_ATTRIBUTES:
                    fields[key] = value
        else:
            fields = values
            message = record.getMessage() if self._include_message else None

        name = None
        for key in self._event_keys:
            value = fields.get(key)
            if value and isinstance(value, str):
                name = value
                break
        if name is None:
            name = self._all_records_as
            if name is None:  # filter() already checked; a direct emit() call
                return

        distinct_id = None
        for key in self._id_keys:
            if key in fields:
                distinct_id = _as_id(fields[key])
                if distinct_id is not None:
                    break
        if distinct_id is None:
            distinct_id = get_distinct_id() or self._default_distinct_id
            if distinct_id is None:
                self._drop("no_distinct_id")
                return

        client = self._client_or_default()
        if client is None:
            return
        limit = self._limit[1] if self._limit[0] is client else self._queue_limit(client)
        if limit and client.pending_count() >= limit:
            self._drop("queue_full")  # track() would wait for room: a handler must not
            return

        props: dict[str, Any] = {}
        if message is not None and self._include_message:
            props["message"] = message
        props["level"] = record.levelname
        props["logger"] = record.name
        if exc_info:
            _exception_properties(props, exc_info, record.exc_text)
        skip = self._skip
        for key in _extra_keys(fields) if fields is values else fields:
            if key not in skip and key[:1] != "_":
                props[key] = fields[key]
        nested = fields.get(PROPERTIES_KEY)
        if nested is not None:
            if isinstance(nested, Mapping):
                props.update(nested)
            else:
                props[PROPERTIES_KEY] = nested
        # Epoch seconds: the timestamp type track() formats fastest.
        if limit:  # the client may wait for room (block_on_full_seconds): not on a logging call
            no_wait = _worker.NO_WAIT
            no_wait.on = True
            try:
                accepted = client.track(name, distinct_id, props, record.created)
            finally:
                no_wait.on = False
        else:
            accepted = client.track(name, distinct_id, props, record.created)
        if accepted:
            self._tracked += 1
        else:
            self._drop("rejected")
