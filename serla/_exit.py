"""Delivery at exit: one ``atexit`` hook and one ``SIGTERM`` handler for every client of the process.

A client registers a hook (a callable that delivers its events within the client's ``shutdown_timeout``)
when it is created with ``flush_on_exit=True``; ``shutdown()`` removes it. The hook holds the client's
worker, not the client, so a client that lived in a function and was collected still delivers.

``SIGTERM`` counts as an exit. Its default action kills the process before ``atexit`` runs, and servers
that handle it (uvicorn, hypercorn) restore the default and re-raise it once they have drained. So the
first client installs a handler (from the main thread; elsewhere ``signal`` refuses and nothing is
installed) that runs the hooks, then chains to whatever was installed before it:

* a Python handler (a server's graceful shutdown) is called, as if ours were not there;
* ``SIG_IGN`` stays ignored;
* the default action is restored and the signal re-raised, so the process still dies of ``SIGTERM``
  (its exit status says so, as supervisors expect).

Events tracked after the handler ran (requests a server drains after ``SIGTERM``) are delivered by the
``atexit`` hook when the server exits normally; uvicorn and hypercorn re-raise the signal instead, so for
them the ASGI integration also delivers at the lifespan's shutdown.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:  # ``typing`` (and ``re`` behind it on 3.9) is not loaded by creating a client
    from typing import Any, Callable

_hooks: dict[int, Callable[[], None]] = {}
_lock = threading.Lock()
_atexit_registered = False
_signal_installed_pid = 0
_previous: Any = None


def register(hook: Callable[[], None]) -> int:
    """Run ``hook`` at exit (normal exit or ``SIGTERM``); return a token for :func:`unregister`."""
    global _atexit_registered
    with _lock:
        token = id(hook)
        _hooks[token] = hook
        if not _atexit_registered:
            atexit.register(run_hooks)
            _atexit_registered = True
    _install_sigterm()
    return token


def unregister(token: int) -> None:
    """Forget a hook (the client was shut down)."""
    with _lock:
        _hooks.pop(token, None)


def run_hooks() -> None:
    """Run every registered hook once (each is bounded by its client's ``shutdown_timeout``)."""
    with _lock:
        hooks = list(_hooks.values())  # kept: after SIGTERM a server may drain and exit normally
    for hook in hooks:
        with contextlib.suppress(Exception):  # a hook never raises; never let one stop the others
            hook()


def _install_sigterm() -> None:
    """Install the SIGTERM handler once per process, from the main thread only."""
    global _signal_installed_pid, _previous
    if _signal_installed_pid == os.getpid() or threading.current_thread() is not threading.main_thread():
        return
    try:
        import signal

        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except (ImportError, AttributeError, ValueError, OSError):  # no SIGTERM here, or not allowed
        return
    if previous is _on_sigterm:
        return
    _previous = previous
    _signal_installed_pid = os.getpid()


def _on_sigterm(signum: int, frame: Any) -> None:
    import signal

    run_hooks()
    previous = _previous
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL (or None: installed from C): die of the signal, as without us
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
