"""The request context: who (``distinct_id``), which session, which groups, which extra properties.

One :class:`contextvars.ContextVar` holds an immutable :class:`Scope`. It is therefore per thread and per
asyncio task, copied into new tasks (and into threads started with ``contextvars.copy_context().run``,
``asyncio.to_thread`` or ``loop.run_in_executor`` through ``copy_context``) the way every ``ContextVar``
is, and it never leaks from one request into the next: every scope entered with :class:`context` is reset
when it ends.

``Serla.track()`` reads it on each call; so do the logging handler and the OpenTelemetry bridge (through
``track()``), and every other kind of record that names a user. Precedence, for each field:
**explicit argument > context > client** (super properties, see ``Serla.set_properties``).

Web integrations (``serla.integrations.*``) enter one scope per request; your code rarely needs this module
directly, except for :class:`context` in scripts, jobs and tests.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Final, Optional, TypeVar

from serla._config import warn_limited

F = TypeVar("F", bound=Callable[..., Any])

SESSION_HEADER: Final = "X-Serla-Session-Id"
"""The HTTP request header a page sends with serla-js's session id; every integration reads it."""
SESSION_COOKIE: Final = "serla_session_id"
"""A cookie carrying the same id, read when the header is absent (for plain page navigations)."""

_HEX: Final = "0123456789abcdefABCDEF"


class Scope:
    """What the current context adds to every event: an immutable snapshot; build new ones, don't mutate.

    Attributes:
        distinct_id: The default user, or ``None``.
        session_id: A 32-hex session id, or ``None``.
        groups: ``{group_type: group_id}`` (sent as ``properties["$groups"]``), or ``None`` when empty.
        properties: Properties added to every event, or ``None`` when empty. Read-only: never mutate it.
    """

    __slots__ = ("distinct_id", "groups", "properties", "session_id")

    def __init__(
        self,
        distinct_id: Optional[str] = None,
        session_id: Optional[str] = None,
        groups: Optional[dict[str, str]] = None,
        properties: Optional[dict[str, Any]] = None,
    ) -> None:
        self.distinct_id = distinct_id
        self.session_id = session_id
        self.groups = groups or None
        self.properties = properties or None

    def replace(self, **changes: Any) -> Scope:
        """A copy with some fields replaced (``groups``/``properties`` replaced whole, not merged)."""
        fields: dict[str, Any] = {
            "distinct_id": self.distinct_id,
            "session_id": self.session_id,
            "groups": self.groups,
            "properties": self.properties,
        }
        fields.update(changes)
        return Scope(**fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scope):
            return NotImplemented
        return (self.distinct_id, self.session_id, self.groups, self.properties) == (
            other.distinct_id,
            other.session_id,
            other.groups,
            other.properties,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Scope(distinct_id={self.distinct_id!r}, session_id={self.session_id!r}, "
            f"groups={self.groups!r}, properties={self.properties!r})"
        )


EMPTY: Final = Scope()
"""The scope outside any context (``track()`` skips all merging when it sees this very object)."""

_scope: Final[contextvars.ContextVar[Scope]] = contextvars.ContextVar("serla_scope", default=EMPTY)
get_scope: Final = _scope.get
"""``current_scope`` without the function call (the client binds it once)."""


def current_scope() -> Scope:
    """The :class:`Scope` of the current context (``EMPTY`` outside any)."""
    return _scope.get()


# -- session ids -----------------------------------------------------------------------------------------


def is_session_id(value: object) -> bool:
    """True for what the server keeps as a session id: a string of exactly 32 hex digits."""
    return isinstance(value, str) and len(value) == 32 and not value.strip(_HEX)


_getrandbits: Callable[[int], int] | None = None


def new_session_id() -> str:
    """A fresh random session id (32 lowercase hex digits, like serla-js makes).

    128 bits from :mod:`random` (seeded from ``os.urandom`` and re-seeded in a forked child): unique
    enough for an id that is not a secret, and without a system call per request.
    """
    global _getrandbits
    if _getrandbits is None:
        import random

        _getrandbits = random.getrandbits
    return "%032x" % _getrandbits(128)


def checked_session_id(value: object, where: str) -> str | None:
    """``value`` when it is a session id; else ``None`` and a (rate-limited) WARNING naming ``where``."""
    if value is None or is_session_id(value):
        return value  # type: ignore[return-value]
    warn_limited(
        "bad_session_id",
        "serla: %s: session_id must be 32 hex digits (what the server keeps), got %r; it is not sent",
        where,
        value,
    )
    return None


# -- the distinct_id API (kept from 0.1) -----------------------------------------------------------------


def get_distinct_id() -> str | None:
    """Return the ``distinct_id`` set for the current context, or ``None``."""
    return _scope.get().distinct_id


def set_distinct_id(distinct_id: str | None) -> contextvars.Token[Scope]:
    """Set the default ``distinct_id`` for the current context (the rest of the scope is kept).

    Args:
        distinct_id: The user's identifier, or ``None`` to clear it.

    Returns:
        A token for :func:`reset_distinct_id`, which restores the scope as it was before this call.
    """
    return _scope.set(_scope.get().replace(distinct_id=distinct_id))


def reset_distinct_id(token: contextvars.Token[Scope]) -> None:
    """Restore the scope that was current before the matching :func:`set_distinct_id`."""
    _scope.reset(token)


def distinct_id_context(distinct_id: str | None) -> context:
    """Use ``distinct_id`` (``None`` clears it) as the default for everything tracked inside the block.

    Example:
        >>> with distinct_id_context("user_123"):
        ...     client.track("page_viewed")  # doctest: +SKIP
    """
    ctx = context()
    ctx._replace_id = True
    ctx._distinct_id = distinct_id
    return ctx


# -- groups (used by Serla.group) ------------------------------------------------------------------------


def check_group(group_type: object, group_id: object, where: str) -> tuple[str, str] | None:
    """``(type, id)`` as strings (an int id is ``str()``-ed), or ``None`` and a WARNING."""
    if isinstance(group_id, int) and not isinstance(group_id, bool):
        group_id = str(group_id)
    if isinstance(group_type, str) and group_type and isinstance(group_id, str) and group_id:
        return group_type, group_id
    warn_limited(
        "bad_group",
        "serla: %s: a group needs a non-empty string type and a non-empty string (or int) id, got %r, %r",
        where,
        group_type,
        group_id,
    )
    return None


def add_group(group_type: str, group_id: str) -> None:
    """Add ``{group_type: group_id}`` to the current context's groups, until the enclosing scope ends."""
    scope = _scope.get()
    groups = dict(scope.groups) if scope.groups else {}
    groups[group_type] = group_id
    _scope.set(scope.replace(groups=groups))


def _checked_groups(groups: object) -> dict[str, str] | None:
    if groups is None:
        return None
    if not isinstance(groups, Mapping):
        warn_limited("bad_group", "serla: context(): groups must be a dict {type: id}, got %r", groups)
        return None
    out: dict[str, str] = {}
    for key, value in groups.items():
        pair = check_group(key, value, "context()")
        if pair is not None:
            out[pair[0]] = pair[1]
    return out


# -- serla.context ---------------------------------------------------------------------------------------


class context:
    """A scope for everything tracked inside it: a context manager (sync and ``async with``) and a decorator.

    Nested scopes merge: a field left ``None`` is inherited from the enclosing scope; ``groups`` and
    ``properties`` are merged key by key, the inner scope's values winning. When the block (or the
    decorated call) ends, the enclosing scope is back exactly as it was, including any
    ``Serla.group()`` made inside.

    Wrong values never raise: a ``distinct_id`` that is not a non-empty string, a ``session_id`` that is
    not 32 hex digits, or a malformed group is logged (WARNING, rate-limited) and left out.

    Example:
        >>> with serla.context(distinct_id="user_123", groups={"company": "acme"}):  # doctest: +SKIP
        ...     client.track("report_exported")  # user_123, $groups={"company": "acme"}
        >>> @serla.context(properties={"job": "nightly_sync"})  # doctest: +SKIP
        ... async def sync(): ...

    Args:
        distinct_id: The default user inside the scope.
        session_id: The session (32 hex digits, e.g. serla-js's id from the browser, or
            ``serla.new_session_id()``).
        groups: ``{group_type: group_id}`` added to each event as ``properties["$groups"]``.
        properties: Properties added to each event (an event's own properties win).

    A ``context`` object used in a ``with`` statement may be entered again only after it was left (or
    nested in the same thread or task); as a decorator, any number of calls may run at once. A decorated
    generator function gets the scope only while it creates the generator, not while it is iterated:
    use a ``with`` block inside a generator instead.
    """

    __slots__ = ("_distinct_id", "_groups", "_properties", "_replace_id", "_session_id", "_tokens")

    def __init__(
        self,
        distinct_id: Optional[str] = None,
        session_id: Optional[str] = None,
        groups: Optional[Mapping[str, str]] = None,
        properties: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self._replace_id = False
        if distinct_id is not None and (not isinstance(distinct_id, str) or not distinct_id):
            warn_limited(
                "bad_context", "serla: context(): distinct_id must be a non-empty string, got %r", distinct_id
            )
            distinct_id = None
        self._distinct_id = distinct_id
        self._session_id = checked_session_id(session_id, "context()")
        self._groups = _checked_groups(groups)
        if properties is not None and not isinstance(properties, Mapping):
            kind = type(properties).__name__
            warn_limited("bad_context", "serla: context(): properties must be a dict, got %s", kind)
            properties = None
        self._properties = dict(properties) if properties else None
        self._tokens: list[contextvars.Token[Scope]] = []

    def scope(self, outer: Scope) -> Scope:
        """The scope this context makes inside ``outer``."""
        groups = outer.groups
        if self._groups:
            groups = {**groups, **self._groups} if groups else self._groups
        props = outer.properties
        if self._properties:
            props = {**props, **self._properties} if props else self._properties
        return Scope(
            self._distinct_id if self._replace_id or self._distinct_id is not None else outer.distinct_id,
            self._session_id if self._session_id is not None else outer.session_id,
            groups,
            props,
        )

    def __enter__(self) -> Scope:
        scope = self.scope(_scope.get())
        self._tokens.append(_scope.set(scope))
        return scope

    def __exit__(self, *exc_info: object) -> None:
        _scope.reset(self._tokens.pop())

    async def __aenter__(self) -> Scope:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__()

    def __call__(self, func: F) -> F:
        """Run each call of ``func`` (a function or a coroutine function) inside this scope."""
        import functools
        import inspect

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = _scope.set(self.scope(_scope.get()))
                try:
                    return await func(*args, **kwargs)
                finally:
                    _scope.reset(token)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _scope.set(self.scope(_scope.get()))
            try:
                return func(*args, **kwargs)
            finally:
                _scope.reset(token)

        return wrapper  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"serla.context(distinct_id={self._distinct_id!r}, session_id={self._session_id!r}, "
            f"groups={self._groups!r}, properties={self._properties!r})"
        )


def enter(scope: Scope) -> contextvars.Token[Scope]:
    """Make ``scope`` current (for integrations that can't use a ``with`` block); undo with :func:`leave`."""
    return _scope.set(scope)


def leave(token: contextvars.Token[Scope]) -> None:
    """Undo :func:`enter`."""
    _scope.reset(token)


def keys_of(value: Iterable[str] | str) -> list[str]:
    """``unset_properties`` accepts one key or an iterable of keys."""
    return [value] if isinstance(value, str) else list(value)
