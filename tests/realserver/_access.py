"""Reading the real server's access log: the answers one client got, by path.

The server logs one line per request: ``[access] <time> <method> <path> <status> <ms>ms <bytes>B <key>``,
where ``<key>`` is the request's ``X-Idempotency-Key``. The log names no project, and other processes may
use the same server, so a test counts only its own client's requests: each client's keys share one
random prefix (``<8>-<4>-4<3>-<1><3>-``, then a counter; a split batch adds ``.0``/``.1``).
"""

from __future__ import annotations

from serla import Serla


def key_prefix(client: Serla) -> str:
    """The prefix of every ``X-Idempotency-Key`` this client sends."""
    prefix = client._worker._key_prefix
    assert isinstance(prefix, str) and len(prefix) == 24, prefix
    return prefix


def answers(lines: list[str], path: str, client: Serla) -> list[str]:
    """The statuses, in order, of ``client``'s ``POST <path>`` requests among access-log ``lines``."""
    prefix = key_prefix(client)
    out = []
    for line in lines:
        parts = line.split()
        if (
            len(parts) >= 8
            and parts[2] == "POST"
            and parts[3].split("?")[0] == path
            and parts[7].startswith(prefix)
        ):
            out.append(parts[4])
    return out
