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
    from collections.abc import Mapping
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
    "spool_dir",
    "spool_max_bytes",
)
DEFAULT_SPOOL_MAX_BYTES = 100 * 1024 * 1024  # serla._spool.DEFAULT_MAX_BYTES (not imported: it loads sqlite3)


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
    spool_dir: Optional[str]
    spool_max_bytes: int

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
        spool_dir: Optional[str] = None,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
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
                parse_proxy(proxy)  # raises ValueError for a URL the transport can't use
        if spool_dir is not None:
            if not isinstance(spool_dir, (str, os.PathLike)):
                raise TypeError("Serla: spool_dir must be a directory path (str or os.PathLike) or None")
            spool_dir = os.fspath(spool_dir) or None
        _check_int("spool_max_bytes", spool_max_bytes)
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
        init(self, "spool_dir", spool_dir)
        init(self, "spool_max_bytes", spool_max_bytes)

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
            values["proxy"] = redact_proxy_url(self.proxy)  # never the proxy's credentials
        shown = ", ".join(f"{name}={value!r}" for name, value in values.items())
        return f"Config({shown})"

    def __reduce__(self) -> tuple[Any, ...]:
        import functools

        return (functools.partial(type(self), **dict(zip(_FIELDS[1:], self._values()[1:]))), (self.api_key,))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """Build a config from ``SERLA_API_KEY``, ``SERLA_HOST``, ``SERLA_SPOOL_DIR`` and ``SERLA_DISABLED``.

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
        if env.get("SERLA_SPOOL_DIR"):
            values["spool_dir"] = env["SERLA_SPOOL_DIR"]
        if env_disabled(env):
            values["disabled"] = True
            values.setdefault("api_key", "disabled")
        values.update(overrides)
        if "api_key" not in values:
            raise ValueError("Serla: set SERLA_API_KEY (and SERLA_HOST for a self-hosted or local server)")
        return cls(**values)  # type: ignore[arg-type]


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


# -- proxies -------------------------------------------------------------------------------------------------


class Proxy:
    """An HTTP proxy to send through, read from a URL by :func:`parse_proxy` or :func:`resolve_proxy`.

    Only ``authorization`` (the header the transport sends to the proxy) and ``secrets`` hold the
    proxy's credentials: ``url``, ``repr()`` and ``error`` never do.

    Attributes:
        host: The proxy's host name or IP address (an IPv6 address without brackets).
        port: The proxy's port (80 when the URL names none).
        authorization: The ``Proxy-Authorization`` value (``Basic ...``) when the URL has credentials.
        url: ``http://host:port``, without credentials: what logs and errors show.
        source: Where the URL came from: ``proxy`` (the option) or an environment variable's name.
        error: Why the proxy from the environment can't be used, else ``None``. Every send through such a
            proxy fails with this message (the events stay queued, as for any network error).
        secrets: The credential strings (encoded and decoded), replaced in error bodies before quoting.
    """

    __slots__ = ("authorization", "error", "host", "port", "secrets", "source", "url")

    host: str
    port: int
    authorization: Optional[str]
    url: str
    source: str
    error: Optional[str]
    secrets: tuple[str, ...]

    def __init__(
        self,
        host: str,
        port: int,
        source: str,
        authorization: Optional[str] = None,
        secrets: tuple[str, ...] = (),
        error: Optional[str] = None,
    ) -> None:
        self.host = host
        self.port = port
        self.source = source
        self.authorization = authorization
        self.secrets = secrets
        self.error = error
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def __repr__(self) -> str:
        if self.error is not None:
            return f"<Proxy from {self.source}: unusable>"
        auth = " with credentials" if self.authorization else ""
        return f"<Proxy {self.url} from {self.source}{auth}>"


def redact_proxy_url(url: str) -> str:
    """``url`` with anything before an ``@`` in its authority replaced by ``***`` (for messages)."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    at = rest.rfind("@")
    if at == -1:
        return url
    return f"{head}{sep}***{rest[at:]}"


def parse_proxy(url: str, source: str = "proxy") -> Proxy:
    """Read an HTTP proxy URL: ``http://[user:password@]host[:port][/]``, or ``host:port`` without a scheme.

    A missing scheme means ``http://`` (as ``urllib`` and curl read it) and a missing port 80. The user
    and password are percent-decoded (``%40`` for ``@``, ``%3A`` for ``:``) and sent as
    ``Proxy-Authorization: Basic`` (UTF-8), only to the proxy.

    Args:
        url: The proxy URL.
        source: Its origin, named in error messages: ``proxy`` (the option) or a variable's name.

    Raises:
        ValueError: For anything else, credentials left out of the message: an ``https://`` proxy (TLS
            to the proxy is not supported; the connection to Serla is TLS end to end through the proxy
            anyway), another scheme (``socks5://``...), a path, a bad port, white space.
    """
    shown = redact_proxy_url(url)
    where = f"Serla: {source}={shown!r}"
    text = url.strip()
    if not text or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"{where}: a proxy URL such as 'http://proxy.example.com:3128' is expected")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "http", text
    scheme = scheme.lower()
    if scheme == "https":
        raise ValueError(
            f"{where}: https:// proxies (TLS to the proxy itself) are not supported. Use the proxy's "
            "http:// URL: the connection to Serla is still TLS from end to end, through a CONNECT tunnel "
            "(if this URL worked with serla-py 0.1.0, the proxy speaks plain HTTP: urllib ignored the https)"
        )
    if scheme != "http":
        raise ValueError(f"{where}: only http:// proxies are supported, not {scheme}://")
    at = rest.find("@")
    end = rest.find("/", at + 1 if at != -1 else 0)
    authority, path = (rest, "") if end == -1 else (rest[:end], rest[end:])
    if path not in ("", "/"):
        raise ValueError(f"{where}: a proxy URL has no path (a PAC file is not supported)")
    userinfo, at_sign, hostport = authority.rpartition("@")
    if hostport.startswith("["):  # an IPv6 literal
        close = hostport.find("]")
        host, port = hostport[1:close], hostport[close + 1 :]
        if close == -1 or (port and not port.startswith(":")):
            raise ValueError(f"{where}: bad proxy address")
        port = port[1:]
    else:
        host, _, port = hostport.partition(":")
    if not host or any(c in "/?#@[]\\" for c in host):
        raise ValueError(f"{where}: the proxy URL has no valid host name")
    if port and not (port.isdigit() and port.isascii() and 0 < int(port) <= 65535):
        raise ValueError(f"{where}: bad proxy port")
    authorization = None
    secrets: tuple[str, ...] = ()
    if at_sign and userinfo:
        import binascii
        from urllib.parse import unquote  # only with credentials: ``import serla`` can't afford it

        raw_user, _, raw_password = userinfo.partition(":")
        user, password = unquote(raw_user), unquote(raw_password)
        token = binascii.b2a_base64(f"{user}:{password}".encode(), newline=False).decode("ascii")
        authorization = "Basic " + token
        secrets = tuple(s for s in (token, userinfo, f"{user}:{password}", password) if s)
    return Proxy(host.lower(), int(port) if port else 80, source, authorization, secrets)


def resolve_proxy(option: Optional[str], host: str) -> Optional[Proxy]:
    """The proxy that requests to ``host`` go through, or ``None`` for a direct connection.

    ``option`` (the ``proxy`` option, checked by :class:`Config`) wins: a URL means that proxy, ``""``
    means none. ``None`` reads the environment the way ``urllib.request`` (and so serla-py 0.1.0) does
    (see :func:`environment_proxies` and :func:`bypass_proxy`): ``https_proxy``/``HTTPS_PROXY`` for an
    https host, ``http_proxy``/``HTTP_PROXY`` for an http one, and ``no_proxy``/``NO_PROXY``.

    An unusable value in the environment (``socks5://``, ``https://`` with credentials, a bad port) does
    not raise: the result carries the reason in ``error``, and sends fail with it until the variable is
    fixed. An ``https://`` variable without credentials is used as ``http://`` with a WARNING, as
    ``urllib`` (so serla-py 0.1.0) used it: plain HTTP to the proxy, TLS to Serla inside the tunnel.

    Args:
        option: The ``proxy`` option.
        host: The Serla host URL (already checked).

    Raises:
        ValueError: For a bad ``option`` (never for the environment).
    """
    if option is not None:
        return parse_proxy(option) if option.strip() else None
    scheme, netloc, _hostname, _path = split_host(host)
    wanted = scheme + "_proxy"
    env = os.environ
    if not any(name.lower() == wanted for name in env):  # the common case, in microseconds
        return None
    proxies = environment_proxies(env)
    url = proxies.get(scheme)
    if not url:
        return None
    if bypass_proxy(netloc, proxies):
        log_debug("serla: no_proxy/NO_PROXY matches %s: connecting directly", netloc)
        return None
    source = wanted if env.get(wanted) == url else wanted.upper()
    text = url.strip()
    if text[:8].lower() == "https://" and "@" not in text:
        # urllib (and so serla-py 0.1.0) speaks plain HTTP to a proxy whatever the variable's scheme, and
        # ``HTTPS_PROXY=https://...`` is a common way to write "the proxy for https". Without credentials
        # nothing secret travels in clear to the proxy (the connection to Serla is TLS inside the tunnel),
        # so keep working as 0.1.0 did. With credentials, refuse (below): they would go in clear to a
        # proxy the user believes is reached over TLS.
        log_warning(
            "serla: %s=%r: https:// proxies (TLS to the proxy) are not supported; connecting to it with "
            "plain HTTP CONNECT, as urllib does (the connection to Serla is TLS inside the tunnel). "
            "Write http:// to silence this warning",
            source,
            redact_proxy_url(text),
        )
        url = "http://" + text[8:]
    try:
        return parse_proxy(url, source)
    except ValueError as exc:
        return Proxy("", 0, source, error=f"{exc}; fix or unset it (or pass proxy=...)")


# The next two functions are ``urllib.request.getproxies_environment`` and ``proxy_bypass_environment``
# (CPython 3.9-3.13), line for line: importing ``urllib.request`` (``http.client``, ``email``, ``ssl``...)
# for them would cost client creation about 30 ms. ``tests/test_proxy.py`` checks them against urllib's.


def environment_proxies(environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """Scheme -> proxy URL from ``<scheme>_proxy`` variables, as ``urllib.request.getproxies_environment``.

    Any spelling of a name counts; where both are set the all-lowercase one wins, and an empty lowercase
    value unsets the scheme. In a CGI process (``REQUEST_METHOD`` set) ``HTTP_PROXY`` is ignored (it may
    come from a client's ``Proxy:`` header), though ``http_proxy`` is not. ``no_proxy`` lands under ``no``.
    """
    env = os.environ if environ is None else environ
    proxies: dict[str, str] = {}
    for name, value in env.items():
        name = name.lower()
        if value and name[-6:] == "_proxy":
            proxies[name[:-6]] = value
    if "REQUEST_METHOD" in env:
        proxies.pop("http", None)
    for name, value in env.items():
        if name[-6:] == "_proxy":
            name = name.lower()
            if value:
                proxies[name[:-6]] = value
            else:
                proxies.pop(name[:-6], None)
    return proxies


def bypass_proxy(host: str, proxies: Mapping[str, str]) -> bool:
    """True when ``proxies["no"]`` names ``host``, as ``urllib.request.proxy_bypass_environment``.

    ``*`` (alone) matches every host; otherwise each comma-separated name matches that host and its
    subdomains, case-insensitively, a leading dot ignored, with or without ``host``'s port.

    Args:
        host: The URL's host, with its port if the URL has one (``serla.dev``, ``localhost:8000``).
        proxies: What :func:`environment_proxies` returned.
    """
    no_proxy = proxies.get("no")
    if no_proxy is None:
        return False
    if no_proxy == "*":
        return True
    host = host.lower()
    hostonly, sep, port = host.rpartition(":")  # urllib's _splitport: a trailing ":digits" is the port
    if not sep or any(c not in "0123456789" for c in port):
        hostonly = host
    for name in no_proxy.split(","):
        name = name.strip()
        if name:
            name = name.lstrip(".").lower()
            if hostonly == name or host == name:
                return True
            name = "." + name
            if hostonly.endswith(name) or host.endswith(name):
                return True
    return False


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
