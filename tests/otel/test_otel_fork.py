"""A forked child keeps translating: the processors' own lock is re-created after ``os.fork``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from serla.devtools.server import SerlaServer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

SCRIPT = """
import json, os, signal, sys, threading
from opentelemetry.sdk.trace import TracerProvider
import serla
from serla.otel import SerlaSpanProcessor

client = serla.Serla(sys.argv[1], host=sys.argv[2], flush_interval_seconds=60, flush_on_exit=False)
processor = SerlaSpanProcessor(client)
provider = TracerProvider(shutdown_on_exit=False)
provider.add_span_processor(processor)
tracer = provider.get_tracer("t")

def end_span(user):
    with tracer.start_as_current_span("s") as span:
        if user:
            span.set_attribute("enduser.id", user)
        span.add_event("checkout", {"pid": os.getpid()})

end_span(None)  # the parent's drop counter: {"no_distinct_id": 1}
lock = processor._translator._lock
held, forked = threading.Event(), threading.Event()

def hold():
    with lock:  # some parent thread is counting a drop at the moment of the fork
        held.set()
        forked.wait(5)

holder = threading.Thread(target=hold)
holder.start()
held.wait(5)
pid = os.fork()
if pid == 0:
    signal.alarm(10)  # a deadlock ends in SIGALRM, not a hung test
    end_span(None)  # counts a drop: takes the lock
    end_span("child_user")
    stats = processor.stats()
    print(json.dumps({"stats": stats, "flushed": client.flush(5), "pid": os.getpid()}), flush=True)
    os._exit(0)
forked.set()
holder.join(5)
_, status = os.waitpid(pid, 0)
print(json.dumps({"status": status, "parent_stats": processor.stats()}), flush=True)
"""


def test_a_forked_child_translates_while_a_parent_thread_held_the_lock(
    server: SerlaServer, api_key: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, api_key, server.url], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    child, parent = (json.loads(line) for line in proc.stdout.splitlines())
    assert parent["status"] == 0, "the child was killed by its alarm: a deadlock on the inherited lock"
    assert child["flushed"] is True
    assert child["stats"] == {"dropped": {"no_distinct_id": 1}}  # its own counters, not the parent's
    assert parent["parent_stats"] == {"dropped": {"no_distinct_id": 1}}
    assert [(e["name"], e["distinctId"], e["properties"]["pid"]) for e in server.events] == [
        ("checkout", "child_user", child["pid"])
    ]
