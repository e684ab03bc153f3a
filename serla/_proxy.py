"""Which HTTP proxy the SDK goes through: the ``proxy`` option, else the environment as ``urllib`` reads it.

:func:`resolve_proxy` is called once per client (by its transport factory); the result, a :class:`Proxy`,
is handed to every transport the client makes. The transport itself never reads the environment. This
module is imported when a client is created (and by :class:`~serla.Config` only when a ``proxy`` option is
given): ``import serla`` does not load it.

Credentials in a proxy URL stay out of every text the SDK shows: :func:`redact_proxy_url` for messages,
:attr:`Proxy.url` and ``repr()`` without them, :attr:`Proxy.secrets` to scrub them from error bodies.
"""

from __future__ import annotations

import os

from serla._config import log_debug, log_warning, split_host

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping


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
    authorization: str | None
    url: str
    source: str
    error: str | None
    secrets: tuple[str, ...]

    def __init__(
        self,
        host: str,
        port: int,
        source: str,
        authorization: str | None = None,
        secrets: tuple[str, ...] = (),
        error: str | None = None,
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


def resolve_proxy(option: str | None, host: str) -> Proxy | None:
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


def environment_proxies(environ: Mapping[str, str] | None = None) -> dict[str, str]:
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
