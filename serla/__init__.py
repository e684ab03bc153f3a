"""Serla: privacy-focused product analytics. The Python SDK.

Example:
    >>> from serla import Serla
    >>> serla = Serla(api_key="sk_live_...")  # doctest: +SKIP
    >>> serla.track(event="signup", distinct_id="user_123", properties={"plan": "pro"})  # doctest: +SKIP

Importing this package has no side effects beyond a ``NullHandler`` on the ``serla`` logger: no thread,
no atexit hook, no network, and none of ``ssl``, ``http.client`` or ``opentelemetry`` is imported.
"""

from __future__ import annotations

import logging

from serla._client import Serla
from serla._config import Config
from serla._context import distinct_id_context, get_distinct_id, reset_distinct_id, set_distinct_id
from serla._registry import get_default_client, set_default_client
from serla._version import __version__

logging.getLogger("serla").addHandler(logging.NullHandler())

__all__ = [
    "Config",
    "Serla",
    "__version__",
    "distinct_id_context",
    "get_default_client",
    "get_distinct_id",
    "reset_distinct_id",
    "set_default_client",
    "set_distinct_id",
]
