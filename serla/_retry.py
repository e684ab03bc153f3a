"""The failure policy: what to do after each send. Pure arithmetic, no I/O, no clock.

:meth:`RetryPolicy.decide` maps the result of one POST of a batch to one :class:`Decision`. The worker
applies it. Keeping the policy pure means every row of the table below is tested directly
(``tests/test_retry.py``), the way urllib3 tests ``Retry.get_backoff_time``.

=================================  =========================================================================
outcome                            decision
=================================  =========================================================================
2xx                                ``DELIVERED``
connection error, timeout          ``RETRY`` after backoff (1, 2, 4, 8, 16, 30, 30... s, minus up to 20 %
                                   jitter); the batch and its idempotency key are kept
408, 502, 503, 504, other 5xx      ``RETRY`` after backoff
500                                ``RETRY`` up to ``server_error_attempts`` times (a 500 can be a
                                   transient database error or a deterministic payload problem); then
                                   ``SPLIT`` to isolate the event, and a lone event is ``DROP``-ped
429 with ``Retry-After``           ``HOLD`` for ``max(1, Retry-After)`` s (capped at
                                   ``retry_after_max``): the per-minute limit
429 without ``Retry-After``        ``HOLD`` for ``quota_delay`` (1 h): the monthly quota, not transient
400 with ``details``               ``DROP_SOME`` the events named by ``details[].path[1]``, resend the
                                   rest at once; no usable index: ``SPLIT`` (a lone event: ``DROP``)
413                                ``SPLIT`` (a lone event: ``DROP``)
402                                ``DISABLE``: the feature is not in the plan; its lane is turned off
401, 403                           ``HOLD`` for ``auth_delay`` (60 s), warn loudly: a key that starts
                                   working again is picked up at the next probe
3xx, 404, 405, other 4xx           ``HOLD`` for ``auth_delay``: a configuration problem (a redirect is
                                   never followed, so the key never reaches another host)
=================================  =========================================================================
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from typing import Any, Callable, Final

# ``SendResult`` lives with the transport that produces it: a successful send never imports this module
# (nor ``dataclasses``, ``json``... behind it); the worker loads it on the first failed send.
from serla._transport import SendResult as SendResult


class Action(enum.Enum):
    """What the worker does with a batch after one send."""

    DELIVERED = "delivered"
    RETRY = "retry"
    """Transient failure: wait ``delay`` (a flush may cut the wait short), then resend unchanged."""
    HOLD = "hold"
    """The server asked us to stop for ``delay`` (rate limit, quota, auth): flushes don't cut this short."""
    SPLIT = "split"
    """Send the two halves separately, each with a key derived from this batch's key."""
    DROP_SOME = "drop_some"
    """Drop the events at ``indices``, resend the rest at once."""
    DROP = "drop"
    """Drop the whole batch."""
    DISABLE = "disable"
    """The feature is not in the project's plan (402): turn the lane off (for events: a long hold)."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """The policy's answer for one batch.

    Attributes:
        action: What to do.
        delay: Seconds to wait before the next send (``RETRY`` and ``HOLD``).
        indices: Positions in the batch to drop (``DROP_SOME``).
        reason: A short machine-readable reason; used as the key of ``stats()["dropped"]``.
        message: A human explanation, for the log.
    """

    action: Action
    delay: float = 0.0
    indices: tuple[int, ...] = ()
    reason: str = ""
    message: str = ""


RETRYABLE_STATUSES: Final = frozenset({408, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Backoff and classification of send results.

    Attributes:
        base_delay: First backoff, in seconds.
        max_delay: Backoff ceiling, in seconds (the schedule is 1, 2, 4, 8, 16, 30, 30...).
        jitter: Each backoff is shortened by a random fraction up to this much, so that many processes
            that failed together don't retry together. ``0`` disables jitter.
        retry_after_max: Ceiling for a server's ``Retry-After``, in seconds.
        quota_delay: Pause after a 429 without ``Retry-After`` (monthly quota exhausted), in seconds.
        auth_delay: Pause after a 401/403 or another configuration error, in seconds.
        server_error_attempts: How many times a batch is sent while the server answers 500 before it is
            split (a lone event is then dropped).
        pace_min: While rate limited, the shortest interval between two event requests, in seconds:
            0.6 s is the server's whole budget (100 requests a minute) for one process.
        pace_max: The longest such interval. The first 429 sets it from this process's share of the
            last window's requests, each later 429 makes it 1.25 times longer and each success 5 %
            shorter, so a fleet that shares a project's budget settles near its fair share.
        rate_window: The server's rate-limit window, in seconds (60): the span over which a process's
            share of the budget is counted.
    """

    base_delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.2
    retry_after_max: float = 120.0
    quota_delay: float = 3600.0
    auth_delay: float = 60.0
    server_error_attempts: int = 5
    pace_min: float = 0.6
    pace_max: float = 30.0
    rate_window: float = 60.0

    def backoff(self, attempt: int, rng: Callable[[], float]) -> float:
        """Return the wait after the ``attempt``-th consecutive failure (1-based).

        Args:
            attempt: 1 after the first failure, 2 after the second, ...
            rng: Returns a float in [0, 1), e.g. ``random.random``.
        """
        exp = min(max(attempt, 1) - 1, 30)
        delay: float = min(self.max_delay, self.base_delay * float(2**exp))
        return delay * (1.0 - self.jitter * rng())

    def retry_after(self, header: str | None, now: float | None = None) -> float | None:
        """Parse a ``Retry-After`` header (seconds or HTTP date) into seconds, within [1, cap].

        Args:
            header: The header value, or ``None``.
            now: Current wall-clock time (seconds since the epoch) for HTTP dates.

        Returns:
            Seconds to wait, or ``None`` when the header is absent or unreadable.
        """
        if header is None:
            return None
        header = header.strip()
        try:
            seconds = float(header)
        except ValueError:
            import email.utils  # lazily: only a 429 with an HTTP-date pays for it

            try:
                when = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError, IndexError):
                return None
            if when is None or now is None:
                return None
            seconds = float(when.timestamp()) - now
        if not math.isfinite(seconds):
            return None
        return min(self.retry_after_max, max(1.0, seconds))

    def decide(
        self,
        result: SendResult,
        attempt: int,
        size: int,
        rng: Callable[[], float],
        now: float | None = None,
    ) -> Decision:
        """Classify one send of a batch.

        Args:
            result: What the POST returned.
            attempt: How many times this batch has been sent, this send included (1-based).
            size: How many events the batch holds.
            rng: Random source in [0, 1) for jitter.
            now: Wall-clock seconds since the epoch, for ``Retry-After`` HTTP dates.

        Returns:
            The decision for the worker.
        """
        status = result.status
        if status is None:
            return Decision(
                Action.RETRY, self.backoff(attempt, rng), reason="network", message=result.error or ""
            )
        if 200 <= status < 300:
            return Decision(Action.DELIVERED)
        if status == 429:
            wait = self.retry_after(result.retry_after, now)
            if wait is not None:
                return Decision(Action.HOLD, wait, reason="rate_limited", message="429 Too many requests")
            return Decision(
                Action.HOLD,
                self.quota_delay,
                reason="quota",
                message="429 without Retry-After: the monthly event quota is exhausted. "
                + _server_text(result.body),
            )
        if status == 402:
            return Decision(
                Action.DISABLE,
                self.auth_delay,
                reason="plan",
                message="HTTP 402: not in the project's plan. " + _server_text(result.body),
            )
        if status == 400:
            indices = _bad_indices(result.body, size)
            text = _server_text(result.body)
            if indices and len(indices) < size:
                return Decision(Action.DROP_SOME, indices=indices, reason="rejected", message=text)
            if size > 1 and not indices:
                return Decision(Action.SPLIT, reason="rejected", message=text)
            return Decision(Action.DROP, reason="rejected", message=text)
        if status == 413:
            if size > 1:
                return Decision(Action.SPLIT, reason="too_large", message="413 Payload too large")
            return Decision(Action.DROP, reason="too_large", message="413 Payload too large")
        if status == 500 and attempt >= self.server_error_attempts:
            if size > 1:
                return Decision(Action.SPLIT, reason="server_error", message=_server_text(result.body))
            return Decision(Action.DROP, reason="server_error", message=_server_text(result.body))
        if status in RETRYABLE_STATUSES or status >= 500:
            return Decision(
                Action.RETRY, self.backoff(attempt, rng), reason=f"http_{status}", message=f"HTTP {status}"
            )
        if status in (401, 403):
            return Decision(
                Action.HOLD,
                self.auth_delay,
                reason="auth",
                message=f"HTTP {status}: the API key was refused. " + _server_text(result.body),
            )
        return Decision(
            Action.HOLD,
            self.auth_delay,
            reason=f"http_{status}",
            message=f"HTTP {status}: check the host setting (redirects are never followed). "
            + _server_text(result.body),
        )


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _server_text(body: bytes) -> str:
    """A short human summary of an error body (Serla JSON or anything else)."""
    data = _json(body)
    if isinstance(data, Mapping):
        parts = [str(data[k]) for k in ("error", "message") if isinstance(data.get(k), str)]
        if parts:
            return ": ".join(parts)[:500]
    return body[:200].decode("utf-8", "replace")


def _bad_indices(body: bytes, size: int) -> tuple[int, ...]:
    """The event positions named by a 400's ``details[].path`` (``["events", i, ...]``)."""
    data = _json(body)
    if not isinstance(data, Mapping) or not isinstance(data.get("details"), list):
        return ()
    found: set[int] = set()
    for issue in data["details"]:
        path = issue.get("path") if isinstance(issue, Mapping) else None
        if (
            isinstance(path, list)
            and len(path) >= 2
            and path[0] == "events"
            and isinstance(path[1], int)
            and not isinstance(path[1], bool)
            and 0 <= path[1] < size
        ):
            found.add(path[1])
        else:
            return ()  # an issue about the whole batch: indices alone would not fix it
    return tuple(sorted(found))


def describe_rejection(body: bytes, index: int) -> str:
    """Summarise the server's ``details`` for the event at ``index`` of a rejected batch."""
    data = _json(body)
    notes = []
    if isinstance(data, Mapping) and isinstance(data.get("details"), list):
        for issue in data["details"]:
            if not isinstance(issue, Mapping):
                continue
            path = issue.get("path")
            if isinstance(path, list) and len(path) >= 2 and path[1] == index:
                field = ".".join(str(p) for p in path[2:]) or "event"
                notes.append(f"{field}: {issue.get('message', issue.get('code', 'invalid'))}")
    return "; ".join(notes)[:500] or _server_text(body)
