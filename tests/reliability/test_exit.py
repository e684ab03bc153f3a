"""Process exit, in subprocesses: the atexit flush, hooks that run after it, and a daemon that never holds on.

Each test runs a small script with a real client against the loopback server in this process, lets the
interpreter exit the way it chooses (end of script, ``sys.exit``, an uncaught exception), and then checks
what the server stored. ``subprocess.run(timeout=...)`` bounds every script: a process kept alive by the
SDK fails the test instead of hanging it.
"""

from __future__ import annotations

import collections
import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from reliability_support import API_KEY, free_port, run_script, write_script

from serla.devtools.server import BATCH_PATH, Fault, SerlaServer

pytestmark = pytest.mark.timeout(60)

PRELUDE = f"""
import atexit, json, os, sys, threading
URL = sys.argv[1]
KEY = {API_KEY!r}

def report(**fields):
    sys.stdout.write(json.dumps(fields) + "\\n")
    sys.stdout.flush()

def flusher_threads():
    return [t.name for t in threading.enumerate() if t.name == "serla-flusher"]
"""


def script(tmp_path: Path, body: str) -> Path:
    """Write the prelude (``URL``, ``KEY``, ``report()``, ``flusher_threads()``) and ``body`` as a script."""
    return write_script(tmp_path, PRELUDE + textwrap.dedent(body))


def reports(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def names(server: SerlaServer) -> collections.Counter[str]:
    return collections.Counter(e["name"] for e in server.events)


@pytest.mark.parametrize(
    ("ending", "code"),
    [("pass", 0), ("sys.exit(3)", 3), ("raise SystemExit('bye')", 1), ("raise RuntimeError('boom')", 1)],
    ids=["end-of-script", "sys.exit", "SystemExit", "uncaught-exception"],
)
def test_atexit_hook_flushes_what_is_buffered(
    server: SerlaServer, tmp_path: Path, ending: str, code: int
) -> None:
    path = script(
        tmp_path,
        f"""
        from serla import Serla
        c = Serla(KEY, host=URL, flush_interval_seconds=60, shutdown_timeout=10)
        for i in range(10):
            c.track("buffered_at_exit", "u", {{"seq": i}})
        report(pending=c.pending_count(), sent=c.stats()["sent"])
        {ending}
        """,
    )
    proc = run_script(path, server.url)
    assert proc.returncode == code, proc.stderr
    (before_exit,) = reports(proc.stdout)
    assert before_exit == {"pending": 10, "sent": 0}  # nothing had gone out: the 60 s interval
    assert names(server) == {"buffered_at_exit": 10}  # the exit hook delivered all of it
    assert [e["properties"]["seq"] for e in server.events] == list(range(10))


def test_hooks_that_run_after_the_exit_flush_still_deliver(server: SerlaServer, tmp_path: Path) -> None:
    """logging.shutdown (flushing a SerlaHandler) and an atexit function registered before the client.

    atexit runs hooks last-in first-out, so both run *after* the client's own exit flush.
    """
    path = script(
        tmp_path,
        """
        import logging  # registers logging.shutdown with atexit now, before the client exists

        def late_hook():
            tracked = c.track("from_late_hook", "u")
            flushed = c.flush(5)
            # A log record after that flush: only logging.shutdown -> SerlaHandler.flush/close delivers it.
            logging.getLogger("app").warning("bye", extra={"event": "logged_after_exit_flush", "distinct_id": "u"})
            report(hook="late", tracked=tracked, flushed=flushed, pending_after_log=c.pending_count())

        atexit.register(late_hook)

        from serla import Serla
        from serla.logging_handler import SerlaHandler

        c = Serla(KEY, host=URL, flush_interval_seconds=60, shutdown_timeout=10)
        logging.getLogger("app").addHandler(SerlaHandler(c))
        logging.getLogger("app").warning("hi", extra={"event": "logged_while_running", "distinct_id": "u"})
        c.track("tracked_while_running", "u")
        """,
    )
    proc = run_script(path, server.url)
    assert proc.returncode == 0, proc.stderr
    (late,) = reports(proc.stdout)
    assert late == {"hook": "late", "tracked": True, "flushed": True, "pending_after_log": 1}
    assert names(server) == {
        "logged_while_running": 1,
        "tracked_while_running": 1,
        "from_late_hook": 1,
        "logged_after_exit_flush": 1,
    }
    order = [e["name"] for e in server.events]
    assert order.index("from_late_hook") > order.index("tracked_while_running")


@pytest.mark.parametrize("endpoint", ["hanging", "refusing"])
def test_the_daemon_worker_never_keeps_the_process_alive(
    server: SerlaServer, tmp_path: Path, endpoint: str
) -> None:
    if endpoint == "hanging":
        server.set_default_fault(Fault(hang=True, path=BATCH_PATH))
        url = server.url
    else:
        url = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused, real backoff policy
    path = script(
        tmp_path,
        """
        import logging
        logging.basicConfig(level=logging.WARNING)  # so the SDK's exit WARNING reaches stderr
        from serla import Serla
        # A 60 s socket timeout and the production retry policy: only shutdown_timeout can end the exit.
        c = Serla(KEY, host=URL, flush_interval_seconds=0.01, timeout=60, shutdown_timeout=1.0)
        for i in range(3):
            c.track("never_delivered", "u", {"seq": i})
        report(daemon=[t.daemon for t in threading.enumerate() if t.name == "serla-flusher"])
        """,
    )
    proc = run_script(path, url, timeout=30)  # a process kept alive by the SDK fails here
    assert proc.returncode == 0, proc.stderr
    assert reports(proc.stdout) == [{"daemon": [True]}]
    assert "3 events were not delivered at exit" in proc.stderr
    if endpoint == "hanging":
        assert server.wait_for_requests(1, timeout=5)  # the request really was stuck in the server
        assert server.events == []


def test_no_thread_is_started_at_exit_when_nothing_was_tracked(server: SerlaServer, tmp_path: Path) -> None:
    path = script(
        tmp_path,
        """
        atexit.register(lambda: report(at_exit=flusher_threads()))  # runs after the client's exit hook
        from serla import Serla
        c = Serla(KEY, host=URL, flush_interval_seconds=60)
        report(running=flusher_threads())
        """,
    )
    proc = run_script(path, server.url)
    assert proc.returncode == 0, proc.stderr
    assert reports(proc.stdout) == [{"running": []}, {"at_exit": []}]
    assert server.requests == []


def test_forked_childs_inherited_exit_hook_neither_resends_nor_starts_a_thread(
    server: SerlaServer, tmp_path: Path
) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    path = script(
        tmp_path,
        """
        import signal
        from serla import Serla
        c = Serla(KEY, host=URL, flush_interval_seconds=60)
        for i in range(4):
            c.track("parent_buffered", "p", {"seq": i})
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)
            atexit.register(lambda: report(who="child", at_exit=flusher_threads(), pending=c.pending_count()))
            sys.exit(0)  # a normal exit: the parent's atexit hook (inherited) runs here too
        _, status = os.waitpid(pid, 0)
        report(who="parent", child_status=status)
        """,
    )
    proc = run_script(path, server.url)
    assert proc.returncode == 0, proc.stderr
    child, parent = reports(proc.stdout)
    assert child == {"who": "child", "at_exit": [], "pending": 0}
    assert parent == {"who": "parent", "child_status": 0}
    assert names(server) == {"parent_buffered": 4}  # delivered once, by the parent's exit hook


@pytest.mark.parametrize("threads", ["allowed", "refused"])
def test_first_track_in_a_late_exit_hook_is_delivered(
    server: SerlaServer, tmp_path: Path, threads: str
) -> None:
    """The first ``track()`` of the process happens in an atexit hook that runs after the client's own.

    ``refused`` makes ``Thread.start`` raise the RuntimeError that CPython raises once it no longer
    accepts new threads (during finalization; in atexit hooks on 3.12.0-3.12.1): the client must then
    start no thread and deliver on the calling thread. ``allowed`` is this interpreter as it is.
    """
    path = script(
        tmp_path,
        f"""
        def late_hook():
            if {threads == "refused"!r}:
                def refuse(self):
                    raise RuntimeError("can't create new thread at interpreter shutdown")
                threading.Thread.start = refuse
            before = flusher_threads()
            tracked = c.track("first_event_at_exit", "u")
            flushed = c.flush(5)
            report(before=before, after=flusher_threads(), tracked=tracked, flushed=flushed)

        atexit.register(late_hook)
        from serla import Serla
        c = Serla(KEY, host=URL, flush_interval_seconds=60)
        """,
    )
    proc = run_script(path, server.url)
    assert proc.returncode == 0, proc.stderr
    (late,) = reports(proc.stdout)
    assert (late["before"], late["tracked"], late["flushed"]) == ([], True, True)
    if threads == "refused":
        assert late["after"] == []  # delivered on the hook's own thread
    assert names(server) == {"first_event_at_exit": 1}
