"""Pure ASGI middleware (FastAPI, Starlette, Litestar, Quart, Django's ASGI app): HTTP and websockets.

Example (FastAPI):
    >>> from serla.integrations.asgi import SerlaMiddleware
    >>> app = FastAPI()  # doctest: +SKIP
    >>> app.add_middleware(SerlaMiddleware, distinct_id=user_from_scope)  # doctest: +SKIP

Each HTTP request and each websocket connection runs in its own :func:`serla.context`: every
``Serla.track()`` made while it is handled (in the endpoint, in a sync endpoint run in the thread pool, in a
task it starts) carries its user, session and groups. Lifespan events pass through untouched.

The resolvers receive the ASGI connection ``scope`` dict (``scope["headers"]``, ``scope["path"]``, and
``scope["user"]`` when Starlette's ``AuthenticationMiddleware`` runs before this one); they may be
``async def``. For a Starlette ``Request``, build one: ``lambda scope: Request(scope).cookies.get(...)``.

The session is the browser's (the ``X-Serla-Session-Id`` header or the ``serla_session_id`` cookie),
else what ``session_id`` returns, else a fresh id for the request (for a websocket: one id for the whole
connection). The middleware adds no I/O and never blocks the event loop: it reads headers and sets a
``ContextVar``.
"""

from __future__ import annotations

from collections.abc import Awaitable, MutableMapping
from typing import Any, Callable

from serla._context import Scope, enter, leave
from serla.integrations._common import MiddlewareBase, browser_session

__all__ = ["SerlaMiddleware"]

ASGIScope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, Receive, Send], Awaitable[None]]


class SerlaMiddleware(MiddlewareBase[ASGIApp]):
    """Wrap an ASGI app so each HTTP request and websocket connection runs in its own context.

    Args:
        app: The ASGI application (``app.add_middleware(SerlaMiddleware, ...)`` passes it for you).
        distinct_id: ``scope -> str | int | None`` (or ``async def``): the user.
        session_id: ``scope -> str | None``: a server-side session id for requests without a browser one.
        groups: ``scope -> {group_type: group_id} | None``.
        properties: ``scope -> dict | None``: properties for every event of the request.
        request_sessions: Without a browser or resolved session id, a fresh session id per request
            (``True``) or none (``False``).

    Raises:
        TypeError: When a resolver is not callable.
    """

    _where = "serla.integrations.asgi"

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        token = enter(await self.scope_for(scope))
        try:
            await self.app(scope, receive, send)
        finally:
            leave(token)

    async def scope_for(self, scope: ASGIScope) -> Scope:
        """The :class:`serla.Scope` a connection with this ASGI ``scope`` runs in (never raises)."""
        header = cookie = None
        try:
            for name, value in scope.get("headers") or ():
                if name == b"x-serla-session-id":
                    header = value.decode("latin-1")
                elif name == b"cookie":
                    cookie = (
                        value.decode("latin-1") if cookie is None else cookie + "; " + value.decode("latin-1")
                    )
        except Exception:  # malformed headers: an ASGI server bug, not ours to fail on
            header = cookie = None
        return self._resolvers.scope(await self._resolvers.aresolve(scope), browser_session(header, cookie))
