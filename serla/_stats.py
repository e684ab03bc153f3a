"""The shape of :meth:`serla.Serla.stats`: typed dictionaries (importing this module imports ``typing``)."""

from __future__ import annotations

from typing import Any, Optional, TypedDict


class LaneStats(TypedDict):
    """Counters of one single-record lane (``errors``, ``llm``)."""

    queued: int
    """Records waiting (the one in flight included)."""
    accepted: int
    sent: int
    """Records the server confirmed."""
    dropped: dict[str, int]
    """Reason -> records: ``plan`` (402), ``rejected`` (400), ``queue_full``, ``shutdown``..."""
    disabled: Optional[str]
    """Why the lane is off for this process (``"plan"`` after a 402), or ``None``."""


class _ErrorStats(TypedDict, total=False):
    errors: dict[str, int]
    """Error reports before the errors lane: ``captured``, ``rate_limited``, ``duplicate``,
    ``dropped_by_hook``, ``hook_error``, ``refused`` (see the error-tracking docs). Set by the client."""


class _FlagStats(TypedDict, total=False):
    flags: dict[str, Any]
    """Feature flags, after the first flag call: ``requests``, ``cache_hits``, ``cache_misses``,
    ``stale_served``, ``coalesced``, ``exposure_events``, ``fallbacks`` (reason -> calls), ``cached``,
    ``in_flight``, ``paused``, ``paused_for``, ``last_error`` (see ``docs/flags.md``)."""


class Stats(_ErrorStats, _FlagStats):
    """Counters for health checks and tests; see :meth:`serla.Serla.stats`."""

    queued: int
    """Events in the buffer."""
    queued_bytes: int
    """What the pending events are charged against ``max_buffer_bytes``."""
    in_flight: int
    pending: int
    """Events accepted and not yet delivered or dropped (buffered + in flight)."""
    accepted: int
    sent: int
    """Events the server confirmed."""
    batches_sent: int
    requests: int
    retried: int
    """Resends of a batch."""
    dropped: dict[str, int]
    """Reason -> events: ``invalid_call``, ``queue_full``, ``rejected`` (400), ``too_large``,
    ``server_error``, ``internal_error``, ``shutdown``."""
    healthy: bool
    """The last send succeeded."""
    state: str
    """``up``, ``rate_limited`` (429 with ``Retry-After``), ``paused`` (a refused key, the monthly quota)
    or ``down`` (network errors, timeouts, 5xx)."""
    last_error: Optional[str]
    lanes: dict[str, LaneStats]
