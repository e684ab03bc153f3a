"""Driver for amplitude-analytics (``amplitude.Amplitude``), pointed at ``{host}/2/httpapi``.

Amplitude has no cap on new events: ``InMemoryStorage`` grows without bound.
``constants.MAX_BUFFER_CAPACITY`` (20000) only stops *retried* events from being re-queued.
``flush()`` returns futures; the driver waits on them.
"""

from __future__ import annotations

import logging

import _common
from amplitude import Amplitude, BaseEvent, Config, constants

DIST = "amplitude-analytics"
RAISE_CAP = False
IMPORT = "amplitude"


def default_cap():
    return None, f"unbounded (retries capped at MAX_BUFFER_CAPACITY={constants.MAX_BUFFER_CAPACITY})"


def make(host, cap):
    # Default config except the URL. The per-event INFO log is the SDK default; with no handler
    # configured on "amplitude" it is filtered by level, as in an app that hasn't configured logging.
    cfg = Config(server_url=host.rstrip("/") + "/2/httpapi", logger=logging.getLogger(constants.LOGGER_NAME))
    return Amplitude("amp_bench_key", cfg)


def tracker(client):
    t = client.track

    def f(i, p):
        t(BaseEvent(event_type=_common.EVENT, user_id=_common.DISTINCT_ID, event_properties=p))
        return None  # track() returns None

    return f


def flush(client, timeout):
    futures = client.flush() or []
    for fut in futures:
        if fut is not None:
            fut.result(timeout=timeout)


def shutdown(client, timeout):
    client.shutdown()


if __name__ == "__main__":
    _common.run(__import__(__name__))
