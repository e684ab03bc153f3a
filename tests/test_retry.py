"""The failure policy, tested as the pure object it is: no server, no clock, no sleeping."""

from __future__ import annotations

import email.utils
import json

import pytest

from serla._retry import Action, RetryPolicy, SendResult, describe_rejection

POLICY = RetryPolicy()


def zero() -> float:
    return 0.0


def almost_one() -> float:
    return 0.999999


def decide(status: int | None, attempt: int = 1, size: int = 10, **kw: object) -> tuple[Action, float]:
    d = POLICY.decide(SendResult(status, **kw), attempt, size, zero, now=1_000_000.0)  # type: ignore[arg-type]
    return d.action, d.delay


def test_backoff_schedule_is_the_documented_one() -> None:
    assert [POLICY.backoff(n, zero) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_jitter_only_shortens_and_stays_within_20_percent() -> None:
    for n in range(1, 10):
        full = POLICY.backoff(n, zero)
        jittered = POLICY.backoff(n, almost_one)
        assert 0.8 * full <= jittered < full


@pytest.mark.parametrize("status", [None, 408, 502, 503, 504, 599])
def test_transient_failures_retry_with_backoff(status: int | None) -> None:
    assert decide(status, attempt=3) == (Action.RETRY, 4.0)


def test_success() -> None:
    assert decide(201)[0] is Action.DELIVERED
    assert decide(200)[0] is Action.DELIVERED


def test_500_retries_a_few_times_then_isolates() -> None:
    assert decide(500, attempt=4)[0] is Action.RETRY
    assert decide(500, attempt=5, size=10)[0] is Action.SPLIT
    assert decide(500, attempt=5, size=1)[0] is Action.DROP


def test_429_with_retry_after_holds_for_that_long_within_bounds() -> None:
    assert decide(429, retry_after="7") == (Action.HOLD, 7.0)
    assert decide(429, retry_after="0") == (Action.HOLD, 1.0)  # window edge: wait at least 1 s
    assert decide(429, retry_after="100000") == (Action.HOLD, 120.0)
    date = email.utils.formatdate(1_000_000.0 + 42, usegmt=True)
    assert decide(429, retry_after=date) == (Action.HOLD, 42.0)


def test_429_without_retry_after_is_the_quota_long_pause() -> None:
    d = POLICY.decide(SendResult(429, b'{"error":"Rate limit exceeded"}'), 1, 5, zero)
    assert (d.action, d.delay, d.reason) == (Action.HOLD, 3600.0, "quota")


def test_429_with_garbage_retry_after_is_treated_as_quota() -> None:
    assert decide(429, retry_after="soon")[0] is Action.HOLD
    assert decide(429, retry_after="soon")[1] == 3600.0


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_pause_instead_of_hammering(status: int) -> None:
    d = POLICY.decide(SendResult(status, b'{"error":"Invalid API key"}'), 1, 5, zero)
    assert (d.action, d.delay, d.reason) == (Action.HOLD, 60.0, "auth")
    assert "Invalid API key" in d.message


@pytest.mark.parametrize("status", [301, 308, 404, 405])
def test_configuration_errors_pause(status: int) -> None:
    assert decide(status) == (Action.HOLD, 60.0)


def test_a_402_disables_the_feature() -> None:
    body = b'{"error":"Error tracking requires the Hobby plan or above"}'
    d = POLICY.decide(SendResult(402, body), 1, 1, zero)
    assert (d.action, d.reason) == (Action.DISABLE, "plan")
    assert "Hobby plan" in d.message


def bad_request(*paths: list[object]) -> bytes:
    details = [{"code": "invalid_format", "path": p, "message": "Invalid ISO datetime"} for p in paths]
    return json.dumps({"error": "Invalid batch data", "details": details}).encode()


def test_400_drops_only_the_named_events() -> None:
    body = bad_request(["events", 3, "timestamp"], ["events", 7, "name"], ["events", 3, "name"])
    d = POLICY.decide(SendResult(400, body), 1, 10, zero)
    assert (d.action, d.indices) == (Action.DROP_SOME, (3, 7))
    assert describe_rejection(body, 3) == "timestamp: Invalid ISO datetime; name: Invalid ISO datetime"


def test_400_for_every_event_drops_the_batch() -> None:
    d = POLICY.decide(SendResult(400, bad_request(["events", 0], ["events", 1])), 1, 2, zero)
    assert d.action is Action.DROP


def test_400_without_usable_indices_splits_then_drops() -> None:
    whole = bad_request(["events"])
    assert POLICY.decide(SendResult(400, whole), 1, 10, zero).action is Action.SPLIT
    assert POLICY.decide(SendResult(400, b"not json"), 1, 10, zero).action is Action.SPLIT
    assert POLICY.decide(SendResult(400, whole), 1, 1, zero).action is Action.DROP
    out_of_range = bad_request(["events", 12, "name"])
    assert POLICY.decide(SendResult(400, out_of_range), 1, 10, zero).action is Action.SPLIT


def test_413_splits_and_a_lone_event_is_dropped() -> None:
    assert decide(413, size=4)[0] is Action.SPLIT
    assert decide(413, size=1)[0] is Action.DROP


def test_policy_is_immutable() -> None:
    with pytest.raises(AttributeError):
        POLICY.max_delay = 1  # type: ignore[misc]
