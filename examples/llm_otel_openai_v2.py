"""An unmodified OpenAI app under ``opentelemetry-instrument``: GenAI spans become Serla LLM records.

The OpenTelemetry instrumentation ``opentelemetry-instrumentation-openai-v2`` makes one span per model call
(model, tokens, duration, status, and the messages when content capture is on); serla's span exporter,
with ``SERLA_OTEL_LLM=1``, turns each into a ``POST /api/v1/llm`` record. No serla code in the app::

    pip install "serla-py[otel]" opentelemetry-distro opentelemetry-instrumentation-openai-v2 openai
    OTEL_TRACES_EXPORTER=serla SERLA_OTEL_LLM=1 OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \\
    OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental \\
    OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY \\
    SERLA_API_KEY=sk_live_... SERLA_HOST=https://serla.dev \\
    opentelemetry-instrument python examples/llm_otel_openai_v2.py

The last two ``OTEL_`` variables put the prompts and replies on the spans; leave them out to send only
the model, tokens, latency and status. The app talks to the loopback OpenAI stand-in
(``serla.devtools.llm_stub``) so it runs anywhere; point ``base_url`` at OpenAI in a real app.
"""

from __future__ import annotations

import openai

from serla.devtools.llm_stub import VendorStub

if __name__ == "__main__":
    with VendorStub() as stub:
        client = openai.OpenAI(base_url=stub.openai_url, api_key="not-needed-for-the-stub")
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello to Serla"}]
        )
        print("reply:", reply.choices[0].message.content)
        client.close()
