"""The ingest routes of the local server: ``POST /events/batch``, ``POST /events`` and ``POST /identify``.

Each handler follows its real route step by step (SERLA_API.md section 4.4):

* events, batch: key (401), per-minute limit (429 with ``Retry-After``), monthly quota (429 without), body
  parse (500), validation (400), the database's rules (500), then the write (201);
* identify: key (401), body parse (500), validation (400), the database's rules (500), the upsert (200);
  no limit, no quota.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from serla.devtools.store import StoredEvent
from serla.devtools.validation import (
    MALFORMED,
    SESSION_ID_RE,
    db_rejects_event,
    has_bad_chars,
    may_be_too_deep,
    may_hold_huge_numbers,
    stored_event,
    stored_properties,
    too_deep,
    validate_batch,
    validate_event,
    validate_identify,
)
from serla.devtools.wire import (
    BATCH_PATH,
    EVENTS_PATH,
    IDENTIFY_PATH,
    Caller,
    Endpoint,
    RecordedRequest,
    Response,
    json_response,
    parsed_body,
)

if TYPE_CHECKING:
    from serla.devtools.server import SerlaServer

__all__ = ["BATCH", "EVENTS", "IDENTIFY", "INVALID_DATA"]

INVALID_DATA: Final[Mapping[str, str]] = {
    BATCH_PATH: "Invalid batch data",
    EVENTS_PATH: "Invalid event data",
    IDENTIFY_PATH: "Invalid identify data",
}
"""The ``error`` of a 400, by route."""

_SERVER_ERROR: Final = {"error": "Internal server error"}
# Hex digit -> the same digit with the two RFC 4122 variant bits set (10xx).
_UUID_VARIANT: Final[Mapping[str, str]] = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def _ingest(server: SerlaServer, request: RecordedRequest) -> Response:
    """Answer ``POST /events`` or ``POST /events/batch``."""
    single = request.path == EVENTS_PATH
    caller = server.authorize(
        request,
        bucket="events" if single else "batch",
        quota_error="Rate limit exceeded",
        query_key=not single,
    )
    if isinstance(caller, Response):
        return caller
    parsed = parsed_body(request)
    if parsed is MALFORMED:
        return json_response(500, _SERVER_ERROR)
    issues: list[dict[str, Any]] = []
    events = [validate_event(parsed, (), issues)] if single else validate_batch(parsed, issues)
    if issues:
        return json_response(400, {"error": INVALID_DATA[request.path], "details": issues})
    # NUL and lone surrogates can only come from \u escapes: raw ones make the JSON (or UTF-8) invalid.
    check_chars = b"\\u" in request.body
    deep = may_be_too_deep(request.body)
    for event in events:
        if db_rejects_event(event, check_chars) or (deep and too_deep(event.get("properties"))):
            return json_response(500, _SERVER_ERROR)
    return _store(server, request, caller, events, single)


def _store(
    server: SerlaServer, request: RecordedRequest, caller: Caller, events: list[dict[str, Any]], single: bool
) -> Response:
    key = request.idempotency_key
    received_at = time.time()
    user_agent = request.headers.get("user-agent", "")
    deep = may_hold_huge_numbers(request.body)
    project_id = caller.project.id
    # One urandom call per request; formatting UUIDs by hand is ~5x faster than uuid.UUID (benchmarks
    # push 100,000 events through here).
    randomness = os.urandom(32 * len(events)).hex()
    stored: list[StoredEvent] = []
    with server.locked_store() as store:
        previous = store.find_idempotency_key(key) if server.dedupe and key else None
        if previous is None:
            foreign: dict[str, bool] = {}
            for index, data in enumerate(events):
                rand = randomness[64 * index : 64 * index + 64]
                session_id = data.get("sessionId")
                # Like the route: an empty, malformed or other project's sessionId is replaced.
                if session_id and type(session_id) is str and SESSION_ID_RE.fullmatch(session_id):
                    if session_id not in foreign:
                        owner = store.session_project(session_id)
                        foreign[session_id] = owner is not None and owner != project_id
                    if foreign[session_id]:
                        session_id = rand[32:]
                else:
                    session_id = rand[32:]
                event_id = (
                    f"{rand[:8]}-{rand[8:12]}-4{rand[13:16]}-{_UUID_VARIANT[rand[16]]}{rand[17:20]}-"
                    f"{rand[20:32]}"
                )
                stored.append(
                    StoredEvent(
                        stored_event(data, session_id, deep=deep),
                        key,
                        index,
                        user_agent,
                        event_id,
                        session_id,
                        request.path,
                        received_at,
                        caller.key,
                        project_id,
                    )
                )
            store.add_events(stored)
    if single:
        first = stored[0] if previous is None else previous
        return json_response(201, {"success": True, "eventId": first.event_id, "sessionId": first.session_id})
    return json_response(201, {"success": True, "count": len(events)})


def _identify(server: SerlaServer, request: RecordedRequest) -> Response:
    """Answer ``POST /identify``."""
    caller = server.authorize(request, bucket=None, quota_error=None)
    if isinstance(caller, Response):
        return caller
    parsed = parsed_body(request)
    if parsed is MALFORMED:
        return json_response(500, _SERVER_ERROR)
    issues: list[dict[str, Any]] = []
    distinct_id, props = validate_identify(parsed, issues)
    if issues:
        return json_response(400, {"error": INVALID_DATA[IDENTIFY_PATH], "details": issues})
    if (
        has_bad_chars(distinct_id)
        or has_bad_chars(props)
        or (may_be_too_deep(request.body) and too_deep(props))
    ):
        return json_response(500, _SERVER_ERROR)
    props = stored_properties(props, deep=may_hold_huge_numbers(request.body))
    with server.locked_store() as store:
        identity_id = store.identify(distinct_id, props, caller.project.id)
    return json_response(200, {"success": True, "identityId": identity_id})


BATCH: Final = Endpoint(("POST",), _ingest, bucket="batch", counts_events=True)
"""``POST /api/v1/events/batch``."""
EVENTS: Final = Endpoint(("POST",), _ingest, bucket="events", counts_events=True)
"""``POST /api/v1/events``."""
IDENTIFY: Final = Endpoint(("POST",), _identify)
"""``POST /api/v1/identify``."""
