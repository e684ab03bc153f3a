"""``serla dev``: a local Serla server with a SQLite store and a live web page of the events it received.

::

    serla dev [--port 8787] [--host 127.0.0.1] [--db serla-dev.db] [--no-dedupe] [--keep-rejected 100]
              [--flags flags.json] [--quiet] [--open]

It is :class:`serla.devtools.server.SerlaServer` (the same request handling, validation and error bodies as
the real Serla server, see ``SERLA_API.md``) with three additions:

* a :class:`SQLiteStore`, so events and identities survive restarts (``--db``, default ``serla-dev.db`` in
  the current directory; ``:memory:`` keeps nothing);
* deduplication by ``X-Idempotency-Key`` (on by default, unlike the real server, so an SDK retry does not
  count twice locally; ``--no-dedupe`` turns it off);
* a web page at ``/`` and JSON endpoints under ``/api/dev/`` listing recent events, identified people and
  the requests the server rejected, with the server's error details;
* feature flags for ``GET /api/v1/flags`` (the real evaluation, :mod:`serla.devtools.flags`), defined in a
  JSON file (``--flags FILE``, re-read when it changes, written back by the page) or with the form at
  ``/flags``.

Only the standard library is used (``http.server`` through :mod:`serla.devtools.server`, and :mod:`sqlite3`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import html
import json
import math
import os
import secrets
import signal
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType
from typing import Any, Callable, Final, Optional, TextIO
from urllib.parse import parse_qs, parse_qsl, urlencode

from serla._version import __version__
from serla.devtools.errors import register_dev
from serla.devtools.flags import PAGE_PATH as FLAGS_PAGE
from serla.devtools.server import (
    BATCH_PATH,
    EVENTS_PATH,
    RecordedRequest,
    Response,
    SerlaServer,
    StoredEvent,
)

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_KEEP_REJECTED",
    "DEFAULT_PORT",
    "DevServer",
    "SQLiteStore",
    "build_parser",
    "main",
    "run",
]

DEFAULT_PORT: Final = 8787
DEFAULT_DB: Final = "serla-dev.db"
DEFAULT_KEEP_REJECTED: Final = 100
MAX_LIMIT: Final = 1000
"""The largest ``limit`` the JSON endpoints accept."""

EVENTS_API: Final = "/api/dev/events"
IDENTITIES_API: Final = "/api/dev/identities"
REJECTED_API: Final = "/api/dev/rejected"
CLEAR_API: Final = "/api/dev/clear"
SESSIONS_API: Final = "/api/dev/sessions"
CLEAR_HEADER: Final = "X-Serla-Dev"
"""``POST /api/dev/clear`` needs this header (any value): a cross-site form or ``fetch`` can't send it."""

_DEV_PREFIX: Final = "/api/dev/"
_MAX_REJECTED_BODY: Final = 64 * 1024  # bytes of a rejected request's body that are kept
_APPLICATION_ID: Final = 0x53524C41  # "SRLA" in PRAGMA application_id: marks a serla dev database
_SCHEMA_VERSION: Final = 1
_LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

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
    api_key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_name ON events (name);
CREATE INDEX IF NOT EXISTS events_by_distinct_id ON events (distinct_id);
CREATE INDEX IF NOT EXISTS events_by_idempotency_key ON events (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS people (
    distinct_id TEXT PRIMARY KEY,
    identity_id TEXT NOT NULL,
    properties TEXT NOT NULL,
    updated_at REAL NOT NULL
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

_EVENT_COLUMNS: Final = (
    "seq, event_id, data, received_at, idempotency_key, position, session_id, endpoint, user_agent, api_key"
)
_MAIN_FIELDS: Final = frozenset({"name", "distinctId", "properties", "timestamp"})


# --------------------------------------------------------------------------------------------------------
# Helpers


def _dumps(value: Any) -> str:
    """JSON for the database: ASCII only, so any string (even one with a lone surrogate) can be stored."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _iso(epoch: float) -> str:
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


def _finite(value: Any) -> Any:
    """Replace non-finite floats (``1e999`` parses as ``inf``) with ``None``, as JavaScript's JSON does."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json_text(payload: Any) -> str:
    try:
        return json.dumps(payload, ensure_ascii=True, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(payload), ensure_ascii=True, allow_nan=False)


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
    )


def _stored_event(row: Sequence[Any]) -> StoredEvent:
    _, event_id, data, received_at, key, position, session_id, endpoint, user_agent, api_key = row
    return StoredEvent(
        data=json.loads(data),
        idempotency_key=key,
        position=position,
        user_agent=user_agent,
        event_id=event_id,
        session_id=session_id,
        endpoint=endpoint,
        received_at=received_at,
        api_key=api_key,
    )


# --------------------------------------------------------------------------------------------------------
# Storage


class SQLiteStore:
    """A :class:`serla.devtools.server.Store` that keeps events, identities and rejected requests in SQLite.

    One connection is shared by every thread behind a lock (the JSON endpoints read it outside the
    server's own lock). A file database uses WAL journaling, so a crash loses at most the last request.

    API keys are not stored: :attr:`StoredEvent.api_key` comes back redacted (``sk_live_...abcd``), and so
    does an ``api_key`` query parameter of a rejected request.

    The file is marked with ``PRAGMA application_id``; opening an SQLite file that another program created
    fails instead of adding tables to it.
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
        conn.executescript(_SCHEMA)
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
        """Append accepted events, in arrival order.

        Args:
            events: The events of one request.
        """
        rows = [_event_row(event) for event in events]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO events (event_id, name, distinct_id, timestamp, data, received_at,"
                " idempotency_key, position, session_id, endpoint, user_agent, api_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
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

    def identify(self, distinct_id: str, properties: Mapping[str, Any]) -> str:
        """Upsert a person and shallow-merge ``properties`` into theirs.

        Args:
            distinct_id: The person's distinct ID.
            properties: Properties to merge: sent keys overwrite, other keys are kept.

        Returns:
            The person's identity ID (a UUID string, stable for a distinct ID).
        """
        with self._write() as conn:
            row = conn.execute(
                "SELECT identity_id, properties FROM people WHERE distinct_id = ?", (distinct_id,)
            ).fetchone()
            if row is None:
                identity_id, merged = str(uuid.uuid4()), dict(properties)
            else:
                identity_id, merged = row[0], json.loads(row[1])
                merged.update(properties)
            conn.execute(
                "INSERT OR REPLACE INTO people (distinct_id, identity_id, properties, updated_at)"
                " VALUES (?, ?, ?, ?)",
                (distinct_id, identity_id, _dumps(merged), time.time()),
            )
        return str(identity_id)

    def identities(self) -> dict[str, dict[str, Any]]:
        """Return every person's merged properties.

        Returns:
            A new dict mapping distinct ID to the merged properties.
        """
        rows = self._query("SELECT distinct_id, properties FROM people ORDER BY distinct_id")
        return {distinct_id: json.loads(props) for distinct_id, props in rows}

    def clear(self) -> None:
        """Forget all events, identities, idempotency keys and rejected requests."""
        with self._write() as conn:
            conn.execute("DELETE FROM events")
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
            ``endpoint`` and ``userAgent``; and how many stored events match the filters.
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
                    "receivedAt": _iso(event.received_at),
                    "idempotencyKey": event.idempotency_key,
                    "sessionId": event.session_id,
                    "endpoint": event.endpoint,
                    "userAgent": event.user_agent,
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
            data = json.loads(text)
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
            session["firstReceivedAt"] = _iso(session["firstReceivedAt"])
            session["lastReceivedAt"] = _iso(session["lastReceivedAt"])
            out.append(session)
        group_list = sorted(groups.values(), key=lambda g: -g["order"])[:limit]  # most recently active first
        for group in group_list:
            del group["order"]
            group["distinctIds"] = sorted(group.pop("users"))
            group["lastReceivedAt"] = _iso(group["lastReceivedAt"])
        return {"sessions": out, "groups": group_list, "withoutSession": without, "scanned": len(rows)}

    def people(self, *, distinct_id: str | None = None, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """Return identified people, most recently updated first.

        Args:
            distinct_id: Only this person (``None`` or ``""``: everyone).
            limit: At most this many people.

        Returns:
            ``(people, total)``: dicts with ``distinctId``, ``identityId``, ``properties`` and
            ``updatedAt``; and how many people match.
        """
        clause, params = (" WHERE distinct_id = ?", [distinct_id]) if distinct_id else ("", [])
        with self._lock:
            total = self._conn.execute(f"SELECT count(*) FROM people{clause}", params).fetchone()[0]
            rows = self._conn.execute(
                "SELECT distinct_id, identity_id, properties, updated_at FROM people"
                f"{clause} ORDER BY updated_at DESC, distinct_id LIMIT ?",
                [*params, limit],
            ).fetchall()
        people = [
            {"distinctId": d, "identityId": i, "properties": json.loads(p), "updatedAt": _iso(u)}
            for d, i, p, u in rows
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

    def rejected(self, *, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
        """Return the kept rejected requests, newest first.

        Args:
            limit: At most this many.

        Returns:
            ``(rejected, total)``: dicts with ``seq``, ``receivedAt``, ``method``, ``path``, ``query``,
            ``status``, ``idempotencyKey``, ``userAgent``, ``body`` (text, at most 64 KiB), ``bodySize``
            (bytes), ``bodyTruncated``, ``response`` (the parsed JSON body, or its text) and ``error`` /
            ``details`` (from a Serla JSON error body, else ``None`` / ``[]``); and how many are kept.
        """
        with self._lock:
            total = self._conn.execute("SELECT count(*) FROM rejected").fetchone()[0]
            rows = self._conn.execute(
                "SELECT seq, received_at, method, path, query, status, idempotency_key, user_agent, body,"
                " body_size, response FROM rejected ORDER BY seq DESC LIMIT ?",
                (limit,),
            ).fetchall()
        out = []
        for seq, received_at, method, path, query, status, key, agent, body, size, response in rows:
            try:
                parsed: Any = json.loads(response)
            except ValueError:
                parsed = response
            error = parsed.get("error") if isinstance(parsed, dict) else None
            details = parsed.get("details") if isinstance(parsed, dict) else None
            out.append(
                {
                    "seq": seq,
                    "receivedAt": _iso(received_at),
                    "method": method,
                    "path": path,
                    "query": query,
                    "status": status,
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


# --------------------------------------------------------------------------------------------------------
# The server


def _json_response(status: int, payload: Any) -> Response:
    return Response(
        status,
        _json_text(payload).encode("ascii"),
        {
            "Content-Type": "application/json; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


class _BadParam(ValueError):
    """A query parameter of a JSON endpoint is invalid (answered with a 400)."""


def _params(request: RecordedRequest) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()}


def _limit(params: Mapping[str, str], default: int) -> int:
    text = params.get("limit", "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise _BadParam(f"limit must be an integer from 1 to {MAX_LIMIT}, not {text!r}")
    return value


def _issue_summary(response: Response) -> str:
    """One line saying why a request was refused, from the server's error body."""
    text = response.body.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip().splitlines()[0] if text.strip() else ""
    if not isinstance(payload, dict):
        return text
    parts = [str(payload.get("error", ""))]
    details = payload.get("details")
    if isinstance(details, list) and details:
        issues = [
            f"{'.'.join(str(p) for p in issue.get('path', []))}: {issue.get('message', '')}"
            for issue in details[:3]
            if isinstance(issue, dict)
        ]
        more = f" (+{len(details) - 3} more)" if len(details) > 3 else ""
        parts.append("; ".join(issues) + more)
    return ": ".join(p for p in parts if p)


class DevServer(SerlaServer):
    """The ``serla dev`` server: a :class:`SerlaServer` on a :class:`SQLiteStore`, with a web page.

    Ingest requests are handled exactly as :class:`SerlaServer` handles them (any non-empty API key is
    accepted). On top of that:

    * ``GET /``: the live page of recent events, people and rejected requests;
    * ``GET /api/dev/events?name=&distinct_id=&limit=``: recent events, newest first;
    * ``GET /api/dev/identities?distinct_id=&limit=``: identified people;
    * ``GET /api/dev/rejected?limit=``: requests the server refused, with its error details;
    * ``GET /api/dev/sessions?limit=``: the newest events grouped by session id and by ``$groups``;
    * ``POST /api/dev/clear`` (with an ``X-Serla-Dev`` header): forget everything.

    The ``/`` and ``/api/dev/`` routes send no CORS headers, and when the server listens on a loopback
    address they answer only requests whose ``Host`` is a loopback name (DNS rebinding can't read them).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        store: SQLiteStore,
        dedupe: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """Configure the server; nothing is bound until :meth:`start`.

        Args:
            host: Interface to listen on.
            port: TCP port; ``0`` picks a free one.
            store: Where events, identities and rejected requests go. The server does not close it.
            dedupe: Store an events request only once per ``X-Idempotency-Key`` (the real server doesn't).
            log: Called with one line per request that is not for the page or ``/api/dev/``; ``None`` is
                silent.
        """
        # The page polls /api/dev/ every second: keep the in-memory request log short.
        super().__init__(host, port, store=store, dedupe=dedupe, max_recorded_requests=200)
        self._dev_store = store
        self._dev_log = log
        self._dedupe_enabled = dedupe
        self._duplicates = 0
        self._dup_lock = threading.Lock()
        self._loopback_only = host in _LOOPBACK_NAMES or host.startswith("127.")
        self.add_route("GET", "/", self._guard(self._page))
        self.add_route("GET", EVENTS_API, self._guard(self._events_api))
        self.add_route("GET", IDENTITIES_API, self._guard(self._identities_api))
        self.add_route("GET", REJECTED_API, self._guard(self._rejected_api))
        self.add_route("POST", CLEAR_API, self._guard(self._clear_api))
        self.add_route("GET", SESSIONS_API, self._guard(self._sessions_api))
        self.flags.install_page(self._guard)
        self.errors = register_dev(self)  # issue 14: /api/v1/errors in SQLite, the /errors page
        from serla.devtools.llm import LLM_API, LLM_PAGE, LlmEndpoint, SQLiteLlmStore

        self.llm = LlmEndpoint(self, store=SQLiteLlmStore(store))  # LLM calls in the same file
        self.add_route("GET", LLM_PAGE, self._guard(self.llm.page))
        self.add_route("GET", LLM_API, self._guard(self.llm.api))

    @property
    def store(self) -> SQLiteStore:
        """The SQLite store the server writes to."""
        return self._dev_store

    @property
    def dedupe(self) -> bool:
        """Whether events requests are deduplicated by ``X-Idempotency-Key``."""
        return self._dedupe_enabled

    @property
    def duplicates_ignored(self) -> int:
        """How many events requests were answered but not stored again (since this server started)."""
        with self._dup_lock:
            return self._duplicates

    def handle(self, request: RecordedRequest) -> Response | None:
        """Answer a request like :class:`SerlaServer`, then keep it if it was refused and log it.

        Args:
            request: The request, already read off the wire.

        Returns:
            The response, or ``None`` when an injected
            :class:`~serla.devtools.server.Fault` drops the connection
            (``serla dev`` itself injects none).
        """
        dev_route = request.path in ("/", FLAGS_PAGE) or request.path.startswith(_DEV_PREFIX)
        if not dev_route:
            self._dev_store.reset_duplicate_flag()
        response = super().handle(request)
        if dev_route or response is None:
            return response
        duplicate = self._dev_store.take_duplicate_flag()
        if duplicate:
            with self._dup_lock:
                self._duplicates += 1
        if response.status >= 300 and (
            request.method not in ("GET", "HEAD") or request.path.startswith("/api/")
        ):
            try:
                self._dev_store.add_rejected(request, response)
            except sqlite3.Error as exc:  # e.g. the store was closed while stopping
                self._say(f"could not keep the rejected request: {exc}")
        self._log_request(request, response, duplicate)
        return response

    def _say(self, line: str) -> None:
        if self._dev_log is not None:
            with contextlib.suppress(Exception):
                self._dev_log(line)

    def _log_request(self, request: RecordedRequest, response: Response, duplicate: bool) -> None:
        if self._dev_log is None:
            return
        now = datetime.datetime.now().strftime("%H:%M:%S")
        line = f"{now}  {request.method} {request.path}  {response.status}"
        if response.status < 300:
            if request.path in (BATCH_PATH, EVENTS_PATH):
                count = request.event_count
                line += f"  {count} event{'s' if count != 1 else ''}"
                if duplicate:
                    line += f" (X-Idempotency-Key {request.idempotency_key} seen before: not stored again)"
        else:
            line += f"  {_issue_summary(response)}"
        self._say(line)

    # ---- routes ----------------------------------------------------------------------------------------

    def _guard(self, route: Callable[[RecordedRequest], Response]) -> Callable[[RecordedRequest], Response]:
        """Wrap a dev route: check the Host header, turn bad parameters into 400 and errors into 500."""

        def guarded(request: RecordedRequest) -> Response:
            if self._loopback_only and not self._host_allowed(request.headers.get("host")):
                return Response(
                    403, b"serla dev answers only loopback host names\n", {"Content-Type": "text/plain"}
                )
            try:
                return route(request)
            except _BadParam as exc:
                return _json_response(400, {"error": str(exc)})
            except Exception as exc:
                return _json_response(500, {"error": f"{type(exc).__name__}: {exc}"})

        return guarded

    @staticmethod
    def _host_allowed(host: str | None) -> bool:
        if host is None:  # HTTP/1.0 without Host: not a browser
            return True
        if host.startswith("["):
            name = host[: host.find("]") + 1]
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        name = name.lower()
        return name in _LOOPBACK_NAMES or name.startswith("127.")

    def _page(self, request: RecordedRequest) -> Response:
        nonce = secrets.token_urlsafe(16)
        info = (
            f"database {_describe_db(self._dev_store.path)} · dedupe by X-Idempotency-Key "
            f"{'on' if self._dedupe_enabled else 'off'} · serla-py {__version__}"
        )
        page = _PAGE.replace("__NONCE__", nonce).replace("__INFO__", html.escape(info))
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        return Response(
            200,
            page.encode("utf-8"),
            {
                "Content-Type": "text/html; charset=utf-8",
                "Content-Security-Policy": csp,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    def _events_api(self, request: RecordedRequest) -> Response:
        params = _params(request)
        events, matching = self._dev_store.query_events(
            name=params.get("name") or None,
            distinct_id=params.get("distinct_id") or None,
            limit=_limit(params, 100),
        )
        return _json_response(
            200,
            {
                "events": events,
                "matching": matching,
                "total": self._dev_store.event_count(),
                "dedupe": self._dedupe_enabled,
                "duplicatesIgnored": self.duplicates_ignored,
            },
        )

    def _identities_api(self, request: RecordedRequest) -> Response:
        params = _params(request)
        people, total = self._dev_store.people(
            distinct_id=params.get("distinct_id") or None, limit=_limit(params, 100)
        )
        return _json_response(200, {"identities": people, "total": total})

    def _sessions_api(self, request: RecordedRequest) -> Response:
        return _json_response(200, self._dev_store.sessions(limit=_limit(_params(request), 50)))

    def _rejected_api(self, request: RecordedRequest) -> Response:
        rejected, total = self._dev_store.rejected(limit=_limit(_params(request), 100))
        return _json_response(200, {"rejected": rejected, "total": total})

    def _clear_api(self, request: RecordedRequest) -> Response:
        if CLEAR_HEADER.lower() not in request.headers:
            return _json_response(403, {"error": f"send the {CLEAR_HEADER} header to clear the database"})
        self.clear()
        self.llm.clear()
        with self._dup_lock:
            self._duplicates = 0
        return _json_response(200, {"cleared": True})


# --------------------------------------------------------------------------------------------------------
# Command line


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, not {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the ``serla dev`` argument parser.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="serla dev",
        description="Run a local Serla server with a live web page of the events it receives, until "
        "Ctrl-C. It validates like the real server and keeps events in an SQLite file. Point your app at "
        f"it with SERLA_HOST=http://127.0.0.1:{DEFAULT_PORT} (any API key is accepted).",
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}; 0 picks one"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="FILE",
        help=f"the SQLite file for events and people (default: ./{DEFAULT_DB}); :memory: keeps nothing",
    )
    parser.add_argument(
        "--no-dedupe",
        dest="dedupe",
        action="store_false",
        help="store retried requests again, like the real server (by default a request whose "
        "X-Idempotency-Key was already stored is answered but not stored again)",
    )
    parser.add_argument(
        "--keep-rejected",
        type=_count,
        default=DEFAULT_KEEP_REJECTED,
        metavar="N",
        help=f"how many rejected requests to keep for the page (default: {DEFAULT_KEEP_REJECTED})",
    )
    parser.add_argument(
        "--flags",
        metavar="FILE",
        help="feature flags for GET /api/v1/flags: a JSON list of definitions, re-read when it changes; "
        "the form at /flags writes to it (see serla.devtools.flags)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="don't print a line per request")
    parser.add_argument("--open", action="store_true", help="open the page in a web browser")
    return parser


def _describe_db(path: str) -> str:
    return path if path == ":memory:" else os.path.abspath(path)


def run(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the dev server in the foreground until Ctrl-C, SIGTERM or ``stop`` is set.

    Signal handlers are installed only when called on the main thread.

    Args:
        args: Options from :func:`build_parser`.
        out: Where the URL and the request lines go (default: ``sys.stdout``).
        err: Where startup errors go (default: ``sys.stderr``).
        stop: An event that stops the server when set (for tests and embedding).

    Returns:
        The exit status: ``0`` after a clean stop, ``2`` when the database can't be opened or the port
        can't be bound.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    stop = threading.Event() if stop is None else stop
    write_lock = threading.Lock()

    def say(line: str) -> None:
        with write_lock, contextlib.suppress(OSError, ValueError):
            out.write(line + "\n")
            out.flush()

    try:
        store = SQLiteStore(args.db, keep_rejected=args.keep_rejected)
    except (sqlite3.Error, ValueError, OSError) as exc:
        err.write(f"serla dev: cannot use --db {args.db}: {exc}\n")
        return 2
    try:
        server = DevServer(
            args.host, args.port, store=store, dedupe=args.dedupe, log=None if args.quiet else say
        )
        if getattr(args, "flags", None):
            try:
                server.flags.load(args.flags, missing_ok=True)  # the form creates it
            except (OSError, ValueError) as exc:
                err.write(f"serla dev: cannot use --flags {args.flags}: {exc}\n")
                return 2
        try:
            server.start()
        except OSError as exc:
            err.write(
                f"serla dev: cannot listen on {args.host}:{args.port}: {exc}"
                " (is another serla dev running? try --port 0)\n"
            )
            return 2
        in_main = threading.current_thread() is threading.main_thread()
        previous: dict[int, Any] = {}
        try:
            try:
                if in_main:
                    for signum in (signal.SIGINT, signal.SIGTERM):
                        previous[signum] = signal.signal(signum, _raise_stop)
                _banner(server, store, args, say)
                stop.wait()
            except (_Stop, KeyboardInterrupt):
                pass
            # A second Ctrl-C or SIGTERM while stopping ends the process at once.
            for sig in previous:
                signal.signal(sig, signal.SIG_DFL)
            server.stop()
        finally:
            server.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        say(f"stopped; {store.event_count()} events in {_describe_db(store.path)}")
    finally:
        store.close()
    return 0


class _Stop(BaseException):
    """Raised by the SIGTERM/SIGINT handlers to leave the wait."""


def _raise_stop(signum: int, frame: Optional[FrameType]) -> None:
    raise _Stop(signum)


def _banner(
    server: DevServer, store: SQLiteStore, args: argparse.Namespace, say: Callable[[str], None]
) -> None:
    counts = store.counts()
    kept = ""
    if counts["events"] or counts["people"]:
        kept = f" ({counts['events']} events and {counts['people']} people from earlier runs)"
    url = server.url
    say(f"Serla dev server listening on {url} (Ctrl-C to stop)")
    say(f"  events page:  {url}/")
    say(f"  database:     {_describe_db(store.path)}{kept}")
    flags = server.flags.definitions()
    source = f"from {args.flags}" if getattr(args, "flags", None) else "in memory"
    say(f"  flags:        {len(flags)} {source}; define them at {url}/flags")
    if args.dedupe:
        say("  dedupe:       on: a retry whose X-Idempotency-Key is stored is not stored again (--no-dedupe)")
    else:
        say("  dedupe:       off: every request is stored, like the real server")
    say(f"  export SERLA_HOST={url} SERLA_API_KEY=sk_live_dev   # any key is accepted")
    if args.open:
        import webbrowser

        webbrowser.open(f"{url}/")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``serla dev`` (called by :func:`serla._cli.main`).

    Args:
        argv: The arguments after ``dev`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status (``0`` after Ctrl-C or SIGTERM, ``2`` on a startup error). Usage errors exit through
        argparse with status 2.
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return run(args)


# --------------------------------------------------------------------------------------------------------
# The page. Every value that comes from events is put in the DOM with textContent (never innerHTML), and
# the Content-Security-Policy allows only this nonce-tagged script and style.

_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Serla dev</title>
<link rel="icon" href="data:,">
<style nonce="__NONCE__">
:root { color-scheme: light dark; --muted: #777; --line: #8884; --bad: #c62828; --ok: #2e7d32; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5rem 2rem; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 1rem; }
h1 { font-size: 1.3rem; margin: 1rem 0 0.2rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 0.5rem; }
.muted, #info { color: var(--muted); }
form { display: flex; flex-wrap: wrap; gap: 0.6rem; align-items: center; margin: 0.6rem 0; }
input[type=text], input[type=search] { width: 14rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid var(--line);
  padding: 0.3rem 0.5rem; }
th { font-weight: 600; white-space: nowrap; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; font-size: 12px;
  max-height: 24rem; overflow: auto; }
code, .mono { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
a.filter { color: inherit; text-decoration: underline dotted; cursor: pointer; }
#status.down { color: var(--bad); font-weight: 600; }
#status.up { color: var(--ok); }
.status-code { font-weight: 700; color: var(--bad); margin-right: 0.4rem; }
article.rejected { border: 1px solid var(--line); border-left: 4px solid var(--bad);
  padding: 0.4rem 0.7rem; margin: 0.5rem 0; }
article.rejected ul { margin: 0.3rem 0; padding-left: 1.2rem; }
.empty { color: var(--muted); font-style: italic; }
</style>
</head>
<body data-state="loading">
<header>
<h1>Serla dev server</h1>
<a href="/errors">Errors</a> <a href="/llm">LLM calls</a>
<span id="info">__INFO__</span>
<a href="/flags">feature flags</a>
<span id="status" class="muted">connecting...</span>
</header>
<form id="filters" autocomplete="off">
<label>name <input type="search" id="f-name" placeholder="any event name"></label>
<label>distinct_id <input type="search" id="f-distinct-id" placeholder="anyone"></label>
<label>show <select id="f-limit">
<option>50</option><option selected>100</option><option>500</option><option>1000</option>
</select></label>
<button type="submit">Filter</button>
<button type="button" id="reset">Show all</button>
<label><input type="checkbox" id="live" checked> live</label>
<button type="button" id="clear" title="Delete every stored event, person and rejected request">
Clear database</button>
</form>
<p id="filter-summary" class="muted"></p>

<section id="events-section">
<h2>Events <span id="count" class="muted"></span></h2>
<table>
<thead><tr><th>Received</th><th>Name</th><th>distinctId</th><th>Timestamp</th><th>Properties</th>
<th>Idempotency key</th></tr></thead>
<tbody id="events-body"></tbody>
</table>
<p id="events-empty" class="empty" hidden>
No events yet. Point your app at this server and track something.</p>
</section>

<section id="sessions-section">
<h2>Sessions <span id="sessions-count" class="muted"></span></h2>
<p class="muted">Events grouped by the <code>sessionId</code> your app sent (a request, or the browser's
session via <code>X-Serla-Session-Id</code>). <span id="without-session"></span></p>
<table>
<thead><tr><th>Session</th><th>distinctId</th><th>Events</th><th>Names</th><th>Groups</th>
<th>Last event</th></tr></thead>
<tbody id="sessions-body"></tbody>
</table>
<h2>Groups <span id="groups-count" class="muted"></span></h2>
<table>
<thead><tr><th>Type</th><th>Id</th><th>Events</th><th>distinctId</th><th>Last event</th></tr></thead>
<tbody id="groups-body"></tbody>
</table>
</section>

<section id="rejected-section">
<h2>Rejected requests <span id="rejected-count" class="muted"></span></h2>
<p class="muted">Requests this server refused. The real Serla server refuses them the same way.</p>
<div id="rejected-list"></div>
</section>

<section id="people-section">
<h2>People <span id="people-count" class="muted"></span></h2>
<table>
<thead><tr><th>distinctId</th><th>Properties</th><th>Updated</th></tr></thead>
<tbody id="people-body"></tbody>
</table>
</section>

<script nonce="__NONCE__">
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const nameInput = $("f-name"), idInput = $("f-distinct-id"), limitInput = $("f-limit"), live = $("live");
  const query = new URLSearchParams(location.search);
  nameInput.value = query.get("name") || "";
  idInput.value = query.get("distinct_id") || "";
  if (["50", "100", "500", "1000"].includes(query.get("limit"))) limitInput.value = query.get("limit");
  let shown = { events: "", rejected: "", people: "", sessions: "" };
  let timer = null;

  function node(tag, cls, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined && text !== null) el.textContent = String(text);
    return el;
  }
  function cell(row, cls, child) {
    const td = node("td", cls);
    if (child !== undefined) td.append(child);
    row.append(td);
    return td;
  }
  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }
  function localTime(iso) {
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }
  function filterParams() {
    const p = new URLSearchParams();
    if (nameInput.value) p.set("name", nameInput.value);
    if (idInput.value) p.set("distinct_id", idInput.value);
    if (limitInput.value !== "100") p.set("limit", limitInput.value);
    return p;
  }
  function filterLink(key, value) {
    const a = node("a", "filter", value);
    const p = filterParams();
    p.set(key, value);
    a.href = "?" + p.toString();
    a.addEventListener("click", (e) => {
      e.preventDefault();
      (key === "name" ? nameInput : idInput).value = value;
      apply();
    });
    return a;
  }
  function apply() {
    const p = filterParams().toString();
    history.replaceState(null, "", p ? "?" + p : location.pathname);
    shown.events = "";
    refresh();
  }
  async function getJSON(path, params) {
    const qs = params && params.toString();
    const response = await fetch(qs ? path + "?" + qs : path, { cache: "no-store" });
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  function renderEvents(data) {
    const top = data.events.length ? data.events[0].seq : 0;
    const key = [data.total, data.matching, top, data.events.length, data.duplicatesIgnored].join("|");
    if (key === shown.events) return;
    shown.events = key;
    const filters = [];
    if (nameInput.value) filters.push("name = " + JSON.stringify(nameInput.value));
    if (idInput.value) filters.push("distinct_id = " + JSON.stringify(idInput.value));
    $("filter-summary").textContent = filters.length ? "Filtered by " + filters.join(" and ") : "";
    let count = filters.length
      ? data.matching + " matching of " + data.total + " events"
      : data.total + " events";
    if (data.events.length < data.matching) count += ", newest " + data.events.length + " shown";
    if (data.dedupe) count += " · " + data.duplicatesIgnored + " duplicate requests ignored";
    $("count").textContent = "(" + count + ")";
    $("count").dataset.matching = String(data.matching);
    const rows = document.createDocumentFragment();
    for (const ev of data.events) {
      const tr = node("tr", "event");
      tr.dataset.seq = String(ev.seq);
      cell(tr, "received mono", localTime(ev.receivedAt));
      cell(tr, "name", filterLink("name", ev.name));
      const who = typeof ev.distinctId === "string";
      cell(tr, "distinct-id", who ? filterLink("distinct_id", ev.distinctId) : node("span", "empty", "none"));
      const when = typeof ev.timestamp === "string";
      cell(tr, "timestamp mono", when ? ev.timestamp : node("span", "empty", "receive time"));
      const hasProps = ev.properties !== null && ev.properties !== undefined;
      const props = cell(tr, "properties", node("pre", "", hasProps ? pretty(ev.properties) : "(none)"));
      if (Object.keys(ev.otherFields).length) props.append(node("pre", "muted", pretty(ev.otherFields)));
      cell(tr, "idempotency-key mono", ev.idempotencyKey || "");
      rows.append(tr);
    }
    $("events-body").replaceChildren(rows);
    $("events-empty").hidden = data.events.length > 0;
    if (!data.events.length && data.total) $("events-empty").textContent = "No event matches the filters.";
  }

  function renderRejected(data) {
    const key = [data.total, data.rejected.length ? data.rejected[0].seq : 0].join("|");
    if (key === shown.rejected) return;
    shown.rejected = key;
    $("rejected-count").textContent = "(" + data.total + ")";
    const list = document.createDocumentFragment();
    for (const r of data.rejected) {
      const article = node("article", "rejected");
      const head = node("div");
      const target = r.method + " " + r.path + (r.query ? "?" + r.query : "");
      head.append(node("span", "status-code", r.status), node("code", "", target));
      head.append(" ", node("span", "muted", localTime(r.receivedAt)));
      if (r.error) head.append(" ", node("strong", "error", r.error));
      article.append(head);
      if (r.details.length) {
        const ul = node("ul", "issues");
        for (const issue of r.details) {
          const li = node("li");
          const path = Array.isArray(issue.path) ? issue.path.join(".") : "";
          li.append(node("code", "", path || "(body)"), " ", node("span", "", issue.message));
          ul.append(li);
        }
        article.append(ul);
      }
      const response = node("details");
      const answer = typeof r.response === "string" ? r.response : pretty(r.response);
      response.append(node("summary", "", "Response"), node("pre", "", answer));
      let body = r.body;
      try { body = pretty(JSON.parse(r.body)); } catch (e) { /* not JSON: show it as text */ }
      const request = node("details");
      const size = r.bodySize + " bytes" + (r.bodyTruncated ? ", truncated" : "");
      request.append(node("summary", "", "Request body (" + size + ")"), node("pre", "", body));
      article.append(response, request);
      list.append(article);
    }
    if (!data.rejected.length) list.append(node("p", "empty", "None."));
    $("rejected-list").replaceChildren(list);
  }

  function renderPeople(data) {
    const key = [data.total, data.identities.map((p) => p.updatedAt + p.distinctId).join(",")].join("|");
    if (key === shown.people) return;
    shown.people = key;
    $("people-count").textContent = "(" + data.total + ")";
    const rows = document.createDocumentFragment();
    for (const person of data.identities) {
      const tr = node("tr", "person");
      cell(tr, "distinct-id", filterLink("distinct_id", person.distinctId));
      cell(tr, "properties", node("pre", "", pretty(person.properties)));
      cell(tr, "mono", localTime(person.updatedAt));
      rows.append(tr);
    }
    $("people-body").replaceChildren(rows);
  }

  function renderSessions(data) {
    const key = JSON.stringify(data);
    if (key === shown.sessions) return;
    shown.sessions = key;
    $("sessions-count").textContent = "(" + data.sessions.length + ")";
    $("groups-count").textContent = "(" + data.groups.length + ")";
    $("without-session").textContent = data.withoutSession
      ? data.withoutSession + " of the last " + data.scanned + " events came without one (one session each)."
      : "";
    const rows = document.createDocumentFragment();
    for (const s of data.sessions) {
      const tr = node("tr", "session");
      cell(tr, "mono", node("span", "", s.sessionId));
      cell(tr, "distinct-id", node("span", "", s.distinctIds.join(", ")));
      cell(tr, "mono", node("span", "", String(s.events)));
      cell(tr, "", node("span", "", s.names.join(" → ")));
      cell(tr, "properties", node("pre", "", pretty(s.groups)));
      cell(tr, "mono", localTime(s.lastReceivedAt));
      rows.append(tr);
    }
    $("sessions-body").replaceChildren(rows);
    const groups = document.createDocumentFragment();
    for (const g of data.groups) {
      const tr = node("tr", "group");
      cell(tr, "", node("span", "", g.type));
      cell(tr, "mono", node("span", "", g.id));
      cell(tr, "mono", node("span", "", String(g.events)));
      cell(tr, "distinct-id", node("span", "", g.distinctIds.join(", ")));
      cell(tr, "mono", localTime(g.lastReceivedAt));
      groups.append(tr);
    }
    $("groups-body").replaceChildren(groups);
  }

  async function refresh() {
    const params = filterParams();
    if (!params.has("limit")) params.set("limit", limitInput.value);
    try {
      const [events, rejected, people, sessions] = await Promise.all([
        getJSON("/api/dev/events", params),
        getJSON("/api/dev/rejected", new URLSearchParams({ limit: "50" })),
        getJSON("/api/dev/identities", new URLSearchParams({ limit: "100" })),
        getJSON("/api/dev/sessions", new URLSearchParams({ limit: "50" })),
      ]);
      renderEvents(events);
      renderRejected(rejected);
      renderPeople(people);
      renderSessions(sessions);
      $("status").className = "up";
      const mode = live.checked ? "live" : "paused";
      $("status").textContent = mode + " · updated " + new Date().toLocaleTimeString();
      document.body.dataset.state = "ready";
    } catch (error) {
      $("status").className = "down";
      $("status").textContent = "server unreachable, retrying (" + error.message + ")";
    }
  }
  function schedule() {
    clearTimeout(timer);
    if (live.checked) timer = setTimeout(async () => { await refresh(); schedule(); }, 1000);
  }

  $("filters").addEventListener("submit", (e) => { e.preventDefault(); apply(); });
  limitInput.addEventListener("change", apply);
  $("reset").addEventListener("click", () => { nameInput.value = ""; idInput.value = ""; apply(); });
  live.addEventListener("change", () => { refresh(); schedule(); });
  $("clear").addEventListener("click", async () => {
    if (!confirm("Delete every stored event, person and rejected request?")) return;
    await fetch("/api/dev/clear", { method: "POST", headers: { "X-Serla-Dev": "clear" } });
    shown = { events: "", rejected: "", people: "" };
    refresh();
  });
  refresh().then(schedule);
})();
</script>
</body>
</html>
"""
