"""Serla: privacy-focused product analytics. The Python SDK.

Example:
    >>> from serla import Serla
    >>> serla = Serla(api_key="sk_live_...")  # doctest: +SKIP
    >>> serla.track(event="signup", distinct_id="user_123", properties={"plan": "pro"})  # doctest: +SKIP

Importing this package has no side effects beyond a ``NullHandler`` on the ``serla`` logger: no thread,
no atexit hook, no network. It is cheap: none of ``ssl``, ``socket``, ``http.client``, ``logging``,
``typing``, ``json``, ``re``, ``threading`` or ``opentelemetry`` is imported. ``Serla()`` loads the worker
(``threading``), the first send the HTTP stack. The ``NullHandler`` is attached now if ``logging`` is
already loaded, else before the SDK's first log record (no record is built until then: see
``serla._config.serla_log``).
"""

from __future__ import annotations

import sys

from serla._client import Serla
from serla._config import Config, add_null_handler
from serla._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from serla._context import (
        Scope,
        context,
        current_scope,
        distinct_id_context,
        get_distinct_id,
        new_session_id,
        reset_distinct_id,
        set_distinct_id,
    )
    from serla._registry import get_default_client, set_default_client
    from serla._stats import LaneStats, Stats
    from serla._tracked import tracked

if "logging" in sys.modules:
    add_null_handler()

# Loaded on first use (PEP 562): ``serla._context`` needs ``contextlib``, ``serla._registry`` ``threading``.
_LAZY = {
    "Scope": "serla._context",
    "context": "serla._context",
    "current_scope": "serla._context",
    "new_session_id": "serla._context",
    "distinct_id_context": "serla._context",
    "get_distinct_id": "serla._context",
    "reset_distinct_id": "serla._context",
    "set_distinct_id": "serla._context",
    "get_default_client": "serla._registry",
    "set_default_client": "serla._registry",
    "Stats": "serla._stats",
    "LaneStats": "serla._stats",
    "tracked": "serla._tracked",  # needs wrapt: pip install "serla-py[tracked]"
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'serla' has no attribute {name!r}")
    __import__(module)
    value = getattr(sys.modules[module], name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Config",
    "LaneStats",
    "Scope",
    "Serla",
    "Stats",
    "__version__",
    "context",
    "current_scope",
    "distinct_id_context",
    "get_default_client",
    "get_distinct_id",
    "new_session_id",
    "reset_distinct_id",
    "set_default_client",
    "set_distinct_id",
    "tracked",
]
