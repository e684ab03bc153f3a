"""Every code sample of serla-py 0.1.0's README (our public contract) runs verbatim and delivers.

Each sample below is copied character for character from ``../shared/seed/serla-py-0.1.0-README.txt``
(copied to ``tests/data/``; a test checks that each sample still is, line by line). The only change made before running one is pointing it at
the local server: ``host="https://serla.dev"`` becomes the server's URL, and a ``Serla(api_key=...)``
without a host gets ``host=`` the server's URL. Then it runs, and the server must have received exactly
the events the sample tracks. The one-shot sample runs in a subprocess with 100,000 records and default
settings: all 100,000 must arrive.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serla.devtools.server import SerlaServer

SEED = Path(__file__).resolve().parent / "data" / "serla-py-0.1.0-README.txt"  # a copy of the published text

QUICK_START = """\
from serla import Serla

serla = Serla(
    api_key="sk_live_...",
    # Optional - defaults shown
    host="https://serla.dev",
    flush_interval_seconds=5,
    batch_size=50,
    debug=False,
)

# Track an event
serla.track(
    event="signup_completed",
    distinct_id="user_123",
    properties={"plan": "pro", "source": "organic"},
)

# Identify a user (synchronous - hits /api/v1/identify directly)
serla.identify(
    "user_123",
    properties={"email": "a@example.com", "plan": "pro"},
)

# Force a flush before shutdown
serla.flush()
serla.shutdown()
"""

CRON = """\
from serla import Serla

with Serla(api_key="sk_live_...") as serla:
    serla.track(event="cron_finished", distinct_id="cron")
    # shutdown() + flush() happen automatically when the block exits
"""

TRACK_REFERENCE = """\
import datetime

serla.track(
    event="order_placed",
    distinct_id="user_123",
    properties={"total_cents": 4900, "currency": "USD"},
    timestamp=datetime.datetime.now(datetime.timezone.utc),  # optional
)
"""

IDENTIFY_REFERENCE = """\
serla.identify(
    "user_123",
    properties={
        "email": "a@example.com",
        "plan": "pro",
        "signed_up_at": "2025-01-01T00:00:00Z",
    },
)
"""

CONTEXT_MANAGER = """\
with Serla(api_key="...") as serla:
    serla.track(event="x", distinct_id="u")
# shutdown() is called automatically on block exit
"""

LAMBDA = """\
from serla import Serla

# Module-level: reused across warm invocations.
serla = Serla(api_key="...")

def handler(event, context):
    serla.track(
        event="lambda_invoked",
        distinct_id=event["user_id"],
        properties={"region": "us-east-1"},
    )
    # CRITICAL: Lambda freezes the execution context when the handler returns.
    # If you don't flush, events queued during this invocation sit in the
    # buffer until the next invocation (or are lost if the container is
    # recycled).
    serla.flush()
    return {"statusCode": 200}
"""

ONE_SHOT = """\
from serla import Serla

with Serla(api_key="sk_live_...") as serla:
    for record in batch_records:
        serla.track(
            event="record_processed",
            distinct_id=record["user_id"],
            properties={"size": record["size"]},
        )
# All events flush automatically on context exit.
"""

ATEXIT = """\
from serla import Serla

serla = Serla(api_key="sk_live_...")
serla.track(event="started", distinct_id="cron")
# Script exits, atexit hook flushes the queue.
"""

SAMPLES = {
    "quick_start": QUICK_START,
    "cron": CRON,
    "track_reference": TRACK_REFERENCE,
    "identify_reference": IDENTIFY_REFERENCE,
    "context_manager": CONTEXT_MANAGER,
    "lambda": LAMBDA,
    "one_shot": ONE_SHOT,
    "atexit": ATEXIT,
}


def point_at(source: str, url: str) -> str:
    """The sample with its client pointed at ``url`` (the only change made to a sample)."""
    source = source.replace('host="https://serla.dev"', f"host={url!r}")
    return re.sub(r'Serla\(api_key="([^"]*)"\)', rf'Serla(api_key="\1", host={url!r})', source)


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer("127.0.0.1", 0) as srv:
        yield srv


@pytest.fixture
def unlimited_server() -> Iterator[SerlaServer]:
    """A server without the real per-minute limits, for a test that floods it on purpose.

    At 100 batch requests a minute, 100,000 events take 10 minutes; the client under real limits is tested
    against the real server (tests/realserver) and with a shortened window (benchmarks).
    """
    with SerlaServer("127.0.0.1", 0, rate_limits=False) as srv:
        yield srv


def run(source: str, url: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    ns: dict[str, Any] = {} if namespace is None else namespace
    exec(compile(point_at(source, url), "<seed sample>", "exec"), ns)
    return ns


@pytest.mark.parametrize("name", list(SAMPLES))
def test_sample_is_verbatim_from_the_seed_readme(name: str) -> None:
    seed_lines = SEED.read_text(encoding="utf-8").splitlines()
    sample_lines = SAMPLES[name].splitlines()
    starts = [i for i, line in enumerate(seed_lines) if line == sample_lines[0]]
    assert any(seed_lines[i : i + len(sample_lines)] == sample_lines for i in starts), name


def test_point_at_changes_only_the_host() -> None:
    url = "http://127.0.0.1:1"
    assert point_at(CRON, url) == CRON.replace(
        'api_key="sk_live_..."', f'api_key="sk_live_...", host={url!r}'
    )
    assert point_at(QUICK_START, url).count(url) == 1
    assert "serla.dev" not in point_at(QUICK_START, url)


def test_quick_start(server: SerlaServer) -> None:
    ns = run(QUICK_START, server.url)
    assert [(e["name"], e["distinctId"], e["properties"]) for e in server.events] == [
        ("signup_completed", "user_123", {"plan": "pro", "source": "organic"})
    ]
    assert server.identities == {"user_123": {"email": "a@example.com", "plan": "pro"}}
    assert ns["serla"].pending_count() == 0


def test_api_reference_samples_on_one_client(server: SerlaServer) -> None:
    ns = run('from serla import Serla\nserla = Serla(api_key="sk_live_...")\n', server.url)
    run(TRACK_REFERENCE, server.url, ns)
    run(IDENTIFY_REFERENCE, server.url, ns)
    serla = ns["serla"]
    assert serla.flush(10.0) is True
    serla.shutdown()
    (event,) = server.events
    assert event["name"] == "order_placed"
    assert event["properties"] == {"total_cents": 4900, "currency": "USD"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["timestamp"])
    assert server.identities["user_123"]["signed_up_at"] == "2025-01-01T00:00:00Z"


def test_context_manager_samples(server: SerlaServer) -> None:
    run(CRON, server.url)
    run(CONTEXT_MANAGER, server.url, {"Serla": __import__("serla").Serla})
    assert [(e["name"], e["distinctId"]) for e in server.events] == [("cron_finished", "cron"), ("x", "u")]


def test_lambda_handler_delivers_before_it_returns(server: SerlaServer) -> None:
    ns = run(LAMBDA, server.url)
    try:
        for user in ("u1", "u2", "u3"):
            assert ns["handler"]({"user_id": user}, None) == {"statusCode": 200}
            # flush() returned inside the handler: the event is on the server before the "freeze".
            assert server.events[-1]["distinctId"] == user
    finally:
        ns["serla"].shutdown()
    assert len(server.events) == 3


def _script(body: str, url: str, prelude: str = "") -> str:
    return prelude + point_at(body, url)


def test_one_shot_100k_records_all_delivered_with_defaults(
    unlimited_server: SerlaServer, tmp_path: Path
) -> None:
    server = unlimited_server
    n = 100_000
    prelude = textwrap.dedent(
        f"""\
        batch_records = [{{"user_id": f"user_{{i % 97}}", "size": i}} for i in range({n})]
        """
    )
    script = tmp_path / "one_shot.py"
    script.write_text(_script(ONE_SHOT, server.url, prelude), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr
    events = server.events
    assert len(events) == n, proc.stderr[-2000:]
    sizes = sorted(e["properties"]["size"] for e in events)
    assert sizes == list(range(n))  # each record exactly once
    assert Counter(e["name"] for e in events) == {"record_processed": n}
    per_request = [r.event_count for r in server.requests if r.path.endswith("/batch")]
    assert max(per_request) <= 100
    assert "WARNING" not in proc.stderr  # nothing dropped, nothing to complain about


def test_atexit_script_flushes_on_interpreter_exit(server: SerlaServer, tmp_path: Path) -> None:
    script = tmp_path / "atexit_script.py"
    script.write_text(_script(ATEXIT, server.url), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [(e["name"], e["distinctId"]) for e in server.events] == [("started", "cron")]
