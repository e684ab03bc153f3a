"""Celery: the caller's context travels with each task, through the task message's headers.

Call :func:`setup` once in the process that sends tasks (your web app) and in the worker (e.g. in the
module that defines your Celery app)::

    from serla.integrations.celery import setup
    setup()

When a task is sent (``delay()``, ``apply_async()``, a canvas) inside a context (a request handled by a
serla integration, a :func:`serla.context` block), the context's user, session, groups and properties go
in the message's ``serla_context`` header; the worker runs the task inside that context, so its events
report under the same user and session as the request that started it. A task sent outside any context
carries nothing and runs in an empty one.

Wrong or missing headers never fail a task: anything odd is ignored. Properties travel as JSON-safe
values (the SDK's own coercion), so a property that is not JSON can't break ``delay()``.
"""

from __future__ import annotations

import contextvars
from typing import Any

from celery import signals  # type: ignore[import-untyped]

from serla._context import EMPTY, Scope, current_scope, enter, is_session_id, leave
from serla._encode import sanitize

__all__ = ["HEADER", "setup", "teardown"]

HEADER = "serla_context"
"""The task message header carrying the context."""

_tokens: dict[str, contextvars.Token[Scope]] = {}
_connected = False


def to_header(scope: Scope) -> dict[str, Any] | None:
    """The JSON-safe header for ``scope``, or ``None`` for an empty scope."""
    if scope is EMPTY or scope == EMPTY:
        return None
    out: dict[str, Any] = {}
    if scope.distinct_id is not None:
        out["distinct_id"] = scope.distinct_id
    if scope.session_id is not None:
        out["session_id"] = scope.session_id
    if scope.groups:
        out["groups"] = dict(scope.groups)
    if scope.properties:
        out["properties"] = sanitize(scope.properties)
    return out


def from_header(value: Any) -> Scope | None:
    """The scope a header carries (invalid parts left out), or ``None``."""
    if not isinstance(value, dict):
        return None
    user = value.get("distinct_id")
    session = value.get("session_id")
    groups = value.get("groups")
    props = value.get("properties")
    return Scope(
        user if isinstance(user, str) and user else None,
        session if is_session_id(session) else None,
        {str(k): str(v) for k, v in groups.items() if isinstance(v, str) and v}
        if isinstance(groups, dict)
        else None,
        dict(props) if isinstance(props, dict) else None,
    )


def _before_publish(sender: Any = None, headers: Any = None, **_: Any) -> None:
    try:
        header = to_header(current_scope())
        if header is not None and isinstance(headers, dict):
            headers[HEADER] = header
    except Exception:  # never fail a publish
        pass


def _find_header(task: Any) -> Any:
    request = getattr(task, "request", None)
    if request is None:
        return None
    value = getattr(request, HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None)
        if isinstance(headers, dict):
            value = headers.get(HEADER)
    return value


def _prerun(task_id: Any = None, task: Any = None, **_: Any) -> None:
    try:
        scope = from_header(_find_header(task))
        if scope is not None and task_id is not None:
            _tokens[str(task_id)] = enter(scope)
    except Exception:
        pass


def _postrun(task_id: Any = None, **_: Any) -> None:
    token = _tokens.pop(str(task_id), None)
    if token is None:
        return
    try:
        leave(token)
    except ValueError:  # ended in another context (a pool that switched threads): start the next clean
        enter(EMPTY)


def setup() -> None:
    """Connect the signal handlers (idempotent): publish side and worker side."""
    global _connected
    if _connected:
        return
    signals.before_task_publish.connect(_before_publish, weak=False, dispatch_uid="serla-publish")
    signals.task_prerun.connect(_prerun, weak=False, dispatch_uid="serla-prerun")
    signals.task_postrun.connect(_postrun, weak=False, dispatch_uid="serla-postrun")
    _connected = True


def teardown() -> None:
    """Disconnect what :func:`setup` connected."""
    global _connected
    signals.before_task_publish.disconnect(_before_publish, dispatch_uid="serla-publish")
    signals.task_prerun.disconnect(_prerun, dispatch_uid="serla-prerun")
    signals.task_postrun.disconnect(_postrun, dispatch_uid="serla-postrun")
    _connected = False
