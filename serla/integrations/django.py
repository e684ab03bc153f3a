"""Django middleware: each request runs in its own :func:`serla.context` (sync and async stacks).

Add it after ``AuthenticationMiddleware`` (it reads ``request.user``)::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "serla.integrations.django.SerlaMiddleware",
    ]

By default the user is ``request.user.pk`` when ``request.user.is_authenticated`` (on the async stack
through ``await request.auser()``); reading it costs what ``request.user`` costs anyway, one session
lookup that most views make. To change what is resolved, set ``SERLA_INTEGRATION`` in your settings (a
callable or its dotted path for each key) or subclass the middleware and override the attributes::

    SERLA_INTEGRATION = {
        "distinct_id": "shop.analytics.user_id",        # request -> str | int | None
        "groups": lambda request: {"company": request.headers.get("X-Company")},
        "properties": None,                             # request -> dict | None
        "session_id": None,                             # request -> 32-hex str | None
        "request_sessions": True,
    }

The session is the browser's (``X-Serla-Session-Id`` header or ``serla_session_id`` cookie), else what
``session_id`` returns, else a fresh id for the request. A ``StreamingHttpResponse``'s body is produced
after the middleware returned, outside the request's context: pass ``distinct_id`` explicitly there.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings  # type: ignore[import-untyped]
from django.utils.module_loading import import_string  # type: ignore[import-untyped]

from serla._context import Scope, enter, leave
from serla.integrations._common import Resolver, Resolvers, browser_session

__all__ = ["SerlaMiddleware", "default_distinct_id"]


def default_distinct_id(request: Any) -> Any:
    """``request.user.pk`` (else ``.id``) when the user is authenticated; else ``None``."""
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    pk = getattr(user, "pk", None)
    return pk if pk is not None else getattr(user, "id", None)


async def _default_distinct_id_async(request: Any) -> Any:
    auser = getattr(request, "auser", None)
    if auser is None:  # Django < 5.0, or a request.user set by other middleware
        from asgiref.sync import sync_to_async

        return await sync_to_async(default_distinct_id)(request)
    user = await auser()
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    pk = getattr(user, "pk", None)
    return pk if pk is not None else getattr(user, "id", None)


def _setting(config: dict[str, Any], name: str, default: Any) -> Any:
    value = config.get(name, default)
    return import_string(value) if isinstance(value, str) else value


class SerlaMiddleware:
    """Django middleware putting each request in its own context (user, session, groups, properties).

    Configure it with the ``SERLA_INTEGRATION`` setting (see the module docstring) or by subclassing:
    the class attributes ``distinct_id``, ``session_id``, ``groups``, ``properties`` (each
    ``request -> value`` or ``None``) and ``request_sessions`` are the defaults the setting overrides.

    Raises:
        TypeError: At the first request's middleware loading, when a configured resolver is not callable.
    """

    sync_capable: ClassVar[bool] = True
    async_capable: ClassVar[bool] = True

    distinct_id: ClassVar[Optional[Resolver]] = staticmethod(default_distinct_id)
    session_id: ClassVar[Optional[Resolver]] = None
    groups: ClassVar[Optional[Resolver]] = None
    properties: ClassVar[Optional[Resolver]] = None
    request_sessions: ClassVar[bool] = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
        config = dict(getattr(settings, "SERLA_INTEGRATION", None) or {})
        user = _setting(config, "distinct_id", type(self).distinct_id)
        if self._async and user is default_distinct_id:
            user = _default_distinct_id_async
        self._resolvers = Resolvers(
            user,
            _setting(config, "session_id", type(self).session_id),
            _setting(config, "groups", type(self).groups),
            _setting(config, "properties", type(self).properties),
            bool(config.get("request_sessions", type(self).request_sessions)),
            "serla.integrations.django",
        )

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        token = enter(self.scope_for(request))
        try:
            return self.get_response(request)
        finally:
            leave(token)

    async def __acall__(self, request: Any) -> Any:
        """The async stack's entry point."""
        values = await self._resolvers.aresolve(request)
        token = enter(self._resolvers.scope(values, self._browser_session(request)))
        try:
            return await self.get_response(request)
        finally:
            leave(token)

    def scope_for(self, request: Any) -> Scope:
        """The scope ``request`` runs in (sync stack; never raises)."""
        return self._resolvers.scope(self._resolvers.resolve(request), self._browser_session(request))

    @staticmethod
    def _browser_session(request: Any) -> str | None:
        meta = getattr(request, "META", None) or {}
        return browser_session(meta.get("HTTP_X_SERLA_SESSION_ID"), meta.get("HTTP_COOKIE"))
