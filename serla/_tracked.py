"""``@tracked``: track each call of a function, method, classmethod, staticmethod or async function.

``from serla import tracked`` needs only ``wrapt`` (``pip install "serla-py[tracked]"``), not OpenTelemetry;
``serla.otel.tracked`` is the same function, kept for code written against 0.2.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional, TypeVar, Union, cast, overload

import wrapt

from serla import _registry
from serla._client import Serla
from serla._log import logger, warn_limited

F = TypeVar("F", bound=Callable[..., Any])

DistinctId = Union[str, Callable[..., Optional[str]], None]
"""A fixed id, a callable given the call's arguments (without ``self``/``cls``), or None (context default)."""


@overload
def tracked(event: F) -> F: ...


@overload
def tracked(
    event: str | None = None,
    *,
    client: Serla | None = None,
    distinct_id: DistinctId = None,
    properties: Mapping[str, Any] | None = None,
) -> Callable[[F], F]: ...


def tracked(
    event: Any = None,
    *,
    client: Serla | None = None,
    distinct_id: DistinctId = None,
    properties: Mapping[str, Any] | None = None,
) -> Any:
    """Track an event each time the decorated callable is called (after it returns or raises).

    Works the same on functions, methods, classmethods, staticmethods and ``async def`` functions (an
    async call is tracked when it completes, not when the coroutine is created). The call's own result or
    exception passes through untouched; tracking never raises.

    Example:
        >>> @tracked(event="report_exported", distinct_id=lambda user, fmt: user.id)  # doctest: +SKIP
        ... def export_report(user, fmt): ...

    Args:
        event: The event's name; by default the function's ``__qualname__``. ``@tracked`` with no
            parentheses is allowed.
        client: The client; ``None`` uses :func:`serla.get_default_client` at call time.
        distinct_id: A fixed id, a callable receiving the call's arguments (without ``self``/``cls``) and
            returning the id, or ``None`` for the context default (:func:`serla.set_distinct_id`).
        properties: Fixed properties added to every event.

    Each event's properties are ``properties`` plus ``function`` (the qualified name), ``duration_ms``,
    ``success`` and, when the call raised, ``error_type``.

    Raises:
        TypeError: For a bad argument (when decorating, never when the function is called).
    """
    if callable(event) and not isinstance(event, str):
        return tracked()(event)
    if event is not None and (not isinstance(event, str) or not event):
        raise TypeError("serla.tracked: event must be a non-empty string")
    if distinct_id is not None and not isinstance(distinct_id, str) and not callable(distinct_id):
        raise TypeError("serla.tracked: distinct_id must be a string, a callable or None")
    if properties is not None and not isinstance(properties, Mapping):
        raise TypeError("serla.tracked: properties must be a mapping")
    fixed = dict(properties or {})

    def emit(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], start: float, error: Any) -> None:
        try:
            target = client if client is not None else _registry.get_default_client(create=True)
            if target is None:
                warn_limited("tracked_no_client", "serla: @tracked call not tracked: no client configured")
                return
            who = distinct_id(*args, **kwargs) if callable(distinct_id) else distinct_id
            props = {
                **fixed,
                "function": name,
                "duration_ms": (time.perf_counter() - start) * 1000.0,
                "success": error is None,
            }
            if error is not None:
                props["error_type"] = type(error).__name__
            target.track(event or name, who, props)
        except Exception:
            logger.warning("serla: @tracked failed to track a call", exc_info=True)

    def decorate(func: F) -> F:
        target = func.__func__ if isinstance(func, (classmethod, staticmethod)) else func
        name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or repr(target)
        if inspect.iscoroutinefunction(target):

            def async_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
                async def run() -> Any:
                    start = time.perf_counter()
                    error: BaseException | None = None
                    try:
                        return await wrapped(*args, **kwargs)
                    except BaseException as exc:
                        error = exc
                        raise
                    finally:
                        emit(name, args, kwargs, start, error)

                return run()

            return cast(F, wrapt.FunctionWrapper(func, async_wrapper))

        def sync_wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            start = time.perf_counter()
            error: BaseException | None = None
            try:
                return wrapped(*args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                emit(name, args, kwargs, start, error)

        return cast(F, wrapt.FunctionWrapper(func, sync_wrapper))

    return decorate
