"""The delivery pipeline with a scripted in-process transport: real threads, no network, no sleeps.

The transport double answers from a script and records every request; the HTTP path itself is covered
against the real loopback server in ``tests/integration``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest

from serla import Serla
from serla._retry import RetryPolicy, SendResult
from serla._worker import Deferred

OK = SendResult(201, b'{"success":true}')
DOWN = SendResult(None, error="ConnectionRefusedError: [Errno 111] Connection refused")
FAST = RetryPolicy(
    base_delay=0.01,
    max_delay=0.02,
    jitter=0.0,
    auth_delay=0.05,
    quota_delay=3600.0,
    pace_min=0.01,
    pace_max=0.05,
    rate_window=1.0,
)


class ScriptedTransport:
    """Answers each POST with the next scripted result (then ``default``) and records what it got."""

    def __init__(self, script: list[SendResult] | None = None, default: SendResult = OK) -> None:
        self.script = list(script or [])
        self.default = default
        self.requests: list[tuple[str, dict[str, str], list[dict[str, Any]]]] = []
        self.gate: threading.Event | None = None  # when set, each post waits for it (a hanging server)
        self.cond = threading.Condition()
        self.entered = 0  # posts begun (before the gate)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
        with self.cond:
            self.entered += 1
            self.cond.notify_all()
        if self.gate is not None:
            self.gate.wait(10)
        events = json.loads(body)["events"]
        with self.cond:
            self.requests.append((path, dict(headers), events))
            result = self.script.pop(0) if self.script else self.default
            self.cond.notify_all()
        return result

    def close(self) -> None:
        pass

    def wait_requests(self, n: int, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.requests) >= n, timeout)

    def wait_entered(self, n: int, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.entered >= n, timeout)


def make(transport: ScriptedTransport, **kw: Any) -> Serla:
    kw.setdefault("flush_on_exit", False)
    kw.setdefault("flush_interval_seconds", 60.0)
    kw.setdefault("_policy", FAST)
    return Serla("sk_live_test", host="http://127.0.0.1:9", _transport_factory=lambda: transport, **kw)


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["name"] for e in events]


def test_full_batch_is_sent_without_waiting_for_the_interval() -> None:
    t = ScriptedTransport()
    c = make(t, batch_size=10)  # the interval is 60 s: only batch_size can trigger these sends
    for i in range(10):
        c.track(f"e{i}", "u")
    assert t.wait_requests(1)
    assert names(t.requests[0][2]) == [f"e{i}" for i in range(10)]
    for i in range(10, 20):
        c.track(f"e{i}", "u")
    assert t.wait_requests(2)
    assert c.flush(5)
    assert names([e for _, _, evs in t.requests for e in evs]) == [f"e{i}" for i in range(20)]
    c.shutdown()


def test_batch_size_is_the_most_events_a_request_carries_while_the_server_keeps_up() -> None:
    # The seed README: batch_size is the "max events per flushed batch". 240 events pile up behind a
    # slow first request; a healthy server still gets requests of at most 10.
    t = ScriptedTransport()
    t.gate = threading.Event()
    c = make(t, batch_size=10)
    for i in range(10):
        c.track(f"e{i}", "u")
    assert t.wait_entered(1)  # the first 10 are in flight, held at the gate
    for i in range(10, 250):
        c.track(f"e{i}", "u")
    t.gate.set()
    assert c.flush(5)
    assert [len(evs) for _, _, evs in t.requests] == [10] * 25
    assert [e["name"] for _, _, evs in t.requests for e in evs] == [f"e{i}" for i in range(250)]


def test_while_rate_limited_a_backlog_is_drained_in_requests_of_up_to_100_events() -> None:
    # A 429 with Retry-After: the server's request budget is the limit, so requests carry up to 100
    # events until the backlog is gone, then batch_size again.
    limited = SendResult(429, b'{"error":"Too many requests","retryAfter":1}', retry_after="1")
    t = ScriptedTransport([limited])
    c = make(t, batch_size=10)
    c._worker._rng = lambda: 0.0  # no jitter: the hold is exactly Retry-After (1 s), pacing its minimum
    for i in range(250):
        c.track(f"e{i}", "u")
    assert c.flush(10)
    sizes = [len(evs) for _, _, evs in t.requests]
    assert sizes[0] == 10 and sizes[1] == 10  # the refused request is resent unchanged (same key)
    assert t.requests[0][1]["X-Idempotency-Key"] == t.requests[1][1]["X-Idempotency-Key"]
    assert sizes[2:] == [100, 100, 40]
    assert c.stats()["dropped"] == {}
    for i in range(5):
        c.track(f"after{i}", "u")
    assert c.flush(5)
    assert len(t.requests[-1][2]) == 5  # the backlog is gone: back to batch_size, no pacing


def test_interval_sends_a_partial_batch_on_its_own() -> None:
    t = ScriptedTransport()
    c = make(t, flush_interval_seconds=0.05)
    c.track("lonely", "u")
    assert t.wait_requests(1)
    assert names(t.requests[0][2]) == ["lonely"]
    c.shutdown()


def test_each_request_has_at_most_100_events_and_its_own_key() -> None:
    t = ScriptedTransport()
    c = make(t, batch_size=100)
    for i in range(250):
        c.track("e", "u", {"i": i})
    assert c.flush(5)
    assert [len(evs) for _, _, evs in t.requests] == [100, 100, 50]
    keys = [h["X-Idempotency-Key"] for _, h, _ in t.requests]
    assert len(set(keys)) == 3
    c.shutdown()


def test_retry_resends_the_same_batch_with_the_same_key() -> None:
    t = ScriptedTransport([DOWN, SendResult(503), OK])
    c = make(t, batch_size=5)
    for i in range(5):
        c.track("e", "u", {"i": i})
    assert c.flush(5)
    assert len(t.requests) == 3
    assert len({h["X-Idempotency-Key"] for _, h, _ in t.requests}) == 1
    assert t.requests[0][2] == t.requests[2][2]
    st = c.stats()
    assert (st["sent"], st["retried"], st["requests"], st["dropped"]) == (5, 2, 3, {})
    c.shutdown()


def test_deferred_events_are_built_on_the_flusher_in_order_with_the_others() -> None:
    t = ScriptedTransport()
    c = make(t, batch_size=5)  # nothing is due before the flush
    built_on: list[str] = []

    def build(name: str) -> Any:
        def go() -> bytes:
            built_on.append(threading.current_thread().name)
            return json.dumps({"name": name, "distinctId": "u", "properties": {}}).encode()

        return go

    assert c.track("first", "u")
    assert c._put(Deferred(build("second")))
    assert c.track("third", "u")
    assert c._put(Deferred(build("fourth")))
    assert c.pending_count() == 4  # deferred events count like the others until delivered
    assert c.flush(5)
    assert names(t.requests[0][2]) == ["first", "second", "third", "fourth"]
    assert built_on == ["serla-flusher", "serla-flusher"]
    assert c.stats()["sent"] == 4
    c.shutdown()


def test_a_deferred_event_that_fails_to_build_is_dropped_alone_and_counted() -> None:
    t = ScriptedTransport()
    c = make(t, batch_size=4)

    def broken() -> bytes:
        raise RuntimeError("boom")

    c.track("a", "u")
    c._put(Deferred(broken))
    c._put(Deferred(lambda: None))  # "drop me"
    c._put(Deferred(lambda: b'{"name":"big","properties":{"x":"' + b"x" * 1_000_001 + b'"}}'))
    c.track("b", "u")
    assert c.flush(5) is False  # some of the events flushed were dropped
    # The flusher may take the first four before "b" arrives: one request or two.
    assert [n for _, _, events in t.requests for n in names(events)] == ["a", "b"]
    st = c.stats()
    assert st["dropped"] == {"internal_error": 2, "too_large": 1}
    assert (st["sent"], st["pending"]) == (2, 0)
    c.shutdown()


def test_deferred_events_over_the_request_size_are_sent_in_halves_with_derived_keys() -> None:
    t = ScriptedTransport()
    c = make(t, batch_size=4)
    big = b"y" * 900_000  # 4 of them: 3.6 MB, over the 3 MB a request may carry; their estimate is small
    for i in range(4):
        c._put(Deferred(lambda i=i: b'{"name":"e%d","properties":{"p":"%s"}}' % (i, big)))
    assert c.flush(10)
    assert [names(events) for _, _, events in t.requests] == [["e0", "e1"], ["e2", "e3"]]
    keys = [h["X-Idempotency-Key"] for _, h, _ in t.requests]
    assert keys[0].endswith(".0") and keys[1].endswith(".1") and keys[0][:-2] == keys[1][:-2]
    c.shutdown()


def test_a_blip_is_retried_quietly_and_a_lasting_failure_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    t = ScriptedTransport([DOWN] * 3 + [OK] + [DOWN] * 6 + [OK])
    c = make(t, batch_size=1)
    with caplog.at_level(logging.DEBUG, logger="serla"):
        c.track("blip", "u")
        assert c.flush(5)  # three failed sends, then delivered: no WARNING
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        c.track("outage", "u")
        assert c.flush(5)  # six failed sends: the fourth warns, the next two are rate-limited
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("serla: sending keeps failing (ConnectionRefusedError: [Errno 111]")
    assert "attempt 4" in warnings[0] and "(1 events waiting)" in warnings[0]
    assert names([e for _, _, events in t.requests for e in events]).count("outage") == 7
    c.shutdown()


def test_properties_are_snapshotted_at_track_time() -> None:
    t = ScriptedTransport()
    c = make(t)
    props: dict[str, Any] = {"plan": "pro", "tags": ["a"]}
    c.track("e", "u", props)
    props["plan"] = "free"
    props["tags"].append("b")
    props["later"] = object()
    assert c.flush(5)
    assert t.requests[0][2][0]["properties"] == {"plan": "pro", "tags": ["a"]}
    c.shutdown()


def test_400_drops_only_the_bad_event_and_delivers_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    issue = {"code": "invalid_type", "path": ["events", 1, "name"], "message": "Expected string"}
    details = {"error": "Invalid batch data", "details": [issue]}
    t = ScriptedTransport([SendResult(400, json.dumps(details).encode())])
    c = make(t, batch_size=3)
    with caplog.at_level(logging.WARNING, logger="serla"):
        for n in ("a", "b", "c"):
            c.track(n, "u")
        assert c.flush(5) is False  # one of them was dropped
    assert names(t.requests[1][2]) == ["a", "c"]
    assert t.requests[1][1]["X-Idempotency-Key"] == t.requests[0][1]["X-Idempotency-Key"] + ".r"
    assert c.stats()["dropped"] == {"rejected": 1}
    assert "name: Expected string" in caplog.text
    c.track("d", "u")
    assert c.flush(5) is True  # a later flush is not blamed for an earlier drop
    c.shutdown()


def test_413_splits_into_halves_with_derived_keys() -> None:
    t = ScriptedTransport([SendResult(413, b"Request Entity Too Large")])
    c = make(t, batch_size=4)
    for i in range(4):
        c.track(f"e{i}", "u")
    assert c.flush(5)
    key = t.requests[0][1]["X-Idempotency-Key"]
    assert [(h["X-Idempotency-Key"], names(evs)) for _, h, evs in t.requests[1:]] == [
        (key + ".0", ["e0", "e1"]),
        (key + ".1", ["e2", "e3"]),
    ]
    c.shutdown()


def test_endpoint_down_keeps_memory_bounded_and_counts_drops(caplog: pytest.LogCaptureFixture) -> None:
    t = ScriptedTransport(default=DOWN)
    c = make(t, max_queue_size=50, batch_size=10)
    # Until the first answer the endpoint is presumed up; once a send has failed, it is down.
    c.track("first", "u")
    c.flush(0.001)
    assert t.wait_requests(1)
    assert wait_for(lambda: c.stats()["state"] == "down")
    peak = 0
    with caplog.at_level(logging.WARNING, logger="serla"):
        accepted = 1
        for i in range(1999):
            accepted += c.track("e", "u", {"i": i})
            peak = max(peak, c.pending_count())
    assert peak <= 50
    st = c.stats()
    assert st["dropped"]["queue_full"] == 2000 - accepted
    assert accepted >= 50
    assert "max_queue_size" in caplog.text
    assert c.flush(0.2) is False
    c.shutdown(0.2)


def test_healthy_but_slower_sender_applies_backpressure_instead_of_dropping() -> None:
    t = ScriptedTransport()
    c = make(t, max_queue_size=20, batch_size=5)
    results = [c.track("e", "u", {"i": i}) for i in range(500)]
    assert all(results)
    assert c.flush(10)
    assert c.stats()["sent"] == 500
    assert c.stats()["dropped"] == {}
    c.shutdown()


def test_flush_honours_its_timeout_against_a_hanging_transport() -> None:
    t = ScriptedTransport()
    t.gate = threading.Event()
    c = make(t)
    c.track("e", "u")
    assert c.flush(0.2) is False
    assert c.shutdown(0.2) is False
    t.gate.set()


def test_flush_cuts_a_backoff_short() -> None:
    slow = RetryPolicy(base_delay=30.0, max_delay=30.0, jitter=0.0)
    t = ScriptedTransport([DOWN])
    c = make(t, _policy=slow, flush_interval_seconds=0.01)
    c.track("e", "u")
    assert t.wait_requests(1)
    assert c.flush(5) is True  # without the cut, the retry would come only after 30 s
    assert len(t.requests) == 2
    c.shutdown()


def test_rate_limit_hold_is_not_cut_by_flush_and_flush_returns_early() -> None:
    t = ScriptedTransport([SendResult(429, b'{"error":"Too many requests"}', retry_after="100")])
    c = make(t)
    c.track("e", "u")
    assert c.flush(0.5) is False
    assert len(t.requests) == 1  # no retry storm
    c.shutdown(0)


def test_auth_failure_warns_pauses_and_recovers_when_the_key_works(caplog: pytest.LogCaptureFixture) -> None:
    t = ScriptedTransport([SendResult(401, b'{"error":"Invalid API key"}')] * 2)
    c = make(t)
    with caplog.at_level(logging.WARNING, logger="serla"):
        c.track("e", "u")
        assert c.flush(5) is True  # the pause is 50 ms in this policy; the third try gets 201
    assert len(t.requests) == 3
    assert "API key was refused" in caplog.text
    assert "sk_live_test" not in caplog.text
    c.shutdown()


def test_flush_and_shutdown_without_events_return_true_and_shutdown_twice_is_safe() -> None:
    t = ScriptedTransport()
    c = make(t)
    assert c.flush() is True
    assert c.shutdown() is True
    assert c.shutdown() is True
    assert t.requests == []


def test_track_after_shutdown_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    t = ScriptedTransport()
    c = make(t)
    c.shutdown()
    with caplog.at_level(logging.WARNING, logger="serla"):
        assert c.track("late", "u") is False
    assert c.stats()["dropped"]["shutdown"] == 1


def test_context_manager_delivers_everything() -> None:
    t = ScriptedTransport()
    with make(t) as c:
        for i in range(120):
            c.track("e", "u", {"i": i})
    assert sum(len(evs) for _, _, evs in t.requests) == 120
    assert c.pending_count() == 0


def test_no_thread_possible_means_flush_sends_on_the_callers_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't create new thread at interpreter shutdown")

    t = ScriptedTransport()
    c = make(t)
    monkeypatch.setattr(threading.Thread, "start", refuse)
    assert c.track("at_exit", "u") is True
    assert t.requests == []
    assert c.flush(5) is True
    assert names(t.requests[0][2]) == ["at_exit"]
    monkeypatch.undo()
    c.shutdown()


def test_worker_thread_is_named_daemon_and_started_lazily() -> None:
    t = ScriptedTransport()
    c = make(t)
    before = {th.ident for th in threading.enumerate()}
    c.track("e", "u")
    new = [th for th in threading.enumerate() if th.ident not in before]
    assert [(th.name, th.daemon) for th in new] == [("serla-flusher", True)]
    c.shutdown()
    assert not any(th.is_alive() for th in new)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("", "u"), "event must be a non-empty string"),
        ((None, "u"), "event must be a non-empty string"),
        (("\x00\x00", "u"), "event must be a non-empty string"),  # NULs are scrubbed: it would be empty
        (("e", "\x00"), "distinct_id must be a non-empty string"),
        (("e", ""), "distinct_id must be a non-empty string"),
        (("e", 42), "distinct_id must be a non-empty string"),
        (("e", None), "distinct_id is required"),
        (("e", "u", ["not", "a", "dict"]), "properties must be a dict"),
        (("e", "u", None, "not a time"), "timestamp"),
    ],
)
def test_wrong_calls_are_dropped_counted_and_warned(
    args: tuple[Any, ...], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    from serla._log import reset_warnings

    reset_warnings()
    t = ScriptedTransport()
    c = make(t)
    with caplog.at_level(logging.WARNING, logger="serla"):
        assert c.track(*args) is False
    assert reason in caplog.text
    assert c.stats()["dropped"] == {"invalid_call": 1}
    c.shutdown()


def test_context_distinct_id_is_the_fallback() -> None:
    import serla

    t = ScriptedTransport()
    c = make(t)
    with serla.distinct_id_context("ctx_user"):
        assert c.track("e") is True
        assert c.track("e", "explicit") is True
    assert c.flush(5)
    assert [e["distinctId"] for e in t.requests[0][2]] == ["ctx_user", "explicit"]
    c.shutdown()


def test_warnings_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    from serla._log import reset_warnings

    reset_warnings()
    c = make(ScriptedTransport())
    with caplog.at_level(logging.WARNING, logger="serla"):
        for _ in range(100):
            c.track("", "u")
    assert len([r for r in caplog.records if "call dropped" in r.getMessage()]) == 1
    assert c.stats()["dropped"]["invalid_call"] == 100
    c.shutdown()


class _RaisingAfterSplit(ScriptedTransport):
    """413 for the whole batch, 2xx for its first half, then an unexpected exception for the second."""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
        n = len(self.requests)
        result = super().post(path, body, headers)
        if n == 2:
            raise RuntimeError("a bug in a transport")
        return result


def test_an_error_after_half_a_split_batch_was_delivered_resolves_each_event_once() -> None:
    # The old flusher's error handler dropped the whole batch, counting the delivered half twice:
    # pending went negative and flush() answered wrongly.
    t = _RaisingAfterSplit([SendResult(413, b""), OK])
    c = make(t, batch_size=10)
    for i in range(10):
        c.track(f"e{i}", "u")
    assert c.flush(5) is False
    st = c.stats()
    assert st["pending"] == 0 and c.pending_count() == 0
    assert st["sent"] == 5
    assert st["dropped"] == {"internal_error": 5}
    c.track("later", "u")
    assert c.flush(5) is True
    assert c.stats()["sent"] == 6


class _LaneTransport(ScriptedTransport):
    """Records lane posts by path; answers per path from ``answers`` (then OK)."""

    def __init__(self, answers: dict[str, list[SendResult]]) -> None:
        super().__init__()
        self.answers = answers
        self.paths: list[str] = []

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
        if path.endswith("/events/batch"):
            self.paths.append(path)
            return super().post(path, body, headers)
        with self.cond:
            self.paths.append(path)
            queue = self.answers.get(path, [])
            result = queue.pop(0) if queue else SendResult(200, b'{"success":true}')
            self.cond.notify_all()
        return result


def test_lanes_send_one_record_per_request_and_a_402_turns_only_that_lane_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plan = SendResult(402, b'{"error":"Error tracking requires the Hobby plan or above"}')
    t = _LaneTransport({"/api/v1/errors": [plan]})
    c = make(t, batch_size=10)
    with caplog.at_level(logging.WARNING, logger="serla"):
        assert c._submit("errors", b'{"message":"a"}')
        assert c._submit("llm", b'{"model":"m"}')
        assert c._submit("llm", b'{"model":"n"}')
        c.track("e", "u")
        c.flush(5)
    assert "errors reporting is off" in caplog.text
    assert t.paths.count("/api/v1/llm") == 2 and t.paths.count("/api/v1/events/batch") == 1
    lanes = c.stats()["lanes"]
    assert lanes["errors"]["disabled"] == "plan" and lanes["errors"]["dropped"] == {"plan": 1}
    assert lanes["llm"]["sent"] == 2 and lanes["llm"]["disabled"] is None
    assert c._submit("errors", b'{"message":"b"}') is False  # off for the process
    assert c.track("e2", "u") and c.flush(5)  # events go on


def test_a_rate_limited_lane_does_not_hold_up_events_or_other_lanes() -> None:
    limited = SendResult(429, b'{"error":"Too many requests"}', retry_after="60")
    t = _LaneTransport({"/api/v1/errors": [limited]})
    c = make(t, batch_size=10)
    c._submit("errors", b'{"message":"a"}')
    c._submit("llm", b'{"model":"m"}')
    c.track("e", "u")
    assert c.flush(0.5) is False  # the error report waits out its minute
    assert wait_for(lambda: "/api/v1/llm" in t.paths and "/api/v1/events/batch" in t.paths)
    assert c.stats()["lanes"]["errors"]["queued"] == 1
