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

import contextlib
import hashlib
import os
import sqlite3
import threading
import time
from typing import Any, Callable, Final, Optional

SCHEMA_VERSION: Final = 1
"""The schema this version of serla-py writes."""

FILE_NAME: Final = "serla-spool.sqlite3"
DEFAULT_MAX_BYTES: Final = 100 * 1024 * 1024
"""100 MiB of spooled events per directory (about 300,000 typical events)."""
DEFAULT_LEASE_SECONDS: Final = 60.0
DEFAULT_BUSY_TIMEOUT: Final = 2.0
"""How long an operation waits for another process's write lock before the spool is given up."""

LANES: Final = ("events", "errors", "llm")
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
        host: Optional[str] = None,
        api_key: Optional[str] = None,
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

    def lease(self, lane: str, max_batches: int = 1) -> list[SpooledBatch]:
        """Take up to ``max_batches`` of this host and key's batches that nobody holds, oldest first.

        A batch is free when it was never leased, was released, or its lease expired (its holder died or
        overran ``lease_seconds``). The batches are marked as held by this process until
        ``now + lease_seconds``.

        Args:
            lane: The lane to lease from.
            max_batches: The most batches to take.

        Returns:
            The leased batches (empty when there are none).

        Raises:
            SpoolUnavailable: If the spool can't be read or written.
        """
        tag = self._need_identity()
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    now = self._clock()
                    rows = conn.execute(
                        "SELECT id, key, created, attempts, payload FROM batches"
                        " WHERE tag = ? AND lane = ? AND lease_until <= ? ORDER BY id LIMIT ?",
                        (tag, lane, now, max(1, max_batches)),
                    ).fetchall()
                    if rows:
                        conn.executemany(
                            "UPDATE batches SET lease_until = ?, lease_owner = ?, attempts = attempts + 1"
                            " WHERE id = ?",
                            [(now + self.lease_seconds, self._owner, row[0]) for row in rows],
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

    def _write(self, sql: str, params: tuple[Any, ...]) -> int:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).rowcount
            except (sqlite3.Error, OSError) as exc:
                raise classify(exc) from None

    def waiting(self, lane: Optional[str] = None) -> int:
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
