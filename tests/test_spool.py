"""The durable spool (``serla._spool``) on its own: real SQLite files, real processes, real file systems.

Processes are real (``subprocess`` running ``python -c``, ``os.fork``); a full disk is a small tmpfs when
this runs as root (else a file-size limit); a read-only directory is a read-only tmpfs as root (else a
directory without write permission).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serla._spool import (
    DEFAULT_MAX_BYTES,
    FILE_NAME,
    SCHEMA_VERSION,
    Spool,
    SpoolUnavailable,
    identity_tag,
    pack,
    unpack,
)

HOST = "http://127.0.0.1:9"
KEY = "sk_live_spooltest0123456789abcdef"
OTHER_KEY = "sk_live_someoneelse000000000000000"
CHILD_TIMEOUT = 60


def event(i: int) -> bytes:
    return json.dumps({"event": "e", "distinctId": f"u{i}", "properties": {"i": i}}).encode()


def fill(spool: Spool, batches: int, per_batch: int = 3, lane: str = "events") -> list[str]:
    keys = []
    for b in range(batches):
        key = f"key-{lane}-{b:05d}"
        assert spool.append(lane, key, [event(b * per_batch + j) for j in range(per_batch)]) == per_batch
        keys.append(key)
    return keys


def run_child(code: str, *args: str, timeout: float = CHILD_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Clock:
    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset


# -- basics ----------------------------------------------------------------------------------------------


def test_pack_round_trip() -> None:
    items = [b"", b"{}", b"x" * 70000, "é".encode()]
    assert unpack(pack(items)) == items
    with pytest.raises(ValueError):
        unpack(pack(items)[:-1])


def test_append_lease_ack_release(tmp_path: Path) -> None:
    spool = Spool(tmp_path, HOST, KEY)
    assert spool.append("events", "k1", [event(1), event(2)]) == 2
    assert spool.append("events", "k1", [event(3)]) == 0, "a key already spooled is not spooled twice"
    assert spool.append("errors", "k2", [b'{"message":"boom"}']) == 1
    assert spool.waiting() == 3
    assert spool.waiting("events") == 2

    (batch,) = spool.lease("events", 5)
    assert batch.key == "k1" and batch.items == [event(1), event(2)] and batch.attempts == 1
    assert spool.lease("events") == [], "a leased batch is not leased again"
    spool.release(batch)
    (again,) = spool.lease("events")
    assert again.id == batch.id and again.key == "k1" and again.attempts == 2
    spool.ack(again)
    assert spool.lease("events") == []
    assert spool.waiting() == 1
    (err,) = spool.lease("errors")
    assert err.items == [b'{"message":"boom"}']
    spool.close()
    with pytest.raises(SpoolUnavailable) as info:
        spool.lease("errors")
    assert info.value.reason == "closed"


def test_lease_order_and_limit(tmp_path: Path) -> None:
    spool = Spool(tmp_path, HOST, KEY)
    keys = fill(spool, 5)
    first = spool.lease("events", 2)
    second = spool.lease("events", 10)
    assert [b.key for b in first] == keys[:2]
    assert [b.key for b in second] == keys[2:]


def test_batches_survive_reopen_and_a_live_lease_is_respected(tmp_path: Path) -> None:
    clock = Clock()
    spool = Spool(tmp_path, HOST, KEY, lease_seconds=30, clock=clock)
    fill(spool, 2)
    (held,) = spool.lease("events")
    spool.close()
    later = Spool(tmp_path, HOST, KEY, lease_seconds=30, clock=clock)
    assert [b.key for b in later.lease("events", 5)] == ["key-events-00001"], "the live lease is respected"
    clock.offset = 29
    assert later.lease("events") == []
    clock.offset = 31
    (expired,) = later.lease("events")
    assert expired.key == held.key == "key-events-00000" and expired.attempts == 2
    assert expired.items == held.items


def test_extend_keeps_a_lease_alive(tmp_path: Path) -> None:
    clock = Clock()
    holder = Spool(tmp_path, HOST, KEY, lease_seconds=30, clock=clock)
    other = Spool(tmp_path, HOST, KEY, lease_seconds=30, clock=clock)
    fill(holder, 1)
    (batch,) = holder.lease("events")
    clock.offset = 25
    assert holder.extend(batch) is True
    clock.offset = 40
    assert other.lease("events") == [], "extended at +25 s, the lease runs until +55 s"
    clock.offset = 56
    (taken,) = other.lease("events")
    assert holder.extend(batch) is False, "taken by another process: no longer ours"
    holder.ack(batch)  # delivered after all: deleted whoever holds it (same key: the server counts it once)
    assert other.waiting() == 0
    assert taken.key == batch.key


def test_rows_of_another_host_or_key_wait_for_their_own_client(tmp_path: Path) -> None:
    mine = Spool(tmp_path, HOST, KEY)
    theirs = Spool(tmp_path, HOST, OTHER_KEY)
    elsewhere = Spool(tmp_path, "http://127.0.0.2:9", KEY)
    fill(theirs, 2)
    fill(elsewhere, 1)
    assert mine.lease("events", 10) == []
    assert mine.waiting() == 0
    assert len(theirs.lease("events", 10)) == 2
    assert len(elsewhere.lease("events", 10)) == 1
    rows = {(r["host"], r["key"]): r for r in mine.status()}
    assert rows[(HOST, "sk_live_...0000")]["events"] == 6
    assert rows[("http://127.0.0.2:9", "sk_live_...cdef")]["events"] == 3
    assert not any(r["mine"] for r in rows.values())
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert KEY.encode() not in raw and OTHER_KEY.encode() not in raw, "the API key is never stored"
    assert identity_tag(HOST, OTHER_KEY).encode() in raw, "rows carry the SHA-256 tag instead"


def test_max_bytes_refuses_a_batch_that_does_not_fit(tmp_path: Path) -> None:
    assert DEFAULT_MAX_BYTES == 100 * 1024 * 1024
    spool = Spool(tmp_path, HOST, KEY, max_bytes=1000)
    big = [b"x" * 300, b"y" * 300]
    assert spool.append("events", "a", big) == 2
    assert spool.size() == 600
    assert spool.append("events", "b", big) == 0, "1200 bytes > 1000: refused whole"
    assert spool.append("events", "c", [b"z" * 400]) == 1, "exactly at the bound fits"
    assert spool.append("events", "d", [b"!"]) == 0
    (first,) = spool.lease("events")
    spool.ack(first)
    assert spool.append("events", "b", big) == 2, "room again once delivered"
    # The bound is per directory, all hosts and keys together.
    other = Spool(tmp_path, HOST, OTHER_KEY, max_bytes=1000)
    assert other.append("events", "e", [b"q"]) == 0


def test_status_only_spool(tmp_path: Path) -> None:
    writer = Spool(tmp_path, HOST, KEY)
    fill(writer, 4, per_batch=5)
    writer.lease("events")
    reader = Spool(tmp_path)
    (row,) = reader.status()
    assert row["events"] == 20 and row["batches"] == 4 and row["leased"] == 5
    assert row["host"] == HOST and row["key"] == "sk_live_...cdef" and row["mine"] is False
    assert row["bytes"] == sum(len(event(i)) for i in range(20))
    assert row["oldest"] <= time.time()
    with pytest.raises(ValueError):
        reader.lease("events")


# -- several processes -------------------------------------------------------------------------------------

_LEASER = """
import json, os, sys, time
from serla._spool import Spool
directory, host, key, mode = sys.argv[1:5]
spool = Spool(directory, host, key, lease_seconds=600, busy_timeout=10)
got = []
print("ready", flush=True)
go = sys.argv[5]
for _ in range(6000):  # start together, once every process is ready (at most 30 s)
    if os.path.exists(go):
        break
    time.sleep(0.005)
for _ in range(100000):
    batches = spool.lease("events", 1)
    if not batches:
        break
    for b in batches:
        got.append(b.key)
        if mode == "ack":
            spool.ack(b)
    time.sleep(0.001)  # let the others in: the test is about interleaved leases
print(json.dumps(got))
"""


@pytest.mark.parametrize("mode", ["ack", "hold"])
def test_processes_sharing_a_spool_never_lease_the_same_batch(tmp_path: Path, mode: str) -> None:
    spool = Spool(tmp_path, HOST, KEY)
    keys = fill(spool, 300, per_batch=2)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LEASER, str(tmp_path), HOST, KEY, mode, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    go.touch()
    results = []
    for proc in procs:
        with proc:
            out, err = proc.communicate(timeout=CHILD_TIMEOUT)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    every = [k for r in results for k in r]
    assert len(every) == len(set(every)), "no batch was leased by two processes"
    assert sorted(every) == keys
    assert sum(1 for r in results if r) >= 2, "the work was shared (else this test proves nothing)"
    assert spool.waiting() == (0 if mode == "ack" else 600)


_HOLD_AND_WAIT = """
import sys, time
from serla._spool import Spool
spool = Spool(sys.argv[1], sys.argv[2], sys.argv[3], lease_seconds=60)
batches = spool.lease("events", 3)
print(" ".join(b.key for b in batches), flush=True)
time.sleep(120)
"""


def test_a_lease_held_by_a_killed_process_comes_back_when_it_expires(tmp_path: Path) -> None:
    spool = Spool(tmp_path, HOST, KEY, lease_seconds=60)
    keys = fill(spool, 5)
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_AND_WAIT, str(tmp_path), HOST, KEY],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            held = proc.stdout.readline().split()
            assert held == keys[:3]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=CHILD_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    rest = spool.lease("events", 10)
    assert [b.key for b in rest] == keys[3:], "the dead holder's lease still runs"
    for b in rest:
        spool.ack(b)
    clock = Clock(offset=61)
    later = Spool(tmp_path, HOST, KEY, clock=clock)
    back = later.lease("events", 10)
    assert [b.key for b in back] == keys[:3], "after the lease expired, the batches come back"
    assert all(b.attempts == 2 for b in back)
    assert back[0].items == [event(0), event(1), event(2)]


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    spool = Spool(tmp_path, HOST, KEY)
    fill(spool, 2)
    (parent_batch,) = spool.lease("events")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            child_batches = spool.lease("events", 10)
            ok = [b.key for b in child_batches] == ["key-events-00001"]
            ok = ok and spool.extend(parent_batch) is False  # the child is not the parent's lease owner
            ok = ok and spool.append("events", "from-child", [b"{}"]) == 1
            code = 0 if ok else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert spool.extend(parent_batch) is True
    assert spool.waiting() == 7
    spool.ack(parent_batch)
    assert [b.key for b in spool.lease("events", 10)] == ["from-child"]


# -- unusable spools -------------------------------------------------------------------------------------


def test_a_garbage_file_is_moved_aside_never_deleted(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    garbage = b"this is not a database, but somebody's data" * 100
    path.write_bytes(garbage)
    spool = Spool(tmp_path, HOST, KEY)
    assert spool.moved_aside is not None
    assert Path(spool.moved_aside).read_bytes() == garbage
    assert Path(spool.moved_aside).name.startswith(FILE_NAME + ".corrupt-")
    assert spool.append("events", "k", [b"{}"]) == 1, "a fresh spool replaces it"


def test_a_damaged_database_is_moved_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path, HOST, KEY)
    fill(spool, 200, per_batch=5)
    spool.close()
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    path = tmp_path / FILE_NAME
    data = bytearray(path.read_bytes())
    assert len(data) > 8 * 4096
    for offset in range(2 * 4096, 6 * 4096):  # pages 3..6: b-tree pages, scrambled
        data[offset] = (data[offset] * 7 + 13) & 0xFF
    path.write_bytes(bytes(data))
    reopened = Spool(tmp_path, HOST, KEY)
    assert reopened.moved_aside is not None
    assert Path(reopened.moved_aside).read_bytes() == bytes(data)
    assert reopened.waiting() == 0
    assert reopened.append("events", "k", [b"{}"]) == 1


def test_a_file_of_a_newer_version_is_left_untouched(tmp_path: Path) -> None:
    Spool(tmp_path, HOST, KEY).close()
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    conn.execute("UPDATE serla_schema SET version = ?", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = (tmp_path / FILE_NAME).read_bytes()
    with pytest.raises(SpoolUnavailable) as info:
        Spool(tmp_path, HOST, KEY)
    assert info.value.reason == "newer_schema"
    assert (tmp_path / FILE_NAME).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name] == []


def test_a_file_without_the_schema_table_is_migrated(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / FILE_NAME)
    conn.execute("CREATE TABLE unrelated (x INTEGER)")
    conn.execute("INSERT INTO unrelated VALUES (42)")
    conn.commit()
    conn.close()
    spool = Spool(tmp_path, HOST, KEY)
    assert spool.append("events", "k", [b"{}"]) == 1
    check = sqlite3.connect(tmp_path / FILE_NAME)
    assert check.execute("SELECT version FROM serla_schema").fetchall() == [(SCHEMA_VERSION,)]
    assert check.execute("SELECT x FROM unrelated").fetchall() == [(42,)], "nothing else is touched"
    check.close()


_HOLD_WRITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(120)
"""


def test_a_lock_held_too_long_is_a_transient_unavailability(tmp_path: Path) -> None:
    spool = Spool(tmp_path, HOST, KEY, busy_timeout=0.2)
    fill(spool, 1)
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITE_LOCK, str(tmp_path / FILE_NAME)],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "locked"
            with pytest.raises(SpoolUnavailable) as info:
                spool.append("events", "k2", [b"{}"])
            assert info.value.reason == "locked" and info.value.transient
            with pytest.raises(SpoolUnavailable):
                spool.lease("events")
            assert spool.waiting() == 3, "reading is not blocked by a writer (WAL)"
        finally:
            proc.kill()
            proc.wait(timeout=CHILD_TIMEOUT)
    assert spool.append("events", "k2", [b"{}"]) == 1, "usable again once the lock is gone"


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[bool]:
    """Mount a tmpfs at ``path`` (root only); yields False when mounting is not possible here."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield False
        return
    opts = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_a_read_only_directory(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    with tmpfs(target, "1m", read_only=True) as mounted:
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("running as root without mount: permissions can't make a directory read-only")
            target.chmod(0o555)
        with pytest.raises(SpoolUnavailable) as info:
            Spool(target, HOST, KEY)
        assert info.value.reason in ("read_only", "cannot_open"), info.value
        with pytest.raises(SpoolUnavailable):
            Spool(target / "sub", HOST, KEY)


def test_a_spool_whose_file_system_became_read_only(tmp_path: Path) -> None:
    target = tmp_path / "fs"
    with tmpfs(target, "4m") as mounted:
        if not mounted:
            pytest.skip("needs root to remount a tmpfs read-only")
        spool = Spool(target, HOST, KEY)
        fill(spool, 3)
        spool.close()
        done = subprocess.run(["mount", "-o", "remount,ro", str(target)], capture_output=True)
        assert done.returncode == 0, done.stderr
        try:
            reopened = Spool(target, HOST, KEY)
        except SpoolUnavailable as exc:
            assert exc.reason in ("read_only", "cannot_open"), exc
        else:
            with pytest.raises(SpoolUnavailable) as info:
                reopened.append("events", "more", [b"{}"])
            assert info.value.reason in ("read_only", "cannot_open"), info.value


def test_a_full_disk(tmp_path: Path) -> None:
    target = tmp_path / "small"
    with tmpfs(target, "256k") as mounted:
        if not mounted:
            pytest.skip("no tmpfs here (see test_a_file_size_limit for the unprivileged variant)")
        filler = target / "filler"
        filler.write_bytes(b"\0" * 64 * 1024)  # someone else's file on the same disk
        spool = Spool(target, HOST, KEY)
        written = 0
        with pytest.raises(SpoolUnavailable) as info:
            for i in range(1000):  # 1000 x 4 KB = 4 MB > 256 KB: the disk fills long before the end
                written += spool.append("events", f"k{i}", [os.urandom(2048).hex().encode()])
        assert info.value.reason == "disk_full", info.value
        assert written > 0
        spool.close()
        filler.unlink()  # space again
        again = Spool(target, HOST, KEY)
        assert again.waiting() == written, "what was committed before the disk filled is still there"
        leased = again.lease("events", 1000)
        assert [b.key for b in leased] == [f"k{i}" for i in range(written)]
        again.ack(*leased)
        assert again.waiting() == 0


_FSIZE_LIMITED = """
import resource, signal, sys
from serla._spool import Spool, SpoolUnavailable
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))
spool = Spool(sys.argv[1], sys.argv[2], sys.argv[3])
written = 0
try:
    for i in range(1000):
        written += spool.append("events", f"k{i}", [b"x" * 4000])
except SpoolUnavailable as exc:
    print(exc.reason, written)
else:
    print("no-error", written)
"""


def test_a_file_size_limit(tmp_path: Path) -> None:
    done = run_child(_FSIZE_LIMITED, str(tmp_path), HOST, KEY)
    assert done.returncode == 0, done.stderr
    reason, written = done.stdout.split()
    assert reason in ("disk_full", "io_error"), done.stdout
    assert 0 < int(written) < 1000 * 4000
    spool = Spool(tmp_path, HOST, KEY)
    assert spool.waiting() == int(written), "every batch committed before the limit is there"


def test_extend_row_grows_a_free_batch_only(tmp_path: Path) -> None:
    spool = Spool(tmp_path, HOST, KEY, max_bytes=10_000)
    assert spool.append("events", "k", [b"a"]) == 1
    assert spool.extend_row("events", "k", [b"b", b"c"], max_events=3, max_bytes=1000)
    assert not spool.extend_row("events", "k", [b"d"], max_events=3, max_bytes=1000), "3 events at most"
    assert not spool.extend_row("events", "nope", [b"d"], max_events=10, max_bytes=1000), "no such batch"
    (batch,) = spool.lease("events")
    assert batch.items == [b"a", b"b", b"c"] and batch.key == "k"
    assert not spool.extend_row("events", "k", [b"d"], max_events=10, max_bytes=1000), "leased: not grown"
    spool.park(batch)
    assert not spool.extend_row("events", "k", [b"d"], max_events=10, max_bytes=1000), "parked: not grown"
    other = Spool(tmp_path, HOST, KEY)
    assert not other.extend_row("events", "k", [b"d"], max_events=10, max_bytes=1000)
    assert not spool.extend_row("events", "k", [b"x" * 20_000], max_events=10, max_bytes=10**6)


def test_park_lets_another_process_take_the_batch_and_reacquire_notices(tmp_path: Path) -> None:
    holder = Spool(tmp_path, HOST, KEY)
    other = Spool(tmp_path, HOST, KEY)
    fill(holder, 1)
    (batch,) = holder.lease("events")
    assert other.lease("events") == []
    holder.park(batch)  # waiting out a backoff: anyone may take it meanwhile
    assert holder.reacquire(batch), "nobody took it: the holder takes it back"
    assert other.lease("events") == []
    holder.park(batch)
    (taken,) = other.lease("events")
    assert taken.key == batch.key
    assert not holder.reacquire(batch), "another process holds it now"
    other.ack(taken)
    assert not holder.reacquire(batch), "gone: delivered by the other process"


def test_replace_keeps_the_rest_of_a_partly_delivered_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path, HOST, KEY)
    spool.append("events", "k", [b"1", b"2", b"3", b"4"])
    (batch,) = spool.lease("events")
    spool.replace(batch, [b"3", b"4"])
    (rest,) = spool.lease("events")
    assert rest.items == [b"3", b"4"] and rest.key == "k"
    assert spool.size() == 2
    spool.replace(rest, [])
    assert spool.waiting() == 0
