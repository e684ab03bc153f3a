"""WSGI middleware (Flask, Bottle, Pyramid, Falcon, any WSGI app): one :func:`serla.context` per request.

Example (Flask):
    >>> from serla.integrations.wsgi import SerlaMiddleware
    >>> app.wsgi_app = SerlaMiddleware(  # doctest: +SKIP
    ...     app.wsgi_app,
    ...     distinct_id=lambda environ: environ.get("HTTP_X_USER_ID"),
    ...     groups=lambda environ: {"company": environ.get("HTTP_X_COMPANY_ID")},
    ... )

Every ``Serla.track()`` made while the request runs (in the view, in a logging call, in a thread started
with ``contextvars.copy_context()``) carries the user, the session and the groups. The resolvers receive
the WSGI ``environ``. The session is the browser's (``X-Serla-Session-Id`` header, i.e.
``environ["HTTP_X_SERLA_SESSION_ID"]``, or the ``serla_session_id`` cookie), else what ``session_id``
returns, else a fresh id for this request.

A streamed response (a generator) is iterated inside the request's context too: each chunk is produced
with the context entered and left again, so nothing leaks into the next request on the same thread
even if the server never calls ``close()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Callable

from serla._context import Scope, enter, leave
from serla.integrations._common import MiddlewareBase, browser_session

__all__ = ["SerlaMiddleware"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class SerlaMiddleware(MiddlewareBase[WSGIApp]):
    """Wrap a WSGI app so each request runs in its own :func:`serla.context`.

    Args:
        app: The WSGI application (for Flask: ``app.wsgi_app``).
        distinct_id: ``environ -> str | int | None``: the user.
        session_id: ``environ -> str | None``: a server-side session id for requests without a browser one.
        groups: ``environ -> {group_type: group_id} | None``.
        properties: ``environ -> dict | None``: properties for every event of the request.
        request_sessions: Without a browser or resolved session id, a fresh session id per request
            (``True``) or none (``False``).

    Raises:
        TypeError: When a resolver is not callable.
    """

    _where = "serla.integrations.wsgi"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        scope = self.scope_for(environ)
        token = enter(scope)
        try:
            result = self.app(environ, start_response)
        finally:
            leave(token)
        if isinstance(result, (list, tuple)):
            return result
        return _ScopedIterable(result, scope)

    def scope_for(self, environ: dict[str, Any]) -> Scope:
        """The scope a request with this ``environ`` runs in (never raises)."""
        browser = browser_session(environ.get("HTTP_X_SERLA_SESSION_ID"), environ.get("HTTP_COOKIE"))
        return self._resolvers.scope(self._resolvers.resolve(environ), browser)


class _ScopedIterable:
    """A response body whose chunks are produced inside the request's scope; ``close()`` is passed on."""

    __slots__ = ("_iterator", "_result", "_scope")

    def __init__(self, result: Iterable[bytes], scope: Scope) -> None:
        self._result = result
        self._scope = scope
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        token = enter(self._scope)
        try:
            if self._iterator is None:
                self._iterator = iter(self._result)
            return next(self._iterator)
        finally:
            leave(token)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            token = enter(self._scope)
            try:
                close()
            finally:
                leave(token)
