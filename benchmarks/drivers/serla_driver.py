"""Driver for this SDK (``serla`` from this repo, installed editable in ``.venvs/serla``).

Default cap: ``Config.max_queue_size`` (read from a default ``Config``). When the buffer is full, ``track()``
waits up to ``Config.block_on_full_seconds`` for room before it drops and counts ``queue_full``.
``track()``, ``flush()`` and ``shutdown()`` return bools; ``stats()`` has the SDK's own counters.
"""

from __future__ import annotations

import _common

from serla import Config, Serla

DIST = "serla-py"
RAISE_CAP = True
IMPORT = "serla"


def _default(name):
    return getattr(Config(api_key="sk_live_bench"), name)


def default_cap():
    return _default("max_queue_size"), (
        f"max_queue_size; track() blocks up to block_on_full_seconds={_default('block_on_full_seconds')} s "
        "when full, then drops and counts"
    )


def make(host, cap):
    kw = {} if cap is None else {"max_queue_size": int(cap)}
    return Serla("sk_live_bench", host=host, **kw)


def tracker(client):
    t = client.track

    def f(i, p):
        return t(event=_common.EVENT, distinct_id=_common.DISTINCT_ID, properties=p)

    return f


def flush(client, timeout):
    client.flush(timeout=timeout)


def shutdown(client, timeout):
    client.shutdown(timeout=timeout)


def pending(client):
    return client.pending_count()


def stats(client):
    return client.stats()


if __name__ == "__main__":
    _common.run(__import__(__name__))
