"""The delivery pipeline: bounded buffers and one daemon thread per client.

Lanes. Events are batched to ``POST /api/v1/events/batch``; error reports and LLM records are *lanes*
of single-record requests (``/api/v1/errors``, ``/api/v1/llm``). Each lane has its own buffer, its own
hold (a 429 on one endpoint never holds up another, since the server counts them in separate buckets)
and its own switch (a 402 turns a lane off, with one WARNING; events go on). One thread serves them all,
one request at a time, taking turns between the lanes that are ready.

Invariants (read these before changing anything here):

* ``_lock`` guards every field below it in ``_init_state``. It is held only to append to, pop from or
  read the buffers and counters, never during I/O or a wait.
* Events are resolved (delivered or dropped) strictly in the order they were accepted: the events lane
  sends one batch at a time and finishes it (its split halves and retries included) before taking the
  next. So "every event accepted before this ``flush()`` is resolved" is the single number ``_done_seq``.
  Each part of a batch is resolved exactly once (:meth:`_resolve`): an accounting that can't go negative.
* One delivery path: :meth:`_step` makes at most one request and returns how long nothing is due. The
  flusher thread loops over it; when no thread can run (interpreter shutdown), ``flush()`` loops over the
  very same method on the calling thread.

Memory bounds (see ``Serla``'s docstring):

* While the endpoint is *down* (network errors, timeouts, 5xx, a paused key or quota), at most
  ``max_queue_size`` events are held: nobody knows when it comes back.
* While it is *up* (delivering, slow, or rate limiting with ``Retry-After``: the data is deliverable and
  the server says when), the bound is ``max_buffer_bytes`` of encoded events.

Batching: a request carries at most ``batch_size`` events (the seed's "max events per flushed batch"),
and is sent when ``batch_size`` events wait, when the oldest has waited ``flush_interval`` (give or take
10 %, so that a fleet's interval flushes don't fire in step) or on ``flush()``. While the project is rate
limited (a 429 with ``Retry-After``), requests carry up to 100 events, the server's cap, until the backlog
is gone: the server's request budget, not the event count, is then the limit. The client also paces
itself: an interval from one request's start to the next, at least 0.6 s (100 a minute, a lone process
gets the whole budget), set on the first 429 from this process's share of the last window's requests
(``k`` of them: ``60 / k`` s), 1.25 times longer on each later 429 and 5 % shorter on each success, with
+-10 % jitter. A fleet
that shares the project's budget so settles near its fair share and spreads its requests over the window,
instead of spending the budget in the window's first seconds and collecting 429s for the rest; the first
request after a 429 waits ``Retry-After`` plus a random part of the pace, so the fleet doesn't stampede
when the window opens.

This module is imported when a client is created; the retry policy (``serla._retry``) and the transport
are imported by the flusher on its first send.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from _weakref import ref as weakref_ref

from serla._config import log_debug, log_exception, log_warning, warn_limited
from serla._encode import MAX_EVENT_BYTES, MAX_REQUEST_BYTES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Final

    from serla._retry import Decision, RetryPolicy
    from serla._stats import LaneStats, Stats
    from serla._transport import SendResult, Transport

BATCH_PATH: Final = "/api/v1/events/batch"
MAX_BATCH: Final = 100
"""The server takes at most 100 events per request."""
LANE_PATHS: Final = {"errors": "/api/v1/errors", "llm": "/api/v1/llm"}
"""The single-record lanes and their endpoints."""
LANE_MAX_RECORDS: Final = 1000
LANE_MAX_BYTES: Final = 16 * 1024 * 1024
_ITEM_OVERHEAD: Final = 48  # a bytes object's header and its deque slot, charged to the byte bound
_DEFERRED_CHARGE: Final = 1024  # a Deferred's charge until its JSON is built
_WARN_AFTER_ATTEMPTS: Final = 4  # failed sends of one batch (about 1+2+4 s of backoff) before a WARNING
_STOP: Final = -1.0

_HEAD: Final = b'{"events":['
_TAIL: Final = b"]}"


NO_WAIT: Final = threading.local()
"""``NO_WAIT.on = True`` on a thread: ``put()`` never waits for room there, whatever ``block_on_full``
says (the logging handler sets it around its ``track()``: a handler must never hold up a log call). Read
only when the buffer is full, so it costs the common case nothing."""


def _random() -> float:
    """A float in [0, 1) for jitter, without importing ``random`` (and ``hashlib`` behind it)."""
    return int.from_bytes(os.urandom(4), "big") / 4294967296.0


class Deferred:
    """An accepted event whose JSON is built on the flusher thread, when its batch is taken.

    A generic mechanism for callers whose event data can't change after the call (the OpenTelemetry
    bridge: an ended span's attributes are immutable): they skip encoding on the application's thread.
    ``build(*args)`` returns the event's JSON, or ``None`` to drop it. Until then the event counts like
    any other (``pending_count()``, the memory bounds, ``flush()``), charged as 1 KiB.
    """

    __slots__ = ("args", "build")

    def __init__(self, build: Callable[..., bytes | None], *args: Any) -> None:
        self.build = build
        self.args = args

    def __len__(self) -> int:
        return _DEFERRED_CHARGE


def _in_event_loop() -> bool:
    """True on a thread running an asyncio event loop: ``track()`` there never waits for room."""
    aio = sys.modules.get("asyncio")
    return aio is not None and aio._get_running_loop() is not None


class _Batch:
    """Events in flight, frozen at their first send: same bytes, same key on every retry."""

    __slots__ = ("attempts", "flush_gen", "items", "key", "last_seq", "row", "seqs")

    def __init__(self, items: list[Any], seqs: list[int], key: str, last_seq: int) -> None:
        self.items = items
        self.seqs = seqs
        self.key = key
        self.last_seq = last_seq
        self.attempts = 0
        self.flush_gen = 0
        self.row: Any = None  # on ``_whole``: the spool's rows this batch was leased from (serla._spool)

    def body(self) -> bytes:
        return _HEAD + b",".join(self.items) + _TAIL

    def derive(self, items: list[Any], seqs: list[int], tag: str) -> _Batch:
        return _Batch(items, seqs, f"{self.key}.{tag}", self.last_seq)

    def halves(self) -> tuple[_Batch, _Batch]:
        """The first and second half of this batch, keyed ``<key>.0`` and ``<key>.1``."""
        half = len(self.items) // 2
        return (
            self.derive(self.items[:half], self.seqs[:half], "0"),
            self.derive(self.items[half:], self.seqs[half:], "1"),
        )


def _body_size(items: list[Any]) -> int:
    """The bytes of a request body carrying ``items`` (a ``Deferred`` counts as its charge)."""
    return len(_HEAD) + len(_TAIL) + len(items) + sum(map(len, items))


def _charge(items: list[Any]) -> int:
    return sum(map(len, items)) + _ITEM_OVERHEAD * len(items)


class _Record:
    """One record of a single-record lane: its body and its stable idempotency key."""

    __slots__ = ("attempts", "body", "flush_gen", "key", "row")

    def __init__(self, body: bytes, key: str) -> None:
        self.body = body
        self.key = key
        self.attempts = 0
        self.flush_gen = 0
        self.row: Any = None  # the spool's row when an earlier run left this record there


class _Lane:
    """A lane of single-record requests (errors, LLM records): buffer, hold, switch and counters."""

    __slots__ = (
        "accepted",
        "buffer",
        "current",
        "disabled",
        "done",
        "dropped",
        "hold_kind",
        "hold_until",
        "lost",
        "name",
        "path",
        "queued_bytes",
        "sent",
    )

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self.buffer: collections.deque[_Record] = collections.deque()
        self.current: _Record | None = None
        self.queued_bytes = 0
        self.accepted = 0
        self.done = 0  # records resolved (delivered or dropped), in order
        self.lost = 0
        self.sent = 0
        self.dropped: dict[str, int] = collections.defaultdict(int)
        self.hold_until = 0.0
        self.hold_kind = ""
        self.disabled = ""  # the reason the lane is off, or ""

    def stats(self) -> LaneStats:
        return {
            "queued": len(self.buffer) + (self.current is not None),
            "accepted": self.accepted,
            "sent": self.sent,
            "dropped": dict(self.dropped),
            "disabled": self.disabled or None,
        }


class BatchWorker:
    """Buffers encoded events and records, and delivers them from one named daemon thread.

    Args:
        transport_factory: Returns a fresh :class:`~serla._transport.Transport` (called lazily, and again
            in a forked child).
        batch_size: The most events a request carries, 1..100, while the server keeps up; up to 100
            while the project is rate limited. Also how many waiting events trigger a send.
        flush_interval: The longest an event waits in the buffer before a send, in seconds.
        max_queue_size: The most events held while the endpoint is down; more are refused and counted.
        max_buffer_bytes: The most bytes of events held while the endpoint is up (slow or rate limited).
        block_on_full: How long ``put`` may wait for room while deliveries succeed, in seconds (opt-in;
            ``0`` never waits). While the endpoint fails, ``put`` never waits.
        policy: The retry policy.
        clock: Monotonic clock (injectable).
        wall_clock: Wall clock for ``Retry-After`` dates (injectable).
        rng: Random source for jitter (injectable).
        name: The thread's name.
        spool_opener: With a durable spool: opens it and returns a ``serla._spool.SpoolPump`` for this
            worker (called on first use, again in a forked child); raises ``SpoolUnavailable`` if it can't.
    """

    def __init__(
        self,
        transport_factory: Callable[[], Transport],
        *,
        batch_size: int,
        flush_interval: float,
        max_queue_size: int,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        block_on_full: float = 0.0,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = _random,
        name: str = "serla-flusher",
        spool_opener: Callable[[BatchWorker], Any] | None = None,
    ) -> None:
        self._transport_factory = transport_factory
        self._spool_opener = spool_opener
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max = max_queue_size
        self._max_bytes = max_buffer_bytes
        self._block_on_full = block_on_full
        self._policy = policy  # None: the default RetryPolicy, made on the first failed send
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng
        self._name = name
        self._init_state()
        # A forked child must start empty, with fresh locks and no thread (the parent's are not its own).
        # The hook does that at fork time, so ``put()`` needs no per-call ``os.getpid()`` check; the other
        # entry points keep one for platforms or embedders that fork without running the hooks.
        if hasattr(os, "register_at_fork"):
            ref = weakref_ref(self)

            def _child() -> None:
                worker = ref()
                if worker is not None:
                    worker._after_fork()

            os.register_at_fork(after_in_child=_child)

    def _init_state(self) -> None:
        """(Re)create every piece of mutable state: at construction and in a forked child."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)  # notified when events resolve or room appears
        self._wakeup = threading.Event()  # set to wake the flusher
        self._inline_lock = threading.Lock()
        self._buffer: collections.deque[bytes | Deferred] = collections.deque()
        self._thread: threading.Thread | None = None
        self._thread_failed = False
        self._transport: Transport | None = None
        self._limit = self._max  # the count bound: max_queue_size, plus the events of ours in the spool
        self._pump: Any = None  # the SpoolPump once the spool is open (serla._spool)
        self._spool_lock = threading.Lock()
        self._spool_error: str | None = None
        self._exiting = False  # flush_at_exit() ran: with a spool, deliver only this process's own events
        self._spooling = False  # a spool takes the backlog: memory holds only what waits for the next write,
        # bounded by max_buffer_bytes even while the endpoint is down (serla._spool.SpoolPump)
        self._accepted_seq = 0  # seq of the last accepted event
        self._taken_seq = 0  # seq of the last event moved from the buffer into a batch
        self._done_seq = 0  # every event with seq <= this is resolved
        self._pending = 0  # events accepted, not resolved
        self._pending_bytes = 0  # their charge against max_buffer_bytes
        self._up = True  # the endpoint is up: the byte bound applies, else the count bound
        self._oldest_at: float | None = None  # when the buffer last became non-empty
        self._interval_jitter = 0.0
        self._send_through = 0  # send without waiting for the interval up to this seq
        self._flush_gen = 0
        self._flushers = 0
        self._closed = False  # no more intake
        self._stop = False  # flusher: exit as soon as possible
        self._healthy = True
        self._hold_until = 0.0
        self._hold_kind = ""  # "backoff" (a flush may cut it short), "hold" (server-imposed) or "pace"
        self._pace = 0.0  # seconds between event requests while rate limited; 0: not paced
        self._last_send_at = 0.0
        self._sends: collections.deque[float] = collections.deque(maxlen=200)  # event requests' start times
        self._todo: collections.deque[_Batch] = collections.deque()  # the batch in flight, in parts
        self._whole: _Batch | None = None  # the batch the parts in _todo came from
        self._in_flight = 0
        self._lanes = {name: _Lane(name, path) for name, path in LANE_PATHS.items()}
        self._turn = 0  # round-robin position among ready lanes
        self._lost: collections.deque[int] = collections.deque(maxlen=4096)
        self._lost_evicted = 0  # the highest seq that fell out of _lost
        self._stats: dict[str, int] = collections.defaultdict(int)
        self._dropped: dict[str, int] = collections.defaultdict(int)
        self._last_error: str | None = None
        # Idempotency keys: one random UUID-shaped prefix per worker and process (re-derived in a forked
        # child, so keys stay unique across forks) and a counter in the last 12 hex digits. A uuid4() per
        # batch costs more, and ``uuid`` is a slow import.
        r = os.urandom(10).hex()
        self._key_prefix = f"{r[:8]}-{r[8:12]}-4{r[12:15]}-{'89ab'[int(r[15], 16) & 3]}{r[16:19]}-"
        self._key_seq = 0

    # -- producer side ---------------------------------------------------------------------------------

    def put(self, data: bytes | Deferred, wait: bool = True) -> bool:
        """Accept one encoded (or :class:`Deferred`) event; return False (and count it) if it is refused.

        Never waits unless ``block_on_full`` is set (opt-in) and ``wait`` is true. Never raises.
        """
        size = len(data) + _ITEM_OVERHEAD
        with self._lock:
            if not self._closed and (
                self._pending_bytes + size <= self._max_bytes
                if self._up or self._spooling
                else self._pending < self._limit
            ):  # the common case, first
                self._pending += 1
                self._pending_bytes += size
                self._accepted_seq += 1
                buf = self._buffer
                buf.append(data)
                n = len(buf)
                if n == 1:
                    self._oldest_at = self._clock()
                    wake = True
                else:
                    wake = n == self._batch_size
                refused = ""
            elif self._closed:
                self._dropped["shutdown"] += 1
                refused = "shutdown"
            elif not wait or not self._wait_for_room(size):
                self._dropped["queue_full"] += 1
                refused = "queue_full"
            else:
                self._pending += 1
                self._pending_bytes += size
                self._accepted_seq += 1
                self._buffer.append(data)
                wake = True
                refused = ""
        if refused:
            if refused == "queue_full":
                if self._up or self._spooling:
                    warn_limited(
                        "queue_full",
                        "serla: event dropped: %d bytes of events are already waiting (max_buffer_bytes) "
                        "for a slow or rate-limited endpoint; see Serla.stats()['dropped']",
                        self._max_bytes,
                    )
                else:
                    warn_limited(
                        "queue_full",
                        "serla: event dropped: %d events are already waiting (max_queue_size) and the "
                        "endpoint is not accepting them right now; see Serla.stats()['dropped']",
                        self._max,
                    )
            else:
                warn_limited("closed", "serla: event dropped: the client was shut down")
            return False
        if self._thread is None and not self._thread_failed:
            self._start_thread()
        if wake:
            self._wakeup.set()
        return True

    def _has_room(self, size: int) -> bool:
        if self._up or self._spooling:
            return self._pending_bytes + size <= self._max_bytes
        return self._pending < self._limit

    def _wait_for_room(self, size: int) -> bool:
        """Wait (caller holds ``_lock``) for the flusher to make room, only while deliveries succeed."""
        if self._block_on_full <= 0 or not self._can_block():
            return False
        deadline = self._clock() + self._block_on_full
        self._send_through = max(self._send_through, self._accepted_seq)
        self._wakeup.set()
        while not self._has_room(size):
            remaining = deadline - self._clock()
            if remaining <= 0 or not self._can_block():
                return False
            self._progress.wait(remaining)
        return True

    def _can_block(self) -> bool:
        thread = self._thread
        return (
            (self._healthy or self._pump is not None)  # with a spool, the flusher makes room on disk
            and not self._stop
            and thread is not None
            and thread.is_alive()
            and thread is not threading.current_thread()
            and not _in_event_loop()
            and not getattr(NO_WAIT, "on", False)
        )

    def submit(self, lane: str, body: bytes) -> bool:
        """Accept one record for a single-record lane (``"errors"``, ``"llm"``). Never waits or raises.

        Args:
            lane: The lane's name.
            body: The complete JSON request body of one record.

        Returns:
            False (and counted in the lane's ``dropped``) when the lane is off (after a 402), full
            (1,000 records or 16 MiB) or the worker is closed.
        """
        try:
            with self._lock:
                state = self._lanes[lane]
                if state.disabled:
                    state.dropped[state.disabled] += 1
                    return False
                if self._closed:
                    state.dropped["shutdown"] += 1
                    return False
                if len(state.buffer) >= LANE_MAX_RECORDS or state.queued_bytes + len(body) > LANE_MAX_BYTES:
                    state.dropped["queue_full"] += 1
                    full = True
                else:
                    self._key_seq += 1
                    state.buffer.append(_Record(body, f"{self._key_prefix}{self._key_seq:012x}"))
                    state.queued_bytes += len(body)
                    state.accepted += 1
                    full = False
            if full:
                warn_limited(
                    f"lane_full_{lane}",
                    "serla: %s record dropped: %d records (or %d bytes) are already waiting",
                    lane,
                    LANE_MAX_RECORDS,
                    LANE_MAX_BYTES,
                )
                return False
            if self._thread is None and not self._thread_failed:
                self._start_thread()
            self._wakeup.set()
            return True
        except Exception:
            log_exception("serla: could not queue a %s record", lane)
            return False

    # -- lifecycle -------------------------------------------------------------------------------------

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None or self._thread_failed or self._stop:
                return
            if sys.is_finalizing():
                self._thread_failed = True
            else:
                thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                try:
                    thread.start()
                except RuntimeError:  # "can't create new thread at interpreter shutdown"
                    self._thread_failed = True
                else:
                    self._thread = thread
        if self._thread_failed:
            log_debug("serla: no flusher thread can start now; flush() will send on the caller's thread")

    def _after_fork(self) -> None:
        """In a forked child: start empty with fresh locks; the parent keeps delivering its own events."""
        if self._pid == os.getpid():
            return
        closed = self._closed
        transport = self._transport
        if transport is not None and hasattr(transport, "forget"):
            transport.forget()
        if self._pump is not None:
            self._pump.spool.after_fork()  # the parent's connection is not the child's to use
        self._init_state()
        self._closed = closed

    def flush(self, timeout: float | None) -> bool:
        """Wait until every event and record accepted before this call is resolved.

        With a spool, also until the events an earlier run left there (same host and key) are delivered.

        Args:
            timeout: Seconds to wait at most; ``None`` waits without bound.

        Returns:
            True when all of them were delivered; False on timeout or if any of them was dropped.
        """
        if self._pid != os.getpid():
            self._after_fork()
        deadline = None if timeout is None else self._clock() + max(0.0, timeout)
        pump = self.spool_pump()
        if pump is None:
            return self._flush(deadline)
        if pump.earlier and not self._exiting:
            if self._thread is None and not self._thread_failed:
                self._start_thread()
            self._wakeup.set()
        ok = self._flush(deadline)
        ok = pump.wait_earlier(deadline) and ok
        if self._exiting:
            pump.wait_idle(deadline)
        return ok

    def flush_at_exit(self, timeout: float | None) -> bool:
        """The atexit hook's flush: :meth:`flush`, and with a spool only this process's own events.

        With a spool, batches of other processes or of earlier runs are not started any more, and the
        hook waits for a request of a spooled batch to end, so that exit never leaves one sent but still
        on disk (it would be sent again) or leased by a dead process.
        """
        self._exiting = True
        if (
            self._pump is None
            and not self._accepted_seq
            and not any(s.accepted for s in self._lanes.values())
        ):
            return True  # nothing of its own (a pre-fork master): don't open the spool just to exit
        return self.flush(timeout)

    def spool_pump(self) -> Any:
        """The spool's pump, opened on first use; None without a spool or when it can't be used."""
        if self._spool_opener is None or self._spool_error is not None:
            return None
        pump = self._pump
        if pump is None:
            with self._spool_lock:
                if self._pump is None and self._spool_error is None:
                    from serla._spool import SpoolUnavailable

                    try:
                        self._pump = self._spool_opener(self)
                    except SpoolUnavailable as exc:
                        self._spool_error = str(exc)
                        warn_limited(
                            "spool_unavailable",
                            "serla: the spool can't be used (%s); events are kept in memory only",
                            exc,
                        )
                    except Exception:
                        self._spool_error = "unexpected error opening the spool"
                        log_exception("serla: the spool can't be opened; events are kept in memory only")
                pump = self._pump
        return None if pump is None or pump.broken is not None else pump

    def _flush(self, deadline: float | None) -> bool:
        with self._lock:
            target = self._accepted_seq
            start = self._done_seq
            lane_targets = {
                lane: (s.accepted, s.lost) for lane, s in self._lanes.items() if s.accepted > s.done
            }
            if self._done_seq >= target and not lane_targets:
                return True
            self._send_through = max(self._send_through, target)
            self._flush_gen += 1
            self._flushers += 1
        try:
            if self._thread is None and not self._thread_failed:
                self._start_thread()
            thread = self._thread
            if thread is threading.current_thread():
                return False
            inline = thread is None or not thread.is_alive()
            self._wakeup.set()
            while True:
                with self._lock:
                    if self._flushed(target, lane_targets):
                        break
                    remaining = None if deadline is None else deadline - self._clock()
                    if remaining is not None and (remaining <= 0 or self._held_past(deadline)):
                        return False  # the server told us to wait past the deadline: no point waiting
                    if not inline:
                        self._progress.wait(remaining)
                        continue
                with self._inline_lock:  # no thread: the same delivery path, on this thread
                    wait = self._step()
                if wait == _STOP:
                    return False
                if wait is None or wait > 0:
                    limit = 0.05 if wait is None else wait
                    self._wakeup.wait(limit if remaining is None else min(limit, remaining))
                    self._wakeup.clear()
            with self._lock:
                lanes_ok = all(self._lanes[lane].lost == lost for lane, (_, lost) in lane_targets.items())
                return (
                    lanes_ok
                    and self._lost_evicted <= start
                    and not any(start < s <= target for s in self._lost)
                )
        finally:
            with self._lock:
                self._flushers -= 1

    def _flushed(self, target: int, lane_targets: dict[str, tuple[int, int]]) -> bool:
        if self._done_seq < target:
            return False
        return all(self._lanes[lane].done >= want for lane, (want, _) in lane_targets.items())

    def _held_past(self, deadline: float | None) -> bool:
        """Whether a server-imposed hold on work we wait for outlasts ``deadline`` (caller holds the lock)."""
        if deadline is None:
            return False
        if self._done_seq < self._accepted_seq and self._hold_kind == "hold" and self._hold_until > deadline:
            return True
        return any(
            s.hold_kind == "hold" and s.hold_until > deadline and s.accepted > s.done
            for s in self._lanes.values()
        )

    def close(self, timeout: float | None) -> bool:
        """Stop intake, deliver what is queued within ``timeout``, stop the thread. Safe to call twice.

        Returns:
            True when everything accepted was delivered.
        """
        with self._lock:
            self._closed = True
        deadline = None if timeout is None else self._clock() + max(0.0, timeout)
        if self._spool_opener is not None and timeout is not None:
            # Keep a moment at the end to write what is still in memory to the spool.
            ok = self.flush(max(0.0, timeout - min(1.0, timeout / 5)))
        else:
            ok = self.flush(timeout)
        with self._lock:
            self._stop = True
            thread = self._thread
        self._wakeup.set()
        if thread is not None and thread is not threading.current_thread():
            remaining = None if deadline is None else max(0.0, deadline - self._clock())
            thread.join(remaining)
        alive = thread is not None and thread.is_alive()
        with self._inline_lock:
            if not alive:
                left = self._abandon("shutdown")
                if left:
                    ok = False
                    warn_limited("shutdown_loss", "serla: %d events were not delivered before shutdown", left)
            elif self._pending:
                ok = False
            transport = self._transport
        if transport is not None and not alive:
            transport.close()
        return ok

    def _abandon(self, reason: str) -> int:
        """Resolve everything left (buffered, in flight, in lanes) as dropped for ``reason``.

        With a spool, the events go to disk instead and stay there for the next run.
        """
        pump = self._pump
        if pump is not None and pump.broken is None:
            pump.stop()
        parts = list(self._todo)
        self._todo.clear()
        in_parts = sum(len(p.items) for p in parts)
        for part in parts:
            self._resolve(part, reason)
        with self._lock:
            left = self._pending
            if left > 0:
                self._dropped[reason] += left
            self._pending = 0
            self._pending_bytes = 0
            self._buffer.clear()
            self._taken_seq = self._done_seq = self._accepted_seq
            self._in_flight = 0
            self._whole = None
            for state in self._lanes.values():
                n = len(state.buffer) + (state.current is not None)
                if n:
                    state.dropped[reason] += n
                    state.lost += n
                    left += n
                state.buffer.clear()
                state.current = None
                state.queued_bytes = 0
                state.done = state.accepted
            self._progress.notify_all()
        return left + in_parts

    # -- introspection ---------------------------------------------------------------------------------

    def pending(self) -> int:
        """Events accepted and not yet resolved (buffered + in flight + in the spool)."""
        if self._pid != os.getpid():
            self._after_fork()
        pump = self._pump
        return self._pending + (pump.earlier_waiting() if pump is not None else 0)

    def stats(self) -> Stats:
        """A snapshot of the counters (see ``Serla.stats``)."""
        pump = self._pump
        spool = pump.snapshot() if pump is not None else None
        if spool is None and self._spool_opener is not None:
            spool = {"error": self._spool_error, "spooled": 0, "sent_from_spool": 0, "waiting": None}
        with self._lock:
            if self._pace or (self._hold_kind == "hold" and self._up):
                state = "rate_limited"
            elif self._hold_kind == "hold":
                state = "paused"  # the monthly quota, a refused key, a wrong host: a long server-imposed hold
            elif not self._healthy:
                state = "down"
            else:
                state = "up"
            out: Stats = {
                "queued": len(self._buffer),
                "queued_bytes": self._pending_bytes,
                "in_flight": self._in_flight,
                "pending": self._pending,
                "accepted": self._accepted_seq,
                "sent": self._stats["sent"],
                "batches_sent": self._stats["batches"],
                "requests": self._stats["requests"],
                "retried": self._stats["retried"],
                "dropped": dict(self._dropped),
                "healthy": self._healthy,
                "state": state,
                "last_error": self._last_error,
                "lanes": {name: s.stats() for name, s in self._lanes.items()},
            }
        if spool is not None:
            out["spool"] = spool
        return out

    # -- the flusher -----------------------------------------------------------------------------------

    def _run(self) -> None:
        """The flusher thread's loop: one step (at most one request) at a time, waiting when none is due."""
        while True:
            wait = self._step()
            if wait == _STOP:
                with self._inline_lock:
                    left = self._abandon("shutdown")  # held work that close() gave up on
                if left:
                    warn_limited("shutdown_loss", "serla: %d events were not delivered before shutdown", left)
                transport = self._transport
                if transport is not None:  # the thread is done with it: don't leave the socket to the GC
                    transport.close()
                return
            if wait is None or wait > 0:
                self._wakeup.wait(wait)

    def _step(self) -> float | None:
        """Make at most one request; return 0 to go on at once, the seconds until something is due
        (``None``: nothing is), or ``_STOP``. Never raises: one bad batch can't kill the flusher."""
        lane: _Lane | None = None
        batch: _Batch | None = None
        pump: Any = self._pump if self._spool_opener is not None else None
        if pump is None and self._spool_opener is not None and self._spool_error is None:
            pump = self.spool_pump()  # the flusher opens the spool: sqlite3 never on the caller's thread
        if pump is not None and pump.broken is not None:
            pump = None
        if pump is not None and pump.acks:
            pump.ack_records()
        try:
            with self._lock:
                self._wakeup.clear()
                now = self._clock()
                due: list[float] = []
                events_ready = spool_now = lease_now = False
                if self._todo:
                    events_ready = self._ready(self._hold_until, self._hold_kind, self._todo[0], now, due)
                if pump is not None:  # with a spool: memory -> disk -> server (serla._spool)
                    spool_now = pump.spool_due(now, due)
                    lease_now = not spool_now and not self._todo and pump.send_due(now, due)
                elif not self._todo and self._buffer:
                    oldest = self._oldest_at if self._oldest_at is not None else now
                    send_at = oldest + self._interval - self._interval_jitter
                    if now >= send_at:
                        self._send_through = max(self._send_through, self._accepted_seq)
                    limit = MAX_BATCH if self._pace else self._batch_size
                    if self._stop or len(self._buffer) >= limit or self._send_through > self._taken_seq:
                        batch = self._take()  # sent on a later step, once no hold is in the way
                    else:
                        due.append(send_at - now)
                ready_lanes = []
                for state in self._lanes.values():
                    if state.current is None and state.buffer:
                        state.current = state.buffer.popleft()
                    if state.current is not None and self._ready(
                        state.hold_until, state.hold_kind, state.current, now, due
                    ):
                        ready_lanes.append(state)
                idle = batch is None and not spool_now and not lease_now
                if idle and self._stop and not events_ready and not ready_lanes:
                    return _STOP
                if idle and not events_ready and not ready_lanes:
                    return min(due) if due else None
                if not idle:
                    pick = None
                else:  # take turns: events, then each ready lane
                    self._turn += 1
                    choices: list[_Lane | None] = ([None] if events_ready else []) + ready_lanes
                    pick = choices[self._turn % len(choices)]
            if spool_now:
                pump.spool_step()
                return 0.0
            if lease_now:
                pump.lease_step()
                return 0.0
            if batch is not None:
                whole_last = batch.last_seq
                parts = self._materialize(batch)
                with self._lock:
                    self._todo.extend(parts)
                    self._whole = _Batch([], [], batch.key, whole_last)
                    if not parts:
                        self._finish_batch()
                return 0.0
            if pick is None:
                self._send_events()
            else:
                lane = pick
                self._send_record(lane)
            return 0.0
        except Exception:  # never let one batch kill the thread: a dead flusher loses everything after
            log_exception("serla: unexpected error delivering; the request's data is dropped")
            if lane is not None:
                with self._lock:
                    if lane.current is not None:
                        self._lane_resolve(lane, "internal_error")
            else:
                parts = list(self._todo)
                self._todo.clear()
                for part in parts:
                    self._resolve(part, "internal_error")
                with self._lock:
                    if self._whole is not None:
                        self._finish_batch()
            return 0.0

    def _ready(
        self, hold_until: float, hold_kind: str, item: _Batch | _Record, now: float, due: list[float]
    ) -> bool:
        """Whether ``item`` may be sent now despite a hold; else add when it may to ``due``."""
        if hold_until <= now:
            return True
        if self._stop:
            return False  # stopping: holds are not waited out (close() counts what is left)
        if hold_kind == "backoff" and self._flushers and item.flush_gen != self._flush_gen:
            item.flush_gen = self._flush_gen  # a flush cuts a backoff short, once per flush call
            return True
        due.append(hold_until - now)
        return False

    def _take(self) -> _Batch:
        """Move waiting events into a batch (the caller holds ``_lock``).

        At most ``batch_size`` events, or 100 while rate limited, and at most ``MAX_REQUEST_BYTES``.
        """
        limit = MAX_BATCH if self._pace else self._batch_size
        buf = self._buffer
        if len(buf) <= limit:
            items = list(buf)
            buf.clear()
        else:
            popleft = buf.popleft
            items = [popleft() for _ in range(limit)]
        size = _body_size(items)
        while size > MAX_REQUEST_BYTES and len(items) > 1:  # large events: give some back
            last = items.pop()
            buf.appendleft(last)
            size -= len(last) + 1
        n = len(items)
        first = self._taken_seq + 1
        last_seq = self._taken_seq = self._taken_seq + n
        self._in_flight = n
        self._oldest_at = self._clock() if buf else None
        self._interval_jitter = self._interval * 0.1 * self._rng()
        self._key_seq += 1
        key = f"{self._key_prefix}{self._key_seq:012x}"
        return _Batch(items, list(range(first, last_seq + 1)), key, last_seq)

    def _materialize(self, batch: _Batch) -> list[_Batch]:
        """Build the JSON of the batch's :class:`Deferred` events (outside the lock); the parts to send.

        An event whose build fails is dropped (``internal_error``), one over ``MAX_EVENT_BYTES`` too
        (``too_large``). If the real size is over ``MAX_REQUEST_BYTES``, the batch is sent in halves
        (keys ``<key>.0``, ``<key>.1``), as after a 413.
        """
        items = batch.items
        if all(type(item) is bytes for item in items):
            return [batch]
        keep: list[bytes] = []
        seqs: list[int] = []
        failed: list[Any] = []
        too_large: list[Any] = []
        delta = 0
        for item, seq in zip(items, batch.seqs):
            if type(item) is not bytes:
                try:
                    built = item.build(*item.args)
                except Exception:
                    log_exception("serla: could not encode a deferred event; it is dropped")
                    built = None
                if built is None:
                    failed.append(seq)
                    continue
                delta += len(built) - _DEFERRED_CHARGE
                item = built
                if len(item) > MAX_EVENT_BYTES:
                    too_large.append((seq, item))
                    continue
            keep.append(item)
            seqs.append(seq)
        with self._lock:
            self._pending_bytes += delta
        if failed:
            self._resolve_seqs(failed, [_DEFERRED_CHARGE] * len(failed), "internal_error")
        if too_large:
            warn_limited("deferred_too_large", "serla: %d events over 1 MB of JSON dropped", len(too_large))
            self._resolve_seqs([s for s, _ in too_large], [len(i) for _, i in too_large], "too_large")
        batch.items, batch.seqs = keep, seqs
        parts = [batch] if keep else []
        out: list[_Batch] = []
        while parts:
            part = parts.pop(0)
            if _body_size(part.items) > MAX_REQUEST_BYTES and len(part.items) > 1:
                parts[:0] = part.halves()
            else:
                out.append(part)
        return out

    def _transport_now(self) -> Transport:
        transport = self._transport  # read once per send: ``serla.testing`` may swap it
        if transport is None:
            transport = self._transport = self._transport_factory()
        return transport

    def _send_events(self) -> None:
        """Send the first part of the batch in flight and apply the answer."""
        current = self._todo[0]
        whole = self._whole
        spooled = whole is not None and whole.row is not None  # leased from the spool (serla._spool)
        if spooled and not self._pump.renew(whole):
            return  # another process took the batch over (our lease had expired): it sends it
        current.attempts += 1
        self._last_send_at = self._clock()
        self._sends.append(self._last_send_at)
        result = self._transport_now().post(BATCH_PATH, current.body(), {"X-Idempotency-Key": current.key})
        status = result.status
        if status is not None and 200 <= status < 300:  # the common case: one lock acquisition
            self._todo.popleft()
            if spooled and not self._todo:
                self._pump.done(whole)  # off the disk before flush() can see it resolved
            with self._lock:
                self._count_request(current.attempts)
                self._delivered_locked(current)
                if not self._todo:
                    self._finish_batch()
            log_debug("serla: delivered %d events (key %s)", len(current.items), current.key)
            return
        with self._lock:
            self._count_request(current.attempts)
        self._apply(self._decide(result, current.attempts, len(current.items)), result)
        if spooled and self._todo and whole is not None and whole.row is not None:
            self._pump.park(whole)  # waits out a hold with its lease freed; renew() takes it back
        if not self._todo:
            if spooled and whole is not None and whole.row is not None:
                self._pump.done(whole)  # resolved: delivered in parts or dropped by the server
            with self._lock:
                self._finish_batch()

    def _count_request(self, attempts: int) -> None:
        self._stats["requests"] += 1
        if attempts > 1:
            self._stats["retried"] += 1

    def _delivered_locked(self, part: _Batch) -> None:
        """Count ``part`` as delivered (caller holds the lock); ends a backoff, paces while rate limited."""
        n = len(part.items)
        stats = self._stats
        stats["sent"] += n
        stats["batches"] += 1
        self._pending -= n
        self._pending_bytes -= _charge(part.items)
        self._in_flight -= n
        self._healthy = True
        self._up = True
        if self._pace:
            if not self._buffer and not self._todo:
                self._pace = 0.0  # the backlog is gone: back to batch_size and no pacing
                self._hold_until, self._hold_kind = 0.0, ""
            else:
                # Paced from one send's start to the next, so a lone process still gets the project's
                # whole budget at pace_min (100 a minute); +-10 % jitter keeps a fleet's sends apart.
                self._pace = max(self._policy.pace_min if self._policy else 0.0, self._pace * 0.95)
                self._hold_until = self._last_send_at + self._pace * (0.9 + 0.2 * self._rng())
                self._hold_kind = "pace"
        else:
            self._hold_until, self._hold_kind = 0.0, ""
        self._progress.notify_all()

    def _finish_batch(self) -> None:
        """The batch in flight is resolved (caller holds the lock): every seq up to its last is done."""
        whole = self._whole
        if whole is not None and whole.last_seq > self._done_seq:
            self._done_seq = whole.last_seq
        self._whole = None
        self._in_flight = 0
        self._progress.notify_all()

    def _decide(self, result: SendResult, attempts: int, size: int) -> Decision:
        """Ask the retry policy (made on first use) what to do after ``result``."""
        policy = self._policy
        if policy is None:
            from serla._retry import RetryPolicy

            policy = self._policy = RetryPolicy()
        return policy.decide(result, attempts, size, self._rng, self._wall_clock())

    def _hold(self, decision: Decision) -> tuple[float, str]:
        """The hold (until, kind) for a RETRY or HOLD; a rate limit is spread with jitter and pacing."""
        from serla._retry import Action

        delay = decision.delay
        if decision.action is Action.RETRY:
            return self._clock() + delay, "backoff"
        if decision.reason == "rate_limited":
            # Every process of the project got the same Retry-After (the window's end): spread the fleet's
            # first requests over the next pace interval instead of firing them all in the first second.
            delay += self._rng() * self._pace
        return self._clock() + delay, "hold"

    def _next_pace(self, policy: RetryPolicy) -> float:
        """The interval between requests after a 429 (caller holds the lock).

        The first 429 of an episode sets this process's share of the project's budget from what it sent:
        ``k`` requests in the last window of a fleet that spent the whole budget means about ``k`` a
        window is its fair share, so it paces at ``window / k`` (a lone process: 0.6 s, the whole budget;
        one of 30: about 20 s). Later 429s mean the estimate was short: 1.25 times longer each.
        """
        if self._pace:
            return self._pace * 1.25
        since = self._clock() - policy.rate_window
        recent = sum(1 for t in self._sends if t >= since)
        return policy.rate_window / max(1, recent)

    def _apply(self, decision: Decision, result: SendResult) -> None:
        """Apply the policy's decision for the events part at the head of ``_todo``."""
        from serla._retry import Action, describe_rejection

        todo = self._todo
        current = todo[0]
        action = decision.action
        if action is Action.DELIVERED:
            todo.popleft()
            with self._lock:
                self._delivered_locked(current)
            return
        if action in (Action.RETRY, Action.HOLD, Action.DISABLE):
            rate_limited = decision.reason == "rate_limited"
            with self._lock:
                self._healthy = False
                self._up = rate_limited
                if rate_limited:
                    policy = self._policy
                    assert policy is not None  # made by _decide
                    self._pace = min(policy.pace_max, max(policy.pace_min, self._next_pace(policy)))
                self._last_error = decision.message or decision.reason
                self._hold_until, self._hold_kind = self._hold(decision)
                self._progress.notify_all()  # producers waiting for room stop waiting
            if action is not Action.RETRY and not rate_limited:
                warn_limited(
                    "hold_" + decision.reason,
                    "serla: sending paused for %.0f s: %s (%d events waiting)",
                    decision.delay,
                    decision.message,
                    self._pending,
                )
            elif current.attempts >= _WARN_AFTER_ATTEMPTS:
                # A blip is retried quietly; an endpoint (or proxy) that keeps failing is worth a WARNING,
                # also for an app that tracks too little to ever fill the queue.
                warn_limited(
                    "retrying",
                    "serla: sending keeps failing (%s); attempt %d, next try in %.0f s (%d events waiting)",
                    decision.message or decision.reason,
                    current.attempts,
                    decision.delay,
                    self._pending,
                )
            else:
                log_debug(
                    "serla: send failed (%s), attempt %d, next try in %.1f s",
                    decision.message or decision.reason,
                    current.attempts,
                    decision.delay,
                )
            return
        todo.popleft()
        if action is Action.SPLIT:
            first, second = current.halves()
            todo.appendleft(second)
            todo.appendleft(first)
            log_debug("serla: splitting a batch of %d (%s)", len(current.items), decision.reason)
            return
        if action is Action.DROP_SOME:
            bad = set(decision.indices)
            for i in decision.indices:
                warn_limited(
                    "rejected",
                    "serla: the server rejected an event; it is dropped, the rest of its batch is resent: %s",
                    describe_rejection(result.body, i),
                )
            self._resolve_seqs(
                [current.seqs[i] for i in decision.indices],
                [len(current.items[i]) for i in decision.indices],
                decision.reason,
            )
            keep = [i for i in range(len(current.items)) if i not in bad]
            todo.appendleft(
                current.derive([current.items[i] for i in keep], [current.seqs[i] for i in keep], "r")
            )
            return
        warn_limited(
            "drop_" + decision.reason,
            "serla: %d events dropped (%s): %s",
            len(current.items),
            decision.reason,
            decision.message,
        )
        self._resolve(current, decision.reason)

    def _resolve(self, part: _Batch, reason: str) -> None:
        """Count every event of ``part`` as dropped for ``reason``: once per part, never twice."""
        self._resolve_seqs(part.seqs, [len(item) for item in part.items], reason)
        part.items, part.seqs = [], []

    def _resolve_seqs(self, seqs: list[int], sizes: list[int], reason: str) -> None:
        with self._lock:
            n = len(seqs)
            self._dropped[reason] += n
            self._pending -= n
            self._pending_bytes -= sum(sizes) + _ITEM_OVERHEAD * n
            self._in_flight -= n
            lost = self._lost
            for s in seqs:
                if len(lost) == lost.maxlen:
                    self._lost_evicted = max(self._lost_evicted, lost[0])
                lost.append(s)
            self._progress.notify_all()

    # -- single-record lanes ---------------------------------------------------------------------------

    def _send_record(self, lane: _Lane) -> None:
        """Send the lane's current record and apply the answer (same policy as events, one record)."""
        from serla._retry import Action

        record = lane.current
        assert record is not None
        record.attempts += 1
        result = self._transport_now().post(lane.path, record.body, {"X-Idempotency-Key": record.key})
        status = result.status
        decision = (
            None if status is not None and 200 <= status < 300 else self._decide(result, record.attempts, 1)
        )
        with self._lock:
            self._count_request(record.attempts)
            if decision is None or decision.action is Action.DELIVERED:
                lane.sent += 1
                self._lane_resolve(lane, "")
                return
            action = decision.action
            if action is Action.DISABLE:
                lane.disabled = decision.reason
                self._lane_resolve(lane, decision.reason)
                for _ in range(len(lane.buffer)):
                    lane.current = lane.buffer.popleft()
                    self._lane_resolve(lane, decision.reason)
            elif action in (Action.RETRY, Action.HOLD):
                lane.hold_until, lane.hold_kind = self._hold(decision)
                self._last_error = decision.message or decision.reason
            else:  # DROP, DROP_SOME, SPLIT of a single record: it can't be sent
                self._lane_resolve(lane, decision.reason)
        if action is Action.DISABLE:
            log_warning(
                "serla: %s reporting is off for this process: %s. Events are not affected",
                lane.name,
                decision.message,
            )
        elif action in (Action.RETRY, Action.HOLD):
            if record.attempts >= _WARN_AFTER_ATTEMPTS or (
                action is Action.HOLD and decision.reason != "rate_limited"
            ):
                warn_limited(
                    f"lane_{lane.name}_{decision.reason}",
                    "serla: sending a %s record keeps failing (%s); next try in %.0f s",
                    lane.name,
                    decision.message or decision.reason,
                    decision.delay,
                )
        else:
            warn_limited(
                f"lane_drop_{lane.name}_{decision.reason}",
                "serla: a %s record was dropped (%s): %s",
                lane.name,
                decision.reason,
                decision.message,
            )

    def _lane_resolve(self, lane: _Lane, reason: str) -> None:
        """Resolve the lane's current record (caller holds the lock); ``reason`` "" means delivered."""
        record = lane.current
        if record is None:
            return
        if record.row is not None:  # from the spool: deleted there on the flusher's next step
            self._pump.acks.append(record.row)
        lane.current = None
        lane.queued_bytes -= len(record.body)
        lane.done += 1
        if reason:
            lane.dropped[reason] += 1
            lane.lost += 1
        else:
            lane.hold_until, lane.hold_kind = 0.0, ""
        self._progress.notify_all()
