"""Driver for segment-analytics-python (``segment.analytics.Client``), POSTs ``{host}/v1/batch``.

Default cap: ``Client.DefaultConfig.max_queue_size`` (10000); a full queue drops the new event and logs
a warning. ``track()`` returns ``(success, msg)``. ``flush()`` is ``queue.join()``: it has no timeout.
"""

from __future__ import annotations

import _common
from segment.analytics import Client

DIST = "segment-analytics-python"
RAISE_CAP = True
IMPORT = "segment.analytics"


def default_cap():
    return Client.DefaultConfig.max_queue_size, "max_queue_size; drops newest when full"


def make(host, cap):
    kw = {} if cap is None else {"max_queue_size": int(cap)}
    return Client("wk_bench", host=host, **kw)


def tracker(client):
    t = client.track

    def f(i, p):
        ok, _ = t(user_id=_common.DISTINCT_ID, event=_common.EVENT, properties=p)
        return bool(ok)

    return f


def flush(client, timeout):
    client.flush()  # queue.join(): no timeout; the runner's wall-clock cap bounds it


def shutdown(client, timeout):
    client.shutdown()


if __name__ == "__main__":
    _common.run(__import__(__name__))
