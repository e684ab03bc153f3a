"""Feature flags: what a cache hit costs, and how many requests a process makes for N active users.

::

    python3 benchmarks/flags_cache_hit.py              # 200,000 hits per measurement, 1,000 users
    python3 benchmarks/flags_cache_hit.py --hits 50000 --users 5000

Part 1 times ``get_feature_flag`` / ``is_feature_enabled`` / ``get_all_feature_flags`` on a warm cache
against the reference the issue names: a dict lookup plus hashing the key (a fresh ``(distinct_id, "")``
tuple, as the client builds). Interleaved rounds, medians, per call.

Part 2 replays N active users against the local contract server with a simulated clock: each user asks
for a flag every ``--interval`` seconds (staggered), for ``--minutes`` simulated minutes. It prints the
requests per simulated minute: at most one per user per max-age (30 s), i.e. ``2 x N`` a minute once every
user's answer is cached, whatever the call rate.

It reports numbers and never fails; the test-suite checks behaviour, not speed.
"""

from __future__ import annotations

import argparse
import statistics
import time

from serla import Serla
from serla.devtools.flags import FLAGS_PATH
from serla.devtools.server import SerlaServer


class SimClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def per_call_ns(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter_ns()
    fn(n)
    return (time.perf_counter_ns() - start) / n


def part1(server: SerlaServer, hits: int, rounds: int) -> None:
    client = Serla("sk_live_bench", host=server.url, flush_on_exit=False)
    users = [f"user-{i}" for i in range(100)]
    for user in users:
        client.get_all_feature_flags(distinct_id=user)
        client.get_all_feature_flags(distinct_id=user, properties={"plan": "pro"})
    reference_cache = {(user, ""): {"new-checkout": True} for user in users}

    def reference(n: int) -> None:
        get = reference_cache.get
        for i in range(n):
            user = users[i % 100]
            get((user, "")).get("new-checkout")  # type: ignore[union-attr]

    def get_flag(n: int) -> None:
        for i in range(n):
            client.get_feature_flag("new-checkout", distinct_id=users[i % 100])

    def is_enabled(n: int) -> None:
        for i in range(n):
            client.is_feature_enabled("new-checkout", distinct_id=users[i % 100])

    def get_all(n: int) -> None:
        for i in range(n):
            client.get_all_feature_flags(distinct_id=users[i % 100])

    props = {"plan": "pro"}

    def with_properties(n: int) -> None:
        for i in range(n):
            client.get_feature_flag("new-checkout", distinct_id=users[i % 100], properties=props)

    cases = {
        "dict lookup + key hash (reference)": reference,
        "get_feature_flag (hit)": get_flag,
        "is_feature_enabled (hit)": is_enabled,
        "get_all_feature_flags (hit, copies the dict)": get_all,
        "get_feature_flag with properties (hit)": with_properties,
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            results[name].append(per_call_ns(fn, hits))
    requests_before = client.stats()["flags"]["requests"]
    print(f"\nCache hit cost ({hits:,} calls x {rounds} interleaved rounds, median per call)\n")
    print("| call | median | vs reference |\n|---|---:|---:|")
    ref = statistics.median(results["dict lookup + key hash (reference)"])
    for name, values in results.items():
        med = statistics.median(values)
        print(f"| {name} | {med / 1000:.2f} µs | {med / ref:.1f}x |")
    assert client.stats()["flags"]["requests"] == requests_before  # every timed call was a hit
    client.shutdown(1)


def part2(server: SerlaServer, users: int, interval: float, minutes: int) -> None:
    clock = SimClock()
    client = Serla("sk_live_bench", host=server.url, flush_on_exit=False, flags_timeout=10.0)
    flags = client._flag_client()
    flags._clock = clock
    ids = [f"active-{i}" for i in range(users)]
    per_minute: list[int] = []
    step = interval / users  # users' calls are spread evenly over each interval
    before = sum(1 for r in server.requests if r.path == FLAGS_PATH)
    for minute in range(minutes):
        start_requests = flags.stats()["requests"]
        calls_this_minute = int(60 / step)
        for k in range(calls_this_minute):
            clock.now = minute * 60 + k * step
            client.get_feature_flag("new-checkout", distinct_id=ids[(minute * calls_this_minute + k) % users])
            if k % 200 == 0:  # let background refreshes land in simulated time order
                _settle(flags)
        _settle(flags)
        per_minute.append(flags.stats()["requests"] - start_requests)
    served = sum(1 for r in server.requests if r.path == FLAGS_PATH) - before
    print(
        f"\nRequests per simulated minute, {users:,} active users each calling every {interval:g} s "
        f"({int(60 / interval) * users:,} calls a minute)\n"
    )
    print("| minute | requests | per user |\n|---:|---:|---:|")
    for i, n in enumerate(per_minute, 1):
        print(f"| {i} | {n:,} | {n / users:.2f} |")
    print(f"\nserver saw {served:,} flag requests; fallbacks: {flags.stats()['fallbacks']}")
    client.shutdown(1)


def _settle(flags) -> None:  # type: ignore[no-untyped-def]
    flags.wait_idle(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between a user's calls")
    parser.add_argument("--minutes", type=int, default=3)
    args = parser.parse_args()
    with SerlaServer(max_recorded_requests=100_000) as server:
        server.flags.define("new-checkout", rollout_percentage=50)
        server.flags.define("button-color", variants=[{"key": "a", "weight": 50}, {"key": "b", "weight": 50}])
        part1(server, args.hits, args.rounds)
        part2(server, args.users, args.interval, args.minutes)


if __name__ == "__main__":
    main()
