"""Web framework and task queue integrations: each puts every request (or task) in its own context.

``import serla`` never imports this package; import the integration you use:

- :mod:`serla.integrations.django`: ``SerlaMiddleware`` (sync and async views).
- :mod:`serla.integrations.asgi`: ``SerlaMiddleware`` for FastAPI, Starlette, Litestar, Quart and any
  ASGI app (HTTP and websockets).
- :mod:`serla.integrations.wsgi`: ``SerlaMiddleware`` for Flask, Bottle, Pyramid and any WSGI app.
- :mod:`serla.integrations.celery`: ``setup()``; the caller's context travels with each task.

Each one enters a :func:`serla.context` per request carrying the user (a resolver you pass, e.g.
``distinct_id=lambda request: ...``), the session (the browser's serla-js session id from the
``X-Serla-Session-Id`` header or the ``serla_session_id`` cookie, else your ``session_id`` resolver, else a
fresh id per request) and, optionally, groups and properties. None of them needs a client: every
``Serla.track()`` made while the request runs reads the context. An integration never fails a request:
a resolver that raises is logged (WARNING, rate-limited) and ignored.
"""

from __future__ import annotations

from serla._context import SESSION_COOKIE, SESSION_HEADER

__all__ = ["SESSION_COOKIE", "SESSION_HEADER"]
