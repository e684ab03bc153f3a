"""Imports deferred to the SDK's own threads, kept whole across ``os.fork()``.

The SDK imports its network stack (``serla._transport``, ``http.client``, ``ssl``, ``email``...) on the
first send, on the flusher thread, so that ``import serla`` and creating a client stay cheap. A process
may fork while that thread is importing: gunicorn ``--preload`` forks its workers right after loading an
app whose module created a client and tracked an event. The child then inherits a module that is in
``sys.modules`` but half-initialised, and every send in it fails (``cannot access submodule 'client' of
module 'http'``) or hangs on the import lock of a thread that does not exist there.

:data:`IMPORT_LOCK` closes that window: the SDK's threads hold it while they import, and a fork waits
for it (``os.register_at_fork``), so a child sees each module either whole or not imported at all. It is
held only for the imports themselves (once per process: later imports find the modules loaded), so a
fork waits at most the few milliseconds of the first import.

This module is imported when a client is created, not by ``import serla``.
"""

from __future__ import annotations

import os
import threading

IMPORT_LOCK = threading.Lock()
"""Held by the SDK's threads while they import; a fork waits until it is free."""


def _release_after_fork() -> None:
    IMPORT_LOCK.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=IMPORT_LOCK.acquire, after_in_parent=_release_after_fork, after_in_child=_release_after_fork
    )
