"""Error tracking against the real server: grouping, uncaught exceptions before exit, the 402 plan gate.

Every test's exception types live in a package named after ``unique``, so its groups are its own; the
groups and occurrences are read back from PostgreSQL (``error_groups``, ``error_events``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import serla
from serla._worker import BatchWorker

from .conftest import PROJECTS, RealServer

# The subprocesses import this checkout's serla (and the test environment's packages), never another copy.
_PYTHONPATH = os.pathsep.join(
    [str(Path(serla.__file__).parents[1]), *(p for p in sys.path if "site-packages" in p)]
)

# Reports travel through the worker's "errors" lane (the lead's "Worker: lanes" commit on main).
pytestmark = pytest.mark.skipif(
    not hasattr(BatchWorker, "submit"), reason="needs the worker's lanes: git merge main"
)

APP = """
class CardDeclined(Exception):
    pass

def pay(card):
    raise CardDeclined(f"card {card} declined")

def refund(order):
    raise CardDeclined(f"order {order} can't be refunded")
"""

RUNNER = """
import sys
from serla import Serla
client = Serla(sys.argv[1], host=sys.argv[2], flush_on_exit=False)
from {package} import billing
for name, arg in (("pay", 1), ("pay", 2), ("refund", 3)):
    if name not in sys.argv[3:]:
        continue
    try:
        getattr(billing, name)(arg)
    except billing.CardDeclined:
        assert client.capture_exception(distinct_id="user-" + str(arg))
assert client.shutdown(60)
"""


def _install(root: Path, package: str) -> None:
    pkg = root / package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "billing.py").write_text(textwrap.dedent(APP))
    (root / "runner.py").write_text(RUNNER.format(package=package))


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": _PYTHONPATH}
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0 or args[0] != "runner.py", done.stderr
    return done


def _groups(realserver: RealServer, package: str) -> list[dict[str, object]]:
    return realserver.sql(
        "select fingerprint, type, message, occurrence_count from error_groups"
        f" where project_id = '{PROJECTS['max']}' and type like '{package}.%' order by first_seen_at"
    )


def test_grouping_by_function_not_by_message(realserver: RealServer, unique: str, tmp_path: Path) -> None:
    _install(tmp_path, unique)
    _run(tmp_path, "runner.py", realserver.keys["max"], realserver.host, "pay", "refund")
    groups = _groups(realserver, unique)
    # Two messages raised in pay(): one group of 2; refund(): its own group.
    assert sorted(g["occurrence_count"] for g in groups) == [1, 2]  # type: ignore[type-var]
    assert {g["type"] for g in groups} == {f"{unique}.billing.CardDeclined"}
    events = realserver.sql(
        "select source_file, source_line, distinct_id, level from error_events"
        f" where type = '{unique}.billing.CardDeclined' order by timestamp"
    )
    assert [e["source_file"] for e in events] == [f"{unique}/billing.py"] * 3
    assert [e["distinct_id"] for e in events] == ["user-1", "user-2", "user-3"]
    assert {e["level"] for e in events} == {"error"}


def test_the_same_code_from_two_install_paths_is_one_group(
    realserver: RealServer, unique: str, tmp_path: Path
) -> None:
    for place in ("srv/release-1", "home/dev/checkout"):
        _install(tmp_path / place, unique)
        _run(tmp_path / place, "runner.py", realserver.keys["max"], realserver.host, "refund")
    groups = _groups(realserver, unique)
    assert [g["occurrence_count"] for g in groups] == [2]


SCRIPT = """
import sys
from serla import Serla
client = Serla(sys.argv[1], host=sys.argv[2], capture_exceptions=True, flush_interval_seconds=60)
"""


def _uncaught(
    realserver: RealServer, tmp_path: Path, name: str, body: str
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / f"{name}.py"
    script.write_text(SCRIPT + textwrap.dedent(body))
    return _run(tmp_path, script.name, realserver.keys["max"], realserver.host)


def test_uncaught_exceptions_arrive_before_exit(realserver: RealServer, unique: str, tmp_path: Path) -> None:
    main = _uncaught(
        realserver,
        tmp_path,
        "main_thread",
        f"""
        class {unique}Main(Exception):
            pass
        def main():
            raise {unique}Main("main thread")
        main()
        """,
    )
    assert main.returncode == 1 and f"{unique}Main: main thread" in main.stderr
    thread = _uncaught(
        realserver,
        tmp_path,
        "in_thread",
        f"""
        import threading
        class {unique}Thread(Exception):
            pass
        def work():
            raise {unique}Thread("in a thread")
        t = threading.Thread(target=work, name="job")
        t.start(); t.join()
        """,
    )
    assert thread.returncode == 0
    task = _uncaught(
        realserver,
        tmp_path,
        "in_task",
        f"""
        import asyncio, gc
        class {unique}Task(Exception):
            pass
        async def job():
            raise {unique}Task("in a task")
        async def main():
            task = asyncio.get_running_loop().create_task(job())
            await asyncio.sleep(0.05)
            del task
            gc.collect()
        asyncio.run(main())
        """,
    )
    assert task.returncode == 0
    rows = realserver.sql(
        "select type, source_file, metadata->>'mechanism' as mechanism from error_events"
        f" where type like '__main__.{unique}%' order by timestamp"
    )
    assert [(r["type"], r["source_file"], r["mechanism"]) for r in rows] == [
        (f"__main__.{unique}Main", "main_thread.py", "sys.excepthook"),
        (f"__main__.{unique}Thread", "in_thread.py", "threading.excepthook"),
        (f"__main__.{unique}Task", "in_task.py", "asyncio"),
    ]


def test_a_free_plan_project_keeps_sending_events(
    realserver: RealServer, unique: str, tmp_path: Path
) -> None:
    script = tmp_path / "free.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from serla import Serla
            client = Serla(sys.argv[1], host=sys.argv[2], flush_on_exit=False)
            for n in range(3):
                client.capture_exception(ValueError("{unique} " + str(n)))
                client.flush(30)
                client.track("{unique}_event", "{unique}", {{"n": n}})
            assert client.shutdown(60)
            stats = client.stats()
            print(stats["lanes"]["errors"]["disabled"], stats["sent"])
            """
        )
    )
    done = _run(tmp_path, script.name, realserver.keys["free"], realserver.host)
    assert done.returncode == 0, done.stderr
    disabled, sent = done.stdout.split()[-2:]
    assert disabled != "None" and sent == "3"
    assert done.stderr.count("Error tracking requires the Hobby plan") <= 1  # one WARNING at most
    events = realserver.sql(
        f"select properties->>'n' as n from events where distinct_id = '{unique}' order by 1"
    )
    assert [e["n"] for e in events] == ["0", "1", "2"]
    assert realserver.sql(f"select 1 from error_events where message like '{unique}%'") == []


def test_fields_at_the_servers_maxima_are_accepted(realserver: RealServer, unique: str) -> None:
    from serla import Serla

    cls = type("E" * 150, (Exception,), {})
    cls.__module__ = unique
    client = Serla(
        realserver.keys["max"],
        host=realserver.host,
        flush_on_exit=False,
        environment="e" * 80,
        release="r" * 150,
    )
    try:
        try:
            raise cls(unique + " " + "\U0001f600" * 3000)  # 6,000+ UTF-16 units, over the 2,000 limit
        except Exception as exc:
            assert client.capture_exception(exc, level="critical", distinct_id="\U0001f600" * 150)
        try:
            raise ValueError(f"{unique} debug")
        except ValueError as exc:
            assert client.capture_exception(exc, level="debug", context={"nul": "a\x00b"})
        assert client.flush(60)
        lane = client.stats()["lanes"]["errors"]
        assert lane["sent"] == 2 and not lane["dropped"], lane
    finally:
        client.shutdown(60)
    rows = realserver.sql(
        "select length(message) as message, length(type) as type, level, length(environment) as env,"
        " length(release) as rel, length(distinct_id) as who, metadata"
        f" from error_events where message like '{unique} %' order by timestamp"
    )
    big, small = rows
    assert big["level"] == "error" and small["level"] == "info"
    assert big["env"] == 50 and big["rel"] == 100 and big["type"] <= 100
    assert big["who"] == 100  # 200 UTF-16 units of surrogate pairs = 100 emoji
    assert small["metadata"] == {"nul": "ab"}
