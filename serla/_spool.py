"""The durable spool: batches that could not be delivered yet, kept on disk in one SQLite file.

One ``Spool`` object is one process's connection to a spool directory. Several processes (gunicorn
workers, overlapping cron runs) may share a directory: the file is in WAL mode and every write is a short
``BEGIN IMMEDIATE`` transaction, so they serialise on SQLite's own file lock.

Rows and who sends them:

* A row is one batch: the events (or, for the ``errors`` and ``llm`` lanes, the one request body) that go
  out in one request, with the idempotency key they were first given. The key never changes, so a batch
  sent twice (a process died after the server answered but before it deleted the row) is counted once by
  the server: delivery is *at least once* and, within the server's idempotency window, effectively once.
* Rows carry a tag, the SHA-256 of ``host`` and the API key (never the key itself), and are leased only by
  a spool opened with the same host and key: rows of another project wait for their own client.
* :meth:`Spool.lease` marks rows as held by this process until ``now + lease_seconds`` (wall clock: the
  holder may be another process). A holder that dies (``kill -9``) never acks or releases; once its lease
  expires another process leases the rows again. A row is thus sent by one process at a time, except
  when a lease outlives ``lease_seconds`` (the holder then calls :meth:`Spool.extend`).

What makes a spool unusable raises :class:`SpoolUnavailable` (with a ``reason`` code): a directory that
can't be created or written, a full disk, a lock held longer than ``busy_timeout``, a file written by a
newer serla-py. The caller warns once and goes on in memory. A corrupt file found at open is moved aside
(renamed ``<file>.corrupt-<time>-<pid>``, never deleted) and a fresh one is started.

The size bound (``max_bytes``) counts the bytes of the spooled events (the file adds SQLite's pages and
the WAL on top, typically a few percent). A batch that doesn't fit is refused whole:
:meth:`Spool.append` returns 0 and the caller counts the drop.

Schema versions: the ``serla_schema`` table holds the file's version. Opening a file of an older version
runs the migrations from it to :data:`SCHEMA_VERSION` in one transaction; a file of a newer version is
left untouched and the spool is unavailable (the newer SDK that wrote it will deliver it).

Durability: ``synchronous=NORMAL`` in WAL mode: a committed batch survives the process being killed;
a power loss may lose the last transactions (the OS had not written them yet). Named in ``docs/spool.md``.

Only the standard library (``sqlite3``, ``hashlib``); imported by the worker when a client has a spool.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from typing import Any, Callable, Final

from serla._config import log_debug, warn_limited
from serla._encode import MAX_REQUEST_BYTES

SCHEMA_VERSION: Final = 1
"""The schema this version of serla-py writes."""

FILE_NAME: Final = "serla-spool.sqlite3"
DEFAULT_MAX_BYTES: Final = 100 * 1024 * 1024
"""100 MiB of spooled events per directory (about 300,000 typical events)."""
DEFAULT_LEASE_SECONDS: Final = 60.0
DEFAULT_BUSY_TIMEOUT: Final = 2.0
"""How long an operation waits for another process's write lock before the spool is given up."""

_WAL_LIMIT: Final = 4 * 1024 * 1024

# A forked child's copies of the parent's connections: never closed (see ``Spool.after_fork``).
_ABANDONED: list[Any] = []

_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    # version reached -> statements that take a file from the previous version to it. Version 0 is a
    # file without the ``serla_schema`` table (new, or created by something else and empty).
    1: (
        "CREATE TABLE serla_schema (version INTEGER NOT NULL)",
        "INSERT INTO serla_schema (version) VALUES (0)",
        "CREATE TABLE identities (tag TEXT PRIMARY KEY, host TEXT NOT NULL, key_hint TEXT NOT NULL)",
        "CREATE TABLE batches ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " tag TEXT NOT NULL,"
        " lane TEXT NOT NULL,"
        " key TEXT NOT NULL,"
        " created REAL NOT NULL,"
        " events INTEGER NOT NULL,"
        " bytes INTEGER NOT NULL,"
        " lease_until REAL NOT NULL DEFAULT 0,"
        " lease_owner TEXT,"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " payload BLOB NOT NULL)",  # last: the other columns are read without touching overflow pages
        "CREATE UNIQUE INDEX batches_key ON batches (tag, lane, key)",
        "CREATE INDEX batches_pick ON batches (tag, lane, id)",
    ),
}


class SpoolUnavailable(Exception):
    """The spool can't be used; the client goes on in memory.

    Attributes:
        reason: A short code: ``read_only``, ``disk_full``, ``locked``, ``corrupt``, ``newer_schema``,
            ``io_error``, ``cannot_open``, ``closed`` or ``error``.
        transient: True when the same operation may work a moment later (``locked``): the caller may
            retry instead of giving the spool up.
    """

    def __init__(self, reason: str, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.transient = transient


class SpooledBatch:
    """A batch leased from the spool.

    Attributes:
        id: The row id.
        lane: ``events``, ``errors`` or ``llm``.
        key: Its idempotency key (the same on every send, by any process).
        items: The encoded events (or the one request body of an ``errors``/``llm`` record).
        created: When it was spooled (epoch seconds).
        attempts: How many times it was leased before, this one included.
    """

    __slots__ = ("attempts", "created", "id", "items", "key", "lane", "owner")

    def __init__(
        self, id: int, lane: str, key: str, items: list[bytes], created: float, attempts: int, owner: str
    ) -> None:
        self.id = id
        self.lane = lane
        self.key = key
        self.items = items
        self.created = created
        self.attempts = attempts
        self.owner = owner

    def __repr__(self) -> str:
        return f"<SpooledBatch id={self.id} lane={self.lane} key={self.key} events={len(self.items)}>"


def identity_tag(host: str, api_key: str) -> str:
    """The SHA-256 (hex) that stands for a host and API key in the spool; the key itself is never stored."""
    return hashlib.sha256(f"serla-spool\n{host}\n{api_key}".encode()).hexdigest()


def key_hint(api_key: str) -> str:
    """What ``serla spool status`` shows of a key: its kind and last four characters (``sk_live_...f00d``)."""
    prefix = api_key[:8] if api_key.startswith(("sk_live_", "pk_live_")) else ""
    return f"{prefix}...{api_key[-4:]}" if len(api_key) > 12 else f"{prefix}..."


def pack(items: list[bytes]) -> bytes:
    """Items as one blob: each a 4-byte big-endian length and its bytes."""
    return b"".join(len(item).to_bytes(4, "big") + item for item in items)


def unpack(blob: bytes) -> list[bytes]:
    """The items of a :func:`pack` blob.

    Raises:
        ValueError: If the blob is truncated.
    """
    out = []
    i, n = 0, len(blob)
    while i < n:
        size = int.from_bytes(blob[i : i + 4], "big")
        i += 4
        if i + size > n:
            raise ValueError("truncated spool row")
        out.append(bytes(blob[i : i + size]))
        i += size
    return out


def classify(exc: BaseException) -> SpoolUnavailable:
    """Turn an ``sqlite3`` or ``OSError`` exception into a :class:`SpoolUnavailable` with a reason."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, SpoolUnavailable):
        return exc
    if "readonly" in low or "read-only" in low or isinstance(exc, PermissionError):
        return SpoolUnavailable("read_only", f"the spool is read-only: {text}")
    if "full" in low or getattr(exc, "errno", None) == 28:
        return SpoolUnavailable("disk_full", f"the disk holding the spool is full: {text}")
    if "locked" in low or "busy" in low:
        return SpoolUnavailable("locked", f"another process holds the spool's lock: {text}", transient=True)
    if "not a database" in low or "malformed" in low or "corrupt" in low:
        return SpoolUnavailable("corrupt", f"the spool file is corrupt: {text}")
    if "unable to open" in low:
        return SpoolUnavailable("cannot_open", f"the spool file can't be opened: {text}")
    if "i/o" in low or isinstance(exc, OSError):
        return SpoolUnavailable("io_error", f"the spool can't be written: {text}")
    return SpoolUnavailable("error", f"the spool failed: {type(exc).__name__}: {text}")


class Spool:
    """One process's connection to a spool directory (thread-safe; call :meth:`after_fork` in a child).

    Args:
        directory: The spool directory (created if missing). The file is ``<directory>/serla-spool.sqlite3``.
        host: The server's base URL the rows are for. ``None`` (with ``api_key=None``) opens the spool for
            :meth:`status` only.
        api_key: The API key the rows are for (stored only as part of a SHA-256 tag).
        max_bytes: The most bytes of events the directory holds, all hosts and keys together.
        lease_seconds: How long a leased batch stays reserved for this process.
        busy_timeout: How long an operation waits for another process's lock, in seconds.
        clock: The wall clock (epoch seconds; injectable). Leases are compared across processes, so it is
            ``time.time``, not a monotonic clock.

    Raises:
        SpoolUnavailable: If the spool can't be opened or used (the reason is in the exception).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        host: str | None = None,
        api_key: str | None = None,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = os.fspath(directory)
        self.path = os.path.join(self.directory, FILE_NAME)
        self.host = host
        self._tag = identity_tag(host, api_key) if host is not None and api_key is not None else None
        self._hint = key_hint(api_key) if api_key is not None else ""
        self.max_bytes = max_bytes
        self.lease_seconds = lease_seconds
        self.busy_timeout = busy_timeout
        self._clock = clock
        self.moved_aside: str | None = None  # where a corrupt file was moved, if one was
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._owner = f"{os.getpid()}-{os.urandom(6).hex()}"
        self._conn: sqlite3.Connection | None = None
        self._inode: int | None = None  # the file opened, to move aside only that one if it is corrupt
        self._closed = False
        self._identity_saved = False  # the host and key hint, for ``status``: saved with the first batch
        self._conn = self._open()

    # -- opening -----------------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise classify(exc) from None
        try:
            return self._connect()
        except SpoolUnavailable as exc:
            if exc.reason != "corrupt":
                raise
        self._move_aside()
        return self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            try:
                self._inode = os.stat(self.path).st_ino
            except FileNotFoundError:
                self._inode = None
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if not mode or str(mode[0]).lower() != "wal":
                raise SpoolUnavailable("io_error", f"the spool file can't use WAL mode (got {mode!r})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")  # the WAL shrinks back after a checkpoint
            check = conn.execute("PRAGMA quick_check").fetchone()
            if not check or check[0] != "ok":
                raise SpoolUnavailable("corrupt", f"the spool file is corrupt: {check!r}")
            if self._inode is None:
                self._inode = os.stat(self.path).st_ino
            self._migrate(conn)
            return conn
        except (sqlite3.Error, OSError, ValueError) as exc:
            _close_quietly(conn)
            raise classify(exc) from None
        except SpoolUnavailable:
            _close_quietly(conn)
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the file to :data:`SCHEMA_VERSION`, or refuse one written by a newer version."""
        version = _read_version(conn)
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise SpoolUnavailable(
                "newer_schema",
                f"the spool file was written by a newer serla-py (schema {version}, this one reads up to "
                f"{SCHEMA_VERSION}); it is left untouched",
            )
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _read_version(conn)  # another process may have migrated it meanwhile
            if version > SCHEMA_VERSION:
                raise SpoolUnavailable("newer_schema", f"the spool file has a newer schema ({version})")
            while version < SCHEMA_VERSION:
                version += 1
                for statement in _MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("UPDATE serla_schema SET version = ?", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _move_aside(self) -> None:
        """Rename a corrupt file (and its WAL) to ``<file>.corrupt-<time>-<pid>``; never delete it."""
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            return  # another process moved it already
        except OSError as exc:
            raise classify(exc) from None
        if self._inode is not None and current != self._inode:
            return  # another process moved it and started a fresh one: that one is fine
        target = f"{self.path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        try:
            os.rename(self.path, target)
        except FileNotFoundError:
            return
        except OSError as exc:
            message = f"the spool file is corrupt and can't be moved aside: {exc}"
            raise SpoolUnavailable("corrupt", message) from None
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.rename(self.path + suffix, target + suffix)
        self.moved_aside = target

    # -- operations --------------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self.after_fork()
        if self._closed:
            raise SpoolUnavailable("closed", "the spool was closed")
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _need_identity(self) -> str:
        if self._tag is None:
            raise ValueError("this spool was opened without a host and API key (status only)")
        return self._tag

    def append(self, lane: str, key: str, items: list[bytes]) -> int:
        """Spool one batch with its idempotency key.

        Args:
            lane: ``events`` (items are events of one ``/api/v1/events/batch`` request), ``errors`` or
                ``llm`` (one item: a whole request body).
            key: The batch's idempotency key. A batch with a key already spooled (same host, key, lane) is
                not spooled twice.
            items: The encoded events.

        Returns:
            The number of events written: ``len(items)``, or 0 when the batch would take the spool past
            ``max_bytes`` or a batch with that key is already there.

        Raises:
            SpoolUnavailable: If the spool can't be written.
        """
        tag = self._need_identity()
        if not items:
            return 0
        blob = pack(items)
        size = sum(map(len, items))
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    used = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM batches").fetchone()[0]
                    if used + size > self.max_bytes:
                        conn.execute("ROLLBACK")
                        return 0
                    if not self._identity_saved:
                        conn.execute(
                            "INSERT OR REPLACE INTO identities (tag, host, key_hint) VALUES (?, ?, ?)",
                            (tag, self.host, self._hint),
                        )
                    cur = conn.execute(
                        "INSERT OR IGNORE INTO batches (tag, lane, key, created, events, bytes, payload)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (tag, lane, key, self._clock(), len(items), size, blob),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise classify(exc) from None
            self._identity_saved = True
        return len(items) if cur.rowcount == 1 else 0

    def extend_row(self, lane: str, key: str, items: list[bytes], max_events: int, max_bytes: int) -> bool:
        """Add items to the end of this host and key's batch ``key`` while nobody holds it.

        For a writer that spools often (every second) but wants full requests: the batch grows until it
        is leased. Refused when the batch is leased (or gone), would hold more than ``max_events`` events
        or ``max_bytes`` bytes, or the spool would go past ``max_bytes`` of the spool.

        Returns:
            True when the items were added.

        Raises:
            SpoolUnavailable: If the spool can't be written.
        """
        tag = self._need_identity()
        size = sum(map(len, items))
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    row = conn.execute(
                        "SELECT id, events, bytes, payload FROM batches"
                        " WHERE tag = ? AND lane = ? AND key = ? AND lease_until = 0 AND lease_owner IS NULL",
                        (tag, lane, key),
                    ).fetchone()
                    ok = row is not None and row[1] + len(items) <= max_events and row[2] + size <= max_bytes
                    if ok:
                        used = conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM batches").fetchone()[0]
                        ok = used + size <= self.max_bytes
                    if ok:
                        conn.execute(
                            "UPDATE batches SET payload = ?, events = events + ?, bytes = bytes + ?"
                            " WHERE id = ?",
                            (bytes(row[3]) + pack(items), len(items), size, row[0]),
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise classify(exc) from None
        return ok

    def replace(self, batch: SpooledBatch, items: list[bytes]) -> None:
        """Keep only ``items`` of a leased batch (the rest was delivered or dropped) and release it.

        Raises:
            SpoolUnavailable: If the spool can't be written.
        """
        if not items:
            self.ack(batch)
            return
        self._write(
            "UPDATE batches SET payload = ?, events = ?, bytes = ?, lease_until = 0, lease_owner = NULL"
            " WHERE id = ? AND lease_owner = ?",
            (pack(items), len(items), sum(map(len, items)), batch.id, self._owner),
        )

    def row_ids(self, lane: str) -> dict[int, int]:
        """Row id -> events, for this host and key's batches in ``lane`` (leased or not).

        Raises:
            SpoolUnavailable: If the spool can't be read.
        """
        tag = self._need_identity()
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(
                    "SELECT id, events FROM batches WHERE tag = ? AND lane = ?", (tag, lane)
                ).fetchall()
            except (sqlite3.Error, OSError) as exc:
                raise classify(exc) from None
        return {int(i): int(n) for i, n in rows}

    def lease(
        self,
        lane: str,
        max_batches: int = 1,
        lease_seconds: float | None = None,
        keys: list[str] | None = None,
    ) -> list[SpooledBatch]:
        """Take up to ``max_batches`` of this host and key's batches that nobody holds, oldest first.

        A batch is free when it was never leased, was released, or its lease expired (its holder died or
        overran ``lease_seconds``). The batches are marked as held by this process until
        ``now + lease_seconds``.

        Args:
            lane: The lane to lease from.
            max_batches: The most batches to take.
            lease_seconds: How long to hold them (default: the spool's ``lease_seconds``).
            keys: Only batches with these idempotency keys (a process's own, when it is exiting).

        Returns:
            The leased batches (empty when there are none).

        Raises:
            SpoolUnavailable: If the spool can't be read or written.
        """
        tag = self._need_identity()
        hold = self.lease_seconds if lease_seconds is None else lease_seconds
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    now = self._clock()
                    sql = "SELECT id, key, created, attempts, payload FROM batches"
                    sql += " WHERE tag = ? AND lane = ? AND lease_until <= ?"
                    params: list[Any] = [tag, lane, now]
                    if keys is not None:
                        sql += f" AND key IN ({','.join('?' * len(keys))})"
                        params.extend(keys)
                    rows = conn.execute(
                        sql + " ORDER BY id LIMIT ?", (*params, max(1, max_batches))
                    ).fetchall()
                    if rows:
                        conn.executemany(
                            "UPDATE batches SET lease_until = ?, lease_owner = ?, attempts = attempts + 1"
                            " WHERE id = ?",
                            [(now + hold, self._owner, row[0]) for row in rows],
                        )
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except (sqlite3.Error, OSError, ValueError) as exc:
                raise classify(exc) from None
        out = []
        for row_id, key, created, attempts, payload in rows:
            try:
                items = unpack(payload)
            except ValueError as exc:
                raise classify(sqlite3.DatabaseError(f"malformed row {row_id}: {exc}")) from None
            out.append(SpooledBatch(row_id, lane, key, items, created, attempts + 1, self._owner))
        return out

    def ack(self, *batches: SpooledBatch) -> None:
        """Delete batches that were delivered (or that the server refused for good), in one transaction.

        Deleted whoever holds them now: if this process's lease had expired and another process took a
        batch, both send it with the same idempotency key and the server counts it once.

        Raises:
            SpoolUnavailable: If the spool can't be written.
        """
        if len(batches) == 1:
            self._write("DELETE FROM batches WHERE id = ?", (batches[0].id,))
            return
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany("DELETE FROM batches WHERE id = ?", [(b.id,) for b in batches])
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise classify(exc) from None

    def release(self, batch: SpooledBatch) -> None:
        """Give a leased batch back, for this or another process to send later (e.g. at shutdown).

        Raises:
            SpoolUnavailable: If the spool can't be written.
        """
        self._write(
            "UPDATE batches SET lease_until = 0, lease_owner = NULL WHERE id = ? AND lease_owner = ?",
            (batch.id, self._owner),
        )

    def extend(self, batch: SpooledBatch) -> bool:
        """Renew a lease for another ``lease_seconds`` (while a send waits out a backoff or rate limit).

        Returns:
            False if the batch is no longer held by this process (its lease expired and was taken, or it
            was deleted).

        Raises:
            SpoolUnavailable: If the spool can't be written.
        """
        now = self._clock()
        return (
            self._write(
                "UPDATE batches SET lease_until = ? WHERE id = ? AND lease_owner = ?",
                (now + self.lease_seconds, batch.id, self._owner),
            )
            == 1
        )

    def park(self, batch: SpooledBatch) -> None:
        """Let any process lease a batch this process holds, while it keeps it in memory.

        Unlike :meth:`release`, the batch is not grown by :meth:`extend_row` meanwhile (the holder would
        send and delete it without the new items). Take it back with :meth:`reacquire`.

        Raises:
            SpoolUnavailable: If the spool can't be written.
        """
        self._write(
            "UPDATE batches SET lease_until = 0 WHERE id = ? AND lease_owner = ?", (batch.id, self._owner)
        )

    def reacquire(self, batch: SpooledBatch) -> bool:
        """Take a batch back after :meth:`release` (or renew a lease), unless another process holds it now.

        Returns:
            False if another process holds the batch, or it is gone (delivered by another process).

        Raises:
            SpoolUnavailable: If the spool can't be written.
        """
        now = self._clock()
        return (
            self._write(
                "UPDATE batches SET lease_until = ?, lease_owner = ?"
                " WHERE id = ? AND (lease_owner = ? OR lease_until <= ?)",
                (now + self.lease_seconds, self._owner, batch.id, self._owner, now),
            )
            == 1
        )

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).rowcount
            except (sqlite3.Error, OSError) as exc:
                raise classify(exc) from None

    def waiting(self, lane: str | None = None) -> int:
        """The number of events of this host and key in the spool (leased or not), in one lane or all.

        Raises:
            SpoolUnavailable: If the spool can't be read.
        """
        tag = self._need_identity()
        sql = "SELECT COALESCE(SUM(events), 0) FROM batches WHERE tag = ?"
        params: tuple[Any, ...] = (tag,)
        if lane is not None:
            sql += " AND lane = ?"
            params = (tag, lane)
        with self._lock:
            conn = self._connection()
            try:
                return int(conn.execute(sql, params).fetchone()[0])
            except (sqlite3.Error, OSError) as exc:
                raise classify(exc) from None

    def size(self) -> int:
        """The bytes of events in the spool, all hosts and keys (what ``max_bytes`` bounds)."""
        with self._lock:
            conn = self._connection()
            try:
                return int(conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM batches").fetchone()[0])
            except (sqlite3.Error, OSError) as exc:
                raise classify(exc) from None

    def status(self) -> list[dict[str, Any]]:
        """What waits in the spool, per host, key and lane.

        Returns:
            One dict per host, key and lane: ``host``, ``key`` (a hint: ``sk_live_...f00d``), ``tag``,
            ``lane``, ``batches``, ``events``, ``leased`` (events held by a live lease), ``oldest``
            (epoch seconds) and ``bytes``; ``mine`` is True for this spool's own host and key.

        Raises:
            SpoolUnavailable: If the spool can't be read.
        """
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(
                    "SELECT b.tag, COALESCE(i.host, '?'), COALESCE(i.key_hint, '?'), b.lane, COUNT(*),"
                    " SUM(b.events), SUM(CASE WHEN b.lease_until > ? THEN b.events ELSE 0 END),"
                    " MIN(b.created), SUM(b.bytes)"
                    " FROM batches b LEFT JOIN identities i ON i.tag = b.tag"
                    " GROUP BY b.tag, b.lane ORDER BY MIN(b.created)",
                    (self._clock(),),
                ).fetchall()
            except (sqlite3.Error, OSError) as exc:
                raise classify(exc) from None
        return [
            {
                "host": host,
                "key": hint,
                "tag": tag,
                "lane": lane,
                "batches": int(batches),
                "events": int(events),
                "leased": int(leased),
                "oldest": float(oldest),
                "bytes": int(size),
                "mine": tag == self._tag,
            }
            for tag, host, hint, lane, batches, events, leased, oldest, size in rows
        ]

    # -- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection. Batches this process still holds stay leased until their lease expires."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            _close_quietly(conn)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connection and open a new one on the next operation.

        The parent's connection object is kept (never closed, never collected): closing SQLite's copy in
        the child could act on the parent's locks and WAL. The child gets a new lease owner id too.
        """
        if self._pid == os.getpid():
            return
        if self._conn is not None:
            _ABANDONED.append(self._conn)
        self._conn = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._owner = f"{os.getpid()}-{os.urandom(6).hex()}"

    def __repr__(self) -> str:
        return f"<Spool {self.path!r} host={self.host!r}>"


def _read_version(conn: sqlite3.Connection) -> int:
    has_table = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'serla_schema'"
    ).fetchone()
    if not has_table:
        return 0
    row = conn.execute("SELECT MAX(version) FROM serla_schema").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _close_quietly(conn: sqlite3.Connection | None) -> None:
    if conn is None:
        return
    with contextlib.suppress(sqlite3.Error):
        conn.close()


# -- the worker's side -------------------------------------------------------------------------------------

SPOOL_DELAY: Final = 1.0
"""The longest an accepted event waits in memory before the flusher writes it to the spool, in seconds."""
_SCAN_INTERVAL: Final = 5.0  # how often an idle pump looks for rows whose holder died
_POLL: Final = 0.25  # how often a pump looks again when every row is held by another process
_RECORD_LEASE: Final = 600.0  # error/LLM records found at open are held by the process that queued them


class _Row:
    """One of this process's batches on disk, not yet resolved."""

    __slots__ = ("created", "events", "key", "seqs", "size")

    def __init__(self, key: str, seqs: list[int], size: int, created: float) -> None:
        self.key = key
        self.seqs = seqs
        self.events = len(seqs)
        self.size = size
        self.created = created


class SpoolPump:
    """Drives a :class:`Spool` from a ``BatchWorker``'s delivery steps (``serla._worker``).

    With a spool, events go memory -> spool -> server. The worker's step asks the pump, under the
    worker's lock and without I/O, whether a write (:meth:`spool_due`) or a lease (:meth:`send_due`) is
    due, and then runs it outside the lock:

    * :meth:`spool_step` writes every event waiting in memory to the spool, at least every
      :data:`SPOOL_DELAY` seconds, growing the last batch on disk up to ``batch_size`` events while nobody
      holds it. Events on disk leave the memory bounds: memory holds about a second of events plus the
      request in flight.
    * :meth:`lease_step` leases the oldest free batch of this host and key (while rate limited, up to 100
      events of several batches, in one request) and hands it to the worker as the batch in flight; the
      worker's retry policy delivers it and :meth:`done` deletes it from the spool before the events count
      as resolved. Batches an earlier run left get negative sequence numbers: they count in ``pending``
      while in flight but never in a ``flush()`` target of this process's own events.
    * :meth:`stop` (at shutdown) writes what is left in memory to disk and leaves every batch there.

    Args:
        worker: The ``BatchWorker`` (its lock, buffers and counters are used as its own).
        spool: The open spool.
    """

    def __init__(self, worker: Any, spool: Spool) -> None:
        self.worker = worker
        self.spool = spool
        self.rows: collections.deque[_Row] = collections.deque()
        self.by_key: dict[str, _Row] = {}
        self.open: _Row | None = None  # the last row written: grown while nobody holds it
        self.broken: str | None = None
        self.stats: dict[str, int] = collections.defaultdict(int)
        found = spool.row_ids("events")
        self.earlier: dict[int, int] = found  # rows found at open: flush() waits for them too
        self.next_lease = 0.0  # no lease before this (clock): every row was held by others
        self.leased_at = 0.0
        self.parked = False  # the batch in flight waits out a hold with its lease freed
        self.next_spool = 0.0  # no write before this (clock): the file was locked by another process
        self.next_scan = 0.0
        self.closed_waiting: int | None = None  # events of this host and key on disk when the pump stopped
        self.stopped = False
        self.acks: list[SpooledBatch] = []  # lane records from the spool, resolved: delete them (worker lock)
        worker._spooling = True
        self._load_records()
        if found:
            n = sum(found.values())
            log_debug("serla: %d events of earlier runs wait in the spool %s", n, spool.path)

    # -- queries (any thread) ----------------------------------------------------------------------------

    def earlier_waiting(self) -> int:
        """Events found in the spool at open that are not delivered yet."""
        return sum(self.earlier.values())

    def snapshot(self) -> dict[str, Any]:
        """The spool's part of ``stats()``."""
        out: dict[str, Any] = {
            "dir": self.spool.directory,
            "spooled": self.stats["spooled"],
            "sent_from_spool": self.stats["sent_from_spool"],
            "from_earlier_runs": self.stats["from_earlier_runs"],
            "left_on_disk": self.stats["left"],
            "records_left_on_disk": self.stats["records_left"],
            "records_from_earlier_runs": self.stats["records_from_earlier_runs"],
            "error": self.broken,
        }
        if self.closed_waiting is not None or self.broken is not None:
            out["waiting"] = self.closed_waiting
            return out
        try:
            out["waiting"] = self.spool.waiting()
        except SpoolUnavailable as exc:
            out["waiting"] = None
            out["error"] = str(exc)
        return out

    def wait_idle(self, deadline: float | None) -> None:
        """At exit: wait until no request of a spooled batch is in flight (then none is cut short)."""
        w = self.worker
        with w._lock:
            while w._whole is not None and w._whole.row is not None and not self.parked:
                remaining = None if deadline is None else deadline - w._clock()
                if remaining is not None and remaining <= 0:
                    return
                w._progress.wait(remaining)

    def wait_earlier(self, deadline: float | None) -> bool:
        """Wait (``flush()``) until the rows found at open are delivered; False on timeout."""
        w = self.worker
        if w._exiting:
            return True  # the atexit hook: only this process's own events (see lease_step)
        with w._lock:
            while self.earlier and self.broken is None:
                if w._held_past(deadline):
                    return False
                remaining = None if deadline is None else deadline - w._clock()
                if remaining is not None and remaining <= 0:
                    return False
                w._progress.wait(remaining)
            return not self.earlier

    # -- planning (the worker's lock held, no I/O) ---------------------------------------------------------

    def spool_due(self, now: float, due: list[float]) -> bool:
        """Whether what waits in memory must go to disk now; else add when it must to ``due``."""
        w = self.worker
        n = len(w._buffer)
        if not n or self.stopped:
            return False
        if now < self.next_spool and not w._stop:
            due.append(self.next_spool - now)
            return False
        if w._stop or n >= w._batch_size or w._send_through > w._taken_seq:
            return True
        oldest = w._oldest_at if w._oldest_at is not None else now
        at = oldest + min(SPOOL_DELAY, w._interval)
        if now >= at:
            return True
        due.append(at - now)
        return False

    def send_due(self, now: float, due: list[float]) -> bool:
        """Whether a batch should be leased from the spool now (no batch is in flight)."""
        w = self.worker
        if w._stop or self.stopped:
            return False
        if now < self.next_lease:
            due.append(self.next_lease - now)
            return False
        if self.earlier and not w._exiting:
            return True
        if not self.rows:  # look now and then for rows whose holder died (its lease expired)
            if now >= self.next_scan:
                self.next_scan = now + _SCAN_INTERVAL
                return True
            due.append(self.next_scan - now)
            return False
        first = self.rows[0]
        if len(self.rows) > 1 or first.events >= w._batch_size or w._send_through >= first.seqs[0]:
            return True
        at = first.created + w._interval - w._interval_jitter
        if now >= at:
            return True
        due.append(at - now)
        return False

    # -- memory -> disk --------------------------------------------------------------------------------

    def spool_step(self) -> None:
        """Write every event waiting in memory to the spool (on the flusher thread, never the caller's)."""
        from serla._worker import _Batch, _body_size, _charge

        w = self.worker
        batches = []
        cap = max(1, w._batch_size)
        with w._lock:
            buf = w._buffer
            while buf:
                if len(buf) <= cap:
                    items = list(buf)
                    buf.clear()
                else:
                    items = [buf.popleft() for _ in range(cap)]
                size = _body_size(items)
                while size > MAX_REQUEST_BYTES and len(items) > 1:
                    last = items.pop()
                    buf.appendleft(last)
                    size -= len(last) + 1
                first = w._taken_seq + 1
                w._taken_seq += len(items)
                w._key_seq += 1
                key = f"{w._key_prefix}{w._key_seq:012x}"
                batches.append(_Batch(items, list(range(first, w._taken_seq + 1)), key, w._taken_seq))
                w._in_flight += len(items)  # on their way to disk
            w._oldest_at = None
        for i, batch in enumerate(batches):
            if self.broken is not None:
                self._back_to_memory(batches[i:])
                return
            parts = w._materialize(batch)
            for j, part in enumerate(parts):
                try:
                    self._write(part, _charge(part.items))
                except SpoolUnavailable as exc:
                    if not (exc.transient and not w._stop):
                        self._broke(exc)
                    self._back_to_memory(parts[j:] + batches[i + 1 :])
                    with w._lock:  # locked by another process: try again shortly, meanwhile in memory
                        self.next_spool = w._clock() + _POLL
                    return

    def _write(self, part: Any, charge: int) -> None:
        w = self.worker
        n = len(part.items)
        size = sum(map(len, part.items))
        cap = max(1, w._batch_size)
        row = self.open
        if (
            row is not None
            and row.events + n <= cap
            and row.size + size + row.events + n + 16 <= MAX_REQUEST_BYTES
            and row.key in self.by_key
            and self.spool.extend_row("events", row.key, part.items, cap, MAX_REQUEST_BYTES - 16)
        ):
            row.seqs.extend(part.seqs)
            row.events += n
            row.size += size
        elif self.spool.append("events", part.key, part.items):
            row = self.open = _Row(part.key, list(part.seqs), size, w._clock())
            self.rows.append(row)
            self.by_key[row.key] = row
        else:
            warn_limited(
                "spool_full",
                "serla: %d events dropped: the spool %s is full (spool_max_bytes=%d)",
                n,
                self.spool.directory,
                self.spool.max_bytes,
            )
            w._resolve(part, "spool_full")
            return
        with w._lock:
            w._in_flight -= n
            w._pending_bytes -= charge  # on disk: out of the memory bounds
            w._limit += n
            self.stats["spooled"] += n
            w._progress.notify_all()

    def _back_to_memory(self, batches: list[Any]) -> None:
        """The spool broke while writing: put these batches back in memory (or drop them if impossible)."""
        w = self.worker
        with w._lock:
            seqs = [s for b in batches for s in b.seqs]
            items = [i for b in batches for i in b.items]
            contiguous = bool(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            if contiguous and seqs[-1] == w._taken_seq:
                w._buffer.extendleft(reversed(items))
                w._taken_seq = seqs[0] - 1
                w._in_flight -= len(items)
                w._oldest_at = w._clock()
                return
        for b in batches:
            w._resolve(b, "spool_error")

    # -- disk -> server --------------------------------------------------------------------------------------

    def lease_step(self) -> None:
        """Lease the oldest free batch(es) of this host and key and make them the batch in flight."""
        from serla._worker import MAX_BATCH, _Batch, _body_size, _charge

        w = self.worker
        with w._lock:
            merge = MAX_BATCH // max(1, w._batch_size) if w._pace else 1
            # Exiting (the atexit hook): only this process's own batches, so that exit never cuts short
            # a request of someone else's batch (its lease would hold it back from the next run).
            own = [row.key for row in self.rows][:500] if w._exiting else None
        if own == []:
            with w._lock:
                self.next_lease = w._clock() + _POLL
            return
        try:
            leased = self.spool.lease("events", merge, keys=own)
        except SpoolUnavailable as exc:
            if not exc.transient:
                self._broke(exc)
            with w._lock:
                self.next_lease = w._clock() + _POLL
            return
        now = w._clock()
        if not leased:
            with w._lock:
                self.next_lease = now + _POLL
            self._reconcile()
            return
        take: list[SpooledBatch] = []
        events = 0
        for row in leased:  # up to 100 events and MAX_REQUEST_BYTES in one request
            items = [i for r in take for i in r.items] + row.items
            if take and (events + len(row.items) > MAX_BATCH or _body_size(items) > MAX_REQUEST_BYTES):
                break
            take.append(row)
            events += len(row.items)
        self._release_quietly(leased[len(take) :])
        items, seqs = [], []
        mine_events = 0
        last = 0
        for row in take:
            mine = self.by_key.get(row.key)
            items.extend(row.items)
            if mine is not None:
                seqs.extend(mine.seqs)
                mine_events += len(mine.seqs)
                last = max(last, mine.seqs[-1])
                if mine is self.open:
                    self.open = None  # leased: no longer grown
            else:
                seqs.extend([-1] * len(row.items))  # an earlier run's: never in this process's flush()
        with w._lock:
            w._key_seq += 1
            key = take[0].key if len(take) == 1 else f"{w._key_prefix}{w._key_seq:012x}"
            batch = _Batch(items, seqs, key, last)
            w._pending += len(items) - mine_events  # an earlier run's events count while in flight
            w._pending_bytes += _charge(items)
            w._limit -= mine_events
            w._in_flight = len(items)
            w._todo.append(batch)
            whole = _Batch([], [], key, last)
            whole.row = take
            w._whole = whole
            self.leased_at = now
            self.parked = False

    def renew(self, whole: Any) -> bool:
        """Before a resend (or a send long after the lease): take the lease again. False: another process
        took the batch over (or delivered it) meanwhile; it is its business now."""
        w = self.worker
        if not self.parked and w._clock() - self.leased_at < self.spool.lease_seconds / 3:
            return True
        rows = whole.row
        try:
            kept = [row for row in rows if self.spool.reacquire(row)]
        except SpoolUnavailable:
            return True  # can't tell: send it (at least once)
        self.leased_at = w._clock()
        self.parked = False
        if len(kept) == len(rows):
            return True
        whole.row = None
        self._release_quietly(kept)
        self._let_go(taken=True, rows=rows)
        return False

    def park(self, whole: Any) -> None:
        """The batch in flight waits out a backoff or hold: free its lease meanwhile, so that a process
        killed while waiting (or exiting) leaves it to the next one at once, not after the lease."""
        if not self.parked:
            for row in whole.row:
                with contextlib.suppress(SpoolUnavailable):
                    self.spool.park(row)
            self.parked = True

    def done(self, whole: Any) -> None:
        """The batch in flight is resolved (delivered, or dropped by the server): delete it from disk."""
        rows = whole.row
        whole.row = None
        w = self.worker
        try:
            self.spool.ack(*rows)
        except SpoolUnavailable as exc:
            if exc.transient:  # locked by another process a moment: deleted on a later step
                with w._lock:
                    self.acks.extend(rows)
            else:
                self._broke(exc)
        with w._lock:
            for row in rows:
                if not self._unlist(row):
                    self.stats["from_earlier_runs"] += len(row.items)
                self.earlier.pop(row.id, None)
            self.stats["sent_from_spool"] += sum(len(r.items) for r in rows)
            w._progress.notify_all()

    def _reconcile(self) -> None:
        """Nothing free to lease: rows of ours or found at open that are gone were sent by another process."""
        w = self.worker
        try:
            ids = self.spool.row_ids("events")
            present = self._keys_present()
        except SpoolUnavailable:
            return
        with w._lock:
            for row_id in [i for i in self.earlier if i not in ids]:
                del self.earlier[row_id]
            for row in list(self.rows):
                if row.key not in present:  # another process delivered it: resolved, not by us
                    n = len(row.seqs)
                    w._pending -= n
                    w._limit -= n
                    w._done_seq = max(w._done_seq, row.seqs[-1])
                    self.rows.remove(row)
                    del self.by_key[row.key]
                    if row is self.open:
                        self.open = None
            w._progress.notify_all()

    def _keys_present(self) -> set[str]:
        keys = [row.key for row in self.rows]
        if not keys:
            return set()
        spool = self.spool
        with spool._lock:
            conn = spool._connection()
            try:
                marks = ",".join("?" * len(keys))
                found = conn.execute(
                    f"SELECT key FROM batches WHERE tag = ? AND lane = 'events' AND key IN ({marks})",
                    (spool._tag, *keys),
                ).fetchall()
            except sqlite3.Error as exc:
                raise classify(exc) from None
        return {k for (k,) in found}

    # -- lanes (errors, LLM records) -------------------------------------------------------------------

    def _load_records(self) -> None:
        """Queue the error and LLM records an earlier run left in the spool (held by this process)."""
        from serla._worker import LANE_MAX_RECORDS, _Record

        w = self.worker
        if w._exiting:
            return  # opened by the atexit hook: it delivers nothing of earlier runs
        for name, lane in w._lanes.items():
            rows = self.spool.lease(name, LANE_MAX_RECORDS, lease_seconds=_RECORD_LEASE)
            if not rows:
                continue
            with w._lock:
                for row in rows:
                    for body in row.items:
                        record = _Record(body, row.key)
                        record.row = row
                        lane.buffer.append(record)
                        lane.accepted += 1
                        lane.queued_bytes += len(body)
                self.stats["records_from_earlier_runs"] += len(rows)
            log_debug("serla: %d %s records of earlier runs queued from the spool", len(rows), name)

    def ack_records(self) -> None:
        """Delete the rows resolved since the last step: lane records, and batches a lock kept on disk."""
        w = self.worker
        with w._lock:
            rows, self.acks = self.acks, []
        if rows and self.broken is None:
            try:
                self.spool.ack(*rows)
            except SpoolUnavailable as exc:
                if exc.transient and not w._stop:
                    with w._lock:
                        self.acks[:0] = rows
                else:
                    self._broke(exc)

    def _leave_records(self) -> None:
        """At stop: the error and LLM records not delivered go to the spool instead of being dropped."""
        w = self.worker
        left: list[tuple[str, Any]] = []
        with w._lock:
            for name, lane in w._lanes.items():
                records = ([lane.current] if lane.current is not None else []) + list(lane.buffer)
                if lane.disabled or not records:
                    continue
                lane.current = None
                lane.buffer.clear()
                lane.queued_bytes = 0
                lane.done += len(records)
                lane.lost += len(records)  # not delivered by this process: flush() says so
                left.extend((name, r) for r in records)
        dropped: list[str] = []
        for name, record in left:
            try:
                if record.row is not None:
                    self.spool.release(record.row)  # still there: give it back
                elif not self.spool.append(name, record.key, [record.body]):
                    dropped.append(name)
                    continue
                self.stats["records_left"] += 1
            except SpoolUnavailable:
                dropped.append(name)
        if dropped:
            with w._lock:
                for name in dropped:
                    w._lanes[name].dropped["shutdown"] += 1
            warn_limited(
                "spool_records_lost", "serla: %d records were not delivered before shutdown", len(dropped)
            )

    # -- stopping and giving up ------------------------------------------------------------------------

    def stop(self) -> None:
        """At shutdown: write what is in memory to disk and leave every batch of ours there. Once."""
        if self.stopped:
            return
        if self.broken is None and self.worker._buffer:
            self.spool_step()
        if self.broken is None:
            self.ack_records()
            self._leave_records()
        if self.broken is not None:
            return
        w = self.worker
        whole = w._whole
        if whole is not None and whole.row is not None and w._todo:
            rows = whole.row
            items = [i for part in w._todo for i in part.items]
            try:
                if len(rows) == 1 and len(items) < len(rows[0].items):
                    self.spool.replace(rows[0], items)  # part of it was delivered: keep the rest only
                else:
                    self._release_quietly(rows)
            except SpoolUnavailable as exc:
                self._broke(exc)
            whole.row = None
            self._let_go(taken=False, rows=rows)
        self._leave_rows()
        try:
            self.closed_waiting = self.spool.waiting()
        except SpoolUnavailable:
            self.closed_waiting = None
        if self.stats["left"]:
            log_debug(
                "serla: %d events left in the spool %s for the next run", self.stats["left"], self.spool.path
            )
        self.stopped = True
        self.spool.close()

    def _release_quietly(self, rows: list[SpooledBatch]) -> None:
        for row in rows:
            with contextlib.suppress(SpoolUnavailable):
                self.spool.release(row)

    def _unlist(self, row: SpooledBatch) -> bool:
        """Forget this process's batch for ``row`` (caller holds the worker's lock); False if none."""
        mine = self.by_key.pop(row.key, None)
        if mine is None:
            return False
        self.rows.remove(mine)
        if mine is self.open:
            self.open = None
        return True

    def _let_go(self, taken: bool, rows: list[SpooledBatch]) -> None:
        """The batch in flight stays on disk (stopping) or another process took it over: resolve it here
        without counting it as delivered or dropped."""
        from serla._worker import _charge

        w = self.worker
        with w._lock:
            for row in rows:
                self._unlist(row)
            parts = list(w._todo)
            w._todo.clear()
            for part in parts:
                n = len(part.items)
                w._pending -= n
                w._pending_bytes -= _charge(part.items)
                own = [s for s in part.seqs if s > 0]
                if not taken:
                    self.stats["left"] += len(own)
                    self._mark_lost(own)
            w._in_flight = 0
            if w._whole is not None:
                w._finish_batch()
            w._progress.notify_all()
        self.leased_at = 0.0

    def _mark_lost(self, seqs: list[int]) -> None:
        """Not delivered by this process (left on disk): ``flush()`` returns False for them (lock held)."""
        w = self.worker
        lost = w._lost
        for s in seqs:
            if len(lost) == lost.maxlen:
                w._lost_evicted = max(w._lost_evicted, lost[0])
            lost.append(s)

    def _leave_rows(self) -> None:
        """Every batch of ours still on disk stays there, for the next run."""
        w = self.worker
        with w._lock:
            for row in self.rows:
                n = len(row.seqs)
                w._pending -= n
                w._limit -= n
                self.stats["left"] += n
                self._mark_lost(row.seqs)
                w._done_seq = max(w._done_seq, row.seqs[-1])
            self.rows.clear()
            self.by_key.clear()
            self.open = None
            self.earlier.clear()
            w._progress.notify_all()

    def _broke(self, exc: SpoolUnavailable) -> None:
        """The spool can't be used any more: one WARNING; our batches on disk stay there; go on in memory."""
        if self.broken is not None:
            return
        self.broken = str(exc)
        warn_limited(
            "spool_unavailable",
            "serla: the spool %s can't be used (%s); events are kept in memory only",
            self.spool.directory,
            exc,
        )
        self._leave_rows()
        with self.worker._lock:
            self.worker._limit = self.worker._max
            self.worker._spooling = False
