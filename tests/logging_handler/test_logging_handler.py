"""SerlaHandler with real ``logging``, real threads, a real fork and the real loopback server.

Every test flushes the client (bounded) and then reads what the server stored; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import logging.config
import logging.handlers
import os
import queue
import sys
import threading
import time
import types
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import serla
from serla import Serla
from serla.devtools.server import Fault, SerlaServer
from serla.logging_handler import RESERVED_ATTRIBUTES, SerlaHandler

KEY = "sk_live_logging_handler_test"


class ListHandler(logging.Handler):
    """Keeps every record it sees, with a copy of its attributes at that moment."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []
        self.snapshots: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.snapshots.append(dict(vars(record)))


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY}) as srv:
        yield srv


@pytest.fixture
def client(server: SerlaServer) -> Iterator[Serla]:
    """A client whose interval is long: whatever arrives promptly arrived through a flush."""
    c = Serla(KEY, host=server.url, flush_interval_seconds=60.0, flush_on_exit=False, timeout=5.0)
    yield c
    c.shutdown(timeout=5.0)


@pytest.fixture(autouse=True)
def _logging_state() -> Iterator[None]:
    """Restore the root logger, the serla logger, every logger's disabled flag and the default client."""
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    serla_logger = logging.getLogger("serla")
    serla_level = serla_logger.level
    disabled = {
        name: lg.disabled
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    serla.set_default_client(None)
    yield
    for handler in root.handlers:
        if handler not in root_handlers and isinstance(handler, SerlaHandler):
            handler.close()
    root.handlers[:] = root_handlers
    root.setLevel(root_level)
    serla_logger.setLevel(serla_level)
    for name, flag in disabled.items():
        lg = logging.root.manager.loggerDict.get(name)
        if isinstance(lg, logging.Logger):
            lg.disabled = flag
    leftover = serla.get_default_client(create=False)
    serla.set_default_client(None)
    if leftover is not None:
        leftover.shutdown(timeout=5.0)


@pytest.fixture
def log(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A logger of its own for each test, at INFO, not propagating (the root-logger tests use the root)."""
    lg = logging.getLogger(f"app.{request.node.name}")
    lg.setLevel(logging.INFO)
    lg.propagate = False
    yield lg
    for handler in list(lg.handlers):
        lg.removeHandler(handler)
        handler.close()


def attach(lg: logging.Logger, *handlers: logging.Handler) -> None:
    for handler in handlers:
        lg.addHandler(handler)


def iso_ms(created: float) -> str:
    """The documented timestamp of a record: record.created in UTC, to the millisecond, with Z."""
    return (
        dt.datetime.fromtimestamp(created, dt.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def delivered(server: SerlaServer, client: Serla | None) -> list[dict[str, Any]]:
    assert client is not None
    assert client.flush(timeout=10)
    return server.events


# -- the mapping ---------------------------------------------------------------------------------------


def test_a_record_naming_an_event_arrives_as_the_documented_event(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    before, after = ListHandler(), ListHandler()
    attach(log, before, SerlaHandler(client), after)

    log.info(
        "order %s placed",
        "ord_1",
        extra={
            "event": "order_placed",
            "distinct_id": "user_123",
            "total": 42.5,
            "when": dt.datetime(2024, 1, 15, 10, 30, tzinfo=dt.timezone.utc),
            "tags": {"b", "a"},
            "properties": {"currency": "EUR", "total": 40.0},
            "_internal": "not sent",
        },
    )

    [event] = delivered(server, client)
    record = before.records[0]
    assert event == {
        "name": "order_placed",
        "distinctId": "user_123",
        "timestamp": iso_ms(record.created),
        "properties": {
            "message": "order ord_1 placed",
            "level": "INFO",
            "logger": log.name,
            "total": 40.0,  # the nested properties dict wins over a loose extra
            "when": "2024-01-15T10:30:00.000Z",
            "tags": ["a", "b"],
            "currency": "EUR",
        },
    }
    assert before.snapshots[0] == after.snapshots[0]  # the shared record is not modified


def test_ordinary_log_lines_on_the_root_logger_are_not_events(server: SerlaServer, client: Serla) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    handler = SerlaHandler(client)
    root.addHandler(handler)
    lg = logging.getLogger("app.plain")

    lg.debug("debug %s", 1)
    lg.info("hello", extra={"distinct_id": "user_1", "plan": "pro"})  # a user, but no event
    lg.warning("warn", extra={"event": 42})  # not a string: names no event
    lg.error("err", extra={"event": ""})
    try:
        raise ValueError("boom")
    except ValueError:
        lg.exception("failed")
    lg.info("this one", extra={"event": "kept", "distinct_id": "user_1"})
    record = logging.LogRecord("app.plain", logging.INFO, __file__, 1, "x", (), None)
    assert handler.filter(record) is False  # rejected before Handler.handle takes the lock

    assert [e["name"] for e in delivered(server, client)] == ["kept"]
    assert handler.stats() == {"tracked": 1, "dropped": {}}


@pytest.mark.parametrize("key", ["event", "event_name", "event.name", "otel.event.name"])
def test_each_default_event_key_names_an_event(
    server: SerlaServer, client: Serla, log: logging.Logger, key: str
) -> None:
    attach(log, SerlaHandler(client))
    log.info("x", extra={key: "named", "distinct_id": "u", "other": 1})
    [event] = delivered(server, client)
    assert event["name"] == "named"
    assert key not in event["properties"]
    assert event["properties"]["other"] == 1


def test_event_keys_can_be_narrowed(server: SerlaServer, client: Serla, log: logging.Logger) -> None:
    attach(log, SerlaHandler(client, event_keys=["analytics_event"]))
    log.info("a", extra={"event": "cache_miss", "distinct_id": "u"})  # someone else's "event" extra
    log.info("b", extra={"analytics_event": "signup", "distinct_id": "u", "event": "kept as property"})
    [event] = delivered(server, client)
    assert event["name"] == "signup"
    assert event["properties"]["event"] == "kept as property"


def test_all_records_as_makes_every_record_an_event(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    handler = SerlaHandler(
        client, all_records_as="log_line", default_distinct_id="service", level=logging.WARNING
    )
    attach(log, handler)
    log.info("below the handler level")
    log.warning("disk at %d%%", 91)
    log.error("named anyway", extra={"event": "job_failed", "distinct_id": "user_9"})

    events = delivered(server, client)
    assert [(e["name"], e["distinctId"], e["properties"]["level"]) for e in events] == [
        ("log_line", "service", "WARNING"),
        ("job_failed", "user_9", "ERROR"),
    ]
    assert events[0]["properties"]["message"] == "disk at 91%"


def test_no_standard_attribute_and_no_private_extra_becomes_a_property(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    attach(log, SerlaHandler(client))

    async def in_a_task() -> None:  # taskName is set on 3.12+; it must not leak into properties
        log.info("x", extra={"event": "e", "distinct_id": "u", "_private": 1, "kept": True})

    asyncio.run(in_a_task())
    [event] = delivered(server, client)
    assert set(event["properties"]) == {"message", "level", "logger", "kept"}
    assert {"args", "created", "msg", "processName", "thread"} <= RESERVED_ATTRIBUTES
    assert not (RESERVED_ATTRIBUTES - {"message"}) & set(event["properties"])
    assert ("taskName" in RESERVED_ATTRIBUTES) == (sys.version_info >= (3, 12))  # read from a blank LogRecord


def test_include_message_false_keeps_the_message_out(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    attach(log, SerlaHandler(client, include_message=False))
    log.info("mail to %s", "bob@example.com", extra={"event": "mail_sent", "distinct_id": "u"})
    [event] = delivered(server, client)
    assert "message" not in event["properties"]


def test_an_exception_adds_type_message_and_stack(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    class PaymentDeclined(Exception):
        pass

    formatted = ListHandler()
    formatted.setFormatter(logging.Formatter("%(message)s"))
    formatted.format = formatted.formatter.format  # type: ignore[method-assign, union-attr]
    attach(log, SerlaHandler(client))
    try:
        raise PaymentDeclined("card expired")
    except PaymentDeclined:
        log.exception("payment failed", extra={"event": "payment_failed", "distinct_id": "u"})

    [event] = delivered(server, client)
    props = event["properties"]
    assert props["level"] == "ERROR"
    assert (
        props["exception.type"]
        == f"{__name__}.test_an_exception_adds_type_message_and_stack.<locals>.PaymentDeclined"
    )
    assert props["exception.message"] == "card expired"
    assert props["exception.stacktrace"].startswith("Traceback (most recent call last):")
    assert props["exception.stacktrace"].endswith("PaymentDeclined: card expired")


def test_a_stack_formatted_by_another_handler_is_reused(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    class Console(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            self.format(record)  # sets record.exc_text, as StreamHandler does

    attach(log, Console(), SerlaHandler(client))
    lookup: dict[str, int] = {}
    try:
        lookup["missing"]
    except KeyError:
        log.error("lookup failed", exc_info=True, extra={"event": "lookup_failed", "distinct_id": "u"})
    [event] = delivered(server, client)
    assert event["properties"]["exception.type"] == "KeyError"
    assert event["properties"]["exception.stacktrace"].endswith("KeyError: 'missing'")


def test_behind_a_queue_listener_the_timestamp_is_the_log_calls(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    def logged_long_ago(record: logging.LogRecord) -> bool:
        record.created = 1_700_000_000.5  # as if the listener handled it much later than the log call
        return True

    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(q, SerlaHandler(client))
    log.addFilter(logged_long_ago)
    attach(log, logging.handlers.QueueHandler(q))
    log.info("queued", extra={"event": "queued", "distinct_id": "u", "n": 1})
    listener.start()  # handled only now, on the listener's thread
    listener.stop()
    log.removeFilter(logged_long_ago)
    [event] = delivered(server, client)
    assert event["timestamp"] == "2023-11-14T22:13:20.500Z"
    assert event["properties"] == {"message": "queued", "level": "INFO", "logger": log.name, "n": 1}


# -- distinct_id -----------------------------------------------------------------------------------------


def test_distinct_id_comes_from_the_record_then_the_context_then_the_default(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    attach(log, SerlaHandler(client, default_distinct_id="fallback"))
    uid = uuid.UUID(int=7)
    log.info("a", extra={"event": "e1", "distinct_id": "d", "enduser.id": "x", "user.id": "y"})
    log.info("b", extra={"event": "e2", "enduser.id": "otel_user", "user.id": "y"})
    log.info("c", extra={"event": "e3", "user.id": 42})
    log.info("d", extra={"event": "e4", "user.id": uid})
    log.info("e", extra={"event": "e5", "distinct_id": True, "user.id": ""})  # unusable: next source
    with serla.distinct_id_context("from_context"):
        log.info("f", extra={"event": "e6"})
        log.info("g", extra={"event": "e7", "distinct_id": "explicit"})
    log.info("h", extra={"event": "e8"})

    events = delivered(server, client)
    assert [(e["name"], e["distinctId"]) for e in events] == [
        ("e1", "d"),
        ("e2", "otel_user"),
        ("e3", "42"),
        ("e4", str(uid)),
        ("e5", "fallback"),
        ("e6", "from_context"),
        ("e7", "explicit"),
        ("e8", "fallback"),
    ]
    assert all(not {"distinct_id", "enduser.id", "user.id"} & set(e["properties"]) for e in events)


def test_track_without_distinct_id_uses_the_same_context(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    attach(log, SerlaHandler(client))
    with serla.distinct_id_context("user_ctx"):
        log.info("from logging", extra={"event": "via_log"})
        client.track("via_track")  # the documented fallback of track(distinct_id=None)
    assert {(e["name"], e["distinctId"]) for e in delivered(server, client)} == {
        ("via_log", "user_ctx"),
        ("via_track", "user_ctx"),
    }


def test_no_distinct_id_anywhere_drops_counts_and_warns(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    warnings = ListHandler(logging.WARNING)
    serla_logger = logging.getLogger("serla")
    serla_logger.addHandler(warnings)
    handler = SerlaHandler(client)
    attach(log, handler)
    try:
        log.info("anonymous", extra={"event": "e"})
        log.info("anonymous again", extra={"event": "e"})
    finally:
        serla_logger.removeHandler(warnings)
    assert delivered(server, client) == []
    assert handler.stats() == {"tracked": 0, "dropped": {"no_distinct_id": 2}}
    assert any("no distinct_id" in r.getMessage() for r in warnings.records)


def test_context_distinct_ids_stay_per_thread_and_per_task(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    attach(log, SerlaHandler(client))
    start = threading.Barrier(6)

    def worker(i: int) -> None:
        with serla.distinct_id_context(f"thread_{i}"):
            start.wait(5)
            for n in range(5):
                log.info("t", extra={"event": "thread_event", "i": i, "n": n})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    async def task(i: int) -> None:
        with serla.distinct_id_context(f"task_{i}"):
            await asyncio.sleep(0)
            log.info("a", extra={"event": "task_event", "i": i})

    async def all_tasks() -> None:
        await asyncio.gather(*(task(i) for i in range(5)))

    asyncio.run(all_tasks())

    events = delivered(server, client)
    assert len(events) == 35
    for e in events:
        prefix = "thread_" if e["name"] == "thread_event" else "task_"
        assert e["distinctId"] == f"{prefix}{e['properties']['i']}"


# -- never hurts the app ---------------------------------------------------------------------------------


def test_a_broken_record_goes_to_handle_error_and_the_app_goes_on(
    server: SerlaServer, client: Serla, log: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = SerlaHandler(client)
    log.handlers[:] = [handler]  # pytest's capture handlers on this logger re-raise logging errors themselves
    log.info("%d items", "not a number", extra={"event": "broken", "distinct_id": "u"})
    log.info("fine", extra={"event": "fine", "distinct_id": "u"})
    assert "--- Logging error ---" in capsys.readouterr().err
    assert [e["name"] for e in delivered(server, client)] == ["fine"]
    assert handler.stats() == {"tracked": 1, "dropped": {"error": 1}}


def test_records_of_the_sdk_and_its_http_stack_are_ignored(server: SerlaServer, client: Serla) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = SerlaHandler(client)
    root.addHandler(handler)
    extra = {"event": "loop", "distinct_id": "u"}
    for name in ("serla", "serla.worker", "urllib3", "urllib3.connectionpool", "http.client"):
        logging.getLogger(name).warning("x", extra=extra)
    logging.getLogger("serlaish").warning("not the SDK", extra={"event": "kept", "distinct_id": "u"})

    def on_an_sdk_thread() -> None:
        logging.getLogger("app").warning("x", extra=extra)

    t = threading.Thread(target=on_an_sdk_thread, name="serla-flusher")
    t.start()
    t.join(5)
    assert [e["name"] for e in delivered(server, client)] == ["kept"]


def test_the_loop_guard_runs_before_your_filters_and_cannot_be_removed(
    server: SerlaServer, client: Serla
) -> None:
    class Counting(logging.Filter):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def filter(self, record: logging.LogRecord) -> bool:
            self.names.append(record.name)
            return True

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = SerlaHandler(client)
    mine = Counting()
    handler.addFilter(mine)
    root.addHandler(handler)
    extra = {"event": "loop", "distinct_id": "u"}
    logging.getLogger("serla.worker").warning("x", extra=extra)
    handler.filters.clear()  # removing every filter leaves the guard in place
    logging.getLogger("urllib3.connectionpool").warning("x", extra=extra)
    logging.getLogger("app").warning("x", extra={"event": "kept", "distinct_id": "u"})
    assert mine.names == []  # the SDK's record never reached the user's filter
    assert [e["name"] for e in delivered(server, client)] == ["kept"]


def test_the_sdk_check_and_the_event_check_run_before_the_handler_lock(
    server: SerlaServer, client: Serla
) -> None:
    """While another thread holds the handler lock (as logging.shutdown() does while it flushes), the SDK's
    own records and ordinary log lines are dropped without waiting for it; only an event waits."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    handler = SerlaHandler(client)
    root.addHandler(handler)
    event = {"event": "loop", "distinct_id": "u"}

    def on_thread(fn: Any, name: str = "app-worker") -> threading.Event:
        finished = threading.Event()

        def run() -> None:
            fn()
            finished.set()

        threading.Thread(target=run, name=name, daemon=True).start()
        return finished

    must_not_wait = {
        "the serla logger": lambda: logging.getLogger("serla.worker").warning("x", extra=event),
        "http.client": lambda: logging.getLogger("http.client").warning("x", extra=event),
        "an ordinary line": lambda: logging.getLogger("app").info("checkout started"),
    }
    handler.acquire()
    try:
        for what, fn in must_not_wait.items():
            assert on_thread(fn).wait(10), f"{what} waited for the handler lock"
        flusher = on_thread(lambda: logging.getLogger("app").warning("x", extra=event), name="serla-flusher")
        assert flusher.wait(10), "a record of the SDK's thread waited for the handler lock"
        real = on_thread(
            lambda: logging.getLogger("app").info("x", extra={"event": "real", "distinct_id": "u"})
        )
        assert not real.wait(0.2)  # an event does take the lock (so the checks above could have failed)
    finally:
        handler.release()
    assert real.wait(10)
    assert [e["name"] for e in delivered(server, client)] == ["real"]


def test_extras_set_before_the_standard_attributes_are_kept(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    """A record class that sets attributes before LogRecord.__init__ puts them ahead of the standard ones."""

    class EarlyRecord(logging.LogRecord):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.request_id = "req-1"
            super().__init__(*args, **kwargs)
            self.region = "eu"

    attach(log, SerlaHandler(client))
    old = logging.getLogRecordFactory()
    logging.setLogRecordFactory(EarlyRecord)
    try:
        log.info("x", extra={"event": "e", "distinct_id": "u", "plan": "pro"})
    finally:
        logging.setLogRecordFactory(old)
    made = {"name": log.name, "levelno": logging.INFO, "levelname": "INFO", "msg": "made"}
    log.handle(logging.makeLogRecord({**made, "event": "made", "distinct_id": "u", "n": 1}))
    events = delivered(server, client)
    assert events[0]["properties"] == {
        "message": "x",
        "level": "INFO",
        "logger": log.name,
        "request_id": "req-1",
        "region": "eu",
        "plan": "pro",
    }
    assert events[1]["properties"] == {"message": "made", "level": "INFO", "logger": log.name, "n": 1}


def test_a_record_logged_while_building_an_event_is_dropped_not_recursed(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    class Chatty:
        """A property value whose __str__ logs an event naming itself: unbounded recursion without a guard."""

        def __str__(self) -> str:
            log.info("inner", extra={"event": "inner", "distinct_id": "u", "value": self})
            return "chatty"

    attach(log, SerlaHandler(client))
    log.info("outer", extra={"event": "outer", "distinct_id": "u", "value": Chatty()})
    [event] = delivered(server, client)
    assert event["name"] == "outer"
    assert event["properties"]["value"] == "chatty"


def test_emit_never_waits_for_room_and_flush_is_bounded(server: SerlaServer, log: logging.Logger) -> None:
    server.set_default_fault(Fault(hang=True))
    c = Serla(KEY, host=server.url, max_queue_size=2, batch_size=2, flush_on_exit=False, timeout=2.0)
    handler = SerlaHandler(c, flush_timeout=0.2)
    attach(log, handler)
    try:
        assert server.wait_for_requests(0)
        started = time.monotonic()
        for i in range(30):
            log.info("x", extra={"event": "e", "distinct_id": "u", "i": i})
        handler.flush()
        elapsed = time.monotonic() - started
        # A hanging endpoint has not failed yet: it is slow, so the byte bound applies and every record
        # is accepted at once; nothing waits for room (block_on_full_seconds is 0 by default).
        assert elapsed < 5
        assert handler.stats()["tracked"] == 30
        assert c.pending_count() == 30
    finally:
        server.set_default_fault(None)
        c.shutdown(timeout=0.5)


def test_flush_under_the_handler_lock_does_not_deadlock_with_the_worker_logging(server: SerlaServer) -> None:
    """logging.shutdown() holds the handler lock while flushing; the worker logs after each batch."""
    c = Serla(
        KEY, host=server.url, batch_size=1, flush_interval_seconds=60.0, flush_on_exit=False, timeout=5.0
    )
    handler = SerlaHandler(c, flush_timeout=5.0)
    probe = ListHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    root.addHandler(probe)
    logging.getLogger("serla").setLevel(logging.DEBUG)  # the worker logs "delivered" after every batch
    app = logging.getLogger("app.shutdown")
    app.setLevel(logging.INFO)
    try:
        for i in range(3):
            app.info("x", extra={"event": "e", "distinct_id": "u", "i": i})
        started = time.monotonic()
        logging.shutdown([weakref.ref(handler)])  # acquire, flush, close, release: as at exit
        elapsed = time.monotonic() - started
        # Had the worker's records reached the handler lock, the second batch would wait for flush_timeout.
        assert len(server.events) == 3
        assert elapsed < 4
        assert any(r.name == "serla" and r.threadName == "serla-flusher" for r in probe.records)
    finally:
        root.removeHandler(handler)
        root.removeHandler(probe)
        c.shutdown(timeout=5.0)


# -- lifecycle -------------------------------------------------------------------------------------------


def test_close_shuts_down_only_a_client_it_created(
    server: SerlaServer, client: Serla, log: logging.Logger
) -> None:
    owned = SerlaHandler(
        api_key=KEY, host=server.url, client_options={"flush_interval_seconds": 60.0, "flush_on_exit": False}
    )
    borrowed = SerlaHandler(client)
    attach(log, owned, borrowed)
    log.info("x", extra={"event": "e", "distinct_id": "u"})
    assert owned.owns_client and not borrowed.owns_client
    owned.close()
    borrowed.close()
    owned.close()  # twice is fine
    assert len(server.events) == 2  # close() flushed both
    assert owned.client is not None and owned.client.track("after", "u") is False  # shut down
    assert client.track("after", "u") is True  # still open
    log.info("y", extra={"event": "e", "distinct_id": "u"})
    assert borrowed.stats()["dropped"] == {"closed": 1}


def test_close_tolerates_a_client_that_is_already_shut_down(server: SerlaServer, log: logging.Logger) -> None:
    c = Serla(KEY, host=server.url, flush_on_exit=False)
    handler = SerlaHandler(c)
    attach(log, handler)
    log.info("x", extra={"event": "e", "distinct_id": "u"})
    c.shutdown(timeout=5.0)  # e.g. the app's own shutdown ran before logging.shutdown()
    logging.shutdown([weakref.ref(handler)])
    assert [e["name"] for e in server.events] == ["e"]


def test_handler_without_a_client_uses_the_default_client(
    server: SerlaServer, log: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERLA_API_KEY", KEY)
    monkeypatch.setenv("SERLA_HOST", server.url)
    handler = SerlaHandler()
    attach(log, handler)
    assert handler.client is None  # created at the first event, not before
    log.info("x", extra={"event": "from_log", "distinct_id": "u"})
    default = serla.get_default_client(create=False)
    assert default is not None and handler.client is default and not handler.owns_client
    default.track("from_app", "u")  # the app and the handler share one pipeline
    assert {e["name"] for e in delivered(server, default)} == {"from_log", "from_app"}
    assert default.stats()["batches_sent"] == 1
    handler.close()
    assert default.track("still_open", "u") is True
    assert default.flush(timeout=10)


def test_the_default_client_is_looked_up_at_each_record(server: SerlaServer, log: logging.Logger) -> None:
    first = Serla(KEY, host=server.url, flush_on_exit=False)
    second = Serla(KEY, host=server.url, flush_on_exit=False)
    try:
        serla.set_default_client(first)
        handler = SerlaHandler()
        attach(log, handler)
        log.info("x", extra={"event": "one", "distinct_id": "u"})
        serla.set_default_client(second)
        log.info("x", extra={"event": "two", "distinct_id": "u"})
        assert first.stats()["accepted"] == 1 and second.stats()["accepted"] == 1
    finally:
        first.shutdown(timeout=5.0)
        second.shutdown(timeout=5.0)


def test_configuration_mistakes_raise_at_construction(monkeypatch: pytest.MonkeyPatch, client: Serla) -> None:
    monkeypatch.delenv("SERLA_API_KEY", raising=False)
    monkeypatch.delenv("SERLA_DISABLED", raising=False)
    with pytest.raises(ValueError, match="SERLA_API_KEY"):
        SerlaHandler()
    with pytest.raises(ValueError, match="api_key is required"):
        SerlaHandler(host="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="not both"):
        SerlaHandler(client, api_key="sk_live_x")
    with pytest.raises(TypeError, match="ext://"):
        SerlaHandler("myapp.analytics.serla")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="standard LogRecord attributes"):
        SerlaHandler(client, event_keys=["msg"])
    with pytest.raises(TypeError):
        SerlaHandler(client, event_keys="event")
    with pytest.raises(ValueError):
        SerlaHandler(client, all_records_as="")
    with pytest.raises(ValueError):
        SerlaHandler(client, flush_timeout=-1)
    with pytest.raises(TypeError):
        SerlaHandler(api_key=KEY, client_options={"no_such_option": 1})
    with pytest.raises(ValueError, match="Unknown level"):
        SerlaHandler(api_key=KEY, host="http://127.0.0.1:9", level="LOUD")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*use of fork\\(\\) may lead to deadlocks:DeprecationWarning")
def test_keeps_working_in_a_forked_child(server: SerlaServer, log: logging.Logger) -> None:
    handler = SerlaHandler(
        api_key=KEY, host=server.url, client_options={"flush_interval_seconds": 60.0, "flush_on_exit": False}
    )
    attach(log, handler)
    c = handler.client
    assert c is not None
    log.info("x", extra={"event": "parent_before", "distinct_id": "u"})
    assert c.flush(timeout=10)  # the parent's worker thread is running when it forks

    pid = os.fork()
    if pid == 0:  # the child: a fresh pipeline, the same handler
        code = 1
        try:
            log.info("x", extra={"event": "child", "distinct_id": "u"})
            code = 0 if c.flush(timeout=10) and handler.stats()["tracked"] == 2 else 2
        finally:
            os._exit(code)
    log.info("x", extra={"event": "parent_after", "distinct_id": "u"})
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert c.flush(timeout=10)
    assert sorted(e["name"] for e in server.events) == ["child", "parent_after", "parent_before"]


# -- dictConfig ------------------------------------------------------------------------------------------


@pytest.fixture
def app_module(monkeypatch: pytest.MonkeyPatch, client: Serla) -> types.ModuleType:
    """An importable module holding the app's client, a handler factory and a filter, for ext:// and ()."""
    mod = types.ModuleType("serla_logging_test_app")
    mod.serla = client  # type: ignore[attr-defined]

    def make_handler(**kwargs: Any) -> SerlaHandler:
        return SerlaHandler(client, **kwargs)

    class MarkSignups(logging.Filter):
        """A user filter that names the event itself: it runs before the handler's event check."""

        def filter(self, record: logging.LogRecord) -> bool:
            if record.getMessage().startswith("signup:"):
                record.event = "signup_completed"
            return True

    mod.make_handler = make_handler  # type: ignore[attr-defined]
    mod.MarkSignups = MarkSignups  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mod


def configure(handler: dict[str, Any], **extra: Any) -> SerlaHandler:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"serla": handler},
            "loggers": {"cfg": {"level": "INFO", "handlers": ["serla"], "propagate": False}},
            **extra,
        }
    )
    found = logging.getLogger("cfg").handlers[0]
    assert isinstance(found, SerlaHandler)
    return found


def teardown_cfg() -> None:
    lg = logging.getLogger("cfg")
    for handler in list(lg.handlers):
        lg.removeHandler(handler)
        handler.close()


def test_dictconfig_with_class_and_keyword_arguments(server: SerlaServer) -> None:
    try:
        handler = configure(
            {
                "class": "serla.logging_handler.SerlaHandler",
                "level": "INFO",
                "api_key": KEY,
                "host": server.url,
                "client_options": {"flush_interval_seconds": 60.0, "flush_on_exit": False},
                "event_keys": ["analytics_event"],
                "default_distinct_id": "anon",
            }
        )
        assert handler.owns_client and handler.name == "serla"
        logging.getLogger("cfg").info("x", extra={"analytics_event": "configured"})
        assert [(e["name"], e["distinctId"]) for e in delivered(server, handler.client)] == [
            ("configured", "anon")
        ]
    finally:
        teardown_cfg()


def test_dictconfig_with_an_ext_client_a_factory_and_a_user_filter(
    server: SerlaServer, client: Serla, app_module: types.ModuleType
) -> None:
    try:
        handler = configure(
            {
                "class": "serla.logging_handler.SerlaHandler",
                "client": "ext://serla_logging_test_app.serla",
                "filters": ["mark"],
            },
            filters={"mark": {"()": "serla_logging_test_app.MarkSignups"}},
        )
        assert handler.client is client and not handler.owns_client
        assert [type(f).__name__ for f in handler.filters] == ["MarkSignups"]
        logging.getLogger("cfg").info("signup: %s", "bob", extra={"distinct_id": "bob"})
        logging.getLogger("cfg").info("other line", extra={"distinct_id": "bob"})
        assert [e["name"] for e in delivered(server, client)] == ["signup_completed"]
    finally:
        teardown_cfg()
    server.clear()
    try:
        for factory in ("serla.logging_handler.SerlaHandler", "serla_logging_test_app.make_handler"):
            spec: dict[str, Any] = {"()": factory, "all_records_as": "log_line", "default_distinct_id": "svc"}
            if factory.startswith("serla."):
                spec["client"] = "ext://serla_logging_test_app.serla"
            configure(spec)
            logging.getLogger("cfg").info("via %s", factory)
            teardown_cfg()
        assert [e["properties"]["message"] for e in delivered(server, client)] == [
            "via serla.logging_handler.SerlaHandler",
            "via serla_logging_test_app.make_handler",
        ]
    finally:
        teardown_cfg()


def test_dictconfig_reports_a_client_path_without_ext_prefix() -> None:
    with pytest.raises(ValueError, match="Unable to configure handler 'serla'") as info:
        configure({"class": "serla.logging_handler.SerlaHandler", "client": "myapp.analytics.serla"})
    assert "ext://" in str(info.value.__cause__)


def test_reconfiguring_logging_does_not_stall_and_loses_nothing(server: SerlaServer) -> None:
    try:
        handler = configure(
            {
                "class": "serla.logging_handler.SerlaHandler",
                "api_key": KEY,
                "host": server.url,
                "client_options": {"flush_interval_seconds": 60.0, "flush_on_exit": False},
            }
        )
        owned = handler.client
        assert owned is not None
        logging.getLogger("cfg").info("x", extra={"event": "before_reconfig", "distinct_id": "u"})
        started = time.monotonic()
        # dictConfig closes the old handler while holding logging's module lock: close() must not wait there.
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
        assert time.monotonic() - started < 3
        assert server.wait_for_events(1, timeout=10)  # the owned client delivered it in the background
        assert [e["name"] for e in server.events] == ["before_reconfig"]
        assert owned.track("after", "u") is False  # and it was shut down
        # A second shutdown joins the finished worker and closes its connection. (The worker does not close
        # the connection itself when it exits after a shutdown() that returned before it finished.)
        assert owned.shutdown(timeout=5.0)
    finally:
        teardown_cfg()


# -- structlog and JSON-logger conventions ---------------------------------------------------------------


def test_structlog_render_to_log_kwargs(server: SerlaServer, client: Serla, log: logging.Logger) -> None:
    structlog = pytest.importorskip("structlog")
    attach(log, SerlaHandler(client))
    slog = structlog.wrap_logger(
        log,
        processors=[structlog.contextvars.merge_contextvars, structlog.stdlib.render_to_log_kwargs],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    structlog.contextvars.bind_contextvars(distinct_id="user_42")
    try:
        slog.info("cache warmed", entries=3)  # structlog's "event" is the message: not an analytics event
        slog.info("user signed up", event_name="signup_completed", plan="pro")
        try:
            raise RuntimeError("smtp down")
        except RuntimeError:
            slog.exception("welcome mail failed", event_name="welcome_mail_failed")
    finally:
        structlog.contextvars.clear_contextvars()

    signup, failed = delivered(server, client)
    assert signup == {
        "name": "signup_completed",
        "distinctId": "user_42",
        "timestamp": signup["timestamp"],
        "properties": {"message": "user signed up", "level": "INFO", "logger": log.name, "plan": "pro"},
    }
    assert failed["name"] == "welcome_mail_failed"
    assert failed["properties"]["exception.type"] == "RuntimeError"
    assert failed["properties"]["exception.message"] == "smtp down"


def test_structlog_wrap_for_formatter(server: SerlaServer, client: Serla, log: logging.Logger) -> None:
    structlog = pytest.importorskip("structlog")
    console = ListHandler()
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.KeyValueRenderer(key_order=["event"]),
            ]
        )
    )
    attach(log, SerlaHandler(client), console)
    slog = structlog.wrap_logger(
        log,
        processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    slog.info("cache warmed", entries=3)
    slog.info("user signed up", event_name="signup_completed", distinct_id="user_42", plan="pro")
    try:
        raise RuntimeError("smtp down")
    except RuntimeError:
        slog.exception("welcome mail failed", event_name="welcome_mail_failed", distinct_id="user_42")

    signup, failed = delivered(server, client)
    assert signup["name"] == "signup_completed" and signup["distinctId"] == "user_42"
    assert signup["properties"] == {
        "message": "user signed up",
        "level": "INFO",
        "logger": log.name,
        "plan": "pro",
    }
    assert failed["properties"]["message"] == "welcome mail failed"
    assert failed["properties"]["exception.type"] == "RuntimeError"
    assert "RuntimeError: smtp down" in failed["properties"]["exception.stacktrace"]
    # The console's ProcessorFormatter still renders the untouched event dict.
    assert console.format(console.records[1]).startswith("event='user signed up'")


def test_json_logger_conventions(server: SerlaServer, client: Serla, log: logging.Logger) -> None:
    class JsonFormatter(logging.Formatter):
        """The python-json-logger convention: extras become top-level JSON fields; a dict message merges."""

        def format(self, record: logging.LogRecord) -> str:
            fields = {k: v for k, v in vars(record).items() if k not in RESERVED_ATTRIBUTES}
            if isinstance(record.msg, dict):
                fields.update(record.msg)
            else:
                fields["message"] = record.getMessage()
            return json.dumps({"level": record.levelname, **fields}, default=str)

    console = ListHandler()
    console.setFormatter(JsonFormatter())
    attach(log, console, SerlaHandler(client))
    log.info("checkout", extra={"event": "checkout_started", "distinct_id": "u1", "cart_size": 3})
    log.info({"event": "checkout_done", "distinct_id": "u1", "total": 9.5})  # a dict message

    started, done = delivered(server, client)
    assert json.loads(console.format(console.records[0]))["event"] == "checkout_started"
    assert started["properties"] == {
        "message": "checkout",
        "level": "INFO",
        "logger": log.name,
        "cart_size": 3,
    }
    assert (done["name"], done["distinctId"]) == ("checkout_done", "u1")
    assert done["properties"] == {"level": "INFO", "logger": log.name, "total": 9.5}
