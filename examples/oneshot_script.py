"""The README's one-shot script: the ``with`` block flushes and shuts the client down on exit.

Usage::

    SERLA_API_KEY=sk_live_dev python examples/oneshot_script.py [records.json]

``records.json`` is a JSON list of ``{"user_id": ..., "size": ...}`` objects; without it a few sample
records are sent.
"""

import json
import os
import sys

from serla import Serla

if len(sys.argv) > 1:
    with open(sys.argv[1], encoding="utf-8") as f:
        batch_records = json.load(f)
else:
    batch_records = [
        {"user_id": "user_1", "size": 120},
        {"user_id": "user_2", "size": 4096},
        {"user_id": "user_3", "size": 7},
    ]

with Serla(
    api_key=os.environ["SERLA_API_KEY"],
    host=os.environ.get("SERLA_HOST", "http://127.0.0.1:8787"),
) as serla:
    for record in batch_records:
        serla.track(
            event="record_processed",
            distinct_id=record["user_id"],
            properties={"size": record["size"]},
        )
# All events flush automatically on context exit.
