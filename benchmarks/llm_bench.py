"""LLM analytics benchmarks: what a ``serla.llm`` wrapper adds to a call, and a stream's first-chunk latency.

    python benchmarks/llm_bench.py [--calls 20000] [--streams 300]

1. **Wrapper overhead, beyond encoding.** The wrapped object has the shape of an OpenAI client
   (``client.chat.completions.create``) and its method returns a ready ``ChatCompletion`` (the real
   pydantic type, parsed once), so neither the network nor the ``openai`` library's own request handling
   (about 0.6 ms per call here, and noisy) is in the measurement. Three loops, interleaved in rounds: the
   bare method; ``client.track_llm`` with the same fields the wrapper sends (building, checking and
   encoding the record, and queueing it); the wrapped method. "Beyond encoding" is wrapped - bare -
   track_llm: the proxy, the argument handling and reading the response.
2. **First-chunk latency.** The real ``openai`` client streams from the loopback vendor stub
   (``serla.devtools.llm_stub``); time from ``create()`` to the first chunk in hand, wrapped and not,
   interleaved, medians and p95.

Records go to a contract server on 127.0.0.1 (``SerlaServer``), delivered by the client's own thread.
Numbers vary with the machine; compare the columns of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from types import SimpleNamespace
from typing import Any

import openai
from openai.types.chat import ChatCompletion

import serla
from serla.devtools.llm_stub import VendorStub
from serla.devtools.server import SerlaServer
from serla.llm import wrap_openai

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant for a shop."},
    {"role": "user", "content": "Where is my order 12345? It was due yesterday."},
]
REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Your order ships today and arrives tomorrow."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40},
}


def per_call_us(fn: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def overhead(client: serla.Serla, calls: int, rounds: int) -> dict[str, float]:
    completion = ChatCompletion.model_validate(REPLY)

    def create(**kwargs: Any) -> ChatCompletion:
        return completion

    ai = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    wrapped = wrap_openai(ai, serla_client=client)

    def bare() -> None:
        ai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    def tracked() -> None:
        client.track_llm(
            "gpt-4o-mini-2024-07-18",
            provider="openai",
            input=MESSAGES,
            output=[{"role": "assistant", "content": REPLY["choices"][0]["message"]["content"]}],
            input_tokens=31,
            output_tokens=9,
            total_tokens=40,
            latency_ms=0.5,
            metadata={"api": "chat.completions", "finish_reason": "stop"},
        )

    def wrapped_call() -> None:
        wrapped.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    results: dict[str, list[float]] = {"bare": [], "track_llm": [], "wrapped": []}
    for _ in range(rounds):
        for name, fn in (("bare", bare), ("track_llm", tracked), ("wrapped", wrapped_call)):
            results[name].append(per_call_us(fn, calls))
            client.flush(timeout=60)
    med = {k: statistics.median(v) for k, v in results.items()}
    med["beyond_encoding"] = med["wrapped"] - med["bare"] - med["track_llm"]
    return med


def first_chunk(client: serla.Serla, streams: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {"unwrapped": [], "wrapped": []}
    with VendorStub() as stub:
        raw = openai.OpenAI(base_url=stub.openai_url, api_key="bench", max_retries=0)
        wrapped = wrap_openai(raw, serla_client=client)
        for i in range(streams * 2):
            name = "wrapped" if i % 2 else "unwrapped"
            target = wrapped if name == "wrapped" else raw
            start = time.perf_counter()
            stream = target.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            next(iter(stream))
            times[name].append((time.perf_counter() - start) * 1000)
            for _ in stream:
                pass
        raw.close()
    out = {}
    for name, values in times.items():
        values.sort()
        out[name] = {
            "median_ms": statistics.median(values),
            "p95_ms": values[int(len(values) * 0.95) - 1],
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per loop per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=300, help="streams per variant")
    args = parser.parse_args()
    with SerlaServer() as server:
        client = serla.Serla("sk_live_bench", host=server.url, max_queue_size=100_000, flush_on_exit=False)
        cost = overhead(client, args.calls, args.rounds)
        latency = first_chunk(client, args.streams)
        client.flush(timeout=120)
        stored = len(server.llm.rows)
        lane = client.stats()["lanes"]["llm"]
        client.shutdown(timeout=10)
    print("wrapper overhead per call (median of rounds, microseconds):")
    for key in ("bare", "track_llm", "wrapped", "beyond_encoding"):
        print(f"  {key:16s} {cost[key]:8.1f}")
    print("first chunk of a stream (milliseconds):")
    for key, values in latency.items():
        print(f"  {key:10s} median {values['median_ms']:.3f}  p95 {values['p95_ms']:.3f}")
    # The loops produce records far faster than one request per record can carry them: the lane's bounded
    # buffer refuses the excess (counted), as it would in an application.
    print(
        f"records accepted {lane['accepted']}, stored by the contract server {stored}, dropped {lane['dropped']}"
    )
    print(
        "BENCH_RESULT "
        + json.dumps({"overhead_us": cost, "first_chunk": latency, "stored": stored, "lane": lane})
    )


if __name__ == "__main__":
    main()
