"""What every integration shares: the resolvers, reading the browser's session id, building the scope."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Mapping
from typing import Any, Callable, Generic, TypeVar

from serla._config import log_debug, warn_limited
from serla._context import (
    SESSION_COOKIE,
    Scope,
    check_group,
    current_scope,
    is_session_id,
    new_session_id,
)

Resolver = Callable[[Any], Any]
"""``resolver(request) -> value``: the request object is the framework's (see each integration)."""

_COOKIE_KEY = SESSION_COOKIE + "="
_PLAIN = frozenset({type(None), str, int, dict})


def session_from_cookie(cookie_header: str | None) -> str | None:
    """The ``serla_session_id`` cookie's value from a ``Cookie`` header, when it is a session id."""
    if not cookie_header or _COOKIE_KEY not in cookie_header:
        return None
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE:
            value = value.strip().strip('"')
            return value if is_session_id(value) else None
    return None


def browser_session(header: str | None, cookie_header: str | None) -> str | None:
    """The browser's session id: the ``X-Serla-Session-Id`` header, else the cookie; invalid ones ignored."""
    if header:
        header = header.strip()
        if is_session_id(header):
            return header
        log_debug("serla: ignored an X-Serla-Session-Id header that is not 32 hex digits: %r", header[:64])
    return session_from_cookie(cookie_header)


def _check(resolver: Resolver | None, name: str, where: str) -> Resolver | None:
    if resolver is not None and not callable(resolver):
        raise TypeError(f"{where}: {name} must be a callable (request -> value) or None")
    return resolver


class Resolvers:
    """The per-request scope of an integration, from its resolvers.

    Args:
        distinct_id: ``request -> str | int | None``: the user (an int is ``str()``-ed).
        session_id: ``request -> str | None``: a server-side session id (32 hex digits) for requests that
            carry no browser session id; e.g. derived from your login session.
        groups: ``request -> {group_type: group_id} | None``.
        properties: ``request -> dict | None``: properties added to every event of the request.
        request_sessions: When neither the browser nor ``session_id`` gives a session, make a fresh id
            per request (``True``, the default: the events of one request are one session), or send none
            (``False``: the server makes one session per event).
        where: The integration's name, for messages.

    Raises:
        TypeError: When a resolver is not callable.
    """

    __slots__ = ("distinct_id", "groups", "properties", "request_sessions", "session_id", "where")

    def __init__(
        self,
        distinct_id: Resolver | None = None,
        session_id: Resolver | None = None,
        groups: Resolver | None = None,
        properties: Resolver | None = None,
        request_sessions: bool = True,
        where: str = "serla integration",
    ) -> None:
        self.where = where
        self.distinct_id = _check(distinct_id, "distinct_id", where)
        self.session_id = _check(session_id, "session_id", where)
        self.groups = _check(groups, "groups", where)
        self.properties = _check(properties, "properties", where)
        self.request_sessions = bool(request_sessions)

    def _call(self, resolver: Resolver, request: Any, name: str) -> Any:
        try:
            return resolver(request)
        except Exception as exc:
            return self._failed(name, exc)

    def resolve(self, request: Any) -> tuple[Any, Any, Any, Any]:
        """The resolvers' raw results (awaitables included) for ``request``; never raises."""
        return (
            None if self.distinct_id is None else self._call(self.distinct_id, request, "distinct_id"),
            None if self.session_id is None else self._call(self.session_id, request, "session_id"),
            None if self.groups is None else self._call(self.groups, request, "groups"),
            None if self.properties is None else self._call(self.properties, request, "properties"),
        )

    async def aresolve(self, request: Any) -> tuple[Any, Any, Any, Any]:
        """:meth:`resolve`, awaiting resolvers that are coroutine functions (or return awaitables)."""
        values = self.resolve(request)
        if all(type(v) in _PLAIN for v in values):  # the common case: no async resolver
            return values
        names = ("distinct_id", "session_id", "groups", "properties")
        out = list(values)
        for i, value in enumerate(values):
            if inspect.isawaitable(value):
                out[i] = await self._await(value, names[i])
        return out[0], out[1], out[2], out[3]

    async def _await(self, value: Awaitable[Any], name: str) -> Any:
        try:
            return await value
        except Exception as exc:
            return self._failed(name, exc)

    def _failed(self, name: str, exc: Exception) -> None:
        warn_limited(
            "integration_" + name,
            "serla: %s: the %s resolver raised %r; ignored for this request",
            self.where,
            name,
            exc,
        )

    def scope(self, values: tuple[Any, Any, Any, Any], browser_session_id: str | None) -> Scope:
        """The request's scope inside the current one, from resolved ``values``; never raises."""
        outer = current_scope()
        user, server_session, groups, props = values
        try:
            user = self._user(user)
            session = browser_session_id
            if session is None and server_session is not None:
                if is_session_id(server_session):
                    session = server_session
                else:
                    warn_limited(
                        "integration_session_id",
                        "serla: %s: session_id resolver returned %r, not 32 hex digits; ignored",
                        self.where,
                        server_session,
                    )
            if session is None:
                session = outer.session_id
                if session is None and self.request_sessions:
                    session = new_session_id()
            merged_groups = outer.groups
            if groups:
                extra = self._groups(groups)
                if extra:
                    merged_groups = {**merged_groups, **extra} if merged_groups else extra
            merged_props = outer.properties
            if props:
                if isinstance(props, Mapping):
                    merged_props = {**merged_props, **props} if merged_props else dict(props)
                else:
                    warn_limited(
                        "integration_properties",
                        "serla: %s: properties resolver returned %s, not a dict; ignored",
                        self.where,
                        type(props).__name__,
                    )
            if user is None:
                user = outer.distinct_id
            return Scope(user, session, merged_groups, merged_props)
        except Exception as exc:  # never fail a request
            msg = "serla: %s: building the context failed: %r"
            warn_limited("integration_scope", msg, self.where, exc)
            return outer

    def _user(self, user: Any) -> str | None:
        if user is None or user == "":
            return None
        if isinstance(user, int) and not isinstance(user, bool):
            return str(user)
        if isinstance(user, str):
            return user
        if type(user).__name__ == "UUID":
            return str(user)
        warn_limited(
            "integration_distinct_id",
            "serla: %s: distinct_id resolver returned %s, not a string or int; ignored",
            self.where,
            type(user).__name__,
        )
        return None

    def _groups(self, groups: Any) -> dict[str, str] | None:
        if not isinstance(groups, Mapping):
            warn_limited(
                "integration_groups",
                "serla: %s: groups resolver returned %s, not a dict; ignored",
                self.where,
                type(groups).__name__,
            )
            return None
        out: dict[str, str] = {}
        for key, value in groups.items():
            if value is None:  # no group of that type for this request
                continue
            pair = check_group(key, value, self.where)
            if pair is not None:
                out[pair[0]] = pair[1]
        return out


AppT = TypeVar("AppT")


class MiddlewareBase(Generic[AppT]):
    """The constructor the ASGI and WSGI ``SerlaMiddleware`` share (their docstrings list the arguments).

    Raises:
        TypeError: When a resolver is not callable.
    """

    _where = "serla integration"

    def __init__(
        self,
        app: AppT,
        *,
        distinct_id: Resolver | None = None,
        session_id: Resolver | None = None,
        groups: Resolver | None = None,
        properties: Resolver | None = None,
        request_sessions: bool = True,
    ) -> None:
        self.app = app
        self._resolvers = Resolvers(
            distinct_id, session_id, groups, properties, request_sessions, self._where
        )
