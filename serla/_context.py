"""The request-scoped default ``distinct_id``.

Web middleware sets it once per request; ``Serla.track()`` (when called without a ``distinct_id``), the
logging handler and the OpenTelemetry bridge read it. It lives in a :class:`contextvars.ContextVar`, so it
is per thread and per asyncio task, and never leaks from one request into another.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Final, Optional

_distinct_id: Final[contextvars.ContextVar[Optional[str]]] = contextvars.ContextVar(
    "serla_distinct_id", default=None
)


def get_distinct_id() -> str | None:
    """Return the ``distinct_id`` set for the current context, or ``None``."""
    return _distinct_id.get()


def set_distinct_id(distinct_id: str | None) -> contextvars.Token[str | None]:
    """Set the default ``distinct_id`` for the current context.

    Args:
        distinct_id: The user's identifier, or ``None`` to clear it.

    Returns:
        A token for :func:`reset_distinct_id`, which restores the previous value.
    """
    return _distinct_id.set(distinct_id)


def reset_distinct_id(token: contextvars.Token[str | None]) -> None:
    """Restore the value that was current before the matching :func:`set_distinct_id`."""
    _distinct_id.reset(token)


@contextlib.contextmanager
def distinct_id_context(distinct_id: str | None) -> Iterator[None]:
    """Use ``distinct_id`` as the default for everything tracked inside the ``with`` block.

    Example:
        >>> with distinct_id_context("user_123"):
        ...     client.track("page_viewed")  # doctest: +SKIP
    """
    token = _distinct_id.set(distinct_id)
    try:
        yield
    finally:
        _distinct_id.reset(token)
