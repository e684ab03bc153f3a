"""The request context (``serla.context``), sessions, groups, super properties and ``before_send``.

Every test sends through a real client to the contract server on 127.0.0.1 and reads back what arrived.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import serla
from serla.devtools.server import Fault, SerlaServer

KEY = "sk_live_context_test"
S1 = "0123456789abcdef0123456789abcdef"
S2 = "fedcba9876543210fedcba9876543210"


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY}) as srv:
        yield srv


def make(server: SerlaServer, **options: Any) -> serla.Serla:
    return serla.Serla(KEY, host=server.url, flush_interval_seconds=60, flush_on_exit=False, **options)


@pytest.fixture
def client(server: SerlaServer) -> Iterator[serla.Serla]:
    c = make(server)
    yield c
    c.shutdown(5)


def sent(client: serla.Serla, server: SerlaServer) -> list[dict[str, Any]]:
    assert client.flush(5) is True
    return server.events


def test_context_sets_user_session_groups_and_properties(client: serla.Serla, server: SerlaServer) -> None:
    with serla.context(
        distinct_id="u1", session_id=S1, groups={"company": "acme"}, properties={"tier": "pro"}
    ):
        assert client.track("inside") is True
        assert serla.get_distinct_id() == "u1"
        assert serla.current_scope().session_id == S1
    assert serla.current_scope() is serla.current_scope()  # the empty scope, a shared object
    assert serla.get_distinct_id() is None
    assert client.track("outside", "u2") is True
    inside, outside = sent(client, server)
    assert inside == {
        "name": "inside",
        "distinctId": "u1",
        "sessionId": S1,
        "timestamp": inside["timestamp"],
        "properties": {"tier": "pro", "$groups": {"company": "acme"}},
    }
    assert "sessionId" not in outside and outside["properties"] == {}


def test_nested_scopes_merge_and_the_outer_one_comes_back(client: serla.Serla, server: SerlaServer) -> None:
    with serla.context(
        distinct_id="outer", session_id=S1, groups={"company": "acme"}, properties={"a": 1, "b": 1}
    ):
        with serla.context(groups={"team": "red"}, properties={"b": 2}):
            client.track("inner")
        with serla.context(distinct_id="other", session_id=S2, groups={"company": "globex"}):
            client.track("override")
        client.track("outer_again")
    inner, override, outer = sent(client, server)
    assert (inner["distinctId"], inner["sessionId"]) == ("outer", S1)
    assert inner["properties"] == {"a": 1, "b": 2, "$groups": {"company": "acme", "team": "red"}}
    assert (override["distinctId"], override["sessionId"]) == ("other", S2)
    assert override["properties"]["$groups"] == {"company": "globex"}
    assert outer["properties"] == {"a": 1, "b": 1, "$groups": {"company": "acme"}}


def test_explicit_arguments_win_over_the_context_and_the_context_over_super_properties(
    client: serla.Serla, server: SerlaServer
) -> None:
    client.set_properties({"app": "shop", "plan": "client", "region": "eu"})
    with serla.context(
        distinct_id="ctx", session_id=S1, groups={"company": "acme"}, properties={"plan": "ctx"}
    ):
        client.track("e", "explicit", {"plan": "explicit", "$groups": {"company": "mine"}}, session_id=S2)
        client.track("f", properties={"region": "us"})
    e, f = sent(client, server)
    assert (e["distinctId"], e["sessionId"]) == ("explicit", S2)
    assert e["properties"] == {
        "app": "shop",
        "plan": "explicit",
        "region": "eu",
        "$groups": {"company": "mine"},
    }
    assert f["properties"] == {"app": "shop", "plan": "ctx", "region": "us", "$groups": {"company": "acme"}}


def test_super_properties_set_unset_get(client: serla.Serla, server: SerlaServer) -> None:
    client.set_properties({"a": 1, "b": 2, "c": 3})
    client.set_properties({"c": 4, "when": dt.date(2026, 1, 2)})  # merged, coerced now
    client.unset_properties(["b", "missing"])
    assert client.get_super_properties() == {"a": 1, "c": 4, "when": "2026-01-02"}
    client.get_super_properties()["a"] = 99  # a copy
    client.track("one", "u")
    client.unset_properties("a")
    client.unset_properties(["c", "when"])
    assert client.get_super_properties() == {}
    client.track("two", "u")
    one, two = sent(client, server)
    assert one["properties"] == {"a": 1, "c": 4, "when": "2026-01-02"}
    assert two["properties"] == {}


def test_set_properties_refuses_a_non_dict(client: serla.Serla, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="serla"):
        client.set_properties([1, 2])  # type: ignore[arg-type]
    assert client.get_super_properties() == {}
    assert "set_properties() needs a dict" in caplog.text


def test_track_session_id_argument_and_a_bad_one_is_not_sent(
    client: serla.Serla, server: SerlaServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="serla"):
        assert client.track("good", "u", session_id=S1.upper()) is True
        assert client.track("bad", "u", session_id="not-a-session") is True  # the event still goes
        assert client.track("uuid", "u", session_id="01234567-89ab-cdef-0123-456789abcdef") is True
    good, bad, uuid_form = sent(client, server)
    assert good["sessionId"] == S1.upper()
    assert "sessionId" not in bad and "sessionId" not in uuid_form
    assert "session_id must be 32 hex digits" in caplog.text
    # The contract server stored the events under the client's session only for the valid one.
    stored = server.stored
    assert stored[0].session_id == S1.upper() and stored[1].session_id != stored[2].session_id


def test_bad_context_values_are_left_out_with_a_warning(
    client: serla.Serla, server: SerlaServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="serla"):
        ctx = serla.context(
            distinct_id=42,  # type: ignore[arg-type]
            session_id="xyz",
            groups={"company": None, "": "x", "team": 7},  # type: ignore[dict-item]
            properties=[1],  # type: ignore[arg-type]
        )
        with ctx as scope:
            assert scope == serla.Scope(groups={"team": "7"})
            client.track("e", "u")
    assert "distinct_id must be a non-empty string" in caplog.text
    assert "session_id must be 32 hex digits" in caplog.text
    assert "a group needs a non-empty string type" in caplog.text
    (e,) = sent(client, server)
    assert e["properties"] == {"$groups": {"team": "7"}} and "sessionId" not in e


def test_no_distinct_id_anywhere_drops_and_counts(client: serla.Serla) -> None:
    with serla.context(session_id=S1):
        assert client.track("nobody") is False
    assert client.stats()["dropped"]["invalid_call"] == 1


def test_the_decorator_on_sync_and_async_functions(client: serla.Serla, server: SerlaServer) -> None:
    @serla.context(distinct_id="job", properties={"job": "sync"})
    def job(n: int) -> int:
        client.track("sync_ran", properties={"n": n})
        return n * 2

    @serla.context(distinct_id="job", properties={"job": "async"})
    async def ajob(n: int) -> int:
        await asyncio.sleep(0)
        client.track("async_ran", properties={"n": n})
        return n * 3

    assert job.__name__ == "job" and ajob.__name__ == "ajob"
    assert job(2) == 4
    assert asyncio.run(ajob(2)) == 6
    assert serla.get_distinct_id() is None
    assert [(e["name"], e["distinctId"], e["properties"]) for e in sent(client, server)] == [
        ("sync_ran", "job", {"job": "sync", "n": 2}),
        ("async_ran", "job", {"job": "async", "n": 2}),
    ]


def test_asyncio_tasks_each_keep_their_own_context(client: serla.Serla, server: SerlaServer) -> None:
    async def request(user: str, gate: asyncio.Event, other: asyncio.Event) -> None:
        async with serla.context(distinct_id=user, session_id=serla.new_session_id()):
            client.group("company", f"c-{user}")
            other.set()
            await gate.wait()  # both tasks are inside their scopes now
            client.track("handled")

    async def main() -> None:
        a, b = asyncio.Event(), asyncio.Event()
        await asyncio.wait_for(asyncio.gather(request("ua", a, b), request("ub", b, a)), 10)

    asyncio.run(main())
    events = sent(client, server)
    assert sorted((e["distinctId"], e["properties"]["$groups"]["company"]) for e in events) == [
        ("ua", "c-ua"),
        ("ub", "c-ub"),
    ]
    assert events[0]["sessionId"] != events[1]["sessionId"]


def test_threads_start_empty_and_copy_context_carries_the_scope(
    client: serla.Serla, server: SerlaServer
) -> None:
    results: dict[str, Any] = {}
    with serla.context(distinct_id="u", session_id=S1):
        plain = threading.Thread(target=lambda: results.update(plain=serla.get_distinct_id()))
        copied = threading.Thread(
            target=contextvars.copy_context().run, args=(lambda: client.track("copied"),)
        )
        for t in (plain, copied):
            t.start()
            t.join(10)
    assert results == {"plain": None}
    (e,) = sent(client, server)
    assert (e["name"], e["distinctId"], e["sessionId"]) == ("copied", "u", S1)


def test_set_and_reset_distinct_id_keep_the_rest_of_the_scope(
    client: serla.Serla, server: SerlaServer
) -> None:
    with serla.context(session_id=S1):
        token = serla.set_distinct_id("u")
        client.track("e")
        serla.reset_distinct_id(token)
        assert serla.get_distinct_id() is None and serla.current_scope().session_id == S1
        with serla.distinct_id_context("v"):
            client.track("f")
    e, f = sent(client, server)
    assert (e["distinctId"], e["sessionId"], f["distinctId"], f["sessionId"]) == ("u", S1, "v", S1)


def test_group_adds_groups_until_the_scope_ends_and_sends_group_identify(
    client: serla.Serla, server: SerlaServer
) -> None:
    with serla.context(distinct_id="u", session_id=S1):
        assert client.group("company", "acme") is True
        assert client.group("team", 7, {"name": "Red", "seats": 12}) is True  # type: ignore[arg-type]
        client.track("inside")
    client.track("after", "u")
    identify, inside, after = sent(client, server)
    assert identify["name"] == "$group_identify"
    assert identify["distinctId"] == "u" and identify["sessionId"] == S1
    assert identify["properties"] == {
        "$groups": {"company": "acme", "team": "7"},
        "$groupType": "team",
        "$groupId": "7",
        "$groupProperties": {"name": "Red", "seats": 12},
    }
    assert inside["properties"] == {"$groups": {"company": "acme", "team": "7"}}
    assert after["properties"] == {}


def test_group_refuses_bad_arguments(client: serla.Serla, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="serla"):
        assert client.group("", "x") is False
        assert client.group("company", None) is False  # type: ignore[arg-type]
    assert serla.current_scope().groups is None
    assert client.stats()["dropped"]["invalid_call"] == 2


def test_before_send_scrubs_a_property_everywhere(server: SerlaServer) -> None:
    seen: list[dict[str, Any]] = []

    def scrub(event: dict[str, Any]) -> dict[str, Any]:
        seen.append({**event, "properties": dict(event["properties"])})
        event["properties"].pop("email", None)
        return event

    client = make(server, before_send=scrub)
    try:
        client.set_properties({"email": "super@example.com"})
        with serla.context(distinct_id="u", session_id=S1, properties={"email": "ctx@example.com"}):
            client.track("signup", properties={"email": "a@example.com", "plan": "pro"})
        mine = {"email": "b@example.com"}
        client.track("other", "u2", mine)
        assert mine == {"email": "b@example.com"}  # the caller's dict is not touched
        events = sent(client, server)
    finally:
        client.shutdown(5)
    assert [e["properties"] for e in events] == [{"plan": "pro"}, {}]
    assert seen[0] == {
        "event": "signup",
        "distinct_id": "u",
        "properties": {"email": "a@example.com", "plan": "pro"},
        "timestamp": seen[0]["timestamp"],
        "session_id": S1,
    }
    assert seen[0]["timestamp"].endswith("Z") and seen[1]["session_id"] is None


def test_before_send_can_change_drop_and_survive_errors(
    server: SerlaServer, caplog: pytest.LogCaptureFixture
) -> None:
    def hook(event: dict[str, Any]) -> Any:
        name = event["event"]
        if name == "drop":
            return None
        if name == "boom":
            raise RuntimeError("hook bug")
        if name == "weird":
            return 42
        if name == "rename":
            return {
                **event,
                "event": "renamed",
                "distinct_id": "v",
                "session_id": S2,
                "timestamp": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
            }
        if name == "invalid":
            return {**event, "distinct_id": ""}
        return event

    client = make(server, before_send=hook)
    try:
        with caplog.at_level(logging.WARNING, logger="serla"):
            assert client.track("drop", "u") is False
            assert client.track("boom", "u", {"k": 1}) is True
            assert client.track("weird", "u") is True
            assert client.track("rename", "u") is True
            assert client.track("invalid", "u") is False
        events = sent(client, server)
        stats = client.stats()
    finally:
        client.shutdown(5)
    assert [(e["name"], e["distinctId"]) for e in events] == [("boom", "u"), ("weird", "u"), ("renamed", "v")]
    assert events[0]["properties"] == {"k": 1}
    assert events[2]["sessionId"] == S2 and events[2]["timestamp"] == "2026-01-02T03:04:05.000Z"
    assert stats["dropped"]["before_send"] == 1 and stats["dropped"]["invalid_call"] == 1
    assert "before_send raised RuntimeError('hook bug')" in caplog.text
    assert "before_send returned int" in caplog.text


def test_before_send_must_be_callable() -> None:
    with pytest.raises(TypeError, match="before_send"):
        serla.Serla(KEY, before_send="scrub", flush_on_exit=False)  # type: ignore[arg-type]


def test_the_logging_handler_reads_the_context(client: serla.Serla, server: SerlaServer) -> None:
    from serla.logging_handler import SerlaHandler

    handler = SerlaHandler(client)
    log = logging.getLogger("test_context.app")
    log.addHandler(handler)
    log.propagate = False
    try:
        with serla.context(distinct_id="u", session_id=S1, groups={"company": "acme"}):
            log.warning("checkout failed", extra={"event": "checkout_failed"})
    finally:
        log.removeHandler(handler)
        log.propagate = True
    (e,) = sent(client, server)
    assert (e["name"], e["distinctId"], e["sessionId"]) == ("checkout_failed", "u", S1)
    assert e["properties"]["$groups"] == {"company": "acme"}


def test_the_otel_span_processor_reads_the_context(client: serla.Serla, server: SerlaServer) -> None:
    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.sdk.trace import TracerProvider

    from serla.otel import SerlaSpanProcessor

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SerlaSpanProcessor(client))
    tracer = provider.get_tracer("test_context")
    scope = serla.context(
        distinct_id="u", session_id=S1, groups={"company": "acme"}, properties={"tier": "pro"}
    )
    with scope, tracer.start_as_current_span("checkout") as span:
        span.add_event("order_placed", {"total": 3})
    provider.shutdown()
    (e,) = [e for e in sent(client, server) if e["name"] == "order_placed"]
    assert (e["distinctId"], e["sessionId"]) == ("u", S1)
    assert e["properties"]["$groups"] == {"company": "acme"} and e["properties"]["tier"] == "pro"


def test_async_methods_keep_the_event_loop_running(server: SerlaServer) -> None:
    client = make(server)

    async def main() -> tuple[bool, bool, int]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.ensure_future(ticker())
        server.inject(Fault(delay=0.5))  # the flush's request takes half a second
        client.track("e", "u")
        flushed = await client.aflush(10)
        identified = await client.aidentify("u", {"plan": "pro"})
        during = ticks
        closed = await client.ashutdown(10)
        stop.set()
        await task
        return flushed and identified, closed, during

    ok, closed, ticks = asyncio.run(main())
    assert ok and closed
    assert ticks >= 5  # the loop ran while the request was held half a second: it was never blocked
    assert server.identities == {"u": {"plan": "pro"}}
    assert client.track("late", "u") is False  # shut down for real


def test_track_on_an_event_loop_never_waits_for_room(server: SerlaServer) -> None:
    # Same full queue twice: a plain thread waits for room (and gets it), the event loop's thread doesn't.
    # Room for one event while deliveries succeed (max_buffer_bytes) and while they fail (max_queue_size).
    client = make(server, max_queue_size=1, max_buffer_bytes=200, block_on_full_seconds=30, batch_size=1)
    try:
        assert client.track("first", "u") is True
        assert client.flush(5) is True  # deliveries succeed: the worker is healthy, so track() may wait
        server.inject(Fault(delay=1.5))
        assert client.track("held", "u") is True  # in flight for 1.5 s: the queue is full
        assert client.track("thread_waits", "u") is True  # waited for room
        assert client.flush(5) is True

        server.inject(Fault(delay=1.5))
        assert client.track("held_again", "u") is True

        async def on_loop() -> bool:
            return client.track("loop_refused", "u")

        assert asyncio.run(on_loop()) is False
        assert client.flush(5) is True
        assert client.stats()["dropped"]["queue_full"] == 1
    finally:
        client.shutdown(5)
    assert [e["name"] for e in server.events] == ["first", "held", "thread_waits", "held_again"]


def test_other_lanes_records_go_through_the_same_hook(server: SerlaServer) -> None:
    # What capture_exception() / track_llm() call before encoding a record (Serla._apply_before_send).
    def hook(record: dict[str, Any]) -> Any:
        if record.get("kind") == "llm":
            return None
        if record.get("kind") == "broken":
            raise ValueError("nope")
        record.pop("user_agent", None)
        return record

    client = make(server, before_send=hook)
    try:
        error = {"kind": "error", "message": "boom", "user_agent": "secret"}
        assert client._apply_before_send(error) == {"kind": "error", "message": "boom"}
        assert error["user_agent"] == "secret"  # the hook got a copy
        assert client._apply_before_send({"kind": "llm", "model": "m"}) is None
        broken = {"kind": "broken"}
        assert client._apply_before_send(broken) is broken
        assert client.stats()["dropped"]["before_send"] == 1
    finally:
        client.shutdown(5)
    plain = make(server)
    try:
        record = {"kind": "error"}
        assert plain._apply_before_send(record) is record  # no hook: nothing done
    finally:
        plain.shutdown(5)
