"""Projects, keys, plans and the limits the real server enforces (SERLA_API.md section 4).

* A :class:`Project` has secret (``sk_live_``) and public (``pk_live_``) keys; several keys may share a
  project, and everything is counted per project: rate limits, the monthly quota, sessions and people.
* Per-minute rate limits (:class:`RateLimiter`) are fixed windows per project and endpoint bucket that start
  at the first request: ``batch`` 100 requests, ``events``/``errors``/``llm``/``flags``/``recordings`` 1,000,
  ``export`` 10, ``/identify`` none. Refused requests count too and don't extend the window.
* A project's ``plan`` (the owner's, on the real server) sets the monthly event quota (free 25,000, hobby
  500,000, pro 2,500,000, max unlimited), counted over every project of the same owner, and gates
  ``/errors``, ``/llm`` and ``/flags`` (402 on ``free``). A project without a plan has neither.

Only the standard library is used.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "PLAN_FEATURES",
    "PLAN_QUOTAS",
    "RATE_LIMITS",
    "RATE_LIMIT_WINDOW",
    "Project",
    "RateLimiter",
    "month_start",
]

RATE_LIMIT_WINDOW: Final = 60.0
"""Seconds of a rate-limit window on the real server."""

RATE_LIMITS: Final[Mapping[str, int]] = {
    "batch": 100,
    "events": 1000,
    "errors": 1000,
    "llm": 1000,
    "flags": 1000,
    "recordings": 1000,
    "export": 10,
}
"""Requests per window and project, by bucket (the real server's ``rateLimits``)."""

PLAN_QUOTAS: Final[Mapping[str, int | None]] = {
    "free": 25_000,
    "hobby": 500_000,
    "pro": 2_500_000,
    "max": None,
}
"""Events per calendar month and account, by plan (``None``: unlimited)."""

PLAN_FEATURES: Final[Mapping[str, tuple[str, str]]] = {
    "errors": ("errorTracking", "Error tracking requires the Hobby plan or above"),
    "llm": ("llmObservability", "LLM observability requires the Hobby plan or above"),
    "flags": ("featureFlags", "Feature flags require the Hobby plan or above"),
    "recordings": ("sessionReplay", "Session replay requires the Hobby plan or above"),
}
"""Plan-gated features: bucket -> (feature name, the 402 ``error`` text)."""

_PAID_PLANS: Final = frozenset({"hobby", "pro", "max"})


@dataclass(frozen=True)
class Project:
    """A project of a local server: its keys, and the plan of the account that owns it.

    Example::

        Project("shop", keys=["sk_live_a", "sk_live_b"], public_keys=["pk_live_c"], plan="free")

    Attributes:
        id: The project's ID.
        keys: Secret keys (everything, including ``GET /export``).
        public_keys: Public keys (ingest and ``GET /flags``; ``/export`` answers 403).
        plan: The owner's plan: ``"free"``, ``"hobby"``, ``"pro"`` or ``"max"``. ``None`` (the default)
            means no monthly quota and every feature, like ``"max"``.
        owner: The account; projects with the same owner share the monthly quota. ``None``: the project is
            its own account.
        monthly_quota: Events per month instead of the plan's (a test can use 10 instead of 25,000).
    """

    id: str
    keys: Collection[str] = ()
    public_keys: Collection[str] = ()
    plan: str | None = None
    owner: str | None = None
    monthly_quota: int | None = None

    def __post_init__(self) -> None:
        """Check the plan and quota.

        Raises:
            ValueError: For an unknown plan or a negative quota.
        """
        if self.plan is not None and self.plan not in PLAN_QUOTAS:
            raise ValueError(f"plan must be one of {sorted(PLAN_QUOTAS)} or None, got {self.plan!r}")
        if self.monthly_quota is not None and self.monthly_quota < 0:
            raise ValueError(f"monthly_quota must be >= 0 or None, got {self.monthly_quota!r}")
        if isinstance(self.keys, str) or isinstance(self.public_keys, str):
            raise TypeError("keys and public_keys are collections of keys, not one string")

    @property
    def account(self) -> str:
        """The owner, or the project's own ID when it has none."""
        return self.owner if self.owner is not None else self.id

    @property
    def quota(self) -> int | None:
        """Events per month for the account, or ``None`` for no quota."""
        if self.monthly_quota is not None:
            return self.monthly_quota
        return None if self.plan is None else PLAN_QUOTAS[self.plan]

    def allows(self, bucket: str) -> bool:
        """Tell whether the plan includes a plan-gated feature.

        Args:
            bucket: ``"errors"``, ``"llm"``, ``"flags"`` or ``"recordings"`` (others are never gated).

        Returns:
            ``False`` when the endpoint answers 402.
        """
        return bucket not in PLAN_FEATURES or self.plan is None or self.plan in _PAID_PLANS


def month_start(now: float) -> float:
    """The start of the calendar month of ``now`` in the local time zone, as the real server counts it.

    Args:
        now: POSIX time.

    Returns:
        POSIX time of the 1st of that month, 00:00 local time.
    """
    local = datetime.datetime.fromtimestamp(now)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


@dataclass(frozen=True)
class Limited:
    """A request refused by the per-minute limit.

    Attributes:
        limit: The bucket's limit.
        retry_after: Whole seconds to the window's end (``Retry-After``; may be ``0`` at the edge).
        reset_ms: The window's end as Unix epoch milliseconds (``X-RateLimit-Reset``).
    """

    limit: int
    retry_after: int
    reset_ms: int


class RateLimiter:
    """Fixed windows per ``bucket:project``, exactly as the real server's in-memory limiter.

    A window starts at the first request and lasts ``window`` seconds; every request counts (refused ones
    too); the request that makes the count exceed the limit and every later one in the window is refused.
    Not thread-safe on its own (the server calls it under its lock).
    """

    def __init__(
        self,
        limits: Mapping[str, int | None],
        *,
        window: float = RATE_LIMIT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Configure the limits.

        Args:
            limits: Requests per window by bucket; a bucket that is absent or ``None`` is not limited.
            window: Seconds per window (tests shorten it to run a one-minute scenario in seconds).
            clock: Monotonic clock for the windows.
            wall_clock: Wall clock for ``X-RateLimit-Reset``.

        Raises:
            ValueError: If ``window`` is not a positive finite number or a limit is negative.
        """
        if not (math.isfinite(window) and window > 0):
            raise ValueError(f"rate_limit_window must be a positive number of seconds, got {window!r}")
        for bucket, limit in limits.items():
            if limit is not None and limit < 0:
                raise ValueError(f"rate limit for {bucket!r} must be >= 0 or None, got {limit!r}")
        self._limits = dict(limits)
        self._window = window
        self._clock = clock
        self._wall_clock = wall_clock
        self._windows: dict[str, list[float]] = {}  # "bucket:project" -> [window end, count]

    @property
    def limits(self) -> dict[str, int | None]:
        """The limits by bucket (a copy)."""
        return dict(self._limits)

    @property
    def window(self) -> float:
        """Seconds per window."""
        return self._window

    def hit(self, bucket: str, project_id: str) -> Limited | None:
        """Count one request.

        Args:
            bucket: The endpoint's bucket (``"batch"``, ``"events"``...).
            project_id: The project the key belongs to.

        Returns:
            ``None`` if the request may proceed, else why it is refused.
        """
        limit = self._limits.get(bucket)
        if limit is None:
            return None
        now = self._clock()
        key = f"{bucket}:{project_id}"
        entry = self._windows.get(key)
        if entry is None or entry[0] < now:  # the real limiter resets only once resetAt < now
            self._windows[key] = entry = [now + self._window, 0.0]
        entry[1] += 1
        if entry[1] <= limit:
            return None
        remaining = entry[0] - now
        return Limited(
            limit=limit,
            retry_after=max(0, math.ceil(remaining)),
            reset_ms=int((self._wall_clock() + remaining) * 1000),
        )

    def clear(self) -> None:
        """Forget every window."""
        self._windows.clear()
