"""Driver for serla-py 0.1.0, the published reference (``pip install serla-py==0.1.0``; import name ``serla``).

0.1.0 has no enqueue cap: ``EventQueue._buffer`` is an unbounded deque. Its only cap,
``serla._queue._MAX_BUFFER_SIZE`` (1000), limits re-queueing after a failed POST.
``flush()`` returns ``None`` and gives up after 5 polls of at most 1 s each.
"""

from __future__ import annotations

import _common

from serla import Serla

DIST = "serla-py"
RAISE_CAP = False
IMPORT = "serla"


def default_cap():
    from serla import _queue

    return None, f"unbounded (re-queue after failure capped at {_queue._MAX_BUFFER_SIZE})"


def make(host, cap):
    return Serla("sk_live_bench", host=host)


def tracker(client):
    t = client.track

    def f(i, p):
        t(event=_common.EVENT, distinct_id=_common.DISTINCT_ID, properties=p)
        return None  # 0.1.0's track() returns None

    return f


def flush(client, timeout):
    client.flush(timeout=timeout)


def shutdown(client, timeout):
    client.shutdown(timeout=timeout)


def pending(client):
    return client.pending_count()


if __name__ == "__main__":
    _common.run(__import__(__name__))
