"""LLM analytics with the OpenAI client: wrap it, and every generation becomes a Serla LLM record.

The OpenAI client here talks to ``serla.devtools.llm_stub.VendorStub``, a loopback server that speaks
OpenAI's HTTP API (JSON and server-sent events, with usage), so the example runs without an OpenAI
account. In your app, drop the stub and keep the two ``wrap_openai`` lines::

    SERLA_API_KEY=sk_live_... SERLA_HOST=https://serla.dev python examples/llm_openai_wrapper.py

(``pip install "serla-py[llm]" openai``.) Each call queues one record for ``POST /api/v1/llm`` with the
model, tokens, latency and status; the server fills in ``costUsd`` from its price table.
"""

from __future__ import annotations

import openai

import serla
from serla.devtools.llm_stub import VendorStub
from serla.llm import wrap_openai


def main() -> None:
    client = serla.get_default_client()  # from SERLA_API_KEY / SERLA_HOST
    assert client is not None, "set SERLA_API_KEY (and SERLA_HOST for a local server)"
    with VendorStub() as stub:
        ai = wrap_openai(openai.OpenAI(base_url=stub.openai_url, api_key="not-needed-for-the-stub"))
        question = [{"role": "user", "content": "What is privacy-focused analytics?"}]

        reply = ai.chat.completions.create(
            model="gpt-4o-mini", messages=question, serla_distinct_id="user_123"
        )
        print("reply:", reply.choices[0].message.content)

        # Streamed: chunks arrive as they come; ask for usage so the record has tokens (and a cost).
        with serla.distinct_id_context("user_123"):
            stream = ai.chat.completions.create(
                model="gpt-4o-mini",
                messages=question,
                stream=True,
                stream_options={"include_usage": True},
                serla_trace_id="conversation-42",
            )
            print("streamed:", "".join(c.choices[0].delta.content or "" for c in stream if c.choices))
        ai.close()
    client.flush(timeout=10)
    print("llm records sent:", client.stats()["lanes"]["llm"]["sent"])


if __name__ == "__main__":
    main()
