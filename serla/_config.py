"""Client options, their defaults and their checks: the only place where the SDK raises.

``Config`` is a small frozen class with ``__slots__`` rather than a dataclass: ``import serla`` loads this
module, and ``dataclasses`` alone (with ``inspect``, ``re`` and ``typing`` behind it) costs more than the
rest of the package. ``Serla.__init__`` (keyword-only) is what enforces keyword use.

This module also holds the SDK's logging entry points for the core (:func:`log_warning` and friends),
which import ``logging`` only when a record could be seen (see :func:`serla_log`).
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import ModuleType
    from typing import Any, Final, Optional

DEFAULT_HOST: Final = "https://serla.dev"
DEFAULT_MAX_BUFFER_BYTES: Final = 64 * 1024 * 1024
"""The byte bound of events held while the endpoint is up but slow or rate limited (see ``Serla``)."""
MAX_BATCH_SIZE: Final = 100

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "::1", "[::1]"})

_FIELDS: Final = (
    "api_key",
    "host",
    "flush_interval_seconds",
    "batch_size",
    "debug",
    "flush_on_exit",
    "max_queue_size",
    "timeout",
    "shutdown_timeout",
    "block_on_full_seconds",
    "max_buffer_bytes",
    "ca_bundle",
    "capture_trace_context",
    "disabled",
    "proxy",
    "flags_timeout",
    "flags_cache_size",
    "send_flag_events",
    "release",
    "environment",
    "capture_exceptions",
    "before_send_error",
    "in_app_include",
    "in_app_exclude",
    "project_root",
    "capture_llm_content",
    "before_send_llm",
)


class Config:
    """Every option of a :class:`~serla.Serla` client, checked. Immutable, comparable and hashable.

    See ``Serla.__init__`` for what each option means. The API key is kept out of the ``repr``.

    Raises:
        ValueError: For an empty ``api_key`` or any other bad option value.
        TypeError: For an option of the wrong type.
    """

    __slots__ = _FIELDS

    api_key: str
    host: str
    flush_interval_seconds: float
    batch_size: int
    debug: bool
    flush_on_exit: bool
    max_queue_size: int
    timeout: float
    shutdown_timeout: float
    block_on_full_seconds: float
    max_buffer_bytes: int
    ca_bundle: Optional[str]
    capture_trace_context: bool
    disabled: bool
    proxy: Optional[str]
    flags_timeout: float
    flags_cache_size: int
    send_flag_events: bool
    release: Optional[str]
    environment: Optional[str]
    capture_exceptions: bool
    before_send_error: Optional[Callable[..., Any]]
    in_app_include: tuple[str, ...]
    in_app_exclude: tuple[str, ...]
    project_root: Optional[str]
    capture_llm_content: bool
    before_send_llm: Optional[Callable[[dict[str, Any]], Any]]

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
        capture_trace_context: bool = True,
        disabled: bool = False,
        proxy: Optional[str] = None,
        flags_timeout: float = 1.0,
        flags_cache_size: int = 10_000,
        send_flag_events: bool = False,
        release: Optional[str] = None,
        environment: Optional[str] = None,
        capture_exceptions: bool = False,
        before_send_error: Optional[Callable[..., Any]] = None,
        in_app_include: Sequence[str] = (),
        in_app_exclude: Sequence[str] = (),
        project_root: Optional[str] = None,
        capture_llm_content: bool = True,
        before_send_llm: Optional[Callable[[dict[str, Any]], Any]] = None,
    ) -> None:
        key = api_key
        if not isinstance(key, str) or not key.strip():
            raise ValueError("Serla: api_key must be a non-empty string (your project's sk_live_... key)")
        _check_header_value("api_key", key)
        host = _check_host(host)
        _check_number("flush_interval_seconds", flush_interval_seconds, minimum=0.0, strict=True)
        _check_number("timeout", timeout, minimum=0.0, strict=True)
        _check_number("shutdown_timeout", shutdown_timeout, minimum=0.0)
        _check_number("block_on_full_seconds", block_on_full_seconds, minimum=0.0)
        _check_int("batch_size", batch_size)
        _check_int("max_queue_size", max_queue_size)
        _check_int("max_buffer_bytes", max_buffer_bytes)
        _check_number("flags_timeout", flags_timeout, minimum=0.0, strict=True)
        _check_int("flags_cache_size", flags_cache_size)
        if batch_size > MAX_BATCH_SIZE:
            log_warning(
                "serla: batch_size=%d is above the server's limit of %d events per request; using %d",
                batch_size,
                MAX_BATCH_SIZE,
                MAX_BATCH_SIZE,
            )
            batch_size = MAX_BATCH_SIZE
        if ca_bundle is not None and not isinstance(ca_bundle, str):
            raise TypeError("Serla: ca_bundle must be a path (str) or None")
        if proxy is not None:
            if not isinstance(proxy, str):
                raise TypeError("Serla: proxy must be a URL (str) such as 'http://proxy:3128', or None")
            proxy = proxy.strip()
            if proxy:
                from serla._proxy import parse_proxy  # only with the option: ``import serla`` skips it

                parse_proxy(proxy)  # raises ValueError for a URL the transport can't use
        if before_send_llm is not None and not callable(before_send_llm):
            raise TypeError("Serla: before_send_llm must be a callable (record -> record or None), or None")
        init = object.__setattr__
        init(self, "api_key", api_key)
        init(self, "host", host)
        init(self, "flush_interval_seconds", flush_interval_seconds)
        init(self, "batch_size", batch_size)
        init(self, "debug", debug)
        init(self, "flush_on_exit", flush_on_exit)
        init(self, "max_queue_size", max_queue_size)
        init(self, "timeout", timeout)
        init(self, "shutdown_timeout", shutdown_timeout)
        init(self, "block_on_full_seconds", block_on_full_seconds)
        init(self, "max_buffer_bytes", max_buffer_bytes)
        init(self, "ca_bundle", ca_bundle)
        init(self, "capture_trace_context", capture_trace_context)
        init(self, "disabled", disabled)
        init(self, "proxy", proxy)
        init(self, "flags_timeout", flags_timeout)
        init(self, "flags_cache_size", flags_cache_size)
        init(self, "send_flag_events", bool(send_flag_events))
        # Error tracking (issue 14): checked here so a wrong option raises at construction.
        for name, text in (
            ("release", release),
            ("environment", environment),
            ("project_root", project_root),
        ):
            if text is not None and not isinstance(text, str):
                raise TypeError(f"Serla: {name} must be a str or None, not {type(text).__name__}")
        if not isinstance(capture_exceptions, bool):
            raise TypeError("Serla: capture_exceptions must be a bool")
        if before_send_error is not None and not callable(before_send_error):
            raise TypeError(
                "Serla: before_send_error must be a callable (report, exception) -> report | None"
            )
        init(self, "release", release or None)
        init(self, "environment", environment or None)
        init(self, "capture_exceptions", capture_exceptions)
        init(self, "before_send_error", before_send_error)
        init(self, "in_app_include", _check_modules("in_app_include", in_app_include))
        init(self, "in_app_exclude", _check_modules("in_app_exclude", in_app_exclude))
        init(self, "project_root", project_root or None)
        init(self, "capture_llm_content", bool(capture_llm_content))
        init(self, "before_send_llm", before_send_llm)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _FIELDS)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Config is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Config is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Config)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        values = {name: getattr(self, name) for name in _FIELDS if name != "api_key"}
        if self.proxy:
            from serla._proxy import redact_proxy_url

            values["proxy"] = redact_proxy_url(self.proxy)  # never the proxy's credentials
        shown = ", ".join(f"{name}={value!r}" for name, value in values.items())
        return f"Config({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        import functools

        return (functools.partial(type(self), **dict(zip(_FIELDS[1:], self._values()[1:]))), (self.api_key,))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """Build a config from ``SERLA_API_KEY``, ``SERLA_HOST``, ``SERLA_DISABLED`` (and the rest below).

        ``SERLA_RELEASE`` and ``SERLA_ENVIRONMENT`` set ``release`` and ``environment``.

        Args:
            environ: The environment to read (default ``os.environ``).
            **overrides: Options that win over the environment.

        Raises:
            ValueError: When no API key is set (and the SDK is not disabled).
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get("SERLA_API_KEY"):
            values["api_key"] = env["SERLA_API_KEY"]
        if env.get("SERLA_HOST"):
            values["host"] = env["SERLA_HOST"]
        if env_disabled(env):
            values["disabled"] = True
            values.setdefault("api_key", "disabled")
        for name, option in (("SERLA_RELEASE", "release"), ("SERLA_ENVIRONMENT", "environment")):
            if env_text(name, env) is not None:
                values[option] = env_text(name, env)
        values.update(overrides)
        if "api_key" not in values:
            raise ValueError("Serla: set SERLA_API_KEY (and SERLA_HOST for a self-hosted or local server)")
        return cls(**values)  # type: ignore[arg-type]


def _check_modules(name: str, value: object) -> tuple[str, ...]:
    """A tuple of dotted module prefixes (``in_app_include`` / ``in_app_exclude``)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError(f"Serla: {name} must be a list of module names such as ['myapp'], not {value!r}")
    if not all(isinstance(m, str) and m.strip(".") for m in value):
        raise ValueError(f"Serla: {name} must hold non-empty module names, not {value!r}")
    return tuple(m.strip(".") for m in value)


def env_text(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The stripped value of an environment variable, or None when unset or blank."""
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    return value or None


def env_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``SERLA_DISABLED`` is set to 1/true/yes/on."""
    env = os.environ if environ is None else environ
    return env.get("SERLA_DISABLED", "").strip().lower() in _TRUE


def _describe_char(c: str) -> str:
    import unicodedata

    name = unicodedata.name(c, "")
    return f"U+{ord(c):04X}" + (f" ({name})" if name else "")


def _check_header_value(name: str, value: str) -> None:
    """Refuse a value that can't travel in an HTTP header: naming the position and character, never it."""
    for i, c in enumerate(value):
        if not "\x21" <= c <= "\x7e":
            raise ValueError(
                f"Serla: {name} has a character that cannot be sent in an HTTP header at position {i + 1}: "
                f"{_describe_char(c)}. Copy the key again from the Serla dashboard"
            )


def _check_host(host: object) -> str:
    if not isinstance(host, str) or not host.strip():
        raise ValueError("Serla: host must be a URL such as 'https://serla.dev'")
    host = host.strip().rstrip("/")
    for i, c in enumerate(host):
        if c.isspace() or ord(c) < 32 or ord(c) == 127:
            raise ValueError(
                f"Serla: host has a character that cannot be sent at position {i + 1}: {_describe_char(c)}"
            )
    scheme, _netloc, hostname, path = split_host(host)
    if not path.isascii():
        raise ValueError("Serla: host's path must be ASCII (percent-encode it)")
    if scheme == "http" and not is_loopback(hostname):
        log_warning(
            "serla: host %r is plain http: the API key and events travel unencrypted; use https", host
        )
    return host


def split_host(host: str) -> tuple[str, str, str, str]:
    """Split and check a base URL: ``(scheme, netloc, hostname, path)``, scheme and hostname lowercased.

    The same reading as ``urllib.parse.urlsplit`` for the URLs a ``host`` option may hold (without
    importing ``urllib.parse``, which ``import serla`` can't afford), and stricter about the rest.

    Raises:
        ValueError: For anything but an ``http``/``https`` URL with a host name and an optional port and
            path: a query, a fragment, credentials, white space or a bad port.
    """
    bad = f"Serla: host must be an http(s) URL such as 'https://serla.dev', not {host!r}"
    scheme, sep, rest = host.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https"):
        raise ValueError(bad)
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in host):
        raise ValueError(f"Serla: host must not contain white space or control characters: {host!r}")
    end = len(rest)
    for mark in "/?#":
        i = rest.find(mark)
        if i != -1 and i < end:
            end = i
    netloc, path = rest[:end], rest[end:]
    if "?" in path or "#" in path or "@" in netloc:
        raise ValueError(f"Serla: host must not carry a query, fragment or credentials: {host!r}")
    if netloc.startswith("["):  # an IPv6 literal
        close = netloc.find("]")
        if close == -1:
            raise ValueError(bad)
        hostname, after = netloc[1:close], netloc[close + 1 :]
        if after and not after.startswith(":"):
            raise ValueError(bad)
        port = after[1:]
    else:
        hostname, _, port = netloc.partition(":")
    if not hostname:
        raise ValueError(bad)
    if port and not (port.isdigit() and port.isascii() and int(port) <= 65535):
        raise ValueError(f"Serla: bad port in host {host!r}")
    return scheme, netloc, hostname.lower(), path


def is_loopback(hostname: str) -> bool:
    """True for ``localhost``, ``::1`` and addresses in 127.0.0.0/8."""
    hostname = hostname.lower()
    if hostname in _LOOPBACK_HOSTS:
        return True
    parts = hostname.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)


def _check_number(name: str, value: object, *, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Serla: {name} must be a number of seconds, not {type(value).__name__}")
    finite = value - value == 0  # math.isfinite without importing math: inf - inf and NaN - NaN are NaN
    if not finite or value < minimum or (strict and value == minimum):
        raise ValueError(f"Serla: {name} must be {'>' if strict else '>='} {minimum:g}, not {value!r}")


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Serla: {name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"Serla: {name} must be >= 1, not {value!r}")


# -- logging, without importing ``logging`` ----------------------------------------------------------------
#
# ``import serla`` must not import ``logging`` (with ``re``, ``traceback``, ``string``... it costs more than
# the whole package). Nothing is lost by waiting: the SDK attaches a ``NullHandler`` to the ``serla`` logger,
# so its records are seen only once the application has configured logging, which imports the module.
# While ``logging`` is not in ``sys.modules`` nothing can have been configured, and a record would end in
# that ``NullHandler``: dropping it before it is built is the same outcome. Once ``logging`` is loaded,
# :func:`serla_log` imports ``serla._log`` and attaches the ``NullHandler`` (once) before the first record.

_null_handler_added = False


def add_null_handler() -> None:
    """Attach one ``logging.NullHandler`` to the ``serla`` logger (idempotent; imports ``logging``)."""
    global _null_handler_added
    import logging

    _null_handler_added = True
    logger = logging.getLogger("serla")
    if not any(type(h) is logging.NullHandler for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def serla_log(force: bool = False) -> ModuleType | None:
    """The ``serla._log`` module when a record could be seen (``logging`` is loaded, or ``force``), else None.

    Args:
        force: Import ``logging`` even if nothing has loaded it yet (``debug=True`` does).
    """
    if not force and "logging" not in sys.modules:
        return None
    from serla import _log

    if not _null_handler_added:
        add_null_handler()
    return _log


def log_warning(msg: str, *args: Any) -> None:
    """``logger.warning`` on the ``serla`` logger, when logging is loaded."""
    log = serla_log()
    if log is not None:
        log.logger.warning(msg, *args)


def log_debug(msg: str, *args: Any) -> None:
    """``logger.debug`` on the ``serla`` logger, when logging is loaded."""
    log = serla_log()
    if log is not None:
        log.logger.debug(msg, *args)


def log_exception(msg: str, *args: Any) -> None:
    """``logger.exception`` (ERROR with the traceback) on the ``serla`` logger, when logging is loaded."""
    log = serla_log()
    if log is not None:
        log.logger.exception(msg, *args)


def warn_limited(key: str, msg: str, *args: Any) -> None:
    """``serla._log.warn_limited`` (at most one WARNING per kind a minute), when logging is loaded."""
    log = serla_log()
    if log is not None:
        log.warn_limited(key, msg, *args)
