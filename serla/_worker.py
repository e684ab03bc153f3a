"""The delivery pipeline: one bounded buffer and one daemon thread per client.

Invariants (read these before changing anything here):

* ``_lock`` guards every field below it in ``__init__``. It is held only to append to, pop from or read
  the buffer and counters, never during I/O or a wait on ``_wakeup``.
* Events are resolved (delivered or dropped) strictly in the order they were accepted: the flusher sends
  one batch at a time and finishes it (including its split halves and retries) before taking the next.
  So "every event accepted before this ``flush()`` is resolved" is the single number ``_done_seq``.
* ``_pending`` counts accepted events not yet resolved (buffered + in flight). It never exceeds
  ``max_queue_size``: that is the memory bound.
* Only the flusher thread calls the transport, except in *inline mode*, when no thread can be started
  (during interpreter shutdown): then ``flush()`` sends on the calling thread, under ``_inline_lock``.

Batching: ``batch_size`` is the number of waiting events that triggers a send (besides the interval and
``flush()``). A request carries every event waiting at that moment, up to ``MAX_BATCH`` (100, the
server's cap) and ``MAX_REQUEST_BYTES``: so a backlog that built up while the previous request was in
flight is drained in requests of up to 100 events, and fewer, fuller requests keep a fast producer
within the server's 100 requests/minute limit.

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

from serla._config import log_debug, log_exception, warn_limited
from serla._encode import MAX_EVENT_BYTES, MAX_REQUEST_BYTES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Final

    from serla._retry import Decision, RetryPolicy
    from serla._transport import SendResult, Transport

BATCH_PATH: Final = "/api/v1/events/batch"
MAX_BATCH: Final = 100
"""The server takes at most 100 events per request."""
_WARN_AFTER_ATTEMPTS: Final = 4  # failed sends of one batch (about 1+2+4 s of backoff) before a WARNING

_HEAD: Final = b'{"events":['
_TAIL: Final = b"]}"


class Deferred:
    """An accepted event whose JSON is built on the flusher thread, when its batch is taken.

    For callers whose event data can't change after the call (the OpenTelemetry bridge: an ended span's
    attributes are immutable, and the properties are built from them): they skip encoding on the
    application's thread. ``build(*args)`` returns the event's JSON, or ``None`` to drop it. Until then
    the event counts like any other (``pending_count()``, ``max_queue_size``, ``flush()``).
    """

    __slots__ = ("args", "build")

    def __init__(self, build: Callable[..., bytes | None], *args: Any) -> None:
        self.build = build
        self.args = args

    def __len__(self) -> int:
        return _DEFERRED_SIZE_GUESS  # for the request-size estimate in ``_take``; the real size is checked


_DEFERRED_SIZE_GUESS: Final = 1024


class _Batch:
    """Events in flight, frozen at their first send: same bytes, same key on every retry."""

    __slots__ = ("attempts", "flush_gen", "items", "key", "last_seq", "row", "seqs")

    def __init__(self, items: list[Any], seqs: list[int], key: str, last_seq: int) -> None:
        self.items = items
        self.seqs = seqs  # this process's events (empty for a batch an earlier run left in the spool)
        self.key = key
        self.last_seq = last_seq
        self.attempts = 0
        self.flush_gen = 0
        self.row: Any = None  # the spool's SpooledBatch when it was leased from a spool

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
    """The bytes of a request body carrying ``items`` (a ``Deferred`` counts as its size estimate)."""
    return len(_HEAD) + len(_TAIL) + len(items) + sum(map(len, items))


class BatchWorker:
    """Buffers encoded events and delivers them in batches from one named daemon thread.

    Args:
        transport_factory: Returns a fresh :class:`~serla._transport.Transport` (called lazily, and again
            in a forked child).
        batch_size: How many waiting events trigger a send, 1..100. A request carries every event waiting
            when it is built, up to 100.
        flush_interval: The longest an event waits in the buffer before a send, in seconds.
        max_queue_size: The most events held (buffered + in flight); more are refused and counted.
        block_on_full: How long ``put`` may wait for room while deliveries succeed, in seconds. While the
            endpoint fails, ``put`` never waits.
        policy: The retry policy.
        clock: Monotonic clock (injectable).
        wall_clock: Wall clock for ``Retry-After`` dates (injectable).
        rng: Random source for jitter (injectable).
        name: The thread's name.
        spool_opener: With a durable spool: opens it and returns a ``serla._spool.SpoolPump`` (called
            on first use, and again in a forked child); it raises ``SpoolUnavailable`` if it can't.
    """

    def __init__(
        self,
        transport_factory: Callable[[], Transport],
        *,
        batch_size: int,
        flush_interval: float,
        max_queue_size: int,
        block_on_full: float,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: Callable[[], float] | None = None,
        name: str = "serla-flusher",
        spool_opener: Callable[[BatchWorker], Any] | None = None,
    ) -> None:
        self._transport_factory = transport_factory
        self._spool_opener = spool_opener
        self._batch_size = batch_size
        self._interval = flush_interval
        self._max = max_queue_size
        self._block_on_full = block_on_full
        self._policy = policy  # None: the default RetryPolicy, made on the first failed send
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng  # None: random.random, imported on the first failed send
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
        self._limit = self._max  # put() refuses at this many pending: max_queue_size + events on disk
        self._pump: Any = None  # the SpoolPump, once the spool is open (serla._spool)
        self._spool_lock = threading.Lock()
        self._spool_error: str | None = None
        self._accepted_seq = 0  # seq of the last accepted event
        self._taken_seq = 0  # seq of the last event moved from the buffer into a batch
        self._done_seq = 0  # every event with seq <= this is resolved
        self._pending = 0
        self._oldest_at: float | None = None  # when the buffer last became non-empty
        self._send_through = 0  # send without waiting for the interval up to this seq
        self._flush_gen = 0
        self._flushers = 0
        self._closed = False  # no more intake
        self._stop = False  # flusher: exit as soon as possible
        self._healthy = True
        self._hold_until = 0.0
        self._hold_kind = ""  # "backoff" (a flush may cut it short) or "hold" (server-imposed)
        self._in_flight = 0
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

        ``wait=False`` refuses at once when the queue is full, even while deliveries succeed (for callers
        on a thread that must never wait). Never raises.
        """
        with self._lock:
            if self._pending < self._limit and not self._closed:  # the common case, first
                self._pending += 1
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
            elif not wait or not self._wait_for_room():
                self._dropped["queue_full"] += 1
                refused = "queue_full" if wait or not self._can_block() else "queue_full_nowait"
            else:
                self._pending += 1
                self._accepted_seq += 1
                self._buffer.append(data)
                wake = True
                refused = ""
        if refused:
            if refused == "queue_full_nowait":
                warn_limited(
                    "queue_full_nowait",
                    "serla: event dropped: %d events are already waiting (max_queue_size) and this caller "
                    "(an OpenTelemetry processor, on the application's thread) does not wait for room",
                    self._max,
                )
            elif refused == "queue_full":
                warn_limited(
                    "queue_full",
                    "serla: event dropped: %d events are already waiting (max_queue_size) and the endpoint "
                    "is not accepting them right now; see Serla.stats()['dropped']",
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

    def _wait_for_room(self) -> bool:
        """Wait (caller holds ``_lock``) for the flusher to make room, only while deliveries succeed."""
        if self._block_on_full <= 0 or not self._can_block():
            return False
        deadline = self._clock() + self._block_on_full
        self._send_through = max(self._send_through, self._accepted_seq)
        self._wakeup.set()
        while self._pending >= self._limit:
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
        )

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
        """Wait until every event accepted before this call is resolved.

        With a spool, also until the events an earlier run left in it (same host and key) are delivered.

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
        if pump.earlier:
            if self._thread is None and not self._thread_failed:
                self._start_thread()
            self._wakeup.set()
        ok = self._flush(deadline)
        return pump.wait_earlier(deadline) and ok

    def spool_pump(self) -> Any:
        """The spool's pump, opened on first use; None without a spool or when it can't be used."""
        if self._spool_opener is None or self._spool_error is not None:
            return None
        pump = self._pump
        if pump is not None:
            return None if pump.broken is not None else pump
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
        return self._pump

    def _flush(self, deadline: float | None) -> bool:
        with self._lock:
            target = self._accepted_seq
            start = self._done_seq
            if self._done_seq >= target:
                return True
            self._send_through = max(self._send_through, target)
            self._flush_gen += 1
            self._flushers += 1
        try:
            if self._thread is None and not self._thread_failed:
                self._start_thread()
            thread = self._thread
            if thread is None or not thread.is_alive():
                self._drain_inline(deadline, target)
            elif thread is threading.current_thread():
                return False
            self._wakeup.set()
            with self._lock:
                while self._done_seq < target:
                    if self._hold_kind == "hold" and deadline is not None and self._hold_until > deadline:
                        break  # the server told us to wait past the deadline: no point waiting
                    remaining = None if deadline is None else deadline - self._clock()
                    if remaining is not None and remaining <= 0:
                        break
                    self._progress.wait(remaining)
                if self._done_seq < target:
                    return False
                return self._lost_evicted <= start and not any(start < s <= target for s in self._lost)
        finally:
            with self._lock:
                self._flushers -= 1

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
        with self._inline_lock, self._lock:
            left = self._pending
            if left and not (thread is not None and thread.is_alive()):
                self._dropped["shutdown"] += left
                self._pending = 0
                self._buffer.clear()
                self._done_seq = self._accepted_seq
                ok = False
                warn_limited("shutdown_loss", "serla: %d events were not delivered before shutdown", left)
            elif left:
                ok = False
            transport = self._transport
        if transport is not None and not (thread is not None and thread.is_alive()):
            transport.close()
        return ok

    # -- introspection ---------------------------------------------------------------------------------

    def pending(self) -> int:
        """Events accepted and not yet resolved (buffered + in flight + in the spool)."""
        if self._pid != os.getpid():
            self._after_fork()
        pump = self._pump
        return self._pending + (pump.earlier_waiting() if pump is not None else 0)

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (see ``Serla.stats``)."""
        pump = self._pump
        spool = pump.snapshot() if pump is not None else None
        if spool is None and self._spool_opener is not None:
            spool = {"error": self._spool_error, "spooled": 0, "sent_from_spool": 0, "waiting": None}
        with self._lock:
            return {
                "spool": spool,
                "queued": len(self._buffer),
                "in_flight": self._in_flight,
                "pending": self._pending,
                "accepted": self._accepted_seq,
                "sent": self._stats["sent"],
                "batches_sent": self._stats["batches"],
                "requests": self._stats["requests"],
                "retried": self._stats["retried"],
                "dropped": dict(self._dropped),
                "healthy": self._healthy,
                "last_error": self._last_error,
            }

    # -- the flusher -----------------------------------------------------------------------------------

    def _run(self) -> None:
        """The flusher thread's loop: take a batch when one is due, deliver it, repeat."""
        pump = self.spool_pump()
        if pump is not None and pump.run():  # False: the spool broke; go on in memory
            transport = self._transport
            if transport is not None:
                transport.close()
            return
        if pump is not None:
            with self._lock:
                self._limit = self._max
        while True:
            batch = self._next_batch()
            if batch is None:
                transport = self._transport
                if transport is not None:  # the thread is done with it: don't leave the socket to the GC
                    transport.close()
                return
            try:
                self._deliver(batch)
            except Exception:  # never let one batch kill the thread: a dead flusher loses everything after
                log_exception("serla: unexpected error delivering a batch; its events are dropped")
                self._resolve_lost(batch.seqs, "internal_error")
                self._finish(batch)
                with self._lock:
                    self._in_flight = 0

    def _take(self) -> _Batch:
        """Move the waiting events, up to ``MAX_BATCH`` and ``MAX_REQUEST_BYTES``, into a batch.

        The caller holds ``_lock``. ``batch_size`` decides when a send is due, not how many it carries:
        a backlog goes out in requests of up to 100 events.
        """
        buf = self._buffer
        if len(buf) <= MAX_BATCH:
            items = list(buf)
            buf.clear()
        else:
            popleft = buf.popleft
            items = [popleft() for _ in range(MAX_BATCH)]
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
        self._key_seq += 1
        key = f"{self._key_prefix}{self._key_seq:012x}"
        return _Batch(items, list(range(first, last_seq + 1)), key, last_seq)

    def _next_batch(self) -> _Batch | None:
        """Wait until a batch is due and take it; None when the thread should exit."""
        while True:
            with self._lock:
                self._wakeup.clear()
                if self._stop and not self._buffer:
                    return None
                n = len(self._buffer)
                timeout: float | None = None
                if n:
                    now = self._clock()
                    oldest = self._oldest_at if self._oldest_at is not None else now
                    if now - oldest >= self._interval:
                        self._send_through = max(self._send_through, self._accepted_seq)
                    if n >= self._batch_size or self._send_through > self._taken_seq or self._stop:
                        return self._take()
                    timeout = oldest + self._interval - now
            self._wakeup.wait(timeout)

    def _deliver(self, batch: _Batch) -> None:
        """Send one batch until it is resolved: delivered, dropped, or (at stop) abandoned.

        The common case (a 2xx for the whole batch) takes one lock acquisition after the send; every
        other answer goes through the retry policy.
        """
        todo = collections.deque(self._materialize(batch))
        row = batch.row  # leased from the spool (serla._spool): left there at stop, lease kept on resends
        while todo:
            current = todo[0]
            # ``_hold_until`` is 0.0 unless a failure set a pause: read without the lock, it only skips a
            # wait that ``_wait_hold`` would find already over.
            if self._hold_until and not self._wait_hold(current):
                if row is not None:
                    self._pump.leave(batch, todo)
                else:
                    for b in todo:
                        self._resolve_lost(b.seqs, "shutdown")
                break
            if row is not None and current.attempts and not self._pump.renew(batch):
                break  # another process took the batch over (our lease had expired): it sends it
            transport = self._transport  # read once per send: ``serla.testing`` may swap it
            if transport is None:
                transport = self._transport = self._transport_factory()
            current.attempts += 1
            result = transport.post(BATCH_PATH, current.body(), {"X-Idempotency-Key": current.key})
            status = result.status
            if status is not None and 200 <= status < 300:
                todo.popleft()
                if not todo:
                    if row is not None:
                        self._pump.done(batch)  # off the disk before flush() can see it resolved
                    self._delivered(current, batch)
                    return
                self._delivered(current, None)
                continue
            with self._lock:
                self._stats["requests"] += 1
                if current.attempts > 1:
                    self._stats["retried"] += 1
            self._apply(self._decide(result, current), result, todo)
        if batch.row is not None:  # resolved (delivered or dropped), not left at stop nor taken over
            self._pump.done(batch)
        self._finish(batch)

    def _materialize(self, batch: _Batch) -> list[_Batch]:
        """Build the JSON of the batch's :class:`Deferred` events (outside the lock); the batches to send.

        An event whose build fails is dropped (``internal_error``), one over ``MAX_EVENT_BYTES`` too
        (``too_large``). If the real size is over ``MAX_REQUEST_BYTES``, the batch is sent in halves
        (keys ``<key>.0``, ``<key>.1``), as after a 413. No batch: nothing left to send.
        """
        items = batch.items
        if all(type(item) is bytes for item in items):
            return [batch]
        keep: list[bytes] = []
        seqs: list[int] = []
        failed: list[int] = []
        too_large: list[int] = []
        for item, seq in zip(items, batch.seqs):
            if type(item) is not bytes:
                try:
                    item = item.build(*item.args)
                except Exception:
                    log_exception("serla: could not encode a deferred event; it is dropped")
                    item = None
                if item is None:
                    failed.append(seq)
                    continue
                if len(item) > MAX_EVENT_BYTES:
                    too_large.append(seq)
                    continue
            keep.append(item)
            seqs.append(seq)
        if failed:
            self._resolve_lost(failed, "internal_error")
        if too_large:
            warn_limited("deferred_too_large", "serla: %d events over 1 MB of JSON dropped", len(too_large))
            self._resolve_lost(too_large, "too_large")
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

    def _delivered(self, current: _Batch, whole: _Batch | None) -> None:
        """Count ``current`` as delivered; with ``whole`` (the batch it came from), also resolve that."""
        n = len(current.items)
        with self._lock:
            stats = self._stats
            stats["requests"] += 1
            if current.attempts > 1:
                stats["retried"] += 1
            stats["sent"] += n
            stats["batches"] += 1
            self._pending -= len(current.seqs)  # fewer than n for a batch an earlier run spooled
            self._in_flight -= len(current.seqs)
            self._healthy = True
            self._hold_until = 0.0
            self._hold_kind = ""
            if whole is not None:
                if whole.last_seq > self._done_seq:
                    self._done_seq = whole.last_seq
                self._in_flight = 0
            self._progress.notify_all()
        log_debug("serla: delivered %d events (key %s)", n, current.key)

    def _decide(self, result: SendResult, current: _Batch) -> Decision:
        """Ask the retry policy (made on first use, like the jitter source) what to do after ``result``."""
        policy = self._policy
        if policy is None:
            from serla._retry import RetryPolicy

            policy = self._policy = RetryPolicy()
        rng = self._rng
        if rng is None:
            import random

            rng = self._rng = random.random
        return policy.decide(result, current.attempts, len(current.items), rng, self._wall_clock())

    def _apply(self, decision: Decision, result: SendResult, todo: collections.deque[_Batch]) -> None:
        from serla._retry import Action, describe_rejection

        current = todo[0]
        action = decision.action
        if action is Action.DELIVERED:
            todo.popleft()
            with self._lock:
                self._healthy = True
                self._hold_until = 0.0
                self._hold_kind = ""
                self._stats["sent"] += len(current.items)
                self._stats["batches"] += 1
                self._pending -= len(current.seqs)
                self._in_flight -= len(current.seqs)
                self._progress.notify_all()
            log_debug("serla: delivered %d events (key %s)", len(current.items), current.key)
            return
        if action in (Action.RETRY, Action.HOLD):
            with self._lock:
                self._healthy = False
                self._last_error = decision.message or decision.reason
                self._hold_until = self._clock() + decision.delay
                self._hold_kind = "backoff" if action is Action.RETRY else "hold"
                self._progress.notify_all()  # producers waiting for room stop waiting
            if action is Action.HOLD and decision.reason != "rate_limited":
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
            self._resolve_lost([current.seqs[i] for i in decision.indices], decision.reason)
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
        self._resolve_lost(current.seqs, decision.reason)

    def _wait_hold(self, batch: _Batch) -> bool:
        """Wait out a backoff or hold before sending ``batch``; False if the worker must stop now.

        A ``flush()`` cuts a backoff (not a server-imposed hold) short, once per flush call. Once the
        worker is stopping, no backoff or hold is waited out at all.
        """
        while True:
            with self._lock:
                self._wakeup.clear()
                remaining = self._hold_until - self._clock()
                if remaining <= 0:
                    return True
                if self._hold_kind == "backoff" and self._flushers and batch.flush_gen != self._flush_gen:
                    batch.flush_gen = self._flush_gen
                    return True
                if self._stop:
                    return False
            pump = self._pump
            if pump is not None:
                remaining = pump.idle(remaining)  # keep writing new events to the spool meanwhile
            self._wakeup.wait(remaining)

    def _resolve_lost(self, seqs: list[int], reason: str) -> None:
        with self._lock:
            n = len(seqs)
            self._dropped[reason] += n
            self._pending -= n
            self._in_flight -= n
            lost = self._lost
            for s in seqs:
                if len(lost) == lost.maxlen:
                    self._lost_evicted = max(self._lost_evicted, lost[0])
                lost.append(s)
            self._progress.notify_all()

    def _finish(self, batch: _Batch) -> None:
        with self._lock:
            self._done_seq = max(self._done_seq, batch.last_seq)
            self._in_flight = 0
            self._progress.notify_all()

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    # -- inline mode -----------------------------------------------------------------------------------

    def _drain_inline(self, deadline: float | None, target: int) -> None:
        """Deliver on the calling thread (no flusher can run): used during interpreter shutdown."""
        with self._inline_lock:
            while True:
                with self._lock:
                    if self._done_seq >= target or not self._buffer:
                        return
                    if deadline is not None and self._clock() >= deadline:
                        return
                    batch = self._take()
                self._deliver_inline(batch, deadline)

    def _deliver_inline(self, batch: _Batch, deadline: float | None) -> None:
        todo = collections.deque(self._materialize(batch))
        while todo:
            current = todo[0]
            with self._lock:
                wait = self._hold_until - self._clock()
                held = self._hold_kind == "hold" and wait > 0
            if held or (deadline is not None and self._clock() + max(0.0, wait) >= deadline):
                for b in todo:
                    self._resolve_lost(b.seqs, "shutdown")
                break
            if wait > 0:
                time.sleep(wait)
            if self._transport is None:
                self._transport = self._transport_factory()
            current.attempts += 1
            result = self._transport.post(BATCH_PATH, current.body(), {"X-Idempotency-Key": current.key})
            self._count("requests")
            self._apply(self._decide(result, current), result, todo)
        self._finish(batch)
