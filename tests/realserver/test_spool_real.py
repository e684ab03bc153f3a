"""The durable spool against the real server: its rate limit (100 batch requests a minute) and ``kill -9``.

Uses the ``rl`` project (its own request budget) for the rate-limited one-shot, and reads back what
PostgreSQL stored to check that every event arrived exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import RealServer

CHILD_TIMEOUT = 300


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SERLA_")}


_ONE_SHOT = """
import json, sys, time
from serla import Serla
key, host, directory, run, n, bound = sys.argv[1:7]
start = time.monotonic()
with Serla(key, host=host, spool_dir=directory, shutdown_timeout=float(bound)) as client:
    for i in range(int(n)):
        client.track("spool_one_shot", run, {"i": i})
    ok = client.shutdown(timeout=float(bound))
print(json.dumps({"elapsed": time.monotonic() - start, "ok": ok, "stats": client.stats()}), flush=True)
"""


@pytest.mark.timeout(600)  # waits out the real server's rate-limit window (a minute) once or twice
def test_a_rate_limited_one_shot_of_12000_is_delivered_across_two_runs_exactly_once(
    realserver: RealServer, unique: str, tmp_path: Path
) -> None:
    n, bound = 12_000, 15.0
    first = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_ONE_SHOT), realserver.keys["rl"], realserver.host,
         str(tmp_path), unique, str(n), str(bound)],
        capture_output=True, text=True, timeout=CHILD_TIMEOUT, env=_env(), check=False,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    stats = report["stats"]
    assert not any(stats["dropped"].values()), stats["dropped"]
    assert report["elapsed"] < bound + 10, "shutdown() returned within its bound (10 s of slack)"
    stored_first = realserver.sql(f"select count(*) as n from events where distinct_id = '{unique}'")[0]["n"]
    left = stats["spool"]["left_on_disk"]
    assert left > 0, "100 requests a minute can't carry 12,000 events of batch_size 50: some wait on disk"
    assert stored_first + left == n

    # The next run: ``serla spool send`` waits out the rate limit and delivers the rest.
    second = subprocess.run(
        [sys.executable, "-m", "serla", "spool", "send", "--dir", str(tmp_path), "--timeout", "200"],
        capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False,
        env={**_env(), "SERLA_API_KEY": realserver.keys["rl"], "SERLA_HOST": realserver.host},
    )  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{left} events sent" in second.stdout
    rows = realserver.sql(
        "select count(*) as n, count(distinct (properties->>'i')) as distinct_i "
        f"from events where distinct_id = '{unique}'"
    )
    assert rows == [{"n": n, "distinct_i": n}], "every event, exactly once"


_KILLED = """
import sys, time
from serla import Serla
key, host, directory, run = sys.argv[1:5]
client = Serla(key, host=host, spool_dir=directory, flush_interval_seconds=3600, batch_size=100)
for i in range(40):
    client.track("spool_killed", run, {"i": i})
time.sleep(2)
print("tracked", client.stats()["spool"]["spooled"], flush=True)
time.sleep(120)
"""


def test_events_tracked_2_s_before_a_kill_9_are_stored_by_the_next_process(
    realserver: RealServer, unique: str, tmp_path: Path
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_KILLED), realserver.keys["max"], realserver.host,
         str(tmp_path), unique],
        stdout=subprocess.PIPE, text=True, env=_env(),
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().split() == ["tracked", "40"]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(CHILD_TIMEOUT)
    query = f"select count(*) as n from events where distinct_id = '{unique}'"
    assert realserver.sql(query) == [{"n": 0}]

    from serla import Serla

    client = Serla(realserver.keys["max"], host=realserver.host, spool_dir=str(tmp_path), flush_on_exit=False)
    assert client.flush(60)
    assert client.shutdown(10)
    rows = realserver.sql(
        "select count(*) as n, count(distinct (properties->>'i')) as distinct_i "
        f"from events where distinct_id = '{unique}'"
    )
    assert rows == [{"n": 40, "distinct_i": 40}]
