"""GenAI spans as LLM records: the real ``opentelemetry-instrumentation-openai-v2`` and ``openai`` client,
the vendor stub, and ``SerlaSpanProcessor(llm=True)``. Records are read through ``before_send_llm``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import serla
from serla.devtools.llm_stub import VendorStub

openai = pytest.importorskip("openai")
pytest.importorskip("opentelemetry.sdk")
openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF  # noqa: E402
from opentelemetry.trace import Status, StatusCode  # noqa: E402

from serla.otel import SerlaSpanExporter, SerlaSpanProcessor  # noqa: E402

KEY = "sk_live_" + "o" * 43
USER = [{"role": "user", "content": "hello there world"}]


class Setup:
    def __init__(self, stub: VendorStub, **processor_options: Any) -> None:
        self.records: list[dict[str, Any]] = []
        self.client = serla.Serla(
            KEY, host="http://127.0.0.1:9", flush_on_exit=False, before_send_llm=self._keep
        )
        self.provider = TracerProvider()
        self.processor = SerlaSpanProcessor(self.client, **processor_options)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("test")
        self.openai = openai.OpenAI(base_url=stub.openai_url, api_key="t", max_retries=0)

    def _keep(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def close(self) -> None:
        self.openai.close()
        self.provider.shutdown()
        self.client.shutdown(timeout=1)


@pytest.fixture
def stub() -> Iterator[VendorStub]:
    with VendorStub() as s:
        yield s


@pytest.fixture
def instrumented() -> Iterator[Any]:
    """openai-v2 instrumenting the openai package (globally, as it does) for one test."""
    instrumentor = openai_v2.OpenAIInstrumentor()
    holder: dict[str, Any] = {}

    def instrument(provider: TracerProvider) -> None:
        instrumentor.instrument(tracer_provider=provider)
        holder["on"] = True

    yield instrument
    if holder:
        instrumentor.uninstrument()


def test_openai_v2_spans_become_llm_records(stub: VendorStub, instrumented: Any) -> None:
    setup = Setup(stub, llm=True)
    instrumented(setup.provider)
    with setup.tracer.start_as_current_span("agent step") as parent, serla.distinct_id_context("u_ctx"):
        setup.openai.chat.completions.create(model="gpt-4o-mini", messages=USER, temperature=0.5)
    stream = setup.openai.chat.completions.create(
        model="gpt-4o", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: hello there world"
    stub.fail_next(400, "bad request")
    with pytest.raises(openai.BadRequestError):
        setup.openai.chat.completions.create(model="gpt-4.1", messages=USER)
    setup.close()
    first, streamed, failed = setup.records
    ctx = parent.get_span_context()
    assert first["model"] == "gpt-4o-mini" and first["provider"] == "openai"
    assert (first["inputTokens"], first["outputTokens"]) == (3, 4)
    assert first["traceId"] == f"{ctx.trace_id:032x}" and first["parentId"] == f"{ctx.span_id:016x}"
    assert first["distinctId"] == "u_ctx"
    assert first["status"] == "success" and isinstance(first["latencyMs"], int)
    assert first["metadata"]["operation"] == "chat"
    assert first["metadata"]["temperature"] == 0.5
    assert first["metadata"]["finish_reasons"] == ["stop"]
    assert "input" not in first  # openai-v2 captures no content unless asked
    assert (streamed["model"], streamed["inputTokens"], streamed["outputTokens"]) == ("gpt-4o", 3, 4)
    assert "parentId" not in streamed
    assert failed["status"] == "error" and failed["model"] == "gpt-4.1"
    assert "bad request" in failed["errorMessage"] or "BadRequestError" in failed["errorMessage"]


def test_llm_is_off_by_default_and_the_env_variable_turns_the_exporter_on(
    stub: VendorStub, instrumented: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Setup(stub)
    instrumented(setup.provider)
    setup.openai.chat.completions.create(model="gpt-4o-mini", messages=USER)
    setup.close()
    assert setup.records == []
    monkeypatch.setenv("SERLA_OTEL_LLM", "1")
    exporter = SerlaSpanExporter(setup.client)
    assert exporter._genai is not None
    with pytest.raises(TypeError):
        SerlaSpanProcessor(setup.client, llm="yes")  # type: ignore[arg-type]


def test_conventions_of_other_instrumentations(stub: VendorStub) -> None:
    setup = Setup(stub, llm=True)
    tracer = setup.tracer
    # The newer convention with captured content (what openai-v2 writes with content capture on).
    with tracer.start_as_current_span("chat claude") as span:
        span.set_attributes(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": "claude-haiku-4-5",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 2,
                "gen_ai.system_instructions": '[{"type":"text","content":"be brief"}]',
                "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]',
                "gen_ai.output.messages": '[{"role":"assistant","parts":[{"type":"text","content":"yo"}]}]',
                "enduser.id": "u_attr",
            }
        )
    # The older one (OpenLLMetry): gen_ai.system, prompt/completion tokens, indexed content.
    with tracer.start_as_current_span("openai.chat") as span:
        span.set_attributes(
            {
                "gen_ai.system": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.prompt_tokens": 7,
                "gen_ai.usage.completion_tokens": 1,
                "gen_ai.prompt.0.role": "user",
                "gen_ai.prompt.0.content": "hello",
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": "hi",
            }
        )
        span.set_status(Status(StatusCode.ERROR, "rate limited"))
    # Not model calls: a tool and an agent span, a span without a model, an unrelated span.
    for attrs in (
        {"gen_ai.operation.name": "execute_tool", "gen_ai.request.model": "gpt-4o"},
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": "gpt-4o"},
        {"gen_ai.operation.name": "chat"},
        {"http.method": "GET"},
    ):
        with tracer.start_as_current_span("other") as span:
            span.set_attributes(attrs)
    setup.close()
    new, old = setup.records
    assert new["input"] == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
    ]
    assert new["output"] == [{"role": "assistant", "parts": [{"type": "text", "content": "yo"}]}]
    assert new["distinctId"] == "u_attr" and new["provider"] == "anthropic"
    assert (old["model"], old["provider"], old["inputTokens"], old["outputTokens"]) == (
        "gpt-4o-2024-08-06",
        "openai",
        7,
        1,
    )
    assert old["input"] == [{"role": "user", "content": "hello"}]
    assert old["output"] == [{"role": "assistant", "content": "hi"}]
    assert old["status"] == "error" and old["errorMessage"] == "rate limited"


def test_unsampled_spans_and_capture_off(stub: VendorStub) -> None:
    records: list[dict[str, Any]] = []
    client = serla.Serla(
        KEY,
        host="http://127.0.0.1:9",
        flush_on_exit=False,
        capture_llm_content=False,
        before_send_llm=records.append,  # type: ignore[arg-type]
    )
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "gen_ai.input.messages": '[{"role":"user","parts":[]}]',
    }
    for sampler in (None, ALWAYS_OFF):
        provider = TracerProvider(sampler=sampler) if sampler else TracerProvider()
        provider.add_span_processor(SerlaSpanProcessor(client, llm=True))
        with provider.get_tracer("t").start_as_current_span("chat m") as span:
            span.set_attributes(attrs)
        provider.shutdown()
    client.shutdown(timeout=1)
    (record,) = records
    assert "input" not in record and record["model"] == "m"
