"""A bounded randomised soak: 20,000 events from 8 threads through ~30 % injected faults.

The fault schedule comes from a seeded RNG and is consumed one request at a time (the client sends one
batch at a time), so a run is reproducible. The faults are every non-fatal kind the server can produce:
5xx, both 429s, 401, a dropped connection, "stored, then the response was lost", a slow answer, and an
answer slower than the client's timeout (stored late). None of them may lose an accepted event.

Accounting, checked exactly:

* every event ``track()`` accepted is stored, and nothing else is;
* by (idempotency key, position): each pair holds exactly one event, each event exactly one pair (no batch
  was re-cut on a retry);
* by total: the server stored exactly one copy per processed request's event (duplicates come only from
  requests the server stored but the client never heard back from); with ``dedupe=True``, exactly one
  copy per event;
* each thread's events arrive in the order that thread tracked them.
"""

from __future__ import annotations

import collections
import random
import threading

import pytest
from reliability_support import Clients, fast_policy

from serla import Serla
from serla.devtools.server import BATCH_PATH, Fault, RecordedRequest, SerlaServer

pytestmark = pytest.mark.timeout(100)

THREADS = 8
PER_THREAD = 2_500
CLIENT_TIMEOUT = 0.25

SOAK_POLICY = fast_policy(
    retry_after_max=0.01,  # the server's Retry-After is honoured, capped to 10 ms for the soak
    quota_delay=0.02,
    auth_delay=0.02,
    server_error_attempts=10_000,  # a random 500 must never split or drop a batch here
)


def fault_schedule(seed: int, n: int, rate: float = 0.3) -> list[Fault]:
    """``n`` faults for the next ``n`` batch requests: a no-op ``Fault()`` with probability 1 - rate."""
    rng = random.Random(seed)
    kinds: list[tuple[float, Fault]] = [
        (5, Fault(status=503, path=BATCH_PATH)),
        (3, Fault(status=502, path=BATCH_PATH)),
        (4, Fault(status=500, path=BATCH_PATH)),
        (3, Fault(status=429, headers={"Retry-After": "0"}, path=BATCH_PATH)),
        (1, Fault(status=429, path=BATCH_PATH)),
        (1, Fault(status=401, path=BATCH_PATH)),
        (5, Fault(close_connection=True, path=BATCH_PATH)),
        (5, Fault(store_then_drop=True, path=BATCH_PATH)),
        (2, Fault(delay=0.01, path=BATCH_PATH)),
        (0.4, Fault(delay=2 * CLIENT_TIMEOUT, path=BATCH_PATH)),  # the client times out; stored later
    ]
    weights = [w for w, _ in kinds]
    faults = [f for _, f in kinds]
    return [rng.choices(faults, weights)[0] if rng.random() < rate else Fault() for _ in range(n)]


def stores(request: RecordedRequest) -> bool:
    """Whether the server processed (and so stored) this request's events."""
    f = request.fault
    return f is None or (f.status is None and not f.close_connection and not f.hang)


def run_producers(client: Serla) -> dict[int, list[int]]:
    """Track ``PER_THREAD`` events from each of ``THREADS`` threads; return what each had accepted."""
    accepted: dict[int, list[int]] = {}
    start = threading.Barrier(THREADS)

    def produce(t: int) -> None:
        mine = []
        start.wait(10)
        for i in range(PER_THREAD):
            if client.track("soak", f"user-{t}", {"t": t, "i": i, "pad": "p" * (i % 50)}):
                mine.append(i)
        accepted[t] = mine

    threads = [threading.Thread(target=produce, args=(t,), name=f"producer-{t}") for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    return accepted


@pytest.mark.parametrize(("dedupe", "seed"), [(True, 20240601), (False, 7)], ids=["dedupe", "no-dedupe"])
def test_soak_every_accepted_event_arrives(make_client: Clients, dedupe: bool, seed: int) -> None:
    with SerlaServer(dedupe=dedupe, rate_limits=False) as srv:  # floods on purpose: no per-minute limit
        srv.inject(*fault_schedule(seed, 3_000))
        c = make_client(
            srv.url,
            batch_size=100,
            flush_interval_seconds=0.01,
            max_queue_size=THREADS * PER_THREAD,  # room for all: none refused, exact totals
            timeout=CLIENT_TIMEOUT,
            _policy=SOAK_POLICY,
        )
        accepted = run_producers(c)
        assert c.flush(60) is True

        reqs = [r for r in srv.requests if r.path == BATCH_PATH]
        expected_copies = sum(r.event_count for r in reqs if stores(r))
        total_accepted = sum(len(v) for v in accepted.values())
        # Requests answered after the client gave up are stored late: wait for them (bounded).
        assert srv.wait_for_events(total_accepted if dedupe else expected_copies, timeout=30)

        stored = srv.stored
        identity = [(e.data["properties"]["t"], e.data["properties"]["i"]) for e in stored]
        want = {(t, i) for t, ids in accepted.items() for i in ids}

        # 1. Every accepted event arrived; nothing that was refused did.
        assert set(identity) == want
        # 2. By (key, position): a bijection with the events.
        pair_to_event: dict[tuple[str | None, int], set[tuple[int, int]]] = collections.defaultdict(set)
        for e, ident in zip(stored, identity):
            pair_to_event[(e.idempotency_key, e.position)].add(ident)
        assert all(len(v) == 1 for v in pair_to_event.values())
        assert len(pair_to_event) == len(want)
        # 3. By total.
        if dedupe:
            assert len(stored) == len(want)
            assert set(collections.Counter(identity).values()) == {1}
        else:
            assert len(stored) == expected_copies
        # 4. Per-thread order of first arrival.
        seen: set[tuple[int, int]] = set()
        order: dict[int, list[int]] = collections.defaultdict(list)
        for t, i in identity:
            if (t, i) not in seen:
                seen.add((t, i))
                order[t].append(i)
        assert all(order[t] == accepted[t] for t in accepted)

        st = c.stats()
        assert total_accepted == st["accepted"] == st["sent"] == THREADS * PER_THREAD
        assert (st["pending"], st["dropped"]) == (0, {})
        faulted = sum(1 for r in reqs if r.fault is not None and r.fault != Fault())
        assert faulted >= 0.2 * len(reqs) and st["retried"] > 0  # the faults did happen
        assert c.shutdown(5) is True
