"""Flags without the real server: the contract server's route, ``serla dev --flags`` and its form, and
``serla.testing``'s flag values."""

from __future__ import annotations

import http.client
import io
import json
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

import serla
from serla import Serla
from serla.devtools import dev
from serla.devtools.flags import FLAGS_PATH
from serla.devtools.server import SerlaServer
from serla.testing import CapturedEvents, capture, clear_feature_flags, set_feature_flags


def get(
    url: str, path: str, headers: dict[str, str] | None = None, method: str = "GET", body: str = ""
) -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body.encode() or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


# -- the contract server's route -------------------------------------------------------------------------


def test_the_route_answers_like_the_real_one() -> None:
    with SerlaServer(api_keys={"sk_live_a", "sk_live_free"}, rate_limits={"flags": 2}) as server:
        server.flags.define("on")
        server.flags.payment_required_keys.add("sk_live_free")
        status, headers, body = get(
            server.url, f"{FLAGS_PATH}?distinct_id=u1", {"Authorization": "Bearer sk_live_a"}
        )
        assert (status, json.loads(body)) == (200, {"flags": {"on": True}})
        assert headers["cache-control"] == "private, max-age=30"
        assert headers["vary"] == "Authorization"
        assert headers["access-control-allow-origin"] == "*"
        assert get(server.url, FLAGS_PATH, {"Authorization": "Bearer nope"})[0] == 401
        status, _, body = get(server.url, FLAGS_PATH, {"Authorization": "Bearer sk_live_free"})
        assert (status, json.loads(body)) == (402, {"error": "Feature flags require the Hobby plan or above"})
        assert get(server.url, FLAGS_PATH, {"Authorization": "Bearer sk_live_a"})[0] == 200
        status, headers, _ = get(server.url, FLAGS_PATH, {"Authorization": "Bearer sk_live_a"})
        assert status == 429 and int(headers["retry-after"]) >= 0
        assert get(server.url, FLAGS_PATH, method="OPTIONS")[0] == 204


def test_definitions_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps([{"key": "a"}]))
    with SerlaServer() as server:
        server.flags.load(str(path))
        assert server.flags.evaluate("u") == {"a": True}
        path.write_text(json.dumps([{"key": "a", "enabled": False}, {"key": "b"}]))
        bump = path.stat().st_mtime + 5
        import os

        os.utime(path, (bump, bump))
        assert server.flags.evaluate("u") == {"a": False, "b": True}
        server.flags.define("c", rollout_percentage=0)  # written back
        assert [f["key"] for f in json.loads(path.read_text())] == ["a", "b", "c"]
        assert server.flags.remove("a") and not server.flags.remove("a")
        assert [f["key"] for f in json.loads(path.read_text())] == ["b", "c"]


# -- serla dev ---------------------------------------------------------------------------------------------


@pytest.fixture
def dev_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    flags_file = tmp_path / "flags.json"
    flags_file.write_text(json.dumps([{"key": "new-checkout", "rollout_percentage": 100}]))
    args = dev.build_parser().parse_args(
        ["--port", "0", "--db", ":memory:", "--flags", str(flags_file), "--quiet"]
    )
    out = io.StringIO()
    stop = threading.Event()
    thread = threading.Thread(target=dev.run, args=(args,), kwargs={"out": out, "stop": stop})
    thread.start()
    deadline = time.monotonic() + 10
    while "listening on" not in out.getvalue() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.01)
    url = re.search(r"listening on (\S+)", out.getvalue())
    assert url, out.getvalue()
    try:
        yield url.group(1), flags_file, out
    finally:
        stop.set()
        thread.join(10)


def test_serla_dev_serves_flags_from_the_file_and_the_form(dev_server) -> None:  # type: ignore[no-untyped-def]
    url, flags_file, out = dev_server
    assert "flags:        1 from" in out.getvalue()
    with Serla("sk_live_dev", host=url, flush_on_exit=False) as client:
        assert client.get_all_feature_flags(distinct_id="u1") == {"new-checkout": True}
    status, headers, page = get(url, "/flags")
    assert (
        status == 200
        and b"new-checkout" in page
        and "form-action 'self'" in headers["content-security-policy"]
    )
    token = re.search(rb'name="token" value="([^"]+)"', page)
    assert token
    form = {
        "token": token.group(1).decode(),
        "key": "button-color",
        "enabled": "on",
        "rollout_percentage": "100",
        "conditions": "[]",
        "variants": '[{"key":"control","weight":50},{"key":"variant_a","weight":50}]',
    }
    form_headers = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, _ = get(url, "/flags", form_headers, "POST", urlencode(form))
    assert (status, headers["location"]) == (303, "/flags")
    assert [f["key"] for f in json.loads(flags_file.read_text())] == ["new-checkout", "button-color"]
    with Serla("sk_live_dev", host=url, flush_on_exit=False) as client:
        assert client.get_feature_flag("button-color", distinct_id="user_123") == "control"
    status, _, page = get(url, "/flags", form_headers, "POST", urlencode({**form, "variants": "[{"}))
    assert status == 400 and b"Not saved" in page
    assert get(url, "/flags", form_headers, "POST", urlencode({**form, "token": "forged"}))[0] == 403
    delete = {"token": form["token"], "action": "delete", "key": "new-checkout"}
    assert get(url, "/flags", form_headers, "POST", urlencode(delete))[0] == 303
    assert [f["key"] for f in json.loads(flags_file.read_text())] == ["button-color"]
    assert get(url, "/flags", {"Host": "evil.example"})[0] == 403  # DNS rebinding guard
    assert b'<a href="/flags">' in get(url, "/")[2]  # the events page links to the flags page


def test_serla_dev_refuses_a_bad_flags_file(tmp_path: Path) -> None:
    bad = tmp_path / "flags.json"
    bad.write_text('[{"key": "has space"}]')
    args = dev.build_parser().parse_args(["--port", "0", "--db", ":memory:", "--flags", str(bad)])
    err = io.StringIO()
    assert dev.run(args, out=io.StringIO(), err=err) == 2
    assert "cannot use --flags" in err.getvalue()


# -- serla.testing -------------------------------------------------------------------------------------------


def test_the_fixture_answers_flags_set_by_the_test(serla_events: CapturedEvents) -> None:
    client = serla.get_default_client()
    assert client.get_feature_flag("new-checkout", "fb", distinct_id="u1") == "fb"  # no server, no wait
    serla_events.set_flags({"new-checkout": True, "button-color": "red"})
    serla_events.set_flags({"button-color": "blue"}, distinct_id="u2")
    assert client.is_feature_enabled("new-checkout", distinct_id="u1") is True
    assert client.get_feature_flag("button-color", distinct_id="u1") == "red"
    assert client.get_feature_flag("button-color", distinct_id="u2") == "blue"
    assert client.get_all_feature_flags(distinct_id="u2") == {"new-checkout": True, "button-color": "blue"}
    assert client.stats()["flags"]["requests"] == 0


def test_set_feature_flags_on_any_client_makes_no_request() -> None:
    with SerlaServer() as server:
        server.flags.define("on")
        with Serla("sk_live_x", host=server.url, flush_on_exit=False) as client:
            set_feature_flags(client, {"on": False, "extra": "v"})
            assert client.get_all_feature_flags(distinct_id="u1") == {"on": False, "extra": "v"}
            assert [r for r in server.requests if r.path == FLAGS_PATH] == []
            clear_feature_flags(client)
            assert client.get_all_feature_flags(distinct_id="u1") == {"on": True}


def test_capture_of_an_existing_client_answers_local_flags_then_gives_it_back() -> None:
    with SerlaServer() as server:
        server.flags.define("on")
        with Serla("sk_live_x", host=server.url, flush_on_exit=False) as client:
            with capture(client) as events:
                events.set_flags({"on": "captured"})
                assert client.get_feature_flag("on", distinct_id="u1") == "captured"
            assert client.get_feature_flag("on", distinct_id="u1") is True
            assert len([r for r in server.requests if r.path == FLAGS_PATH]) == 1


def test_serla_dev_creates_a_missing_flags_file_on_the_first_save(tmp_path: Path) -> None:
    path = tmp_path / "new-flags.json"
    with dev.SQLiteStore(":memory:") as store, dev.DevServer("127.0.0.1", 0, store=store) as server:
        assert server.flags.load(str(path), missing_ok=True) == []
        assert server.flags.evaluate("u") == {}
        server.flags.define("first")
    assert json.loads(path.read_text())[0]["key"] == "first"
