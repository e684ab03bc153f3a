"""``serla.testing``: the capture, its assertion helpers, the pytest plugin, and ``SERLA_DISABLED``."""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import serla
from serla import Serla
from serla.devtools.server import SerlaServer
from serla.testing import CapturedEvents, CaptureTransport, capture

KEY = "sk_live_testing_key"
BATCH = "/api/v1/events/batch"


def flushers() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "serla-flusher"}


# -- the fixture --------------------------------------------------------------------------------------------


def test_fixture_gives_a_real_client_registered_as_default(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert isinstance(client, Serla)
    assert serla.get_default_client(create=False) is client
    # No sleep, no flush by hand: reading flushes.
    assert client.track("signup_completed", "user_123", {"plan": "pro"}) is True
    serla_events.assert_tracked("signup_completed", distinct_id="user_123", properties={"plan": "pro"})
    assert serla_events.names == ["signup_completed"]


def test_fixture_captures_even_when_serla_disabled_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERLA_DISABLED", "1")
    with capture() as events:
        assert events.client is not None
        events.client.track("x", "u")
        events.assert_tracked("x")


def test_events_are_wire_dicts(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert client is not None
    when = datetime.datetime(2024, 1, 15, 10, 30, tzinfo=datetime.timezone.utc)
    client.track("order", "u1", {"items": ("a", "b"), "at": when, "total": 49.5}, timestamp=when)
    assert serla_events.events == [
        {
            "name": "order",
            "distinctId": "u1",
            "properties": {"items": ["a", "b"], "at": "2024-01-15T10:30:00.000Z", "total": 49.5},
            "timestamp": "2024-01-15T10:30:00.000Z",
        }
    ]
    # Expected values are encoded like track() encodes them, so the original Python values match.
    serla_events.assert_tracked("order", properties={"items": ("a", "b"), "at": when})
    # A copy: changing it changes nothing.
    serla_events.events[0]["name"] = "changed"
    assert serla_events.names == ["order"]


def test_find(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert client is not None
    client.track("view", "u1", {"page": "/", "n": 1})
    client.track("view", "u2", {"page": "/pricing", "n": 2})
    client.track("click", "u1", {"page": "/"})
    assert [e["distinctId"] for e in serla_events.find("view")] == ["u1", "u2"]
    assert [e["name"] for e in serla_events.find(page="/")] == ["view", "click"]
    assert [e["name"] for e in serla_events.find(distinct_id="u1")] == ["view", "click"]
    assert serla_events.find("view", properties={"page": "/pricing"}, n=2)[0]["distinctId"] == "u2"
    assert serla_events.find("view", n=3) == []
    assert len(serla_events.find()) == len(serla_events) == 3


def test_assert_tracked_count(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert client is not None
    for _ in range(3):
        client.track("tick", "cron")
    assert len(serla_events.assert_tracked("tick", count=3)) == 3
    with pytest.raises(AssertionError) as info:
        serla_events.assert_tracked("tick", count=2)
    message = str(info.value)
    assert message.startswith("expected exactly 2 'tick' event; captured 3 matching out of 3 events.")
    assert "Matching events:" in message


def test_assert_tracked_explains_the_difference(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert client is not None
    client.track("signup", "u2", {"plan": "free"})
    with pytest.raises(AssertionError) as info:
        serla_events.assert_tracked("signup", distinct_id="u1", properties={"plan": "pro", "source": "ads"})
    message = str(info.value)
    assert "expected at least 1 'signup' event for distinct_id='u1'" in message
    assert "distinctId is 'u2', expected 'u1'" in message
    assert "properties['plan'] is 'free', expected 'pro'" in message
    assert "properties['source'] is missing (expected 'ads')" in message


def test_assert_tracked_lists_other_names(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert client is not None
    client.track("sign_up", "u1")
    client.track("sign_up", "u2")
    with pytest.raises(
        AssertionError, match=r"No 'signup' event was captured\. Captured names: 'sign_up' x2"
    ):
        serla_events.assert_tracked("signup")


def test_assert_tracked_with_nothing_captured_gives_a_hint(serla_events: CapturedEvents) -> None:
    with pytest.raises(AssertionError) as info:
        serla_events.assert_tracked("signup")
    message = str(info.value)
    assert "No event was captured at all." in message
    assert "No track() call reached the capturing client" in message
    assert "serla.testing.capture(your_client)" in message


def test_assert_tracked_reports_calls_the_client_dropped(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert client is not None
    client.track("signup", 123)  # type: ignore[arg-type]  # not a string: dropped with a warning
    with pytest.raises(AssertionError, match=r"dropped events: \{'invalid_call': 1\}"):
        serla_events.assert_tracked("signup")


def test_bools_and_numbers_are_not_confused(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert client is not None
    client.track("x", "u", {"flag": 1, "ratio": 2})
    serla_events.assert_tracked("x", properties={"ratio": 2.0})  # JSON: 2 == 2.0
    with pytest.raises(AssertionError, match=r"properties\['flag'\] is 1, expected True"):
        serla_events.assert_tracked("x", properties={"flag": True})


def test_assert_not_tracked(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert client is not None
    client.track("signup", "u1", {"plan": "pro"})
    serla_events.assert_not_tracked("signup_failed")
    serla_events.assert_not_tracked("signup", distinct_id="u2")
    serla_events.assert_not_tracked("signup", properties={"plan": "free"})
    with pytest.raises(AssertionError) as info:
        serla_events.assert_not_tracked("signup")
    assert str(info.value).startswith("expected no 'signup' event; captured 1:\n  - 'signup' distinctId='u1'")


def test_clear(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert client is not None
    client.track("a", "u")
    client.identify("u", {"x": 1})
    serla_events.clear()
    assert serla_events.events == [] and serla_events.identities == {}
    client.track("b", "u")
    assert serla_events.names == ["b"]


# -- identify -----------------------------------------------------------------------------------------------


def test_identify_is_captured_and_merged(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert client is not None
    assert client.identify("user_123", {"email": "a@example.com", "plan": "free"}) is True
    assert client.identify("user_123", {"plan": "pro"}) is True
    assert serla_events.identities == {"user_123": {"email": "a@example.com", "plan": "pro"}}
    assert serla_events.identify_calls == [
        {"distinctId": "user_123", "properties": {"email": "a@example.com", "plan": "free"}},
        {"distinctId": "user_123", "properties": {"plan": "pro"}},
    ]
    serla_events.assert_identified("user_123", {"plan": "pro"})
    with pytest.raises(AssertionError, match=r"properties\['plan'\] is 'pro', expected 'max'"):
        serla_events.assert_identified("user_123", {"plan": "max"})
    with pytest.raises(AssertionError, match=r"expected identify\('user_9'\); identified: 'user_123'\."):
        serla_events.assert_identified("user_9")


def test_identify_of_a_too_long_id_is_refused_by_the_client(serla_events: CapturedEvents) -> None:
    client = serla_events.client
    assert client is not None
    assert client.identify("x" * 300) is False
    assert client.identify("\x00") is False  # NULs are scrubbed on the wire: it would be empty
    assert serla_events.identities == {}


# -- validation like the server ---------------------------------------------------------------------------


def test_capture_transport_validates_like_the_server() -> None:
    events = CapturedEvents()
    transport = CaptureTransport(events, KEY)
    ok = transport.post(BATCH, b'{"events":[{"name":"a","distinctId":"u","properties":{}}]}', {})
    assert (ok.status, ok.body) == (201, b'{"success":true,"count":1}')
    assert transport.post(BATCH, b'{"events":[]}', {}).status == 400
    assert transport.post(BATCH, b"not json", {}).status == 500
    assert transport.post(BATCH, b'{"events":[{"name":"a","properties":null}]}', {}).status == 500
    bad_time = b'{"events":[{"name":"a","timestamp":"2024-01-15T10:30:00+00:00"}]}'
    assert transport.post(BATCH, bad_time, {}).status == 400
    assert transport.post("/api/v1/identify", b'{"properties":{}}', {}).status == 400
    assert [r.status for r in events.rejections] == [400, 500, 500, 400, 400]
    assert "Invalid batch data" in str(events.rejections[0])
    assert [e["name"] for e in events.events] == ["a"]
    with pytest.raises(AssertionError) as info:
        events.assert_tracked("b")
    message = str(info.value)
    assert "The capture refused 5 request(s), as the server would:" in message
    assert "No client is capturing into this CapturedEvents." in message


def test_a_refused_batch_is_dropped_by_the_client_and_reported() -> None:
    # A 400 for an event the SDK encoded: the client drops it (as it would against the server) and the
    # assertion message shows both the refusal and the drop.
    with capture() as events:
        client = events.client
        assert client is not None
        transport = CaptureTransport(events, KEY)
        client._worker._transport_factory = lambda: _Refusing(transport)
        client.track("a", "u")
        with pytest.raises(AssertionError) as info:
            events.assert_tracked("a")
    message = str(info.value)
    assert "HTTP 400 for POST /api/v1/events/batch" in message
    assert "'rejected': 1" in message


class _Refusing:
    """Sends every batch with its first event's name emptied (a payload the server refuses)."""

    def __init__(self, inner: CaptureTransport) -> None:
        self.inner = inner

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> object:
        return self.inner.post(path, body.replace(b'"name":"a"', b'"name":""', 1), headers)

    def close(self) -> None:
        self.inner.close()


# -- capturing an existing client ------------------------------------------------------------------------------


def test_capture_an_existing_client_and_give_it_back() -> None:
    with SerlaServer(api_keys={KEY}) as server:
        # A long interval: only flushes send, so what reaches the server is deterministic.
        client = Serla(KEY, host=server.url, flush_on_exit=False, flush_interval_seconds=60)
        try:
            client.track("before", "u")  # still buffered when the capture starts: captured too
            with capture(client) as events:
                assert events.client is client
                client.track("during", "u", {"n": 1})
                assert client.identify("u", {"plan": "pro"}) is True
                events.assert_tracked("during", properties={"n": 1})
                assert events.names == ["before", "during"]
                events.assert_identified("u", {"plan": "pro"})
                with pytest.raises(ValueError, match="already being captured"):
                    events.attach(client)
            assert server.requests == []  # nothing went to the real endpoint
            client.track("after", "u")
            assert events.names == ["before", "during"]  # reading doesn't flush a detached client
            assert server.requests == [] and client.pending_count() == 1
            assert client.identify("u", {"plan": "max"}) is True
            assert client.flush(5) is True
            assert [e["name"] for e in server.events] == ["after"]
            assert server.identities == {"u": {"plan": "max"}}
        finally:
            client.shutdown(5)


def test_capture_a_disabled_client_then_disable_it_again() -> None:
    with SerlaServer() as server:
        client = Serla(KEY, host=server.url, flush_on_exit=False, disabled=True)
        try:
            with capture(client) as events:
                client.track("x", "u")
                events.assert_tracked("x")
            client.track("y", "u")
            assert client.flush(5) is True
            assert server.requests == []
        finally:
            client.shutdown(5)


def test_capture_options_and_defaults() -> None:
    previous = Serla(KEY, host="http://127.0.0.1:9", flush_on_exit=False)
    serla.set_default_client(previous)
    try:
        with capture(set_default=True, batch_size=2) as events:
            client = events.client
            assert client is not None
            assert serla.get_default_client(create=False) is client
            assert client.config.batch_size == 2 and client.config.flush_on_exit is False
        assert serla.get_default_client(create=False) is previous
        assert client.track("late", "u") is False  # the capture's own client is shut down
        with pytest.raises(TypeError), capture(previous, batch_size=2):
            pass
    finally:
        serla.set_default_client(None)
        previous.shutdown(0)


def test_owned_client_thread_ends_with_the_capture() -> None:
    before = flushers()
    with capture() as events:
        assert events.client is not None
        events.client.track("x", "u")
        assert len(events) == 1
        assert flushers() - before
    assert not flushers() - before


# -- SERLA_DISABLED (the core) ------------------------------------------------------------------------------------


def test_serla_disabled_starts_no_thread_sends_nothing_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SERLA_DISABLED", "1")
    before = flushers()
    with SerlaServer() as server:
        with caplog.at_level(logging.INFO, logger="serla"):
            client = Serla(KEY, host=server.url)
        try:
            assert client.track("x", "u") is True
            assert client.identify("u", {"a": 1}) is True
            assert client.flush(1) is True
            assert not flushers() - before
            assert server.requests == []
        finally:
            client.shutdown(1)
    records = [r for r in caplog.records if r.name == "serla" and r.levelno == logging.INFO]
    assert any("disabled" in r.getMessage() for r in records)


# -- the module and the plugin -------------------------------------------------------------------------------


def test_import_is_cheap() -> None:
    code = (
        "import sys, threading, serla.testing\n"
        "heavy = [m for m in ('pytest', '_pytest', 'serla.devtools.server', 'http.client', 'http.server') "
        "if m in sys.modules]\n"
        "print(heavy, threading.active_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[] 1"


def test_plugin_fixture_in_a_user_test_suite(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text(
        textwrap.dedent(
            """
            import serla

            def test_tracks(serla_events):
                assert serla.get_default_client(create=False) is serla_events.client
                serla.get_default_client().track("signup", "u1", {"plan": "pro"})
                serla_events.assert_tracked("signup", distinct_id="u1", properties={"plan": "pro"})

            def test_fails_helpfully(serla_events):
                serla_events.client.track("signup", "u1", {"plan": "free"})
                serla_events.assert_tracked("signup", properties={"plan": "pro"})

            def test_default_client_restored():
                assert serla.get_default_client(create=False) is None
            """
        ),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERLA_", "PYTEST_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "test_app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 2 passed" in proc.stdout
    assert "properties['plan'] is 'free', expected 'pro'" in proc.stdout
