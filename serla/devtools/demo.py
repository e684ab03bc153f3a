"""``serla demo``: the README's first command. A real client against a local server, no account, no network.

It starts the Serla-compatible server of :mod:`serla.devtools.server` on 127.0.0.1 (a free port), points a
real :class:`~serla.Serla` client at it, and tracks a handful of events the way an app would: plain ones, one
whose properties need coercing (a ``datetime``, a ``Decimal``, a ``set``, a NaN), one with an explicit
timestamp in another zone, and one wrong call (an empty event name), which is dropped with a WARNING
and counted instead of raising. Then it identifies a user, flushes, and prints what the server received
and the client's counters. The exit status is 0 only when every accepted event arrived.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import enum
import json
import logging
import sys
from collections.abc import Sequence
from typing import TextIO


class Plan(enum.Enum):
    """An enum, to show how one is sent (its value)."""

    PRO = "pro"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(out: TextIO, *, events: int = 5) -> int:
    """Run the demo, writing its report to ``out``.

    Args:
        out: Where the report goes.
        events: How many ``page_viewed`` events to track besides the showcase ones.

    Returns:
        The exit status: 0 when every accepted event reached the server, 1 otherwise.
    """
    from serla import Serla
    from serla.devtools.server import SerlaServer

    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("  [log] %(levelname)s %(message)s"))
    serla_logger = logging.getLogger("serla")
    serla_logger.addHandler(handler)
    try:
        with SerlaServer("127.0.0.1", 0) as server:
            out.write(f"Local Serla-compatible server on {server.url}\n\n")
            client = Serla("sk_live_demo", host=server.url, flush_interval_seconds=0.5)
            with client:
                for i in range(events):
                    client.track("page_viewed", "user_123", {"path": f"/docs/{i}", "referrer": None})
                client.track(
                    "checkout_completed",
                    "user_123",
                    {
                        "order": {"id": 1042, "total": decimal.Decimal("59.90"), "currency": "EUR"},
                        "paid_at": datetime.datetime(2026, 11, 26, 9, 30),
                        "coupons": {"WELCOME"},
                        "plan": Plan.PRO,
                        "score": float("nan"),
                    },
                )
                client.track(
                    "signup_completed",
                    "user_456",
                    {"source": "newsletter"},
                    timestamp=datetime.datetime(
                        2026, 11, 26, 10, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
                    ),
                )
                out.write("A wrong call is dropped with a WARNING, never raised:\n")
                client.track("", "user_123")
                client.identify("user_123", {"email": "ada@example.com", "plan": "pro"})
                delivered = client.flush(10.0)
                stats = client.stats()
            received = server.events
            identities = server.identities
    finally:
        serla_logger.removeHandler(handler)

    rows = [["#", "name", "distinctId", "timestamp", "properties"]]
    for n, event in enumerate(received, 1):
        props = json.dumps(event.get("properties", {}), sort_keys=True)
        rows.append([str(n), event["name"], event["distinctId"], event["timestamp"], props[:70]])
    out.write(f"\nThe server received {len(received)} events:\n{_table(rows)}\n")
    out.write(f"\nIdentified users: {json.dumps(identities, sort_keys=True)}\n")
    dropped = stats["dropped"]
    out.write(
        f"\nClient stats: accepted={stats['accepted']} sent={stats['sent']} "
        f"requests={stats['requests']} retried={stats['retried']} dropped={dropped}\n"
    )
    ok = delivered and len(received) == stats["accepted"]
    out.write(
        "\nEvery accepted event was delivered.\n" if ok else "\nSome accepted events were NOT delivered.\n"
    )
    out.write(
        "\nNext: `serla dev` runs a local server with a live page of the events your app sends\n"
        "      (open http://127.0.0.1:8787/); point your app at it with\n"
        "      SERLA_HOST=http://127.0.0.1:8787 SERLA_API_KEY=sk_live_dev\n"
    )
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``serla demo``.

    Args:
        argv: Arguments after ``demo``: ``--events N``; ``--no-browser`` is accepted (the demo prints its
            report and opens nothing).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="serla demo", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5, help="page_viewed events to track (default 5)")
    parser.add_argument("--no-browser", action="store_true", help="accepted for scripts; nothing is opened")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.events < 0:
        parser.error("--events must be >= 0")
    return run(sys.stdout, events=args.events)
