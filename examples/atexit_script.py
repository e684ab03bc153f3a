"""The README's plain script: ``flush_on_exit=True`` (the default) flushes the queue at interpreter exit.

Usage::

    SERLA_API_KEY=sk_live_dev python examples/atexit_script.py
"""

import os

from serla import Serla

serla = Serla(
    api_key=os.environ["SERLA_API_KEY"],
    host=os.environ.get("SERLA_HOST", "http://127.0.0.1:8787"),
)
serla.track(event="started", distinct_id="cron")
# Script exits, atexit hook flushes the queue.
