"""Client options, their defaults and their checks: the only place where the SDK raises.

A frozen dataclass, typed all the way down. Python 3.9 has neither ``kw_only`` nor ``slots`` for
dataclasses, so ``Serla.__init__`` (keyword-only) is what enforces keyword use.
"""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
from collections.abc import Mapping
from typing import Final, Optional

from serla._log import logger
from serla._transport import is_loopback

DEFAULT_HOST: Final = "https://serla.dev"
MAX_BATCH_SIZE: Final = 100

_TRUE: Final = frozenset({"1", "true", "yes", "on"})


@dataclasses.dataclass(frozen=True)
class Config:
    """Every option of a :class:`~serla.Serla` client, checked.

    See ``Serla.__init__`` for what each option means.
    """

    api_key: str = dataclasses.field(repr=False)
    host: str = DEFAULT_HOST
    flush_interval_seconds: float = 5.0
    batch_size: int = 50
    debug: bool = False
    flush_on_exit: bool = True
    max_queue_size: int = 1000
    timeout: float = 10.0
    shutdown_timeout: float = 10.0
    block_on_full_seconds: float = 1.0
    ca_bundle: Optional[str] = None
    capture_trace_context: bool = True
    disabled: bool = False

    def __post_init__(self) -> None:
        key = self.api_key
        if not isinstance(key, str) or not key.strip():
            raise ValueError("Serla: api_key must be a non-empty string (your project's sk_live_... key)")
        if key != key.strip() or any(c.isspace() or ord(c) < 32 for c in key):
            raise ValueError("Serla: api_key must not contain white space or control characters")
        object.__setattr__(self, "host", _check_host(self.host))
        _check_number("flush_interval_seconds", self.flush_interval_seconds, minimum=0.0, strict=True)
        _check_number("timeout", self.timeout, minimum=0.0, strict=True)
        _check_number("shutdown_timeout", self.shutdown_timeout, minimum=0.0)
        _check_number("block_on_full_seconds", self.block_on_full_seconds, minimum=0.0)
        _check_int("batch_size", self.batch_size)
        _check_int("max_queue_size", self.max_queue_size)
        if self.batch_size > MAX_BATCH_SIZE:
            logger.warning(
                "serla: batch_size=%d is above the server's limit of %d events per request; using %d",
                self.batch_size,
                MAX_BATCH_SIZE,
                MAX_BATCH_SIZE,
            )
            object.__setattr__(self, "batch_size", MAX_BATCH_SIZE)
        if self.ca_bundle is not None and not isinstance(self.ca_bundle, str):
            raise TypeError("Serla: ca_bundle must be a path (str) or None")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """Build a config from ``SERLA_API_KEY``, ``SERLA_HOST`` and ``SERLA_DISABLED``.

        Args:
            environ: The environment to read (default ``os.environ``).
            **overrides: Options that win over the environment.

        Raises:
            ValueError: When no API key is set (and the SDK is not disabled).
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        if env.get("SERLA_API_KEY"):
            values["api_key"] = env["SERLA_API_KEY"]
        if env.get("SERLA_HOST"):
            values["host"] = env["SERLA_HOST"]
        if env_disabled(env):
            values["disabled"] = True
            values.setdefault("api_key", "disabled")
        values.update(overrides)
        if "api_key" not in values:
            raise ValueError("Serla: set SERLA_API_KEY (and SERLA_HOST for a self-hosted or local server)")
        return cls(**values)  # type: ignore[arg-type]


def env_disabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``SERLA_DISABLED`` is set to 1/true/yes/on."""
    env = os.environ if environ is None else environ
    return env.get("SERLA_DISABLED", "").strip().lower() in _TRUE


def _check_host(host: object) -> str:
    if not isinstance(host, str) or not host.strip():
        raise ValueError("Serla: host must be a URL such as 'https://serla.dev'")
    host = host.strip().rstrip("/")
    parts = urllib.parse.urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.netloc or not parts.hostname:
        raise ValueError(f"Serla: host must be an http(s) URL such as 'https://serla.dev', not {host!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"Serla: host must not carry a query, fragment or credentials: {host!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"Serla: bad port in host {host!r}") from exc
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        logger.warning(
            "serla: host %r is plain http: the API key and events travel unencrypted; use https", host
        )
    return host


def _check_number(name: str, value: object, *, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Serla: {name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise ValueError(f"Serla: {name} must be {'>' if strict else '>='} {minimum:g}, not {value!r}")


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Serla: {name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"Serla: {name} must be >= 1, not {value!r}")
