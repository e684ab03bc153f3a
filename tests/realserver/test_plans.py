"""Plans and the monthly quota, against the real server's own gates (``users.plan``, the events count).

- The ``free`` project (plan Free): events are delivered; ``/errors`` and ``/llm`` answer 402, which turns
  that lane off after one request, with one WARNING, while events go on.
- The ``quota`` project (plan Free, its own user): with this month's 25,000 events filled in by SQL, the
  server answers 429 *without* ``Retry-After``. The client holds the events (``stats()`` says so; nothing
  dropped, nothing stored) and sends no further request: the access log shows exactly one. The fill rows
  are deleted in a ``finally``, so the project is usable again by the next run.

Each test deletes the rows it stored in the ``free`` project: they count towards that user's 25,000 a
month, and the tier runs many times a month.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest

from serla import Serla

from ._access import answers
from .conftest import PROJECTS, RealServer

FREE = PROJECTS["free"]
QUOTA = PROJECTS["quota"]
QUOTA_LIMIT = 25_000
BATCH_PATH = "/api/v1/events/batch"


def dropped(stats: dict[str, Any]) -> dict[str, int]:
    """``stats()["dropped"]`` without reasons that counted nothing."""
    return {reason: n for reason, n in stats["dropped"].items() if n}


def test_free_plan_delivers_events_and_turns_off_the_paid_lanes(
    realserver: RealServer, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    log_start = len(realserver.access_log())
    client = Serla(realserver.keys["free"], host=realserver.host, flush_on_exit=False)
    try:
        with caplog.at_level(logging.WARNING, logger="serla"):
            assert client.track("free_plan_event", unique, {"n": 1})
            assert client._submit("errors", json.dumps({"message": "boom", "distinctId": unique}).encode())
            assert client._submit("llm", json.dumps({"model": "gpt-4o", "distinctId": unique}).encode())
            client.flush(timeout=60)  # False: the two records were dropped (402); the event was delivered
            assert client.track("free_plan_event", unique, {"n": 2})
            # Off after one 402: refused at once, without a request.
            assert client._submit("errors", b'{"message":"again"}') is False
            assert client._submit("llm", b'{"model":"again"}') is False
            assert client.shutdown(timeout=60) is True
        stats = client.stats()
        rows = realserver.sql(
            f"select name, properties from events where project_id = '{FREE}' and distinct_id = '{unique}'"
            " order by (properties->>'n')::int"
        )
        assert rows == [{"name": "free_plan_event", "properties": {"n": n}} for n in (1, 2)]
        assert stats["sent"] == 2 and dropped(stats) == {}, stats
        for lane in ("errors", "llm"):
            assert stats["lanes"][lane]["disabled"] == "plan", stats["lanes"]
            assert stats["lanes"][lane]["sent"] == 0
            assert stats["lanes"][lane]["dropped"] == {"plan": 2}, stats["lanes"]
        log = realserver.access_log()[log_start:]
        assert answers(log, "/api/v1/errors", client) == ["402"]
        assert answers(log, "/api/v1/llm", client) == ["402"]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert sum("errors reporting is off" in m for m in warnings) == 1, warnings
        assert sum("llm reporting is off" in m for m in warnings) == 1, warnings
        assert realserver.sql(f"select id from error_events where distinct_id = '{unique}'") == []
    finally:
        client.shutdown(timeout=5)
        realserver.execute(f"delete from events where project_id = '{FREE}' and distinct_id = '{unique}'")


def _month_count(realserver: RealServer) -> int:
    (row,) = realserver.sql(
        "select count(*) as n from events"
        f" where project_id = '{QUOTA}' and timestamp >= date_trunc('month', now()::timestamp)"
    )
    return int(row["n"])


def _no_new_request(realserver: RealServer, log_start: int, client: Serla, seconds: float) -> list[str]:
    """Poll the access log for ``seconds`` (a bounded wait for a second request that must not come)."""
    deadline = time.monotonic() + seconds
    pause = threading.Event()
    seen = answers(realserver.access_log()[log_start:], BATCH_PATH, client)
    while time.monotonic() < deadline and len(seen) <= 1:
        pause.wait(0.2)
        seen = answers(realserver.access_log()[log_start:], BATCH_PATH, client)
    return seen


def test_exhausted_monthly_quota_holds_events_without_a_retry_loop(
    realserver: RealServer, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    fill = f"delete from events where project_id = '{QUOTA}' and name = 'fill'"
    realserver.execute(fill)  # what an interrupted run may have left
    assert _month_count(realserver) < QUOTA_LIMIT, "the quota project is over its quota before the fill"
    client: Serla | None = None
    try:
        realserver.execute(
            f"insert into events (project_id, name) select '{QUOTA}', 'fill' from generate_series(1, {QUOTA_LIMIT})"
        )
        log_start = len(realserver.access_log())
        client = Serla(realserver.keys["quota"], host=realserver.host, flush_on_exit=False)
        with caplog.at_level(logging.WARNING, logger="serla"):
            for i in range(5):
                assert client.track("quota_held", unique, {"seq": i})
            # The answer is a 429 without Retry-After: a hold of an hour, longer than this flush may wait,
            # so flush() returns False (at once once the answer is in) instead of waiting it out.
            assert client.flush(timeout=30) is False
            assert client.track("quota_held", unique, {"seq": 5})
            assert client.flush(timeout=5) is False
            seen = _no_new_request(realserver, log_start, client, 3.0)
        assert seen == ["429"], seen  # one request, then the hold: no tight retry loop

        stats = client.stats()
        assert stats["pending"] == 6 and stats["sent"] == 0, stats
        assert dropped(stats) == {}, stats  # held, not lost
        assert stats["healthy"] is False
        # Held by the server, not rate limited and not delivering: the count bound (max_queue_size) applies.
        assert stats["state"] in ("paused", "down"), stats
        assert "quota" in (stats["last_error"] or ""), stats
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert sum("quota" in m for m in warnings) == 1, warnings
        assert realserver.sql(f"select id from events where distinct_id = '{unique}'") == []
    finally:
        if client is not None:
            client.shutdown(timeout=1)
        realserver.execute(fill)
    assert _month_count(realserver) < QUOTA_LIMIT
