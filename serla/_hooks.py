"""Uncaught-exception hooks for ``Serla(capture_exceptions=True)``.

Three places see an exception nobody caught:

* ``sys.excepthook``: the main thread's. The report is queued, the hook installed before (Python's own,
  which prints the traceback, or another tool's) runs, then the client flushes, bounded by its
  ``shutdown_timeout``, so the report reaches the server before the process exits.
* ``threading.excepthook``: any other thread's. The report is queued and the previous hook runs; the
  client's exit hook (``flush_on_exit``) delivers it when the process ends.
* asyncio: ``BaseEventLoop.call_exception_handler``, which every standard loop calls for a task whose
  exception was never retrieved, a failing callback and the like, before it calls the loop's own handler
  (``loop.set_exception_handler``) or the default one, which still run. It is wrapped once for the process
  (a pass-through when no client captures); if ``asyncio`` is not imported yet, it is wrapped when it is.

``KeyboardInterrupt`` and ``SystemExit`` (and asyncio's ``CancelledError``) are never reported. Each
exception is reported once, whichever path saw it first. Nothing here runs while nothing is raised.
``Serla.shutdown()`` uninstalls the hooks: a hook still in place (nobody chained after it) is restored
to the one it replaced; otherwise it stays and passes everything through.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from serla._client import Serla

_SKIPPED = (KeyboardInterrupt, SystemExit)

_lock = threading.Lock()
_active: list[weakref.ReferenceType[Serla]] = []  # clients whose hooks are installed, for asyncio
_asyncio_patched = False
_watcher: Any = None


def _clients() -> list[Serla]:
    with _lock:
        alive = [c for c in (r() for r in _active) if c is not None]
    return alive


def _report(client: Serla, exc: BaseException, mechanism: str, extra: dict[str, Any] | None = None) -> bool:
    context: dict[str, Any] = {"mechanism": mechanism, "handled": False}
    if extra:
        context.update(extra)
    try:
        return client._capture(exc, level="error", context=context)
    except Exception:  # _capture never raises; belt and braces inside a hook
        return False


class Hooks:
    """The hooks one client installed; :meth:`uninstall` takes them out where it still can."""

    def __init__(self, client: Serla) -> None:
        self._ref = weakref.ref(client)
        self._previous_sys: Callable[..., Any] = sys.excepthook
        self._previous_thread: Callable[..., Any] = threading.excepthook
        ref = self._ref
        previous_sys = self._previous_sys
        previous_thread = self._previous_thread

        def serla_excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
            client = ref()
            reportable = isinstance(exc, BaseException) and not isinstance(exc, _SKIPPED)
            if client is not None and reportable:
                if exc.__traceback__ is None and tb is not None:
                    exc.__traceback__ = tb
                _report(client, exc, "sys.excepthook")
            try:
                previous_sys(exc_type, exc, tb)
            finally:
                # Flush even when this exception was already reported (say by the logging handler):
                # its report may still be queued, and the process is about to exit.
                if reportable and client is not None:
                    with contextlib.suppress(Exception):
                        client.flush(client.config.shutdown_timeout)

        def serla_threading_excepthook(args: Any) -> None:
            client = ref()
            exc = getattr(args, "exc_value", None)
            if client is not None and isinstance(exc, BaseException) and not isinstance(exc, _SKIPPED):
                thread = getattr(args, "thread", None)
                name = getattr(thread, "name", None)
                _report(client, exc, "threading.excepthook", {"thread": name} if name else None)
            previous_thread(args)

        self._sys_hook = serla_excepthook
        self._thread_hook = serla_threading_excepthook
        sys.excepthook = serla_excepthook
        threading.excepthook = serla_threading_excepthook
        with _lock:
            _active.append(ref)
        _ensure_asyncio_patch()

    def uninstall(self) -> None:
        """Restore the hooks that were replaced, where nobody chained after ours. Safe to call twice."""
        if sys.excepthook is self._sys_hook:
            sys.excepthook = self._previous_sys
        if threading.excepthook is self._thread_hook:
            threading.excepthook = self._previous_thread
        with _lock:
            if self._ref in _active:
                _active.remove(self._ref)


def install_hooks(client: Serla) -> Hooks:
    """Install the uncaught-exception hooks for ``client`` (``Serla(capture_exceptions=True)``)."""
    return Hooks(client)


# -- asyncio -------------------------------------------------------------------------------------------------


def _patch_loop_class(base_events: Any) -> None:
    """Wrap ``BaseEventLoop.call_exception_handler`` once: report, then do what it always did."""
    global _asyncio_patched
    with _lock:
        if _asyncio_patched:
            return
        _asyncio_patched = True
    loop_class = base_events.BaseEventLoop
    original = loop_class.call_exception_handler

    def call_exception_handler(self: Any, context: dict[str, Any]) -> None:
        try:
            exc = context.get("exception") if isinstance(context, dict) else None
            if isinstance(exc, BaseException) and not isinstance(exc, _SKIPPED):
                cancelled = sys.modules.get("asyncio.exceptions")
                if cancelled is None or not isinstance(exc, cancelled.CancelledError):
                    extra: dict[str, Any] = {}
                    message = context.get("message")
                    if isinstance(message, str):
                        extra["asyncio_message"] = message
                    for client in _clients():
                        _report(client, exc, "asyncio", extra)
        except Exception:
            pass
        original(self, context)

    call_exception_handler.__wrapped__ = original  # type: ignore[attr-defined]
    call_exception_handler.__doc__ = original.__doc__
    loop_class.call_exception_handler = call_exception_handler


class _AsyncioWatcher:
    """A one-shot ``sys.meta_path`` finder: wraps the loop class right after ``asyncio.base_events`` loads.

    It imports nothing itself; it asks the finders after it for the module's spec and wraps its loader's
    ``exec_module``. ``import serla`` never installs it; only ``capture_exceptions=True`` without asyncio
    loaded does.
    """

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "asyncio.base_events":
            return None
        _remove_watcher()
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        class _Loader:
            def __init__(self, inner: Any) -> None:
                self._inner = inner

            def create_module(self, spec: Any) -> Any:
                return self._inner.create_module(spec)

            def exec_module(self, module: Any) -> None:
                self._inner.exec_module(module)
                with contextlib.suppress(Exception):
                    _patch_loop_class(module)

            def __getattr__(self, attr: str) -> Any:
                return getattr(self._inner, attr)

        spec.loader = _Loader(loader)
        return spec


def _remove_watcher() -> None:
    global _watcher
    with _lock:
        watcher, _watcher = _watcher, None
    if watcher is not None:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(watcher)


def _ensure_asyncio_patch() -> None:
    global _watcher
    base_events = sys.modules.get("asyncio.base_events")
    if base_events is not None:
        _patch_loop_class(base_events)
        return
    with _lock:
        if _watcher is not None or _asyncio_patched:
            return
        _watcher = _AsyncioWatcher()
        sys.meta_path.insert(0, _watcher)
