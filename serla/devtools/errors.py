"""``POST /api/v1/errors`` for the local servers, and the ``serla dev`` page of error groups.

The endpoint is the real server's (``app/api/v1/errors/route.ts`` at commit eb01610, ``SERLA_API.md``
section 7.1): the same order of checks (auth 401, plan 402, per-minute 429, ``Invalid JSON`` 400, zod
validation 400 with its ``details``, 500 for what PostgreSQL would refuse), the same answer
(``{"success": true, "fingerprint": ...}``) and the same grouping: :func:`compute_fingerprint` and
:func:`parse_top_frame` are line-by-line ports of ``lib/errors/fingerprint.ts``, checked against the
server's own test vectors (``tests/test_errors_devtools.py``).

:func:`register` adds the endpoint to a :class:`~serla.devtools.server.SerlaServer` (the contract server
does it for itself), keeping reports in memory; :func:`register_dev` adds it to ``serla dev`` with the
reports in its SQLite database, a page at ``/errors`` (groups with their count, last seen and the latest
stack) and ``GET /api/dev/errors``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from serla.devtools.validation import MALFORMED as _MALFORMED
from serla.devtools.validation import format_issue as _format_issue
from serla.devtools.validation import has_bad_chars as _has_bad_chars
from serla.devtools.validation import is_valid_timestamp
from serla.devtools.validation import too_big as _too_big
from serla.devtools.validation import too_small as _too_small
from serla.devtools.validation import type_issue as _type_issue
from serla.devtools.wire import RecordedRequest, Response, parsed_body
from serla.devtools.wire import json_response as _json_response

if TYPE_CHECKING:
    from serla.devtools.server import SerlaServer

__all__ = [
    "ERRORS_PATH",
    "ErrorsEndpoint",
    "ParsedFrame",
    "compute_fingerprint",
    "parse_top_frame",
    "register",
    "register_dev",
    "validate_error_report",
]

ERRORS_PATH: Final = "/api/v1/errors"
ERRORS_PAGE: Final = "/errors"
ERRORS_API: Final = "/api/dev/errors"
PLAN_ERROR: Final = "Error tracking requires the Hobby plan or above"

# errorSchema, in its key order (zod reports issues in this order).
_STRING_FIELDS: Final = (
    ("message", 2000),
    ("type", 100),
    ("stack", 20000),
    ("url", 2048),
    ("userAgent", 500),
    ("distinctId", 200),
    ("sessionId", 200),
    ("release", 100),
    ("environment", 50),
)
_LEVELS: Final = ("error", "warning", "info")


# --------------------------------------------------------------------------------------------------------
# lib/errors/fingerprint.ts


class ParsedFrame(NamedTuple):
    """The top frame the server reads from a stack (``ParsedFrame`` in ``fingerprint.ts``)."""

    file: str
    fn: str | None
    line: int | None
    column: int | None


# JavaScript's ``.`` excludes every line terminator and its ``\d`` is ASCII only; ``$`` (no m flag) is the
# very end (the lines are split and trimmed, so Python's "or before a final newline" never applies).
_DOT: Final = r"[^\n\r\u2028\u2029]"
_V8: Final = re.compile(rf"^at\s+(?:({_DOT}+?)\s+\()?({_DOT}+?):([0-9]+):([0-9]+)\)?$")
_MOZ: Final = re.compile(rf"^({_DOT}+?)@({_DOT}+?):([0-9]+):([0-9]+)$")
_CHUNK_HASH: Final = re.compile(r"-[a-f0-9]{6,}\.(?:js|mjs|tsx?|jsx?)$", re.IGNORECASE)
# JavaScript's String.prototype.trim() removes these (WhiteSpace and LineTerminator), not Python's set.
_JS_SPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)


def _normalize_file(file: str) -> str:
    f = file.split("?")[0]
    return _CHUNK_HASH.sub(".js", f, count=1)


def parse_top_frame(stack: str | None) -> ParsedFrame | None:
    """The server's ``parseTopFrame``: the first line that parses as a V8 or Firefox frame.

    Args:
        stack: The report's ``stack``.

    Returns:
        The frame, or ``None`` when no line parses (the server then groups by message).
    """
    if not stack:
        return None
    lines = [line.strip(_JS_SPACE) for line in stack.split("\n")]
    for line in lines:
        if not line:
            continue
        if not line.startswith("at ") and "@" not in line:
            continue
        m = _V8.match(line)
        if m is not None and m.end() == len(line):
            fn, file, line_no, col = m.groups()
            return ParsedFrame(
                fn=fn.strip(_JS_SPACE) if fn else None,
                file=_normalize_file(file or ""),
                line=int(line_no) if line_no else None,
                column=int(col) if col else None,
            )
        m = _MOZ.match(line)
        if m is not None and m.end() == len(line):
            fn, file, line_no, col = m.groups()
            fn = fn.strip(_JS_SPACE) if fn else ""
            return ParsedFrame(
                fn=fn or None,
                file=_normalize_file(file or ""),
                line=int(line_no) if line_no else None,
                column=int(col) if col else None,
            )
    return None


def _js_lower(text: str) -> str:
    return text.lower()


def _js_slice(text: str, end: int) -> str:
    """JavaScript's ``text.slice(0, end)``: counted in UTF-16 code units."""
    data = text.encode("utf-16-le", "surrogatepass")[: 2 * end]
    return data.decode("utf-16-le", "surrogatepass")


def compute_fingerprint(type: str | None, message: str | None, stack: str | None) -> str:
    """The server's ``computeFingerprint``: 32 hex of SHA-256 over ``type|file|fn`` or ``type|message``.

    Args:
        type: The report's ``type`` (``None`` or empty: ``Error``).
        message: The report's ``message``.
        stack: The report's ``stack``.
    """
    top = parse_top_frame(stack)
    parts = [_js_lower(type or "Error")]
    if top is not None:
        parts.append(top.file)
        parts.append(top.fn or "<anonymous>")
    else:
        parts.append(_js_slice(message or "", 200))
    data = "|".join(parts).encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:32]


# --------------------------------------------------------------------------------------------------------
# errorSchema (zod)


def _utf16_len(value: str) -> int:
    return len(value.encode("utf-16-le", "surrogatepass")) // 2


def _enum_issue(path: Sequence[str | int]) -> dict[str, Any]:
    return {
        "code": "invalid_value",
        "values": list(_LEVELS),
        "path": list(path),
        "message": 'Invalid option: expected one of "error"|"warning"|"info"',
    }


def validate_error_report(body: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Validate a report like the route's ``errorSchema.safeParse``: (known fields, zod-like issues)."""
    issues: list[dict[str, Any]] = []
    if type(body) is not dict:
        issues.append(_type_issue("object", body, ()))
        return {}, issues
    clean: dict[str, Any] = {}
    for key, maximum in _STRING_FIELDS:
        required = key == "message"
        if key not in body:
            if required:
                issues.append(_type_issue("string", body.get(key, _MISSING_VALUE), (key,)))
            continue
        value = body[key]
        if value is None and not required:
            clean[key] = None
            continue
        if type(value) is not str:
            issues.append(_type_issue("string", value, (key,)))
            continue
        length = _utf16_len(value)
        if required and length < 1:
            issues.append(_too_small("string", 1, (key,)))
        elif length > maximum:
            issues.append(_too_big("string", maximum, (key,)))
        clean[key] = value
    if "level" in body:
        level = body["level"]
        if level not in _LEVELS or type(level) is not str:
            issues.append(_enum_issue(("level",)))
        else:
            clean["level"] = level
    if "metadata" in body:
        metadata = body["metadata"]
        if metadata is not None and type(metadata) is not dict:
            issues.append(_type_issue("record", metadata, ("metadata",)))
        clean["metadata"] = metadata
    if "timestamp" in body:
        stamp = body["timestamp"]
        if stamp is not None:
            if type(stamp) is not str:
                issues.append(_type_issue("string", stamp, ("timestamp",)))
            elif not is_valid_timestamp(stamp):
                issues.append(_format_issue(("timestamp",)))
        clean["timestamp"] = stamp
    return clean, issues


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING_VALUE: Final = _Missing()


# --------------------------------------------------------------------------------------------------------
# Storage


class ErrorStore:
    """Error occurrences and their groups, in memory (the contract server's). Thread-safe.

    Groups are keyed by fingerprint per API key (the real server's are per project).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: list[dict[str, Any]] = []
        self._groups: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, report: dict[str, Any], fingerprint: str, api_key: str, received_at: float) -> None:
        """Store one occurrence and bump its group."""
        with self._lock:
            self._reports.append({**report, "fingerprint": fingerprint, "receivedAt": received_at})
            group = self._groups.get((api_key, fingerprint))
            if group is None:
                group = {
                    "fingerprint": fingerprint,
                    "type": report.get("type"),
                    "message": (report.get("message") or "")[:500],
                    "count": 0,
                    "firstSeen": received_at,
                    "users": set(),
                }
                self._groups[(api_key, fingerprint)] = group
            group["count"] += 1
            group["lastSeen"] = received_at
            group["stack"] = report.get("stack")
            if report.get("distinctId"):
                group["users"].add(report["distinctId"])

    def reports(self) -> list[dict[str, Any]]:
        """Every occurrence in arrival order (the validated body plus ``fingerprint`` and ``receivedAt``)."""
        with self._lock:
            return [dict(r) for r in self._reports]

    def groups(self) -> list[dict[str, Any]]:
        """Every group, most recently seen first: fingerprint, type, message, count, users, seen, stack."""
        with self._lock:
            groups = [{**g, "users": len(g["users"])} for g in self._groups.values()]
        groups.sort(key=lambda g: g["lastSeen"], reverse=True)
        return groups

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._reports.clear()
            self._groups.clear()


_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS error_groups (
    fingerprint TEXT PRIMARY KEY,
    type TEXT,
    message TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    last_stack TEXT,
    level TEXT,
    release TEXT,
    environment TEXT
);
CREATE TABLE IF NOT EXISTS error_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint TEXT NOT NULL,
    received_at REAL NOT NULL,
    distinct_id TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS error_events_by_fingerprint ON error_events (fingerprint);
"""


class SQLiteErrorStore(ErrorStore):
    """The ``serla dev`` store: the error tables live in the dev server's SQLite database."""

    def __init__(self, conn: sqlite3.Connection, lock: Any) -> None:
        super().__init__()
        self._conn = conn
        self._db_lock = lock
        with self._db_lock:
            self._conn.executescript(_SCHEMA)

    def add(self, report: dict[str, Any], fingerprint: str, api_key: str, received_at: float) -> None:
        """Store one occurrence and bump its group, in one transaction."""
        data = json.dumps(report, ensure_ascii=False, separators=(",", ":"))
        with self._db_lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO error_events (fingerprint, received_at, distinct_id, data)"
                    " VALUES (?, ?, ?, ?)",
                    (fingerprint, received_at, report.get("distinctId"), data),
                )
                conn.execute(
                    "INSERT INTO error_groups (fingerprint, type, message, count, first_seen, last_seen,"
                    " last_stack, level, release, environment) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(fingerprint) DO UPDATE SET count = count + 1,"
                    " last_seen = excluded.last_seen, last_stack = excluded.last_stack,"
                    " level = excluded.level",
                    (
                        fingerprint,
                        report.get("type"),
                        (report.get("message") or "")[:500],
                        received_at,
                        received_at,
                        report.get("stack"),
                        report.get("level") or "error",
                        report.get("release"),
                        report.get("environment"),
                    ),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def reports(self) -> list[dict[str, Any]]:
        """Every occurrence in arrival order."""
        with self._db_lock:
            rows = self._conn.execute(
                "SELECT data, fingerprint, received_at FROM error_events ORDER BY seq"
            ).fetchall()
        return [{**json.loads(d), "fingerprint": f, "receivedAt": r} for d, f, r in rows]

    def groups(self, limit: int = 200) -> list[dict[str, Any]]:
        """The groups, most recently seen first (at most ``limit``)."""
        with self._db_lock:
            rows = self._conn.execute(
                "SELECT g.fingerprint, g.type, g.message, g.count, g.first_seen, g.last_seen, g.last_stack,"
                " g.level, g.release, g.environment,"
                " (SELECT count(DISTINCT distinct_id) FROM error_events e"
                " WHERE e.fingerprint = g.fingerprint)"
                " FROM error_groups g ORDER BY g.last_seen DESC LIMIT ?",
                (limit,),
            ).fetchall()
        keys = (
            "fingerprint",
            "type",
            "message",
            "count",
            "firstSeen",
            "lastSeen",
            "stack",
            "level",
            "release",
            "environment",
            "users",
        )
        return [dict(zip(keys, row)) for row in rows]

    def clear(self) -> None:
        """Delete every error group and occurrence."""
        with self._db_lock:
            self._conn.execute("DELETE FROM error_events")
            self._conn.execute("DELETE FROM error_groups")


# --------------------------------------------------------------------------------------------------------
# The endpoint


class ErrorsEndpoint:
    """``POST /api/v1/errors`` on a :class:`~serla.devtools.server.SerlaServer`.

    Attributes:
        free_keys: API keys whose project is on the free plan: they get the real server's 402.
        store: Where accepted reports go.
    """

    def __init__(self, server: SerlaServer, store: ErrorStore | None = None) -> None:
        self._server = server
        self.store = store if store is not None else ErrorStore()
        self.free_keys: set[str] = set()
        self._cond = threading.Condition()
        self._accepted = 0

    def handle(self, request: RecordedRequest) -> Response:
        """Answer one ``POST /api/v1/errors`` the way the real route does.

        The server's routing table (``serla.devtools.server.ROUTES``) sends the request here and answers
        ``OPTIONS`` (204) and other methods (405) itself.
        """
        server = self._server
        caller = server.authenticate(request)
        if isinstance(caller, Response):
            return caller
        if caller.key in self.free_keys:
            return _json_response(402, {"error": PLAN_ERROR})
        refused = server.check_limits(caller, bucket="errors", quota_error="Monthly limit exceeded")
        if refused is not None:
            return refused
        api_key = caller.key
        parsed = parsed_body(request)
        if parsed is _MALFORMED:
            return _json_response(400, {"error": "Invalid JSON"})
        report, issues = validate_error_report(parsed)
        if issues:
            return _json_response(400, {"error": "Invalid error report", "details": issues})
        if _has_bad_chars(report):
            return _json_response(500, {"error": "Internal server error"})
        fingerprint = compute_fingerprint(report.get("type"), report.get("message"), report.get("stack"))
        self.store.add(report, fingerprint, api_key, time.time())
        with self._cond:
            self._accepted += 1
            self._cond.notify_all()
        return _json_response(200, {"success": True, "fingerprint": fingerprint})

    def reports(self) -> list[dict[str, Any]]:
        """Every accepted report (see :meth:`ErrorStore.reports`)."""
        return self.store.reports()

    def groups(self) -> list[dict[str, Any]]:
        """Every error group (see :meth:`ErrorStore.groups`)."""
        return self.store.groups()

    def wait_for_reports(self, n: int, timeout: float | None = 5.0) -> bool:
        """Wait until at least ``n`` reports were accepted since the server started; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._accepted >= n, timeout)

    def clear(self) -> None:
        """Forget every report (the count for :meth:`wait_for_reports` starts again at 0)."""
        self.store.clear()
        with self._cond:
            self._accepted = 0


def register(server: SerlaServer, store: ErrorStore | None = None) -> ErrorsEndpoint:
    """Make the endpoint that serves ``POST /api/v1/errors`` on ``server`` (through its ``ROUTES`` entry).

    Returns:
        The endpoint; the server keeps it as ``server.errors``.
    """
    return ErrorsEndpoint(server, store)


def register_dev(server: Any) -> ErrorsEndpoint:
    """Serve the endpoint on a ``serla dev`` server, stored in its SQLite database, with a page.

    Adds ``GET /errors`` (the page) and ``GET /api/dev/errors`` (``{"groups": [...]}``), and makes
    ``POST /api/dev/clear`` forget the errors too. Returns the endpoint (``server.errors``).
    """
    store = server.store
    endpoint = register(server, SQLiteErrorStore(store._conn, store._lock))
    guard = server._guard

    def groups_api(request: RecordedRequest) -> Response:
        groups = endpoint.groups()
        return Response(
            200,
            json.dumps({"groups": groups, "total": len(groups)}, ensure_ascii=False).encode("utf-8"),
            {"Content-Type": "application/json", "Cache-Control": "no-store"},
        )

    def page(request: RecordedRequest) -> Response:
        nonce = secrets.token_urlsafe(16)
        body = _PAGE.replace("__NONCE__", nonce)
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        return Response(
            200,
            body.encode("utf-8"),
            {
                "Content-Type": "text/html; charset=utf-8",
                "Content-Security-Policy": csp,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    server.add_route("GET", ERRORS_API, guard(groups_api))
    server.add_route("GET", ERRORS_PAGE, guard(page))
    with server._cond:
        clear_route = server._routes.get(("POST", "/api/dev/clear"))
    if clear_route is not None:

        def clear(request: RecordedRequest) -> Response:
            response: Response = clear_route(request)
            if response.status == 200:
                endpoint.clear()
            return response

        server.add_route("POST", "/api/dev/clear", clear)
    return endpoint


_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Serla dev: errors</title>
<link rel="icon" href="data:,">
<style nonce="__NONCE__">
:root { color-scheme: light dark; --muted: #777; --line: #8884; --bad: #c62828; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5rem 2rem; }
h1 { font-size: 1.3rem; margin: 1rem 0 0.5rem; }
.muted { color: var(--muted); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; border-bottom: 1px solid var(--line);
  padding: 0.3rem 0.5rem; }
pre { margin: 0.3rem 0; white-space: pre-wrap; word-break: break-word; font-size: 12px; max-height: 24rem;
  overflow: auto; }
.type { font-weight: 600; color: var(--bad); }
.count { font-variant-numeric: tabular-nums; text-align: right; }
.empty { color: var(--muted); font-style: italic; }
</style>
</head>
<body>
<h1>Error groups <span id="total" class="muted"></span></h1>
<p class="muted"><a href="/">Events</a> · grouped by the real server's fingerprint
(type | file | function of the first stack frame)</p>
<table>
<thead><tr><th>Count</th><th>Error</th><th>Users</th><th>Last seen</th><th>First seen</th></tr></thead>
<tbody id="groups"></tbody>
</table>
<p id="empty" class="empty" hidden>No errors yet. Call client.capture_exception() in an except block.</p>
<script nonce="__NONCE__">
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let shown = "";
  function node(tag, cls, text) {
    const el = document.createElement(tag);
    if (cls) el.className = cls;
    if (text !== undefined && text !== null) el.textContent = String(text);
    return el;
  }
  function when(epoch) { return new Date(epoch * 1000).toLocaleString(); }
  async function refresh() {
    try {
      const response = await fetch("/api/dev/errors", { cache: "no-store" });
      const data = await response.json();
      const key = data.groups.map((g) => g.fingerprint + ":" + g.count).join(",");
      if (key === shown) return;
      shown = key;
      $("total").textContent = "(" + data.total + ")";
      const rows = document.createDocumentFragment();
      for (const g of data.groups) {
        const tr = node("tr", "group");
        tr.dataset.fingerprint = g.fingerprint;
        tr.append(node("td", "count", g.count));
        const what = node("td");
        what.append(node("span", "type", g.type || "Error"), " ", node("span", "message", g.message));
        const details = node("details");
        details.append(node("summary", "muted", "stack of the latest occurrence"));
        details.append(node("pre", "", g.stack || ""));
        what.append(details);
        tr.append(what, node("td", "", g.users), node("td", "", when(g.lastSeen)));
        tr.append(node("td", "", when(g.firstSeen)));
        rows.append(tr);
      }
      $("groups").replaceChildren(rows);
      $("empty").hidden = data.groups.length > 0;
    } catch (error) { /* the server is restarting: try again */ }
  }
  refresh();
  setInterval(refresh, 1000);
})();
</script>
</body>
</html>
"""
