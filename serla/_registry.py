"""The process-wide default client, shared by the bridges (logging handler, OpenTelemetry exporters)."""

from __future__ import annotations

import os
import threading

from serla._client import Serla
from serla._config import Config

_lock = threading.Lock()
_default: Serla | None = None


def _reinit_after_fork() -> None:
    """In a forked child: a new lock (the parent's may have been held by another thread at the fork)."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def set_default_client(client: Serla | None) -> None:
    """Register ``client`` as the one the bridges use when they are given none.

    Args:
        client: A client, or ``None`` to forget the registered one.
    """
    global _default
    with _lock:
        _default = client


def get_default_client(create: bool = True) -> Serla | None:
    """Return the registered client; with ``create``, make one from the environment if none is registered.

    The client made from the environment reads ``SERLA_API_KEY``, ``SERLA_HOST`` and ``SERLA_DISABLED``
    and is registered, so every bridge in the process shares it (one pipeline).

    Args:
        create: Whether to create a client from the environment when none is registered.

    Returns:
        The client, or ``None`` when none is registered and none can be created (no API key set).
    """
    global _default
    with _lock:
        if _default is None and create:
            try:
                config = Config.from_env()
            except ValueError:
                return None
            _default = Serla(config.api_key, host=config.host, disabled=config.disabled)
        return _default
