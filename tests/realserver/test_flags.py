"""Feature flags against the real server: flags inserted in its database, answers compared three ways.

For each case the real server's raw answer (one plain ``http.client`` GET), the SDK's answer and the
local port of the evaluation (``serla.devtools.flags``) must agree. Requests are counted in the server's
access log. Flag keys carry the test's ``unique`` token, and only those keys are compared, so the tests
don't read each other's flags.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from serla import Serla
from serla.devtools.flags import FlagDefinition, decode_properties, evaluate_all, parse_definition

from .conftest import PROJECTS, RealServer


def _sql_json(value: Any) -> str:
    return "'" + json.dumps(value).replace("'", "''") + "'::jsonb"


def insert_flag(server: RealServer, key: str, **options: Any) -> FlagDefinition:
    """Insert (or replace) a flag of the ``max`` project; return the same definition for the local port."""
    flag = parse_definition({"key": key, **options})
    server.execute(
        "insert into feature_flags (project_id, key, name, enabled, rollout_percentage, conditions, variants) "
        f"values ('{PROJECTS['max']}', '{key}', '{key}', {str(flag.enabled).lower()}, "
        f"{int(flag.rollout_percentage)}, {_sql_json([dict(c) for c in flag.conditions])}, "
        f"{_sql_json([dict(v) for v in flag.variants])}) "
        "on conflict (project_id, key) do update set enabled = excluded.enabled, "
        "rollout_percentage = excluded.rollout_percentage, conditions = excluded.conditions, "
        "variants = excluded.variants, updated_at = now()"
    )
    return flag


def raw_flags(server: RealServer, key: str, query: str) -> tuple[int, dict[str, Any]]:
    """One GET /api/v1/flags with a hand-written query string: (status, JSON body)."""
    url = urlsplit(server.host)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=30)
    try:
        conn.request("GET", f"/api/v1/flags?{query}", headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def flag_requests(server: RealServer) -> int:
    return sum(1 for line in server.access_log() if " GET /api/v1/flags " in line)


def wait_for_log(server: RealServer, count: int, timeout: float = 10.0) -> int:
    """The access-log count of flag requests once it reaches ``count`` (bounded wait: the log is async)."""
    deadline = time.monotonic() + timeout
    seen = flag_requests(server)
    while seen < count and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = flag_requests(server)
    return seen


@pytest.fixture
def flags(realserver: RealServer, unique: str) -> Iterator[dict[str, FlagDefinition]]:
    """Boolean, rollout, multivariate, conditional and disabled flags, deleted after the test."""
    defs = {
        "bool": insert_flag(realserver, f"{unique}-bool"),
        "rollout": insert_flag(realserver, f"{unique}-rollout", rollout_percentage=50),
        "multi": insert_flag(
            realserver,
            f"{unique}-multi",
            variants=[
                {"key": "red", "weight": 34},
                {"key": "green", "weight": 33},
                {"key": "blue", "weight": 33},
            ],
        ),
        "multi_rollout": insert_flag(
            realserver,
            f"{unique}-multiroll",
            rollout_percentage=30,
            variants=[{"key": "a", "weight": 50}, {"key": "b", "weight": 50}],
        ),
        "cond": insert_flag(
            realserver,
            f"{unique}-cond",
            rollout_percentage=0,
            conditions=[
                {"type": "distinct_id_in", "values": ["vip-1", "vip-2"]},
                {"type": "property_equals", "field": "plan", "value": "pro"},
            ],
        ),
        "off": insert_flag(realserver, f"{unique}-off", enabled=False),
    }
    yield defs
    realserver.execute(f"delete from feature_flags where key like '{unique}-%'")


def ours(answer: dict[str, Any], unique: str) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k.startswith(unique)}


def test_every_api_returns_what_the_server_evaluates(
    realserver: RealServer, unique: str, flags: dict[str, FlagDefinition]
) -> None:
    # Users picked (with the local port) so that every kind of answer comes up: on, off, each variant.
    # The server's answers for them are compared below, so a wrong port would fail the test, not skew it.
    users, covered = ["vip-1", "user_123"], set()
    for i in range(2000):
        candidate = f"{unique}-user-{i}"
        answers = set(evaluate_all(flags.values(), candidate).items())
        if not answers <= covered:
            users.append(candidate)
            covered |= answers
        if len(users) >= 14:
            break
    cases: list[tuple[str, dict[str, Any] | None]] = [(u, None) for u in users]
    cases += [(users[0], {"plan": "pro"}), (users[1], {"plan": "free"})]
    client = Serla(realserver.keys["max"], host=realserver.host, flush_on_exit=False, flags_timeout=30.0)
    seen_values: set[Any] = set()
    try:
        for user, props in cases:
            query = f"distinct_id={quote(user, safe='')}"
            if props:
                query += "&properties=" + base64.b64encode(json.dumps(props).encode()).decode()
            status, body = raw_flags(realserver, realserver.keys["max"], query)
            assert status == 200
            server_answer = ours(body["flags"], unique)
            assert len(server_answer) == len(flags)
            assert (
                ours(client.get_all_feature_flags(distinct_id=user, properties=props), unique)
                == server_answer
            )
            for flag in flags.values():
                value = client.get_feature_flag(flag.key, "fb", distinct_id=user, properties=props)
                assert value == server_answer[flag.key]
                enabled = client.is_feature_enabled(flag.key, distinct_id=user, properties=props)
                assert enabled is (value is not False)
                seen_values.add(value)
            port = evaluate_all(flags.values(), user, props or {})
            assert port == server_answer, f"the local evaluation differs for {user!r} {props!r}"
    finally:
        client.shutdown(5)
    # The users cover every kind of answer: on, off, and each variant.
    assert {True, False, "red", "green", "blue", "a", "b"} <= seen_values


def test_the_local_evaluation_matches_the_server_on_edge_cases(realserver: RealServer, unique: str) -> None:
    defs = [
        insert_flag(
            realserver,
            f"{unique}-eq-{i}",
            rollout_percentage=0,
            conditions=[{"type": "property_equals", "field": "x", **({"value": v} if v != "<none>" else {})}],
        )
        for i, v in enumerate([1, "1", True, None, 1.5, "<none>", {"a": 1}, [1], 0, ""])
    ]
    defs.append(
        insert_flag(
            realserver,
            f"{unique}-ids",
            rollout_percentage=0,
            conditions=[{"type": "distinct_id_in", "values": [7, "7"]}],
        )
    )
    defs.append(
        insert_flag(realserver, f"{unique}-unknown", rollout_percentage=0, conditions=[{"type": "nope"}])
    )
    defs.append(
        insert_flag(
            realserver,
            f"{unique}-uneven",
            variants=[
                {"key": "small", "weight": 10},
                {"key": "rest", "weight": 20},
            ],  # sums to 30: the last wins
        )
    )
    defs.append(
        insert_flag(
            realserver,
            f"{unique}-proto",
            rollout_percentage=0,
            conditions=[{"type": "property_equals", "field": "toString"}],
        )
    )
    props_cases: list[Any] = [
        {"x": 1},
        {"x": 1.0},
        {"x": "1"},
        {"x": True},
        {"x": None},
        {"x": 1.5},
        {},
        {"x": {"a": 1}},
        {"x": [1]},
        {"x": 0},
        {"x": ""},
        {"y": 2},
    ]
    try:
        for props in props_cases:
            for user in ("7", f"{unique}-u", ""):
                encoded = base64.urlsafe_b64encode(json.dumps(props).encode()).rstrip(b"=").decode()
                status, body = raw_flags(
                    realserver, realserver.keys["max"], f"distinct_id={user}&properties={encoded}"
                )
                assert status == 200
                assert evaluate_all(defs, user, decode_properties(encoded)) == ours(body["flags"], unique), (
                    props,
                    user,
                )
        # Properties the server reads oddly: standard base64 with its '+' unescaped (query parsing makes it
        # a space), percent-encoded standard base64 with padding, not base64, JSON that is not an object.
        text = json.dumps({"x": 1, "pad": "~~~>>>???"}).encode()
        standard = base64.b64encode(text).decode()
        assert "+" in standard and "/" in standard
        for raw in (
            standard,
            quote(standard, safe=""),
            "not%20base64%20at%20all",
            base64.b64encode(b"[1,2]").decode(),
            base64.b64encode(b"NaN").decode(),
            base64.b64encode(b'{"x": 1, "x": "1"}').decode(),
        ):
            status, body = raw_flags(realserver, realserver.keys["max"], f"distinct_id=u&properties={raw}")
            assert status == 200
            param = parse_qs(f"p={raw}")["p"][0]  # what the server's URLSearchParams.get() returns
            assert evaluate_all(defs, "u", decode_properties(param)) == ours(body["flags"], unique), raw
    finally:
        realserver.execute(f"delete from feature_flags where key like '{unique}-%'")


def test_a_second_call_within_30_s_makes_no_request(
    realserver: RealServer, unique: str, flags: dict[str, FlagDefinition]
) -> None:
    client = Serla(realserver.keys["max"], host=realserver.host, flush_on_exit=False, flags_timeout=30.0)
    try:
        before = flag_requests(realserver)
        user = f"{unique}-once"
        first = client.get_feature_flag(flags["multi"].key, distinct_id=user)
        assert wait_for_log(realserver, before + 1) == before + 1
        for _ in range(20):
            assert client.get_feature_flag(flags["multi"].key, distinct_id=user) == first
            assert client.is_feature_enabled(flags["bool"].key, distinct_id=user) is True
        time.sleep(0.5)  # let any (wrong) request reach the log
        assert flag_requests(realserver) == before + 1
        assert client.stats()["flags"]["requests"] == 1
    finally:
        client.shutdown(5)


def test_a_hundred_threads_for_one_new_user_make_one_request(
    realserver: RealServer, unique: str, flags: dict[str, FlagDefinition]
) -> None:
    client = Serla(realserver.keys["max"], host=realserver.host, flush_on_exit=False, flags_timeout=30.0)
    user = f"{unique}-crowd"
    results: list[Any] = []
    lock = threading.Lock()
    barrier = threading.Barrier(100)

    def ask() -> None:
        barrier.wait(10)
        value = client.get_feature_flag(flags["multi"].key, "fb", distinct_id=user)
        with lock:
            results.append(value)

    try:
        before = flag_requests(realserver)
        threads = [threading.Thread(target=ask) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        expected = evaluate_all([flags["multi"]], user)[flags["multi"].key]
        assert results == [expected] * 100
        time.sleep(0.5)
        assert wait_for_log(realserver, before + 1) == before + 1
        assert client.stats()["flags"]["requests"] == 1
    finally:
        client.shutdown(5)


def test_a_public_key_gets_the_same_answers(
    realserver: RealServer, unique: str, flags: dict[str, FlagDefinition]
) -> None:
    with Serla(
        realserver.keys["public"], host=realserver.host, flush_on_exit=False, flags_timeout=30.0
    ) as client:
        user = f"{unique}-pk"
        assert ours(client.get_all_feature_flags(distinct_id=user), unique) == evaluate_all(
            flags.values(), user
        )
        assert client.stats()["flags"]["fallbacks"] == {}


def test_a_free_plan_key_gets_fallbacks_and_one_warning(
    realserver: RealServer, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="serla")
    before = flag_requests(realserver)
    with Serla(
        realserver.keys["free"], host=realserver.host, flush_on_exit=False, flags_timeout=30.0
    ) as client:
        for i in range(5):
            assert client.get_feature_flag("anything", "fb", distinct_id=f"{unique}-{i}") == "fb"
            assert client.is_feature_enabled("anything", distinct_id=f"{unique}-{i}") is False
            assert client.get_all_feature_flags(distinct_id=f"{unique}-{i}") == {}
        stats = client.stats()["flags"]
        assert stats["paused"] == "plan"
        assert stats["fallbacks"] == {"plan": 15}
    assert wait_for_log(realserver, before + 1) == before + 1
    time.sleep(0.3)
    assert flag_requests(realserver) == before + 1
    assert any(" GET /api/v1/flags 402 " in line for line in realserver.access_log()[-5:])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "402" in r.getMessage()]
    assert len(warnings) == 1


def test_a_hanging_or_stopped_server_gives_fallbacks_within_flags_timeout(
    realserver: RealServer, unique: str
) -> None:
    """Not the real server (it must stay up for the tier): a loopback port that never answers, and one
    nobody listens on, with the real key."""
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(128)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        for port, reason in ((hanging.getsockname()[1], "timeout"), (closed_port, "network_error")):
            client = Serla(
                realserver.keys["max"],
                host=f"http://127.0.0.1:{port}",
                flush_on_exit=False,
                flags_timeout=0.3,
                timeout=30,
            )
            started = time.monotonic()
            for i in range(5):
                assert client.get_feature_flag("f", "fb", distinct_id=f"{unique}-{i}") == "fb"
                assert client.is_feature_enabled("f", distinct_id=f"{unique}-{i}") is False
            # 10 calls, each bounded by flags_timeout (0.3 s); a socket wait would be 30 s for each.
            assert time.monotonic() - started < 30
            assert set(client.stats()["flags"]["fallbacks"]) == {reason}
            client.shutdown(0.1)
    finally:
        hanging.close()
