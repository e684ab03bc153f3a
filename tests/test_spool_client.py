"""``Serla(spool_dir=...)`` end to end: real processes, the contract server, ``kill -9``, the CLI."""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serla import Serla
from serla._cli import EXIT_FAILED, EXIT_OK
from serla._config import DEFAULT_SPOOL_MAX_BYTES
from serla._encode import encode_event
from serla._spool import DEFAULT_MAX_BYTES, FILE_NAME, Spool
from serla.devtools.server import Fault, RecordedRequest, Response, SerlaServer

KEY = "sk_live_spool_client_test_0001"
CHILD_TIMEOUT = 90
DOWN = Fault(status=503)


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY}) as srv:
        yield srv


def indices(server: SerlaServer) -> list[int]:
    return [e["properties"]["i"] for e in server.events]


def assert_exactly_once(server: SerlaServer, expected: range | list[int]) -> None:
    got = indices(server)
    dups = [i for i, n in collections.Counter(got).items() if n > 1]
    assert not dups, f"{len(dups)} events delivered twice, e.g. {dups[:5]}"
    assert sorted(got) == sorted(expected)


def child(code: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERLA_")}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def serla_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SERLA_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "serla", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )


def test_defaults_agree() -> None:
    assert DEFAULT_SPOOL_MAX_BYTES == DEFAULT_MAX_BYTES == 100 * 1024 * 1024


def test_spool_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERLA_SPOOL_DIR", str(tmp_path))
    client = Serla(KEY, host="http://127.0.0.1:9", flush_on_exit=False)
    assert client.config.spool_dir == str(tmp_path)
    assert Serla(KEY, host="http://127.0.0.1:9", spool_dir="", flush_on_exit=False).config.spool_dir is None
    with pytest.raises(TypeError):
        Serla(KEY, spool_dir=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Serla(KEY, spool_dir=str(tmp_path), spool_max_bytes=-1)


def test_events_go_through_the_spool(server: SerlaServer, tmp_path: Path) -> None:
    client = Serla(KEY, host=server.url, spool_dir=str(tmp_path), flush_on_exit=False)
    for i in range(250):
        assert client.track("e", "u", {"i": i})
    assert client.flush(30)
    assert_exactly_once(server, range(250))
    spool = client.stats()["spool"]
    assert spool["spooled"] == 250 and spool["sent_from_spool"] == 250 and spool["waiting"] == 0
    assert spool["error"] is None and spool["from_earlier_runs"] == 0
    assert (tmp_path / FILE_NAME).exists()
    assert client.shutdown(10)
    assert [r.path for r in server.requests].count("/api/v1/events/batch") == 5, (
        "full batches (batch_size 50)"
    )


def test_an_outage_longer_than_the_memory_bound_loses_nothing(server: SerlaServer, tmp_path: Path) -> None:
    server.set_default_fault(DOWN)
    client = Serla(
        KEY,
        host=server.url,
        spool_dir=str(tmp_path),
        max_queue_size=100,
        flush_on_exit=False,
        flush_interval_seconds=0.2,
    )
    for i in range(10):
        assert client.track("e", "u", {"i": i})
    assert not client.flush(1.0)
    assert client.stats()["state"] == "down"
    # Without a spool, max_queue_size (100) would now refuse most of these: with one, the backlog is on
    # disk and memory is bounded by bytes (max_buffer_bytes) between two writes, even in a tight loop.
    accepted = sum(client.track("e", "u", {"i": i}) for i in range(10, 1500))
    assert accepted == 1490, client.stats()["dropped"]
    assert not client.flush(1.0)
    stats = client.stats()
    assert not any(stats["dropped"].values()), stats["dropped"]
    assert stats["spool"]["spooled"] == 1500
    assert stats["pending"] == 1500, "pending counts the events on disk"
    server.clear_faults()
    assert client.flush(60)
    assert client.shutdown(10)
    assert_exactly_once(server, range(1500))


_KILLED = """
import sys, time
from serla import Serla
client = Serla(sys.argv[1], host=sys.argv[2], spool_dir=sys.argv[3], flush_interval_seconds=3600,
               batch_size=100)
for i in range(40):
    client.track("e", "u", {"i": i})
time.sleep(2)  # the flusher writes them to the spool within a second; none is sent (interval: 1 h)
print("tracked", client.stats()["spool"]["spooled"], flush=True)
time.sleep(120)
"""


def test_events_tracked_2_s_before_a_kill_9_are_delivered_by_the_next_process(
    server: SerlaServer, tmp_path: Path
) -> None:
    with child(_KILLED, KEY, server.url, str(tmp_path)) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.split() == ["tracked", "40"], (line, proc.stderr.read() if not line else "")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(CHILD_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    assert server.events == [], "nothing was sent before the kill"
    status = serla_cli("spool", "status", "--dir", str(tmp_path), "--json")
    assert status.returncode == EXIT_OK, status.stderr
    (row,) = json.loads(status.stdout)["waiting"]
    assert row["events"] == 40 and row["host"] == server.url and KEY not in status.stdout

    nxt = Serla(KEY, host=server.url, spool_dir=str(tmp_path), flush_on_exit=False)
    assert nxt.pending_count() == 0, "the spool is opened on first use, not at construction"
    assert nxt.flush(30), "flush() waits for what an earlier run left"
    assert_exactly_once(server, range(40))
    spool = nxt.stats()["spool"]
    assert spool["from_earlier_runs"] == 40 and spool["waiting"] == 0
    assert nxt.shutdown(10)


_ONE_SHOT = """
import sys, time
from serla import Serla
key, host, directory, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
start = time.monotonic()
with Serla(key, host=host, spool_dir=directory, max_queue_size=1000) as client:
    for i in range(n):
        client.track("row", "cron", {"i": i})
    client.shutdown(timeout=float(sys.argv[5]))
elapsed = time.monotonic() - start
print(json.dumps({"elapsed": elapsed, "stats": client.stats()}), flush=True)
"""


class WindowClock:
    """The contract server's rate-limit clock: real time, or a new 60 s window at every request."""

    def __init__(self) -> None:
        self.jump = 0.0
        self.offset = 0.0

    def __call__(self) -> float:
        self.offset += self.jump
        return time.monotonic() + self.offset


def test_a_rate_limited_one_shot_returns_in_time_and_the_next_run_delivers_the_rest(
    tmp_path: Path,
) -> None:
    n = 12_000
    clock = WindowClock()
    with SerlaServer(api_keys={KEY}, rate_limits={"batch": 20}, clock=clock) as server:
        proc = subprocess.run(
            [sys.executable, "-c", "import json\n" + textwrap.dedent(_ONE_SHOT), KEY, server.url,
             str(tmp_path), str(n), "5"],
            capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        first = len(server.events)
        stats = report["stats"]
        assert not any(stats["dropped"].values()), stats
        assert first == 20 * 50, "20 requests of batch_size (50) events in the first minute, then 429"
        assert stats["spool"]["left_on_disk"] == n - first
        assert report["elapsed"] < 5 + 10, "shutdown(timeout=5) returned within its bound (10 s of slack)"

        clock.jump = 61.0  # the next run: every request in a new rate-limit window
        done = serla_cli(
            "spool", "send", "--dir", str(tmp_path), "--timeout", "60",
            SERLA_API_KEY=KEY, SERLA_HOST=server.url,
        )  # fmt: skip
        assert done.returncode == EXIT_OK, done.stderr
        assert f"{n - first} events sent" in done.stdout
        assert_exactly_once(server, range(n))


_SHARED = """
import sys
from serla import Serla
key, host, directory, base = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = Serla(key, host=host, spool_dir=directory, max_queue_size=50, flush_interval_seconds=0.2,
               flush_on_exit=False)
ok = sum(client.track("e", "u", {"i": base + i}) for i in range(400))
client.flush(1.0)  # the endpoint is down: this only makes sure everything is on disk
print("ready", ok, client.stats()["spool"]["spooled"], flush=True)
sys.stdin.readline()  # the endpoint is back
print("flushed", client.flush(60), flush=True)
print(json.dumps(client.stats()), flush=True)
client.shutdown(10)
"""


def test_processes_sharing_a_spool_lose_nothing_and_send_nothing_twice(
    server: SerlaServer, tmp_path: Path
) -> None:
    server.set_default_fault(DOWN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERLA_")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import json\n" + textwrap.dedent(_SHARED),
                KEY,
                server.url,
                str(tmp_path),
                str(1000 * p),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for p in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            assert line == ["ready", "400", "400"], (line, proc.stderr.read() if not line else "")
        server.clear_faults()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=CHILD_TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(CHILD_TIMEOUT)
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err
        assert "flushed True" in out, out + err
    expected = [1000 * p + i for p in range(3) for i in range(400)]
    assert_exactly_once(server, expected)
    assert Spool(tmp_path, server.url, KEY).waiting() == 0


def test_an_unusable_spool_warns_once_and_the_client_works_in_memory(
    server: SerlaServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("I am a file")
    caplog.set_level(logging.WARNING, logger="serla")
    client = Serla(KEY, host=server.url, spool_dir=str(not_a_dir), flush_on_exit=False)
    for i in range(10):
        assert client.track("e", "u", {"i": i})
    assert client.flush(10)
    assert_exactly_once(server, range(10))
    warnings = [r.getMessage() for r in caplog.records if "spool" in r.getMessage()]
    assert len(warnings) == 1 and "kept in memory" in warnings[0], warnings
    assert client.stats()["spool"]["error"]
    assert not_a_dir.read_text() == "I am a file"
    assert client.shutdown(10)


def test_spool_full_drops_are_counted(server: SerlaServer, tmp_path: Path) -> None:
    server.set_default_fault(DOWN)
    client = Serla(
        KEY, host=server.url, spool_dir=str(tmp_path), spool_max_bytes=20_000, flush_on_exit=False,
        flush_interval_seconds=0.2,
    )  # fmt: skip
    for i in range(500):  # ~60 bytes each: 30 KB > 20 KB
        client.track("e", "u", {"i": i})
    assert not client.flush(2)
    stats = client.stats()
    assert stats["dropped"].get("spool_full", 0) > 0
    assert stats["spool"]["spooled"] + stats["dropped"]["spool_full"] == 500
    assert Spool(tmp_path).size() <= 20_000
    client.shutdown(1)


def test_cli_spool_status_and_send(server: SerlaServer, tmp_path: Path) -> None:
    empty = serla_cli("spool", "status", "--dir", str(tmp_path / "none"))
    assert empty.returncode == EXIT_OK and "nothing waiting" in empty.stdout
    assert not (tmp_path / "none").exists(), "status never creates a spool"
    missing = serla_cli("spool", "status")
    assert missing.returncode == 2 and "SERLA_SPOOL_DIR" in missing.stderr

    spool = Spool(tmp_path, server.url, KEY)
    for b in range(3):
        items = [encode_event("e", "u", "2026-01-01T00:00:00.000Z", {"i": b * 10 + j}) for j in range(10)]
        spool.append("events", f"k{b}", items)
    other = Spool(tmp_path, server.url, "sk_live_another_project_key")
    other.append("events", "x", [encode_event("e", "u", "2026-01-01T00:00:00.000Z", {"i": -1})])
    table = serla_cli("spool", "status", SERLA_SPOOL_DIR=str(tmp_path))
    assert table.returncode == EXIT_OK, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["HOST", "KEY", "LANE", "EVENTS"]
    assert any("sk_live_...0001" in line and " 30 " in line for line in lines), table.stdout
    assert any("sk_live_..._key" in line for line in lines), table.stdout
    assert "31 events waiting" in lines[-1]
    assert KEY not in table.stdout

    server.set_default_fault(DOWN)
    failed = serla_cli(
        "spool", "send", "--dir", str(tmp_path), "--timeout", "2", SERLA_API_KEY=KEY, SERLA_HOST=server.url
    )
    assert failed.returncode == EXIT_FAILED and "30 events still waiting" in failed.stderr, failed
    server.clear_faults()
    sent = serla_cli(
        "spool", "send", "--dir", str(tmp_path), "--timeout", "30", SERLA_API_KEY=KEY, SERLA_HOST=server.url
    )
    assert sent.returncode == EXIT_OK, sent.stderr
    assert "30 events sent" in sent.stdout and "0 left" in sent.stdout
    assert_exactly_once(server, range(30))
    (row,) = Spool(tmp_path).status()
    assert row["key"] == "sk_live_..._key" and row["events"] == 1, "another key's rows wait for their client"


def test_a_forked_child_opens_its_own_spool_connection(server: SerlaServer, tmp_path: Path) -> None:
    client = Serla(KEY, host=server.url, spool_dir=str(tmp_path), flush_on_exit=False)
    for i in range(5):
        client.track("e", "u", {"i": i})
    assert client.flush(30)
    parent_pump = client._worker._pump
    assert parent_pump is not None
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            for i in range(100, 105):
                client.track("e", "u", {"i": i})
            ok = client.flush(30)
            pump = client._worker._pump
            code = 0 if ok and pump is not None and pump is not parent_pump else 3
            client.shutdown(5)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(5, 10):
        client.track("e", "u", {"i": i})
    assert client.flush(30)
    assert client._worker._pump is parent_pump
    assert client.shutdown(10)
    assert_exactly_once(server, [*range(10), *range(100, 105)])


def test_error_records_left_at_shutdown_are_sent_by_the_next_client(tmp_path: Path) -> None:
    received: list[bytes] = []
    up = [False]

    def errors_route(request: RecordedRequest) -> Response:
        if not up[0]:
            return Response(503, b"down")
        received.append(request.body)
        return Response(201, b'{"ok":true}')

    with SerlaServer(api_keys={KEY}) as server:
        server.add_route("POST", "/api/v1/errors", errors_route)
        client = Serla(KEY, host=server.url, spool_dir=str(tmp_path), flush_on_exit=False)
        bodies = [json.dumps({"message": f"boom {i}"}).encode() for i in range(3)]
        for body in bodies:
            assert client._submit("errors", body)
        assert client.shutdown(1.5) is False
        spool = client.stats()["spool"]
        assert spool["records_left_on_disk"] == 3
        assert client.stats()["lanes"]["errors"]["dropped"] == {}
        (row,) = Spool(tmp_path).status()
        assert row["lane"] == "errors" and row["events"] == 3

        up[0] = True
        nxt = Serla(KEY, host=server.url, spool_dir=str(tmp_path), flush_on_exit=False)
        assert nxt.flush(30), "flush() waits for the records an earlier run left"
        assert sorted(received) == sorted(bodies), "each record exactly once"
        assert nxt.stats()["spool"]["records_from_earlier_runs"] == 3
        assert nxt.shutdown(10)
        assert Spool(tmp_path).status() == []


_MID_REQUEST = """
import sys, time
from serla import Serla
client = Serla(sys.argv[1], host=sys.argv[2], spool_dir=sys.argv[3], flush_interval_seconds=0.2, timeout=1.0)
for i in range(25):
    client.track("e", "u", {"i": i})
client.flush(60)  # the server never answers: killed in the middle of the request
"""


@pytest.mark.timeout(180)
def test_a_kill_9_in_the_middle_of_a_request(tmp_path: Path) -> None:
    with SerlaServer(api_keys={KEY}) as server:
        server.set_default_fault(Fault(hang=True))
        with child(_MID_REQUEST, KEY, server.url, str(tmp_path)) as proc:
            try:
                for _ in range(600):  # bounded: until the batch is leased and its request sent
                    rows = Spool(tmp_path).status() if (tmp_path / FILE_NAME).exists() else []
                    if rows and rows[0]["leased"] == 25 and server.requests:
                        break
                    time.sleep(0.05)
                else:
                    pytest.fail(
                        f"the child never sent its batch: {proc.stderr.read() if proc.stderr else ''}"
                    )
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(CHILD_TIMEOUT)
        server.clear_faults()
        assert server.events == []
        # The dead process's lease (max(30 s, 3 x timeout)) runs out, then the next client sends the batch.
        nxt = Serla(KEY, host=server.url, spool_dir=str(tmp_path), flush_on_exit=False)
        assert nxt.flush(120), nxt.stats()
        assert_exactly_once(server, range(25))
        assert nxt.stats()["spool"]["from_earlier_runs"] == 25
        assert nxt.shutdown(10)
