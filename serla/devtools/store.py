"""Where the local servers keep what they accept: events, sessions and people, per project.

:class:`MemoryStore` keeps everything in process memory (the default of
:class:`~serla.devtools.server.SerlaServer`); :class:`SQLiteStore` keeps it in an SQLite file, so
``serla dev`` survives restarts, and also keeps the requests the server refused for its page. Both are
keyed by project like the real server's tables: a person is ``(project, distinctId)``, a session belongs
to the project that used it first, and the monthly quota counts a set of projects' events by timestamp.

Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import threading
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import parse_qsl, urlencode

from serla.devtools.validation import dumps, parse_json, timestamp_epoch

if TYPE_CHECKING:
    import sqlite3

    from serla.devtools.wire import RecordedRequest, Response

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_KEEP_REJECTED",
    "DEFAULT_PROJECT",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "StoredEvent",
]

DEFAULT_PROJECT: Final = "default"
"""The project of every key when a server is given no projects of its own."""
DEFAULT_DB: Final = "serla-dev.db"
DEFAULT_KEEP_REJECTED: Final = 100
_BATCH_PATH: Final = "/api/v1/events/batch"
_MAX_REJECTED_BODY: Final = 64 * 1024  # bytes of a rejected request's body that are kept
_APPLICATION_ID: Final = 0x53524C41  # "SRLA" in PRAGMA application_id: marks a serla dev database
_SCHEMA_VERSION: Final = 2


@dataclass
class StoredEvent:
    """An event the server accepted and stored, with server-side metadata. Treat it as read-only.

    (Not a frozen dataclass only because frozen ones are about 3x slower to create.)

    Attributes:
        data: The event's known fields as the real server stores them (this is what
            :attr:`SerlaServer.events <serla.devtools.server.SerlaServer.events>` returns): unknown fields
            dropped; absent fields stay absent (no default ``properties`` or ``timestamp`` is filled in);
            a ``timestamp`` cut to milliseconds in ``toISOString()`` form; ``properties`` without a
            top-level ``__proto__`` key, with integers beyond +-(2^53-1) rounded as doubles and ``1e400``
            as ``None``; a ``sessionId`` replaced by :attr:`session_id` when the server replaced it.
        idempotency_key: The request's ``X-Idempotency-Key`` header, or ``None``.
        position: The event's index in its request (always ``0`` for ``POST /api/v1/events``).
        user_agent: The request's ``User-Agent`` header (``""`` when absent).
        event_id: The UUID the server assigned.
        session_id: The session the event was filed under: the client's ``sessionId`` if it is 32 hex
            characters and no other project used it, otherwise a fresh random one (as the real server does).
        endpoint: The path the event arrived on.
        received_at: Wall-clock receive time (``time.time()``).
        api_key: The API key that authenticated the request.
        project_id: The project the key belongs to.
    """

    data: dict[str, Any]
    idempotency_key: str | None
    position: int
    user_agent: str
    event_id: str = ""
    session_id: str = ""
    endpoint: str = _BATCH_PATH
    received_at: float = 0.0
    api_key: str = ""
    project_id: str = DEFAULT_PROJECT

    @property
    def time(self) -> float:
        """The event's time as the server counts it: its ``timestamp``, else the receive time."""
        stamp = self.data.get("timestamp")
        return timestamp_epoch(stamp) if type(stamp) is str else self.received_at


class Store(Protocol):
    """Where the server keeps events, sessions and identities.

    :class:`~serla.devtools.server.SerlaServer` serialises every call under its own lock, so an
    implementation doesn't need to be thread-safe, but its methods run on the server's connection threads
    (not the thread that created it).
    """

    def add_events(self, events: Sequence[StoredEvent]) -> None:
        """Append accepted events, in arrival order, and record their sessions' projects.

        Args:
            events: The events of one request.
        """
        ...

    def events(self) -> list[StoredEvent]:
        """Return every stored event in arrival order.

        Returns:
            A new list; the caller may keep it.
        """
        ...

    def event_count(self) -> int:
        """Return how many events are stored.

        Returns:
            The number of stored events.
        """
        ...

    def count_events_since(self, project_ids: Collection[str], since: float) -> int:
        """Count the events of some projects whose time (:attr:`StoredEvent.time`) is at or after ``since``.

        Args:
            project_ids: The projects (an account's, for the monthly quota).
            since: POSIX time.

        Returns:
            The number of such events.
        """
        ...

    def session_project(self, session_id: str) -> str | None:
        """Return the project that first used a session ID.

        Args:
            session_id: A 32-hex session ID.

        Returns:
            The project ID, or ``None`` for an unknown session.
        """
        ...

    def find_idempotency_key(self, key: str) -> StoredEvent | None:
        """Find the first event stored under an ``X-Idempotency-Key``.

        Args:
            key: A non-empty idempotency key.

        Returns:
            The first event stored with that key, or ``None``.
        """
        ...

    def identify(
        self, distinct_id: str, properties: Mapping[str, Any], project_id: str = DEFAULT_PROJECT
    ) -> str:
        """Upsert a person and shallow-merge ``properties`` into theirs.

        Args:
            distinct_id: The person's distinct ID.
            properties: Properties to merge: sent keys overwrite, other keys are kept.
            project_id: The person's project.

        Returns:
            The person's identity ID (a UUID string, stable for a project and distinct ID).
        """
        ...

    def identities(self, project_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Return every person's merged properties.

        Args:
            project_id: Only this project's people; ``None``: every project's (a distinct ID identified in
                two projects then appears once, with one of them).

        Returns:
            A new dict mapping distinct ID to a copy of the merged properties.
        """
        ...

    def clear(self) -> None:
        """Forget all events, sessions, identities and idempotency keys."""
        ...


class MemoryStore:
    """A :class:`Store` that keeps everything in process memory. Not thread-safe on its own."""

    def __init__(self) -> None:
        """Create an empty store."""
        self._events: list[StoredEvent] = []
        self._by_key: dict[str, StoredEvent] = {}
        self._people: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self._sessions: dict[str, str] = {}
        # Per project, each event's time as ``YYYY-MM-DDTHH:MM:SS.mmmZ``: in that form text order is time
        # order, so the quota counts without converting every timestamp.
        self._times: dict[str, list[str]] = {}

    def add_events(self, events: Sequence[StoredEvent]) -> None:
        """Append accepted events, in arrival order, and record their sessions' projects.

        Args:
            events: The events of one request.
        """
        self._events.extend(events)
        sessions = self._sessions
        for event in events:
            key = event.idempotency_key
            if key and key not in self._by_key:
                self._by_key[key] = event
            sessions.setdefault(event.session_id, event.project_id)
        received: tuple[float, str] = (-1.0, "")
        for event in events:
            stamp = event.data.get("timestamp")
            if type(stamp) is not str:
                if event.received_at != received[0]:
                    received = (event.received_at, iso(event.received_at))
                stamp = received[1]
            self._times.setdefault(event.project_id, []).append(stamp)

    def events(self) -> list[StoredEvent]:
        """Return every stored event in arrival order.

        Returns:
            A new list; the caller may keep it.
        """
        return list(self._events)

    def event_count(self) -> int:
        """Return how many events are stored.

        Returns:
            The number of stored events.
        """
        return len(self._events)

    def count_events_since(self, project_ids: Collection[str], since: float) -> int:
        """Count the events of some projects whose time is at or after ``since``.

        Args:
            project_ids: The projects.
            since: POSIX time.

        Returns:
            The number of such events.
        """
        start = iso(since)
        return sum(1 for p in project_ids for t in self._times.get(p, ()) if t >= start)

    def session_project(self, session_id: str) -> str | None:
        """Return the project that first used a session ID.

        Args:
            session_id: A 32-hex session ID.

        Returns:
            The project ID, or ``None``.
        """
        return self._sessions.get(session_id)

    def find_idempotency_key(self, key: str) -> StoredEvent | None:
        """Find the first event stored under an ``X-Idempotency-Key``.

        Args:
            key: A non-empty idempotency key.

        Returns:
            The first event stored with that key, or ``None``.
        """
        return self._by_key.get(key)

    def identify(
        self, distinct_id: str, properties: Mapping[str, Any], project_id: str = DEFAULT_PROJECT
    ) -> str:
        """Upsert a person and shallow-merge ``properties`` into theirs.

        Args:
            distinct_id: The person's distinct ID.
            properties: Properties to merge: sent keys overwrite, other keys are kept.
            project_id: The person's project.

        Returns:
            The person's identity ID (a UUID string, stable for a project and distinct ID).
        """
        person = self._people.get((project_id, distinct_id))
        if person is None:
            person = (str(uuid.uuid4()), {})
            self._people[(project_id, distinct_id)] = person
        person[1].update(properties)
        return person[0]

    def identities(self, project_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Return every person's merged properties.

        Args:
            project_id: Only this project's people; ``None``: every project's.

        Returns:
            A new dict mapping distinct ID to a copy of the merged properties.
        """
        return {
            distinct_id: dict(props)
            for (project, distinct_id), (_, props) in self._people.items()
            if project_id is None or project == project_id
        }

    def clear(self) -> None:
        """Forget all events, sessions, identities and idempotency keys."""
        self._events.clear()
        self._by_key.clear()
        self._people.clear()
        self._sessions.clear()
        self._times.clear()


# --------------------------------------------------------------------------------------------------------
# SQLite

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    name TEXT NOT NULL,
    distinct_id TEXT,
    timestamp TEXT,
    data TEXT NOT NULL,
    received_at REAL NOT NULL,
    idempotency_key TEXT,
    position INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    api_key TEXT NOT NULL,
    project_id TEXT NOT NULL DEFAULT 'default',
    event_time REAL
);
CREATE INDEX IF NOT EXISTS events_by_name ON events (name);
CREATE INDEX IF NOT EXISTS events_by_distinct_id ON events (distinct_id);
CREATE INDEX IF NOT EXISTS events_by_idempotency_key ON events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS people (
    project_id TEXT NOT NULL DEFAULT 'default',
    distinct_id TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (project_id, distinct_id)
);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    query TEXT NOT NULL,
    status INTEGER NOT NULL,
    idempotency_key TEXT,
    user_agent TEXT NOT NULL,
    body TEXT NOT NULL,
    body_size INTEGER NOT NULL,
    response TEXT NOT NULL
);
"""

# Version 1 (serla-py before the projects): events without project_id/event_time, people keyed by
# distinct_id only, no sessions table.
_MIGRATE_FROM_1: Final = """
ALTER TABLE events ADD COLUMN project_id TEXT NOT NULL DEFAULT 'default';
ALTER TABLE events ADD COLUMN event_time REAL;
ALTER TABLE people RENAME TO people_v1;
CREATE TABLE people (
    project_id TEXT NOT NULL DEFAULT 'default',
    distinct_id TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (project_id, distinct_id)
);
INSERT INTO people (distinct_id, identity_id, properties, updated_at)
    SELECT distinct_id, identity_id, properties, updated_at FROM people_v1;
DROP TABLE people_v1;
CREATE TABLE IF NOT EXISTS sessions (session_id TEXT PRIMARY KEY, project_id TEXT NOT NULL);
INSERT OR IGNORE INTO sessions (session_id, project_id) SELECT session_id, 'default' FROM events;
"""

_EVENT_COLUMNS: Final = (
    "seq, event_id, data, received_at, idempotency_key, position, session_id, endpoint, user_agent, api_key,"
    " project_id"
)
_MAIN_FIELDS: Final = frozenset({"name", "distinctId", "properties", "timestamp"})


def _dumps(value: Any) -> str:
    """JSON for the database: ASCII only, so any string (even one with a lone surrogate) can be stored."""
    return dumps(value, ensure_ascii=True)


def _loads(text: str) -> Any:
    """Read back what :func:`_dumps` wrote, at any depth."""
    return parse_json(text.encode("ascii"))


def iso(epoch: float) -> str:
    """Format a POSIX time like JavaScript's ``toISOString()``.

    Args:
        epoch: POSIX time.

    Returns:
        ``YYYY-MM-DDTHH:MM:SS.mmmZ``.
    """
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _redact_key(key: str) -> str:
    """Keep an API key recognisable without writing the secret to the database."""
    return f"{key[:8]}...{key[-4:]}" if len(key) >= 20 else "..."


def _redact_query(query: str) -> str:
    if "api_key" not in query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, _redact_key(v) if k == "api_key" else v) for k, v in pairs])


def _event_row(event: StoredEvent) -> tuple[Any, ...]:
    data = event.data
    distinct_id = data.get("distinctId")
    timestamp = data.get("timestamp")
    return (
        event.event_id,
        data["name"],
        distinct_id if isinstance(distinct_id, str) else None,
        timestamp if isinstance(timestamp, str) else None,
        _dumps(data),
        event.received_at,
        event.idempotency_key,
        event.position,
        event.session_id,
        event.endpoint,
        event.user_agent,
        _redact_key(event.api_key),
        event.project_id,
        event.time,
    )


def _stored_event(row: Sequence[Any]) -> StoredEvent:
    _, event_id, data, received_at, key, position, session_id, endpoint, user_agent, api_key, project = row
    return StoredEvent(
        data=_loads(data),
        idempotency_key=key,
        position=position,
        user_agent=user_agent,
        event_id=event_id,
        session_id=session_id,
        endpoint=endpoint,
        received_at=received_at,
        api_key=api_key,
        project_id=project,
    )


class SQLiteStore:
    """A :class:`Store` that keeps events, sessions, identities and rejected requests in SQLite.

    One connection is shared by every thread behind a lock (the JSON endpoints read it outside the
    server's own lock). A file database uses WAL journaling, so a crash loses at most the last request.

    API keys are not stored: :attr:`StoredEvent.api_key` comes back redacted (``sk_live_...abcd``), and so
    does an ``api_key`` query parameter of a rejected request.

    The file is marked with ``PRAGMA application_id``; opening an SQLite file that another program created
    fails instead of adding tables to it. A file written by an older ``serla dev`` is migrated in place.
    """

    def __init__(
        self, path: str | os.PathLike[str] = DEFAULT_DB, *, keep_rejected: int = DEFAULT_KEEP_REJECTED
    ):
        """Open (or create) the database.

        Args:
            path: The SQLite file, created if missing. ``":memory:"`` keeps everything in memory.
            keep_rejected: How many rejected requests to keep (the oldest are deleted first). ``0`` keeps
                none.

        Raises:
            ValueError: If ``keep_rejected`` is negative, or the file is an SQLite database that ``serla
                dev`` did not create or that a newer version created.
            sqlite3.Error: If the file can't be opened or is not an SQLite database.
        """
        if keep_rejected < 0:
            raise ValueError(f"keep_rejected must be >= 0, got {keep_rejected!r}")
        self._path = os.fspath(path)
        self._keep_rejected = keep_rejected
        self._lock = threading.RLock()
        self._local = threading.local()
        import sqlite3  # only serla dev needs it; the contract server and serla.testing never load it

        self._conn = sqlite3.connect(self._path, timeout=5.0, isolation_level=None, check_same_thread=False)
        try:
            self._init_schema()
        except BaseException:
            self._conn.close()
            raise

    def _init_schema(self) -> None:
        conn = self._conn
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables or version:
                raise ValueError(f"{self._path} is an SQLite database that serla dev did not create")
        elif app_id != _APPLICATION_ID:
            raise ValueError(f"{self._path} is an SQLite database that serla dev did not create")
        elif version > _SCHEMA_VERSION:
            raise ValueError(f"{self._path} was created by a newer version of serla dev")
        if self._path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        if version == 1:
            conn.executescript(f"BEGIN; {_MIGRATE_FROM_1} COMMIT;")
        conn.executescript(_SCHEMA)
        conn.execute("CREATE INDEX IF NOT EXISTS events_by_project_time ON events (project_id, event_time)")
        conn.execute(f"PRAGMA application_id={_APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and run the block in one transaction."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    @property
    def path(self) -> str:
        """The database file as given (``":memory:"`` for an in-memory database)."""
        return self._path

    def close(self) -> None:
        """Close the database. The store can't be used afterwards. Safe to call twice."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SQLiteStore:
        """Return the store.

        Returns:
            The store itself.
        """
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store."""
        self.close()

    # ---- the Store protocol ----------------------------------------------------------------------------

    def add_events(self, events: Sequence[StoredEvent]) -> None:
        """Append accepted events, in arrival order, and record their sessions' projects.

        Args:
            events: The events of one request.
        """
        rows = [_event_row(event) for event in events]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO events (event_id, name, distinct_id, timestamp, data, received_at,"
                " idempotency_key, position, session_id, endpoint, user_agent, api_key, project_id,"
                " event_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(
                "INSERT OR IGNORE INTO sessions (session_id, project_id) VALUES (?, ?)",
                [(event.session_id, event.project_id) for event in events],
            )

    def events(self) -> list[StoredEvent]:
        """Return every stored event in arrival order.

        Returns:
            A new list; the caller may keep it. ``api_key`` is redacted.
        """
        rows = self._query(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq")
        return [_stored_event(row) for row in rows]

    def event_count(self) -> int:
        """Return how many events are stored.

        Returns:
            The number of stored events.
        """
        return int(self._query("SELECT count(*) FROM events")[0][0])

    def count_events_since(self, project_ids: Collection[str], since: float) -> int:
        """Count the events of some projects whose time is at or after ``since``.

        Args:
            project_ids: The projects.
            since: POSIX time.

        Returns:
            The number of such events.
        """
        ids = list(project_ids)
        if not ids:
            return 0
        marks = ", ".join("?" * len(ids))
        rows = self._query(
            f"SELECT count(*) FROM events WHERE project_id IN ({marks})"
            " AND coalesce(event_time, received_at) >= ?",
            [*ids, since],
        )
        return int(rows[0][0])

    def session_project(self, session_id: str) -> str | None:
        """Return the project that first used a session ID.

        Args:
            session_id: A 32-hex session ID.

        Returns:
            The project ID, or ``None``.
        """
        rows = self._query("SELECT project_id FROM sessions WHERE session_id = ?", (session_id,))
        return str(rows[0][0]) if rows else None

    def find_idempotency_key(self, key: str) -> StoredEvent | None:
        """Find the first event stored under an ``X-Idempotency-Key``.

        A hit is also remembered for the calling thread (see :meth:`take_duplicate_flag`).

        Args:
            key: A non-empty idempotency key.

        Returns:
            The first event stored with that key, or ``None``.
        """
        rows = self._query(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE idempotency_key = ? ORDER BY seq LIMIT 1", (key,)
        )
        if not rows:
            return None
        self._local.duplicate = True
        return _stored_event(rows[0])

    def identify(
        self, distinct_id: str, properties: Mapping[str, Any], project_id: str = DEFAULT_PROJECT
    ) -> str:
        """Upsert a person and shallow-merge ``properties`` into theirs.

        Args:
            distinct_id: The person's distinct ID.
            properties: Properties to merge: sent keys overwrite, other keys are kept.
            project_id: The person's project.

        Returns:
            The person's identity ID (a UUID string, stable for a project and distinct ID).
        """
        with self._write() as conn:
            row = conn.execute(
                "SELECT identity_id, properties FROM people WHERE project_id = ? AND distinct_id = ?",
                (project_id, distinct_id),
            ).fetchone()
            if row is None:
                identity_id, merged = str(uuid.uuid4()), dict(properties)
            else:
                identity_id, merged = row[0], _loads(row[1])
                merged.update(properties)
            conn.execute(
                "INSERT OR REPLACE INTO people (project_id, distinct_id, identity_id, properties, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (project_id, distinct_id, identity_id, _dumps(merged), time.time()),
            )
        return str(identity_id)

    def identities(self, project_id: str | None = None) -> dict[str, dict[str, Any]]:
        """Return every person's merged properties.

        Args:
            project_id: Only this project's people; ``None``: every project's.

        Returns:
            A new dict mapping distinct ID to the merged properties.
        """
        if project_id is None:
            rows = self._query("SELECT distinct_id, properties FROM people ORDER BY distinct_id")
        else:
            rows = self._query(
                "SELECT distinct_id, properties FROM people WHERE project_id = ? ORDER BY distinct_id",
                (project_id,),
            )
        return {distinct_id: _loads(props) for distinct_id, props in rows}

    def clear(self) -> None:
        """Forget all events, sessions, identities, idempotency keys and rejected requests."""
        with self._write() as conn:
            conn.execute("DELETE FROM events")
            conn.execute("DELETE FROM sessions")
            conn.execute("DELETE FROM people")
            conn.execute("DELETE FROM rejected")

    # ---- dev extras ----------------------------------------------------------------------------------

    def reset_duplicate_flag(self) -> None:
        """Forget a duplicate seen by :meth:`find_idempotency_key` on the calling thread."""
        self._local.duplicate = False

    def take_duplicate_flag(self) -> bool:
        """Tell whether :meth:`find_idempotency_key` found a key on this thread since the last reset.

        Returns:
            ``True`` if the request being handled on this thread was a duplicate; the flag is then reset.
        """
        duplicate = bool(getattr(self._local, "duplicate", False))
        self._local.duplicate = False
        return duplicate

    def query_events(
        self, *, name: str | None = None, distinct_id: str | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], int]:
        """Return the newest events, optionally filtered, as JSON-ready dicts.

        Args:
            name: Only events with exactly this name (``None`` or ``""``: any).
            distinct_id: Only events with exactly this ``distinctId`` (``None`` or ``""``: any).
            limit: At most this many events.

        Returns:
            ``(events, matching)``: the events newest first, each with ``seq``, ``eventId``, ``name``,
            ``distinctId``, ``timestamp``, ``properties`` (``None`` when absent), ``otherFields`` (the
            other wire fields sent, e.g. ``pageUrl``), ``receivedAt``, ``idempotencyKey``, ``sessionId``,
            ``endpoint``, ``userAgent`` and ``projectId``; and how many stored events match the filters.
        """
        where: list[str] = []
        params: list[Any] = []
        if name:
            where.append("name = ?")
            params.append(name)
        if distinct_id:
            where.append("distinct_id = ?")
            params.append(distinct_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            matching = self._conn.execute(f"SELECT count(*) FROM events{clause}", params).fetchone()[0]
            rows = self._conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events{clause} ORDER BY seq DESC LIMIT ?", [*params, limit]
            ).fetchall()
        out = []
        for row in rows:
            event = _stored_event(row)
            data = event.data
            out.append(
                {
                    "seq": row[0],
                    "eventId": event.event_id,
                    "name": data.get("name"),
                    "distinctId": data.get("distinctId"),
                    "timestamp": data.get("timestamp"),
                    "properties": data.get("properties"),
                    "otherFields": {k: v for k, v in data.items() if k not in _MAIN_FIELDS},
                    "receivedAt": iso(event.received_at),
                    "idempotencyKey": event.idempotency_key,
                    "sessionId": event.session_id,
                    "endpoint": event.endpoint,
                    "userAgent": event.user_agent,
                    "projectId": event.project_id,
                }
            )
        return out, int(matching)

    def sessions(self, *, limit: int = 50, scan: int = 2000) -> dict[str, Any]:
        """Group the newest ``scan`` events by the session id the client sent, and by ``$groups``.

        Events sent without a ``sessionId`` are only counted (``withoutSession``): the real server makes
        one session of each.

        Returns:
            ``{"sessions": [...], "groups": [...], "withoutSession": n, "scanned": n}``. Each session (the
            most recently active first, at most ``limit``) has ``sessionId``, ``events``, ``names`` (the
            first 20, in order), ``distinctIds``, ``groups`` (``{type: [ids]}``), ``firstReceivedAt`` and
            ``lastReceivedAt``; each group ``type``, ``id``, ``events``, ``distinctIds`` and
            ``lastReceivedAt``.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT data, received_at, session_id FROM events ORDER BY seq DESC LIMIT ?", [scan]
            ).fetchall()
        sessions: dict[str, dict[str, Any]] = {}
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        without = 0
        for order, (text, received_at, session_id) in enumerate(reversed(rows)):  # oldest first
            data = _loads(text)
            props = data.get("properties")
            pairs = props.get("$groups") if isinstance(props, dict) else None
            pairs = {str(k): str(v) for k, v in pairs.items()} if isinstance(pairs, dict) else {}
            user = data.get("distinctId") if isinstance(data.get("distinctId"), str) else None
            for pair in pairs.items():
                group = groups.setdefault(pair, {"type": pair[0], "id": pair[1], "events": 0, "users": set()})
                group["events"] += 1
                group["lastReceivedAt"] = received_at
                group["order"] = order
                if user is not None:
                    group["users"].add(user)
            if "sessionId" not in data:
                without += 1
                continue
            session = sessions.pop(session_id, None) or {
                "sessionId": session_id,
                "events": 0,
                "names": [],
                "users": set(),
                "groups": {},
                "firstReceivedAt": received_at,
            }
            sessions[session_id] = session  # re-inserted: the dict stays ordered by last activity
            session["events"] += 1
            session["lastReceivedAt"] = received_at
            if len(session["names"]) < 20:
                session["names"].append(data.get("name"))
            if user is not None:
                session["users"].add(user)
            for key, value in pairs.items():
                ids = session["groups"].setdefault(key, [])
                if value not in ids:
                    ids.append(value)
        out = []
        for session in list(reversed(sessions.values()))[:limit]:
            session["distinctIds"] = sorted(session.pop("users"))
            session["firstReceivedAt"] = iso(session["firstReceivedAt"])
            session["lastReceivedAt"] = iso(session["lastReceivedAt"])
            out.append(session)
        group_list = sorted(groups.values(), key=lambda g: -g["order"])[:limit]  # most recently active first
        for group in group_list:
            del group["order"]
            group["distinctIds"] = sorted(group.pop("users"))
            group["lastReceivedAt"] = iso(group["lastReceivedAt"])
        return {"sessions": out, "groups": group_list, "withoutSession": without, "scanned": len(rows)}

    def people(self, *, distinct_id: str | None = None, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """Return identified people, most recently updated first.

        Args:
            distinct_id: Only this person (``None`` or ``""``: everyone).
            limit: At most this many people.

        Returns:
            ``(people, total)``: dicts with ``distinctId``, ``identityId``, ``properties``, ``updatedAt``
            and ``projectId``; and how many people match.
        """
        clause, params = (" WHERE distinct_id = ?", [distinct_id]) if distinct_id else ("", [])
        with self._lock:
            total = self._conn.execute(f"SELECT count(*) FROM people{clause}", params).fetchone()[0]
            rows = self._conn.execute(
                "SELECT distinct_id, identity_id, properties, updated_at, project_id FROM people"
                f"{clause} ORDER BY updated_at DESC, distinct_id LIMIT ?",
                [*params, limit],
            ).fetchall()
        people = [
            {
                "distinctId": d,
                "identityId": i,
                "properties": _loads(p),
                "updatedAt": iso(u),
                "projectId": project,
            }
            for d, i, p, u, project in rows
        ]
        return people, int(total)

    def add_rejected(self, request: RecordedRequest, response: Response) -> None:
        """Keep a request the server refused (a status of 300 or more), dropping the oldest beyond the cap.

        Args:
            request: The request as received.
            response: The server's answer.
        """
        if self._keep_rejected == 0:
            return
        body = request.body[:_MAX_REJECTED_BODY].decode("utf-8", "replace")
        row = (
            time.time(),
            request.method,
            request.path,
            _redact_query(request.query),
            response.status,
            request.idempotency_key,
            request.headers.get("user-agent", ""),
            body,
            len(request.body),
            response.body.decode("utf-8", "replace"),
        )
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO rejected (received_at, method, path, query, status, idempotency_key,"
                " user_agent, body, body_size, response) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            conn.execute(
                "DELETE FROM rejected WHERE seq <= ?", (int(cursor.lastrowid or 0) - self._keep_rejected,)
            )

    def rejected(self, *, limit: int = 100, status: int | None = None) -> tuple[list[dict[str, Any]], int]:
        """Return the kept rejected requests, newest first.

        Args:
            limit: At most this many.
            status: Only requests answered with this status (``429`` for the rate-limited ones).

        Returns:
            ``(rejected, total)``: dicts with ``seq``, ``receivedAt``, ``method``, ``path``, ``query``,
            ``status``, ``idempotencyKey``, ``userAgent``, ``body`` (text, at most 64 KiB), ``bodySize``
            (bytes), ``bodyTruncated``, ``response`` (the parsed JSON body, or its text) and ``error`` /
            ``details`` (from a Serla JSON error body, else ``None`` / ``[]``); and how many are kept.
        """
        clause, params = (" WHERE status = ?", [status]) if status is not None else ("", [])
        with self._lock:
            total = self._conn.execute(f"SELECT count(*) FROM rejected{clause}", params).fetchone()[0]
            rows = self._conn.execute(
                "SELECT seq, received_at, method, path, query, status, idempotency_key, user_agent, body,"
                f" body_size, response FROM rejected{clause} ORDER BY seq DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
        out = []
        for seq, received_at, method, path, query, code, key, agent, body, size, response in rows:
            try:
                parsed: Any = json.loads(response)
            except ValueError:
                parsed = response
            error = parsed.get("error") if isinstance(parsed, dict) else None
            details = parsed.get("details") if isinstance(parsed, dict) else None
            out.append(
                {
                    "seq": seq,
                    "receivedAt": iso(received_at),
                    "method": method,
                    "path": path,
                    "query": query,
                    "status": code,
                    "idempotencyKey": key,
                    "userAgent": agent,
                    "body": body,
                    "bodySize": size,
                    "bodyTruncated": size > _MAX_REJECTED_BODY,
                    "response": parsed,
                    "error": error if isinstance(error, str) else None,
                    "details": details if isinstance(details, list) else [],
                }
            )
        return out, int(total)

    def counts(self) -> dict[str, int]:
        """Count what is stored.

        Returns:
            ``{"events": n, "people": n, "rejected": n}``.
        """
        with self._lock:
            return {
                table: int(self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in ("events", "people", "rejected")
            }
