"""Turn ``logging`` records that name an event into Serla events: ``SerlaHandler``.

Example:
    >>> import logging
    >>> from serla.logging_handler import SerlaHandler
    >>> logging.getLogger().addHandler(SerlaHandler(client))  # doctest: +SKIP
    >>> logging.getLogger("myapp").info(  # doctest: +SKIP
    ...     "signed up", extra={"event": "signup_completed", "distinct_id": "user_123", "plan": "pro"}
    ... )

Ordinary log lines are ignored, so the handler is safe on the root logger. It works from code,
``logging.config.dictConfig`` (``"class": "serla.logging_handler.SerlaHandler"``) and Django's
``LOGGING``. The mapping from a record to an event is in the README's Logging section.

Importing this package has no side effects beyond importing :mod:`serla`.
"""

from __future__ import annotations

from serla.logging_handler._handler import (
    DEFAULT_DISTINCT_ID_KEYS,
    DEFAULT_EVENT_KEYS,
    IGNORED_LOGGERS,
    PROPERTIES_KEY,
    RESERVED_ATTRIBUTES,
    SerlaHandler,
)

__all__ = [
    "DEFAULT_DISTINCT_ID_KEYS",
    "DEFAULT_EVENT_KEYS",
    "IGNORED_LOGGERS",
    "PROPERTIES_KEY",
    "RESERVED_ATTRIBUTES",
    "SerlaHandler",
]
