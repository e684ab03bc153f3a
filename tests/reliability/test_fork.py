"""Fork safety, in subprocesses: os.fork, multiprocessing's fork start method and real gunicorn --preload.

In every case the parent has a running flusher thread and events buffered (or in flight) when it forks.
A forked child must get a fresh, working pipeline, must not resend the parent's events, and must not
deadlock on a lock some parent thread held at the moment of the fork. Every child arms ``signal.alarm``
so a deadlock kills it (and fails the test) instead of hanging the run; every wait is bounded.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from reliability_support import API_KEY, child_env, run_script, write_script

from serla.devtools.server import BATCH_PATH, Fault, SerlaServer

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
]

PRELUDE = f"""
import json, os, signal, sys, threading
from serla import Serla

URL = sys.argv[1]
KEY = {API_KEY!r}

def report(**fields):
    sys.stdout.write(json.dumps(fields) + "\\n")
    sys.stdout.flush()
"""


def program(body: str) -> str:
    """The prelude (imports, ``URL``, ``KEY``, ``report()``) followed by ``body``."""
    return PRELUDE + textwrap.dedent(body)


def reports(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def names_by_pid(server: SerlaServer) -> collections.Counter[tuple[str, Any]]:
    return collections.Counter((e["name"], e["properties"].get("pid")) for e in server.events)


def test_fork_child_gets_a_fresh_pipeline_and_does_not_resend_the_parents_buffer(
    server: SerlaServer, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path,
        program(
            """
        c = Serla(KEY, host=URL, flush_interval_seconds=60, flush_on_exit=False)
        for i in range(5):
            c.track("parent_buffered", "p", {"seq": i, "pid": os.getpid()})
        assert c.pending_count() == 5 and c.stats()["sent"] == 0  # buffered: the interval is 60 s
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)
            fresh = c.stats()
            threads_before = [t.name for t in threading.enumerate()]
            for i in range(3):
                c.track("child", "c", {"seq": i, "pid": os.getpid()})
            flushed = c.flush(10)
            threads_after = [t.name for t in threading.enumerate()]
            report(who="child", pid=os.getpid(), fresh=fresh, flushed=flushed, stats=c.stats(),
                   threads_before=threads_before, threads_after=threads_after)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        report(who="parent", pid=os.getpid(), child_status=status, child=pid, flushed=c.flush(10),
               stats=c.stats())
        """
        ),
    )
    proc = run_script(script, server.url)
    assert proc.returncode == 0, proc.stderr
    child, parent = reports(proc.stdout)
    assert child["who"] == "child" and parent["who"] == "parent" and parent["child_status"] == 0
    # The child starts empty: none of the parent's buffered events, no thread, fresh counters.
    assert (child["fresh"]["pending"], child["fresh"]["accepted"], child["fresh"]["sent"]) == (0, 0, 0)
    assert "serla-flusher" not in child["threads_before"]
    assert child["threads_after"].count("serla-flusher") == 1  # its own, started on its first track()
    assert child["flushed"] is True and child["stats"]["sent"] == 3
    assert parent["flushed"] is True and parent["stats"]["sent"] == 5
    assert names_by_pid(server) == {
        ("parent_buffered", parent["pid"]): 5,
        ("child", child["pid"]): 3,
    }


def test_fork_while_the_flusher_is_mid_send(server: SerlaServer, tmp_path: Path) -> None:
    # The parent's batch is held by the server for 3 s; the test forks the script while it is in flight.
    server.inject(Fault(delay=3.0, path=BATCH_PATH))
    script = write_script(
        tmp_path,
        program(
            """
        c = Serla(KEY, host=URL, batch_size=4, flush_interval_seconds=60, flush_on_exit=False, timeout=20)
        for i in range(4):
            c.track("parent_in_flight", "p", {"seq": i, "pid": os.getpid()})
        report(who="ready")
        assert sys.stdin.readline().strip() == "fork"
        in_flight = c.stats()["in_flight"]
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)
            fresh = c.stats()
            for i in range(2):
                c.track("child", "c", {"seq": i, "pid": os.getpid()})
            report(who="child", pid=os.getpid(), fresh=fresh, flushed=c.flush(10), stats=c.stats())
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        report(who="parent", pid=os.getpid(), in_flight=in_flight, child_status=status, flushed=c.flush(15),
               stats=c.stats())
        """
        ),
    )
    proc = subprocess.Popen(
        [sys.executable, str(script), server.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert json.loads(proc.stdout.readline())["who"] == "ready"
        assert server.wait_for_requests(1, timeout=10)  # the parent's POST is now inside the server
        proc.stdin.write("fork\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    child, parent = reports(out)
    assert parent["in_flight"] == 4  # the fork really happened mid-send
    assert (child["fresh"]["pending"], child["fresh"]["in_flight"]) == (0, 0)
    assert child["flushed"] is True and parent["flushed"] is True
    assert names_by_pid(server) == {("parent_in_flight", parent["pid"]): 4, ("child", child["pid"]): 2}
    # The child used its own connection: the parent's delayed request and the child's are distinct.
    keys = [r.idempotency_key for r in server.requests if r.path == BATCH_PATH]
    assert len(keys) == len(set(keys)) == 2


def test_fork_while_another_thread_holds_every_sdk_lock_does_not_deadlock_the_child(
    server: SerlaServer, tmp_path: Path
) -> None:
    """Simulates the worst moment for a fork: some parent thread is inside each of the SDK's critical sections.

    A helper thread takes every lock the SDK owns (module-level locks of ``serla.*`` and the client's and
    worker's own), and the main thread forks while they are held. Every public call in the child must
    still work. (The helper lets go after 0.5 s in case the SDK makes ``fork()`` wait for its locks,
    which is a valid design too.)
    """
    script = write_script(
        tmp_path,
        program(
            """
        import logging
        import serla

        LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))

        def sdk_locks(client):
            found = {}
            for name, mod in list(sys.modules.items()):
                if mod is not None and (name == "serla" or name.startswith("serla.")):
                    for attr, val in list(vars(mod).items()):
                        if isinstance(val, LOCK_TYPES):
                            found[f"{name}.{attr}"] = val
            for label, owner in (("client", client), ("worker", client._worker)):
                for attr, val in list(getattr(owner, "__dict__", {}).items()):
                    if isinstance(val, LOCK_TYPES):
                        found[f"{label}.{attr}"] = val
            return found

        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        c = Serla(KEY, host=URL, flush_interval_seconds=60, flush_on_exit=False, max_queue_size=10,
                  block_on_full_seconds=10)
        serla.set_default_client(c)
        c.track("parent", "p", {"pid": os.getpid()})
        c.track("", "p")  # a wrong call in the parent: its warning path has run once
        locks = sdk_locks(c)
        held, forked = threading.Event(), threading.Event()

        def hold_all():
            taken = [lock for lock in locks.values() if lock.acquire(timeout=5)]
            held.set()
            forked.wait(0.5)
            for lock in reversed(taken):
                lock.release()

        helper = threading.Thread(target=hold_all)
        helper.start()
        held.wait(10)
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)
            steps = []
            still_held = sorted(name for name, lock in sdk_locks(c).items() if lock.locked())
            steps.append(("track", c.track("child", "c", {"pid": os.getpid()})))
            steps.append(("wrong call", c.track("", "c")))  # warns: the rate limiter's lock
            for i in range(20):  # twice max_queue_size: a healthy endpoint, so the byte bound applies
                c.track("child_fill", "c", {"i": i, "pid": os.getpid()})
            steps.append(("stats", c.stats()["accepted"]))
            steps.append(("pending", 0 <= c.pending_count() <= 21))
            steps.append(("default client", serla.get_default_client(create=False) is c))
            steps.append(("flush", c.flush(10)))
            steps.append(("identify", c.identify("c", {"forked": True})))
            steps.append(("shutdown", c.shutdown(10)))
            report(who="child", pid=os.getpid(), steps=steps, still_held=still_held, all_locks=sorted(locks))
            os._exit(0)
        forked.set()
        helper.join(10)
        _, status = os.waitpid(pid, 0)
        report(who="parent", pid=os.getpid(), child_status=status, flushed=c.flush(10))
        """
        ),
    )
    proc = run_script(script, server.url)
    assert proc.returncode == 0, proc.stderr
    child, parent = reports(proc.stdout)
    assert parent["child_status"] == 0, "the child was killed by its alarm: a deadlock"
    assert dict((k, v) for k, v in child["steps"]) == {
        "track": True,
        "wrong call": False,
        "stats": 21,  # all accepted: a healthy sender makes room
        "pending": True,
        "default client": True,
        "flush": True,
        "identify": True,
        "shutdown": True,
    }
    assert {"worker._lock", "worker._inline_lock"} <= set(child["all_locks"])
    assert child["still_held"] == [], f"SDK locks still held in the child: {child['still_held']}"
    assert parent["flushed"] is True
    counts = names_by_pid(server)
    assert counts[("parent", parent["pid"])] == 1
    assert counts[("child", child["pid"])] == 1
    assert counts[("child_fill", child["pid"])] == 20
    assert server.identities == {"c": {"forked": True}}


def test_multiprocessing_fork_pool_children_deliver_their_own_events_once(
    server: SerlaServer, tmp_path: Path
) -> None:
    script = write_script(
        tmp_path,
        program(
            """
        import multiprocessing

        c = Serla(KEY, host=URL, flush_interval_seconds=60, flush_on_exit=False)

        def work(task):
            signal.alarm(20)
            for i in range(5):
                c.track("pool_task", f"task-{task}", {"task": task, "seq": i, "pid": os.getpid()})
            # multiprocessing children end with os._exit (no atexit hooks): flush in the task.
            return {"task": task, "pid": os.getpid(), "flushed": c.flush(10)}

        if __name__ == "__main__":
            for i in range(4):
                c.track("parent_buffered", "p", {"seq": i, "pid": os.getpid()})
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(3) as pool:
                results = pool.map(work, range(6), chunksize=1)
            report(who="parent", pid=os.getpid(), results=results, flushed=c.flush(10))
        """
        ),
    )
    proc = run_script(script, server.url)
    assert proc.returncode == 0, proc.stderr
    (parent,) = reports(proc.stdout)
    assert parent["flushed"] is True
    assert all(r["flushed"] for r in parent["results"])
    events = server.events
    tasks = collections.Counter(
        (e["properties"]["task"], e["properties"]["seq"]) for e in events if e["name"] == "pool_task"
    )
    assert tasks == {(t, s): 1 for t in range(6) for s in range(5)}
    pid_of_task = {r["task"]: r["pid"] for r in parent["results"]}
    assert all(
        e["properties"]["pid"] == pid_of_task[e["properties"]["task"]]
        for e in events
        if e["name"] == "pool_task"
    )
    assert parent["pid"] not in pid_of_task.values()
    assert names_by_pid(server)[("parent_buffered", parent["pid"])] == 4
    assert sum(1 for e in events if e["name"] == "parent_buffered") == 4


# -- gunicorn --preload --------------------------------------------------------------------------------------

APP = f"""
import os, time
from serla import Serla

# Created in the gunicorn master (--preload), before the workers are forked; its thread starts here too.
client = Serla({API_KEY!r}, host=os.environ["SERLA_TEST_URL"], flush_interval_seconds=0.05)
client.track("master_boot", "gunicorn", {{"pid": os.getpid()}})

def app(environ, start_response):
    rid = environ.get("QUERY_STRING", "").partition("rid=")[2]
    client.track("hit", "visitor", {{"rid": rid, "pid": os.getpid()}})
    time.sleep(0.05)  # keep this worker busy so concurrent requests spread over the others
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


class LineReader:
    """Reads a pipe on a thread so the test can wait for a line with a timeout."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.stream = stream
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        """After the process is gone: let the pump reach EOF, then close the pipe."""
        self.thread.join(10)
        self.stream.close()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                return None
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match


def gunicorn_bin() -> str | None:
    candidate = Path(sys.executable).with_name("gunicorn")
    return str(candidate) if candidate.exists() else shutil.which("gunicorn")


@pytest.mark.skipif(gunicorn_bin() is None, reason="gunicorn is not installed")
def test_gunicorn_preload_workers_each_deliver_their_own_events(server: SerlaServer, tmp_path: Path) -> None:
    (tmp_path / "serla_test_app.py").write_text(APP, encoding="utf-8")
    cmd = [
        str(gunicorn_bin()),
        "--preload",
        "--workers",
        "3",
        "--bind",
        "127.0.0.1:0",
        "--chdir",
        str(tmp_path),
        "--graceful-timeout",
        "10",
        "--log-level",
        "info",
        "serla_test_app:app",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(SERLA_TEST_URL=server.url),
        start_new_session=True,  # its own process group: killed as a whole at the end
    )
    assert proc.stderr is not None
    log = LineReader(proc.stderr)
    try:
        listening = log.wait_for(r"Listening at: http://127\.0\.0\.1:(\d+)", 30)
        assert listening is not None, "".join(log.seen)
        port = int(listening.group(1))
        booted = 0
        while booted < 3:
            assert log.wait_for(r"Booting worker with pid", 30) is not None, "".join(log.seen)
            booted += 1

        answers: dict[str, int] = {}
        lock = threading.Lock()

        def hit(prefix: str) -> None:
            for n in range(10):
                rid = f"{prefix}-{n}"
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/?rid={rid}", timeout=10) as resp:
                    pid = int(resp.read())
                with lock:
                    answers[rid] = pid

        clients = [threading.Thread(target=hit, args=(f"c{k}",)) for k in range(4)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(60)
        assert len(answers) == 40
        worker_pids = set(answers.values())
        assert len(worker_pids) >= 2  # the requests really were served by several forked workers

        # Every hit is delivered by the worker that served it, from that worker's own flusher thread.
        if not server.wait_for_events(41, timeout=30):
            got = collections.Counter((e["name"], e["properties"].get("pid")) for e in server.events)
            missing = sorted(set(answers) - {e["properties"].get("rid") for e in server.events})
            by_pid = collections.Counter(answers[r] for r in missing)
            pytest.fail(
                f"stored {dict(got)}; missing {len(missing)} hits, by serving pid {dict(by_pid)}; "
                f"requests {[(r.status, r.event_count) for r in server.requests]}; log: {''.join(log.seen)}"
            )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # graceful: workers and master run their atexit hooks
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()

    events = server.events
    hits = collections.Counter(e["properties"]["rid"] for e in events if e["name"] == "hit")
    assert hits == {rid: 1 for rid in answers}  # once each, after the graceful exit too
    assert all(
        e["properties"]["pid"] == answers[e["properties"]["rid"]] for e in events if e["name"] == "hit"
    )
    boots = [e for e in events if e["name"] == "master_boot"]
    assert len(boots) == 1  # sent by the master only: no worker resent the master's buffer
    assert boots[0]["properties"]["pid"] not in worker_pids
