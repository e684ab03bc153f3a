"""The ``serla`` command, run as ``python -m serla`` in subprocesses against the local server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from serla._cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main, parse_props, parse_value
from serla.devtools.server import SerlaServer

KEY = "sk_live_cli_test_key"


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY}) as srv:
        yield srv


def serla_cli(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m serla ARGS`` with only the given SERLA_* variables set."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SERLA_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "serla", *args], env=environ, capture_output=True, text=True, timeout=timeout
    )


# -- track ------------------------------------------------------------------------------------------------


def test_track_delivers_and_exits_0(server: SerlaServer) -> None:
    proc = serla_cli(
        "track", "cron_finished", "--distinct-id", "cron",
        "--prop", "n=3", "-p", "ok=true", "-p", "name=Ada", "-p", "zip=02134", "-p", 'id="42"',
        "--json-props", '{"tags": ["a", "b"], "n": 1}',
        "--timestamp", "2024-01-15T10:30:00+02:00",
        SERLA_API_KEY=KEY, SERLA_HOST=server.url,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (EXIT_OK, "", "")
    assert server.events == [
        {
            "name": "cron_finished",
            "distinctId": "cron",
            "properties": {"tags": ["a", "b"], "n": 3, "ok": True, "name": "Ada", "zip": "02134", "id": "42"},
            "timestamp": "2024-01-15T08:30:00.000Z",
        }
    ]
    assert server.stored[0].api_key == KEY


def test_flags_win_over_environment(server: SerlaServer) -> None:
    proc = serla_cli(
        "track", "x", "-d", "u", "--api-key", KEY, "--host", server.url,
        SERLA_API_KEY="sk_live_wrong", SERLA_HOST="http://127.0.0.1:9",
    )  # fmt: skip
    assert proc.returncode == EXIT_OK, proc.stderr
    assert [e["name"] for e in server.events] == ["x"]


def test_wrong_key_exits_1_with_one_line(server: SerlaServer) -> None:
    proc = serla_cli(
        "track", "x", "-d", "u", "--timeout", "5", SERLA_API_KEY="sk_live_wrong", SERLA_HOST=server.url
    )
    assert proc.returncode == EXIT_FAILED
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("serla: event 'x' was not delivered to " + server.url)
    assert "401" in proc.stderr and "API key" in proc.stderr
    assert server.events == []


def test_unreachable_host_exits_1_within_the_timeout() -> None:
    with SerlaServer() as srv:
        url = srv.url
    # The server is stopped: its port refuses connections. The CLI retries until --timeout, then gives up;
    # the subprocess timeout (20 s) bounds the whole run.
    proc = serla_cli("track", "x", "-d", "u", "--timeout", "1", SERLA_API_KEY=KEY, SERLA_HOST=url, timeout=20)
    assert proc.returncode == EXIT_FAILED
    assert "was not delivered" in proc.stderr and "within 1 s" in proc.stderr
    assert "Connection" in proc.stderr  # the network error is named


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["track", "x", "-d", "u"], {}, "no API key: set SERLA_API_KEY or pass --api-key"),
        (["track", "x", "-d", "u", "-p", "novalue"], {"SERLA_API_KEY": KEY}, "--prop needs KEY=VALUE"),
        (["track", "x", "-d", "u", "-p", "=v"], {"SERLA_API_KEY": KEY}, "--prop needs KEY=VALUE"),
        (["track", "x", "-d", "u", "--json-props", "[1]"], {"SERLA_API_KEY": KEY}, "must be a JSON object"),
        (["track", "x", "-d", "u", "--json-props", "{"], {"SERLA_API_KEY": KEY}, "not valid JSON"),
        (["track", "x", "-d", "u", "--timestamp", "yesterday"], {"SERLA_API_KEY": KEY}, "is not an ISO-8601"),
        (["track", "x", "-d", ""], {"SERLA_API_KEY": KEY}, "distinct_id must be a non-empty string"),
        (
            ["track", "x", "-d", "u", "--host", "ftp://x"],
            {"SERLA_API_KEY": KEY},
            "host must be an http(s) URL",
        ),
        (["track", "x"], {"SERLA_API_KEY": KEY}, "the following arguments are required: --distinct-id"),
        (
            ["track", "x", "-d", "u", "--timeout", "0"],
            {"SERLA_API_KEY": KEY},
            "must be a number of seconds > 0",
        ),
        (["identify", ""], {"SERLA_API_KEY": KEY}, "distinct_id must be a non-empty string"),
        (["frobnicate"], {}, "invalid choice"),
        ([], {}, "required: COMMAND"),
    ],
)
def test_usage_and_configuration_errors_exit_2(args: list[str], env: dict[str, str], message: str) -> None:
    env.setdefault("SERLA_HOST", "http://127.0.0.1:9")  # never contacted
    proc = serla_cli(*args, **env)
    assert proc.returncode == EXIT_USAGE
    assert message in proc.stderr


def test_disabled_sends_nothing_and_exits_0(server: SerlaServer) -> None:
    proc = serla_cli("track", "x", "-d", "u", SERLA_API_KEY=KEY, SERLA_HOST=server.url, SERLA_DISABLED="1")
    assert proc.returncode == EXIT_OK, proc.stderr
    assert server.requests == []


# -- identify -----------------------------------------------------------------------------------------------


def test_identify_delivers_and_exits_0(server: SerlaServer) -> None:
    proc = serla_cli(
        "identify", "user_123", "-p", "plan=pro", "-p", "seats=5", "--json-props", '{"tags": ["x"]}',
        SERLA_API_KEY=KEY, SERLA_HOST=server.url,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (EXIT_OK, "")
    assert server.identities == {"user_123": {"tags": ["x"], "plan": "pro", "seats": 5}}


def test_identify_wrong_key_exits_1(server: SerlaServer) -> None:
    proc = serla_cli("identify", "u", SERLA_API_KEY="sk_live_wrong", SERLA_HOST=server.url)
    assert proc.returncode == EXIT_FAILED
    assert proc.stderr.startswith(f"serla: identify 'u' failed at {server.url}: HTTP 401")
    assert proc.stderr.count("\n") == 1
    assert server.identities == {}


def test_identify_unreachable_host_exits_1() -> None:
    with SerlaServer() as srv:
        url = srv.url
    proc = serla_cli("identify", "u", "--timeout", "1", SERLA_API_KEY=KEY, SERLA_HOST=url, timeout=20)
    assert proc.returncode == EXIT_FAILED
    assert "Connection" in proc.stderr


# -- in-process ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("-1.5", -1.5),
        ("1e3", 1000.0),
        ("true", True),
        ("false", False),
        ("null", None),
        ('"42"', "42"),
        ("Ada", "Ada"),
        ("02134", "02134"),  # leading zero: not a JSON number
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("1e999", "1e999"),
        ("[1, 2]", "[1, 2]"),
        ('{"a": 1}', '{"a": 1}'),
        (" 3", " 3"),
        ("", ""),
        ("True", "True"),
        ("a=b", "a=b"),
    ],
)
def test_prop_values(text: str, value: Any) -> None:
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_props_merge_order() -> None:
    assert parse_props(["a=1", "b=x", "a=2"], '{"a": 0, "c": [1]}') == {"a": 2, "b": "x", "c": [1]}


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("serla-py ")
    assert main(["track", "--help"]) == EXIT_OK
    assert "--distinct-id" in capsys.readouterr().out


def test_demo_runs_end_to_end_in_a_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "serla", "demo", "--no-browser", "--events", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == EXIT_OK, proc.stdout + proc.stderr
    out = proc.stdout
    assert "The server received 5 events" in out  # 3 page views + checkout + signup
    assert "WARNING" in out and "call dropped" in out  # the wrong call was named, not raised
    assert "dropped={'invalid_call': 1}" in out
    assert "2026-11-26T08:00:00.000Z" in out  # the +02:00 timestamp arrived as UTC
    assert "Every accepted event was delivered." in out


def test_demo_rejects_a_negative_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["demo", "--events", "-1"])
    assert "--events must be >= 0" in capsys.readouterr().err
