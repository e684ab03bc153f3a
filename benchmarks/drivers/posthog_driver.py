"""Driver for posthog (``posthog.Posthog``), legacy v0 capture to ``{host}/batch/``.

Default cap: ``Posthog(max_queue_size=10000)``; a full queue drops the new event and logs a warning.
``capture()`` returns the event uuid when admitted, ``None`` when dropped.
"""

from __future__ import annotations

import inspect

import _common
from posthog import Posthog

DIST = "posthog"
RAISE_CAP = True
IMPORT = "posthog"


def default_cap():
    d = inspect.signature(Posthog.__init__).parameters["max_queue_size"].default
    return d, "max_queue_size; drops newest when full"


def make(host, cap):
    kw = {} if cap is None else {"max_queue_size": int(cap)}
    return Posthog("phc_bench", host=host, **kw)


def tracker(client):
    c = client.capture

    def f(i, p):
        return c(_common.EVENT, distinct_id=_common.DISTINCT_ID, properties=p) is not None

    return f


def flush(client, timeout):
    client.flush(timeout_seconds=timeout)


def shutdown(client, timeout):
    client.shutdown()


if __name__ == "__main__":
    _common.run(__import__(__name__))
