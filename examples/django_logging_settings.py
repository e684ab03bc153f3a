"""Django: a ``LOGGING`` setting that turns log lines naming an event into Serla events.

Copy ``LOGGING`` into your ``settings.py`` and the middleware into your project (for example
``myproject/middleware.py``), then list it in ``MIDDLEWARE`` after ``AuthenticationMiddleware``::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "myproject.middleware.serla_distinct_id",
    ]

In a view::

    log = logging.getLogger(__name__)
    log.info("plan upgraded", extra={"event": "plan_upgraded", "plan": "pro"})

The middleware makes the signed-in user the request's ``distinct_id`` (a context variable, so it is right
per thread under WSGI and per task under ASGI); ``serla.get_default_client().track("x")`` without a
``distinct_id`` uses the same value. Django's own log lines (``django.request`` and so on) reach the handler
too but name no event, so they are ignored.

Configure ``SERLA_API_KEY`` (and ``SERLA_HOST`` for a self-hosted server) in the environment: with no
``client``, the handler uses the process-wide default client made from them at the first event. To use a
client your code creates, add ``"client": "ext://myproject.analytics.serla"``; Django configures logging
before your apps load, so that module must not import models.
"""

from __future__ import annotations

from typing import Any, Callable

import serla

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "verbose": {"format": "{asctime} {levelname} {name}: {message}", "style": "{"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "verbose"},
        "serla": {
            "class": "serla.logging_handler.SerlaHandler",
            # Records without a user (a background job, an anonymous visitor) go under this id
            # instead of being dropped:
            "default_distinct_id": "anonymous",
        },
    },
    "root": {"handlers": ["console", "serla"], "level": "INFO"},
}


def serla_distinct_id(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Django middleware: the signed-in user's primary key is the ``distinct_id`` for the request."""

    def middleware(request: Any) -> Any:
        user = getattr(request, "user", None)
        distinct_id = str(user.pk) if user is not None and user.is_authenticated else None
        with serla.distinct_id_context(distinct_id):
            return get_response(request)

    return middleware
