"""The SDK's own logger and a rate limiter for its warnings.

Everything the SDK says goes to the ``serla`` logger. Internal chatter is DEBUG; WARNING is kept for the
moments when data is lost or a configuration is wrong. Warnings that can repeat once per event (a wrong
call, a full queue) go through :func:`warn_limited`, which says each kind at most once per
``WARN_INTERVAL`` seconds and reports how many it held back.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from serla._config import add_null_handler

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

logger: Final = logging.getLogger("serla")
add_null_handler()  # also when a bridge imports this module before any client logs

WARN_INTERVAL: Final = 60.0

_lock = threading.Lock()
_last: dict[str, tuple[float, int]] = {}


def _reinit_after_fork() -> None:
    """In a forked child: a new lock (the parent's may have been held by another thread at the fork)."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def warn_limited(key: str, msg: str, *args: Any, clock: Any = time.monotonic) -> None:
    """Log a WARNING at most once per ``WARN_INTERVAL`` seconds for each ``key``.

    Args:
        key: What kind of warning this is (for example ``"invalid_call"``).
        msg: A ``%``-style message, as for :meth:`logging.Logger.warning`.
        *args: Arguments for ``msg``.
        clock: Monotonic clock, injectable for tests.
    """
    now = clock()
    with _lock:
        last, suppressed = _last.get(key, (float("-inf"), 0))
        if now - last < WARN_INTERVAL:
            _last[key] = (last, suppressed + 1)
            return
        _last[key] = (now, 0)
    if suppressed:
        msg += " (%d similar warnings suppressed in the last %.0f s)"
        args = (*args, suppressed, WARN_INTERVAL)
    logger.warning(msg, *args)


def reset_warnings() -> None:
    """Forget which warnings were said, so the next of each kind is logged (for tests and forks)."""
    with _lock:
        _last.clear()


_debug_handler: logging.Handler | None = None


def enable_debug() -> None:
    """Set the ``serla`` logger to DEBUG and attach one stderr handler (idempotent)."""
    global _debug_handler
    logger.setLevel(logging.DEBUG)
    if _debug_handler is None:
        _debug_handler = logging.StreamHandler()
        _debug_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(name)s %(threadName)s] %(message)s")
        )
        logger.addHandler(_debug_handler)
