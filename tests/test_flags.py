"""Feature flags in the client: cache, coalescing, fallbacks and pauses, against real loopback servers.

The contract server (``SerlaServer``) answers ``GET /api/v1/flags`` with the real evaluation
(``serla.devtools.flags``); faults make it slow, hang or fail. Time is a fake clock injected into the
client's flag cache, so expiry and pauses are stepped, never slept.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import serla
from serla import Serla
from serla._flags import FAILURE_TTL, STALE_SECONDS, flags_path
from serla.devtools.flags import FLAGS_PATH, decode_properties
from serla.devtools.server import BATCH_PATH, Fault, SerlaServer

KEY = "sk_live_flags_test"


class FakeClock:
    """A monotonic clock the test steps by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer() as srv:
        srv.flags.define("new-checkout")
        srv.flags.define(
            "button-color", variants=[{"key": "control", "weight": 50}, {"key": "variant_a", "weight": 50}]
        )
        srv.flags.define(
            "pro-only",
            rollout_percentage=0,
            conditions=[{"type": "property_equals", "field": "plan", "value": "pro"}],
        )
        srv.flags.define(
            "beta", rollout_percentage=0, conditions=[{"type": "distinct_id_in", "values": ["u-beta"]}]
        )
        srv.flags.define("killed", enabled=False)
        yield srv


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_client(server_url: str, clock: FakeClock | None = None, **options: Any) -> Serla:
    client = Serla(KEY, host=server_url, flush_on_exit=False, **options)
    if clock is not None:
        client._flag_client()._clock = clock
    return client


def flag_requests(server: SerlaServer) -> list[str]:
    return [f"{r.path}?{r.query}" for r in server.requests if r.path == FLAGS_PATH]


def settle(client: Serla, timeout: float = 5.0) -> None:
    """Wait (bounded) until no flag request is in flight."""
    assert client._flag_client().wait_idle(timeout)


@pytest.fixture
def hanging_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


# -- what the server evaluates ---------------------------------------------------------------------------


def test_every_api_returns_the_servers_answer(server: SerlaServer) -> None:
    with make_client(server.url) as client:
        expected = server.flags.evaluate("user_123", {})
        assert expected["button-color"] == "control"  # SERLA_API.md's test vector
        assert client.get_all_feature_flags(distinct_id="user_123") == expected
        assert client.get_feature_flag("button-color", distinct_id="user_123") == "control"
        assert client.get_feature_flag("new-checkout", distinct_id="user_123") is True
        assert client.get_feature_flag("killed", "fb", distinct_id="user_123") is False  # off, not fallback
        assert client.get_feature_flag("no-such-flag", "fb", distinct_id="user_123") == "fb"
        assert client.is_feature_enabled("button-color", distinct_id="user_123") is True
        assert client.is_feature_enabled("killed", distinct_id="user_123") is False
        assert client.is_feature_enabled("beta", distinct_id="u-beta") is True
        assert client.is_feature_enabled("beta", distinct_id="u-other") is False
        assert client.is_feature_enabled("pro-only", distinct_id="u1", properties={"plan": "pro"}) is True
        assert client.is_feature_enabled("pro-only", distinct_id="u1", properties={"plan": "free"}) is False
        assert client.stats()["flags"]["fallbacks"] == {"unknown_flag": 1}


def test_a_second_call_within_max_age_makes_no_request(server: SerlaServer, clock: FakeClock) -> None:
    with make_client(server.url, clock) as client:
        assert client.is_feature_enabled("new-checkout", distinct_id="u1")
        clock.advance(29.9)
        assert client.get_feature_flag("button-color", distinct_id="u1") in ("control", "variant_a")
        assert client.get_all_feature_flags(distinct_id="u1")["new-checkout"] is True
        assert flag_requests(server) == ["/api/v1/flags?distinct_id=u1"]
        stats = client.stats()["flags"]
        assert (stats["requests"], stats["cache_hits"], stats["cache_misses"]) == (1, 2, 1)


def test_properties_in_any_order_share_one_entry_and_travel_as_base64url(server: SerlaServer) -> None:
    props = {"plan": "pro", "note": "??>>~~ é"}  # standard base64 of this has '+' and '/'
    with make_client(server.url) as client:
        assert client.is_feature_enabled("pro-only", distinct_id="u1", properties=props)
        assert client.is_feature_enabled(
            "pro-only", distinct_id="u1", properties=dict(reversed(props.items()))
        )
    (request,) = [r for r in server.requests if r.path == FLAGS_PATH]
    encoded = request.query.partition("properties=")[2]
    assert encoded and not set(encoded) & set("+/=%")
    assert decode_properties(encoded) == props


def test_a_hundred_threads_asking_for_one_new_user_make_one_request(server: SerlaServer) -> None:
    server.inject(Fault(delay=0.3, path=FLAGS_PATH))  # so that the threads pile up on the first request
    results: list[Any] = []
    lock = threading.Lock()
    with make_client(server.url, flags_timeout=20.0) as client:
        start = threading.Barrier(100)

        def ask() -> None:
            start.wait(10)
            value = client.get_feature_flag("button-color", "fallback", distinct_id="crowd-user")
            with lock:
                results.append(value)

        threads = [threading.Thread(target=ask) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        expected = server.flags.evaluate("crowd-user")["button-color"]
        assert results == [expected] * 100
        assert len(flag_requests(server)) == 1
        stats = client.stats()["flags"]
        assert stats["requests"] == 1
        assert stats["coalesced"] + stats["cache_hits"] == 99


def test_stale_answer_is_served_while_one_background_refresh_runs(
    server: SerlaServer, clock: FakeClock
) -> None:
    with make_client(server.url, clock) as client:
        assert client.is_feature_enabled("new-checkout", distinct_id="u1") is True
        server.flags.define("new-checkout", enabled=False)
        clock.advance(31)
        assert client.is_feature_enabled("new-checkout", distinct_id="u1") is True  # stale, at once
        assert client.is_feature_enabled("new-checkout", distinct_id="u1") is True  # no second refresh
        assert server.wait_for_requests(2, timeout=5)
        settle(client)
        assert client.is_feature_enabled("new-checkout", distinct_id="u1") is False  # refreshed
        assert len(flag_requests(server)) == 2
        assert client.stats()["flags"]["stale_served"] == 2
        clock.advance(30 + STALE_SECONDS + 1)  # too old to serve: a miss that waits for the answer
        server.flags.define("new-checkout", enabled=True)
        assert client.is_feature_enabled("new-checkout", distinct_id="u1") is True
        assert len(flag_requests(server)) == 3


def test_the_lru_keeps_flags_cache_size_answers(server: SerlaServer) -> None:
    with make_client(server.url, flags_cache_size=2) as client:
        for user in ("a", "b", "c"):
            client.get_all_feature_flags(distinct_id=user)
        assert client.stats()["flags"]["cached"] == 2
        client.get_all_feature_flags(distinct_id="c")  # still cached
        assert len(flag_requests(server)) == 3
        client.get_all_feature_flags(distinct_id="a")  # evicted: asked again
        assert len(flag_requests(server)) == 4


# -- never slow, never raise -----------------------------------------------------------------------------


def test_a_hanging_server_gives_fallbacks_within_flags_timeout(
    hanging_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="serla")
    url = f"http://127.0.0.1:{hanging_port}"
    with make_client(url, flags_timeout=0.2, timeout=30.0) as client:
        client._flag_client()._clock = time.monotonic  # real waits here; the socket timeout (30 s) is far
        started = time.monotonic()
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") == "fb"
        assert client.is_feature_enabled("new-checkout", distinct_id="u1") is False
        assert client.get_all_feature_flags(distinct_id="u2") == {}
        # The socket timeout is 30 s: returning at all before it proves the flags_timeout bound.
        assert time.monotonic() - started < 30.0
        stats = client.stats()["flags"]
        assert stats["fallbacks"] == {"timeout": 3}
        assert stats["in_flight"] == 2  # u1 once (the second call joined the first), u2 once
        assert stats["coalesced"] == 1
    said = [r.getMessage() for r in caplog.records if "flags_timeout" in r.getMessage()]
    assert said == [
        "serla: no feature flag answer within flags_timeout=0.2 s; returning the fallback "
        "(the answer fills the cache when it comes)"
    ]  # rate-limited: once for 3 timeouts


def test_async_apis_do_not_block_the_loop(hanging_port: int) -> None:
    asyncio.run(_async_apis_do_not_block_the_loop(hanging_port))


async def _async_apis_do_not_block_the_loop(hanging_port: int) -> None:
    client = make_client(f"http://127.0.0.1:{hanging_port}", flags_timeout=0.3, timeout=30.0)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.ensure_future(ticker())
    try:
        assert await client.aget_feature_flag("x", "fb", distinct_id="u1") == "fb"
        assert await client.ais_feature_enabled("x", distinct_id="u1") is False
        assert await client.aget_all_feature_flags(distinct_id="u1") == {}
        assert ticks >= 5  # the loop kept running while the calls waited
        assert client.stats()["flags"]["fallbacks"] == {"timeout": 3}
    finally:
        task.cancel()
        client.shutdown(1)


def test_async_apis_return_the_servers_answer(server: SerlaServer) -> None:
    asyncio.run(_async_apis_return_the_servers_answer(server))


async def _async_apis_return_the_servers_answer(server: SerlaServer) -> None:
    server.inject(Fault(delay=0.1, path=FLAGS_PATH))
    client = make_client(server.url, flags_timeout=10.0)
    try:
        assert await client.aget_feature_flag("button-color", distinct_id="user_123") == "control"
        assert await client.ais_feature_enabled("killed", distinct_id="user_123") is False
        assert (await client.aget_all_feature_flags(distinct_id="user_123"))["new-checkout"] is True
        assert len(flag_requests(server)) == 1
    finally:
        client.shutdown(1)


def test_a_stopped_server_gives_fallbacks_and_pauses_requests(closed_port: int, clock: FakeClock) -> None:
    with make_client(f"http://127.0.0.1:{closed_port}", clock, flags_timeout=5.0) as client:
        assert client.get_feature_flag("f", "fb", distinct_id="u1") == "fb"
        for user in ("u2", "u3", "u4"):  # paused after the refused connection: no request, no wait
            assert client.get_feature_flag("f", "fb", distinct_id=user) == "fb"
        stats = client.stats()["flags"]
        assert stats["requests"] == 1
        assert stats["fallbacks"] == {"network_error": 4}
        assert stats["paused"] == "network_error"
        assert "Connection refused" in str(stats["last_error"]) or "Errno" in str(stats["last_error"])


def test_a_5xx_is_cached_briefly_then_retried(server: SerlaServer, clock: FakeClock) -> None:
    server.fail_next(1, 500, path=FLAGS_PATH)
    with make_client(server.url, clock) as client:
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") == "fb"
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") == "fb"  # failure cached
        assert len(flag_requests(server)) == 1
        clock.advance(max(FAILURE_TTL, 1.0) + 0.1)
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") is True
        assert len(flag_requests(server)) == 2
        assert client.stats()["flags"]["fallbacks"] == {"server_error": 2}


def test_a_failed_refresh_keeps_serving_the_last_answer(server: SerlaServer, clock: FakeClock) -> None:
    with make_client(server.url, clock) as client:
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") is True
        server.fail_next(1, 503, path=FLAGS_PATH)
        clock.advance(31)
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") is True
        assert server.wait_for_requests(2, timeout=5)
        settle(client)
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") is True
        assert len(flag_requests(server)) == 2  # no retry before the failure TTL
        assert client.stats()["flags"]["fallbacks"] == {}


def test_429_holds_every_request_until_retry_after(server: SerlaServer, clock: FakeClock) -> None:
    server.fail_next(1, 429, headers={"Retry-After": "17"}, path=FLAGS_PATH)
    with make_client(server.url, clock) as client:
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") == "fb"
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u2") == "fb"
        stats = client.stats()["flags"]
        assert (stats["paused"], stats["paused_for"], stats["requests"]) == ("rate_limited", 17.0, 1)
        clock.advance(17)
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u2") is True
        assert len(flag_requests(server)) == 2


def test_402_turns_flags_off_with_one_warning(server: SerlaServer, caplog: pytest.LogCaptureFixture) -> None:
    server.flags.payment_required_keys.add(KEY)
    caplog.set_level(logging.WARNING, logger="serla")
    with make_client(server.url) as client:
        for user in ("u1", "u2", "u3"):
            assert client.get_feature_flag("new-checkout", "fb", distinct_id=user) == "fb"
            assert client.is_feature_enabled("new-checkout", distinct_id=user) is False
        assert len(flag_requests(server)) == 1
        stats = client.stats()["flags"]
        assert stats["paused"] == "plan" and stats["fallbacks"] == {"plan": 6}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "402" in r.getMessage()]
    assert len(warnings) == 1


def test_401_gives_fallbacks(server: SerlaServer) -> None:
    with SerlaServer(api_keys={"sk_live_other"}) as strict, make_client(strict.url) as client:
        assert client.get_feature_flag("x", "fb", distinct_id="u1") == "fb"
        assert client.stats()["flags"]["paused"] == "unauthorized"


def test_no_distinct_id_gives_the_fallback_and_one_warning(
    server: SerlaServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="serla")
    with make_client(server.url) as client:
        assert client.get_feature_flag("new-checkout", "fb") == "fb"
        assert client.is_feature_enabled("new-checkout") is False
        assert client.get_all_feature_flags() == {}
        assert [r for r in caplog.records if "without distinct_id" in r.getMessage()].__len__() == 1
        assert client.get_feature_flag("x", "fb", distinct_id=123) == "fb"  # type: ignore[arg-type]
        assert client.get_feature_flag("x", "fb", distinct_id="u" * 501) == "fb"
        assert client.get_feature_flag("x", "fb", distinct_id="u1", properties=[1]) == "fb"  # type: ignore[arg-type]
        with serla.distinct_id_context("ctx-user"):
            assert client.is_feature_enabled("beta") is False
            assert client.get_all_feature_flags() == server.flags.evaluate("ctx-user")
        assert flag_requests(server) == ["/api/v1/flags?distinct_id=ctx-user"]
        assert client.stats()["flags"]["fallbacks"] == {"no_distinct_id": 3, "invalid_call": 3}


def test_flag_requests_do_not_wait_behind_the_event_backlog(server: SerlaServer) -> None:
    server.inject(Fault(hang=True, path=BATCH_PATH))  # the batch worker is stuck on its request
    client = make_client(server.url, flush_interval_seconds=0.01, timeout=30.0)
    try:
        for i in range(50):
            client.track("e", "u1", {"i": i})
        assert server.wait_for_requests(1, timeout=5)  # the batch is in flight, hanging
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") is True
        assert client.stats()["in_flight"] > 0  # the batch is still stuck
    finally:
        client.shutdown(0.1)


def test_exposure_events_once_per_user_flag_and_value(server: SerlaServer, clock: FakeClock) -> None:
    with make_client(server.url, clock, send_flag_events=True, flush_interval_seconds=0.01) as client:
        for _ in range(3):
            client.get_feature_flag("button-color", distinct_id="user_123")
            client.is_feature_enabled("new-checkout", distinct_id="user_123")
        client.get_all_feature_flags(distinct_id="user_123")  # sends none
        client.get_feature_flag("nope", "fb", distinct_id="user_123")  # a fallback: none
        clock.advance(31)
        client.get_feature_flag("button-color", distinct_id="user_123")  # a new period: one more
        assert client.flush(5)
    exposures = [
        (e["properties"]["$feature_flag"], e["properties"]["$feature_flag_response"]) for e in server.events
    ]
    assert exposures == [("button-color", "control"), ("new-checkout", True), ("button-color", "control")]
    assert {e["name"] for e in server.events} == {"$feature_flag_called"}


def test_exposure_events_are_off_by_default(server: SerlaServer) -> None:
    with make_client(server.url, flush_interval_seconds=0.01) as client:
        client.get_feature_flag("button-color", distinct_id="user_123")
        assert client.flush(5)
    assert server.events == []


def test_a_disabled_client_makes_no_flag_request(server: SerlaServer) -> None:
    with make_client(server.url, disabled=True) as client:
        assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") == "fb"
    assert flag_requests(server) == []


def test_after_shutdown_flags_fall_back(server: SerlaServer) -> None:
    client = make_client(server.url)
    client.shutdown(1)
    assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") == "fb"
    assert client.stats()["flags"]["fallbacks"] == {"shutdown": 1}


def test_public_keys_work(server: SerlaServer) -> None:
    with Serla("pk_live_public", host=server.url, flush_on_exit=False) as client:
        assert client.is_feature_enabled("new-checkout", distinct_id="u1") is True
    assert server.requests[-1].headers["authorization"] == "Bearer pk_live_public"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"flags_timeout": 0}, ValueError),
        ({"flags_timeout": "1"}, TypeError),
        ({"flags_cache_size": 0}, ValueError),
        ({"flags_cache_size": 1.5}, TypeError),
    ],
)
def test_bad_flag_options_raise(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Serla(KEY, flush_on_exit=False, **options)


def test_flags_path_quotes_the_id() -> None:
    assert flags_path("a b&c/é", "") == "/api/v1/flags?distinct_id=a%20b%26c%2F%C3%A9"
    assert flags_path("a\x00b\ud800", "") == "/api/v1/flags?distinct_id=ab%EF%BF%BD"  # as events clean it
    assert flags_path("u", '{"a":1}') == "/api/v1/flags?distinct_id=u&properties=eyJhIjoxfQ"


_FORK_SCRIPT = """
import json, os, sys
from serla import Serla
client = Serla("sk_live_fork", host=sys.argv[1], flush_on_exit=False)
assert client.get_all_feature_flags(distinct_id="parent-user")["new-checkout"] is True
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the child: the parent's fetcher thread and connection are gone
    answers = [
        client.get_all_feature_flags(distinct_id="parent-user")["new-checkout"],
        client.get_all_feature_flags(distinct_id="child-user")["new-checkout"],
        client.stats()["flags"]["requests"],
    ]
    os.write(write, json.dumps(answers).encode())
    os._exit(0)
os.close(write)
os.waitpid(pid, 0)
with os.fdopen(read) as f:
    child = json.loads(f.read())
after = client.get_all_feature_flags(distinct_id="after-fork")["new-checkout"]
print(json.dumps({"child": child, "after": after}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_keeps_the_cache_and_makes_its_own_requests(server: SerlaServer) -> None:
    # In a subprocess: forking the test process itself (with the server's threads) is unsafe.
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_SCRIPT, server.url], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    # The child answered from the inherited cache, and made one request of its own for its new user.
    assert json.loads(proc.stdout.splitlines()[-1]) == {"child": [True, True, 1], "after": True}
    assert flag_requests(server) == [
        "/api/v1/flags?distinct_id=parent-user",
        "/api/v1/flags?distinct_id=child-user",
        "/api/v1/flags?distinct_id=after-fork",
    ]


def test_the_fetcher_threads_do_not_keep_a_client_alive(server: SerlaServer) -> None:
    import gc
    import weakref

    client = make_client(server.url, send_flag_events=True)
    assert client.is_feature_enabled("new-checkout", distinct_id="u1") is True
    flags = client._flag_client()
    assert flags.stats()["requests"] == 1  # a fetcher thread exists, waiting for work
    ref = weakref.ref(client)
    del client
    gc.collect()
    assert ref() is None
    flags.close()
