"""Serverless: the seed README's AWS Lambda pattern, with the freeze simulated for real.

The handler is the seed's, verbatim in shape: a module-level client (reused across warm invocations, with
the default options and the production retry policy), ``track()``, ``flush()``, return. Right after the
handler returns, the process is frozen with SIGSTOP (what Lambda does between invocations) or ended with
``os._exit`` (a recycled container: no atexit hooks). Only then does the test look at the server: a
stopped process can send nothing more, so whatever is stored was delivered *before* the freeze.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from reliability_support import API_KEY, child_env, wait_stopped

from serla.devtools.server import BATCH_PATH, Fault, SerlaServer

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals"),
]

LAMBDA = f"""
import json, os, signal, sys
from serla import Serla

# Module-level: reused across warm invocations (the seed README's pattern).
serla = Serla(api_key={API_KEY!r}, host=sys.argv[1])

def handler(event, context):
    for i in range(event["events"]):
        serla.track(
            event="lambda_invoked",
            distinct_id=event["user_id"],
            properties={{"region": "us-east-1", "invocation": event["n"], "i": i}},
        )
    # CRITICAL: Lambda freezes the execution context when the handler returns.
    ok = serla.flush()
    return {{"statusCode": 200, "flushed": ok}}

freeze = sys.argv[2]
for n in range(3):
    result = handler({{"user_id": f"user-{{n}}", "n": n, "events": 7}}, None)
    sys.stdout.write(json.dumps({{"n": n, "result": result}}) + "\\n")
    sys.stdout.flush()
    if freeze == "exit" and n == 2:
        os._exit(0)  # the container is recycled: no atexit hook, no goodbye
    os.kill(os.getpid(), signal.SIGSTOP)  # frozen until the next invocation (SIGCONT)
"""


def invocations(server: SerlaServer) -> collections.Counter[int]:
    return collections.Counter(e["properties"]["invocation"] for e in server.events)


@pytest.mark.parametrize("freeze", ["sigstop", "exit"])
def test_lambda_handler_flush_delivers_everything_before_the_freeze(
    dedupe_server: SerlaServer, tmp_path: Path, freeze: str
) -> None:
    server = dedupe_server
    # Invocation 0 meets a 503 (flush cuts the 1 s backoff short), invocation 1 a response lost after the
    # server stored the batch (resent with the same key; this server dedupes), invocation 2 a clean run.
    server.inject(Fault(status=503, path=BATCH_PATH))
    path = tmp_path / "lambda_function.py"
    path.write_text(textwrap.dedent(LAMBDA), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(path), server.url, freeze],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    try:
        for n in range(3):
            line = proc.stdout.readline()  # bounded: the process either writes, stops or dies
            assert line, proc.stderr.read() if proc.stderr else ""
            seen.append(json.loads(line))
            if freeze == "exit" and n == 2:
                assert proc.wait(30) == 0
            else:
                assert wait_stopped(proc.pid, 30), "the handler's process never froze"
            # Frozen (or gone): nothing more can be sent. Everything tracked before the flush is there.
            assert invocations(server) == {k: 7 for k in range(n + 1)}
            if n == 0:
                assert [r.status for r in server.requests] == [503, 201]
                server.inject(Fault(store_then_drop=True, path=BATCH_PATH))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # the next invocation
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert [s["result"] for s in seen] == [{"statusCode": 200, "flushed": True}] * 3
    assert [s["n"] for s in seen] == [0, 1, 2]
    keys = collections.Counter((e.idempotency_key, e.position) for e in server.stored)
    assert len(keys) == 21 and set(keys.values()) == {1}
