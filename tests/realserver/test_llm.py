"""LLM records against the real server: ``track_llm``, a GenAI span, a wrapped stream, the 256 KiB rule, the
plan gate. Rows are read back from ``llm_generations``."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from serla import Serla, _llm
from serla.devtools.llm import compute_cost
from serla.devtools.llm_stub import VendorStub

from .conftest import RealServer

COLUMNS = (
    "model, provider, distinct_id, trace_id, parent_id, input, output, input_tokens, output_tokens, "
    "total_tokens, cost_usd::float8 as cost_usd, latency_ms, status, error_message, metadata"
)


def rows_for(realserver: RealServer, distinct_id: str) -> list[dict[str, Any]]:
    return realserver.sql(
        f"select {COLUMNS} from llm_generations where distinct_id = '{distinct_id}' order by created_at"
    )


def client(realserver: RealServer, key: str = "max", **options: Any) -> Serla:
    return Serla(realserver.keys[key], host=realserver.host, flush_on_exit=False, **options)


def test_track_llm_stores_one_row_with_the_server_cost(realserver: RealServer, unique: str) -> None:
    c = client(realserver)
    assert c.track_llm(
        "gpt-4o-mini",
        provider="openai",
        distinct_id=unique,
        trace_id=f"{unique}-trace",
        input=[{"role": "user", "content": "hi"}],
        output=[{"role": "assistant", "content": "hello"}],
        input_tokens=1200,
        output_tokens=340,
        latency_ms=812.6,
        metadata={"feature": "support-bot"},
    )
    assert c.track_llm(
        "claude-sonnet-4-5-20250929",
        distinct_id=unique,
        input_tokens=10,
        output_tokens=5,
        status="error",
        error_message=TimeoutError("upstream"),
    )
    assert c.shutdown(timeout=60)
    first, second = rows_for(realserver, unique)
    assert first["model"] == "gpt-4o-mini" and first["provider"] == "openai"
    assert (first["input_tokens"], first["output_tokens"], first["total_tokens"]) == (1200, 340, 1540)
    assert first["latency_ms"] == 813 and first["status"] == "success"
    assert first["cost_usd"] == pytest.approx((1200 * 0.15 + 340 * 0.6) / 1e6)
    assert first["trace_id"] == f"{unique}-trace"
    assert first["input"] == [{"role": "user", "content": "hi"}]
    assert first["metadata"] == {"feature": "support-bot"}
    assert second["status"] == "error" and second["error_message"] == "TimeoutError: upstream"
    # The local servers' trimmed price table prices what the real one does.
    for row in (first, second):
        assert row["cost_usd"] == pytest.approx(
            compute_cost(row["model"], row["input_tokens"], row["output_tokens"])
        )


def test_a_genai_span_from_openai_v2_stores_one_row(realserver: RealServer, unique: str) -> None:
    openai = pytest.importorskip("openai")
    openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    from opentelemetry.sdk.trace import TracerProvider

    from serla.otel import SerlaSpanProcessor

    c = client(realserver)
    provider = TracerProvider()
    provider.add_span_processor(SerlaSpanProcessor(c, llm=True))
    instrumentor = openai_v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with VendorStub() as stub:
            ai = openai.OpenAI(base_url=stub.openai_url, api_key="t", max_retries=0)
            with provider.get_tracer("t").start_as_current_span(
                "agent", attributes={"enduser.id": unique}
            ) as parent:
                parent_ctx = parent.get_span_context()
                from serla import distinct_id_context

                with distinct_id_context(unique):
                    ai.chat.completions.create(
                        model="gpt-4.1-mini", messages=[{"role": "user", "content": "a b c d e"}]
                    )
            ai.close()
    finally:
        instrumentor.uninstrument()
    provider.shutdown()
    assert c.shutdown(timeout=60)
    (row,) = rows_for(realserver, unique)
    assert (row["model"], row["provider"], row["input_tokens"], row["output_tokens"]) == (
        "gpt-4.1-mini",
        "openai",
        5,
        6,
    )
    assert row["status"] == "success" and row["latency_ms"] is not None
    assert (
        row["trace_id"] == f"{parent_ctx.trace_id:032x}" and row["parent_id"] == f"{parent_ctx.span_id:016x}"
    )
    assert row["cost_usd"] == pytest.approx((5 * 0.4 + 6 * 1.6) / 1e6)


def test_a_wrapped_streaming_call_stores_one_row(realserver: RealServer, unique: str) -> None:
    anthropic = pytest.importorskip("anthropic")
    from serla.llm import wrap_anthropic

    c = client(realserver)
    with VendorStub() as stub:
        raw = anthropic.Anthropic(base_url=stub.anthropic_url, api_key="t", max_retries=0)
        claude = wrap_anthropic(raw, serla_client=c, distinct_id=unique)
        events = claude.messages.create(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "stream this please"}],
            stream=True,
        )
        text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
        raw.close()
    assert text == "Echo: stream this please"
    assert c.shutdown(timeout=60)
    (row,) = rows_for(realserver, unique)
    assert (row["model"], row["provider"], row["input_tokens"], row["output_tokens"]) == (
        "claude-haiku-4-5",
        "anthropic",
        3,
        4,
    )
    assert row["total_tokens"] == 7 and row["status"] == "success"
    assert row["cost_usd"] == pytest.approx((3 * 1 + 4 * 5) / 1e6)
    assert row["output"] == [{"role": "assistant", "content": "Echo: stream this please"}]
    assert row["metadata"]["api"] == "messages" and row["metadata"]["time_to_first_chunk_ms"] >= 0


def test_an_oversized_prompt_stores_a_truncated_one(realserver: RealServer, unique: str) -> None:
    c = client(realserver)
    document = "lorem ipsum é\U0001f600 " * 40_000  # ~680 KB of UTF-8
    before = len([line for line in realserver.access_log() if " /api/v1/llm 413 " in line])
    c.track_llm(
        "gpt-4o",
        distinct_id=unique,
        input=[{"role": "system", "content": "summarise"}, {"role": "user", "content": document}],
        output={"summary": "short", "scores": [1e16, 1.5e-5, 2.0] * 10},
    )
    assert c.shutdown(timeout=60)
    (row,) = rows_for(realserver, unique)
    assert row["input"][0] == {"role": "system", "content": "summarise"}
    assert row["input"][1]["content"].endswith(_llm.TRUNCATION_MARK)
    assert row["output"]["summary"] == "short"
    assert row["metadata"]["serla_truncated"]["limit"] == 262144
    after = len([line for line in realserver.access_log() if " /api/v1/llm 413 " in line])
    assert after == before


def _post(realserver: RealServer, body: bytes) -> int:
    url = urlsplit(realserver.host)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=30)
    try:
        conn.request(
            "POST",
            "/api/v1/llm",
            body,
            {"Authorization": f"Bearer {realserver.keys['max']}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_the_size_is_measured_as_the_server_measures(realserver: RealServer, unique: str) -> None:
    """At the byte edge, with numbers JavaScript writes longer than Python (``1e16``) and multi-byte text."""
    numbers = [1e16] * 1000  # 17 bytes each in JavaScript, 5 in Python
    text_budget = _llm.MAX_IO_BYTES - _llm.json_size(numbers) - len('""')
    text = "é" * (text_budget // 2) + "a" * (text_budget % 2)
    for extra, expected in (("", 200), ("x", 413)):
        record = {"model": "edge", "distinctId": unique, "input": text + extra, "output": numbers}
        assert _llm.io_size(record) == _llm.MAX_IO_BYTES + len(extra)
        assert _post(realserver, json.dumps(record, ensure_ascii=False).encode()) == expected


def test_a_free_plan_project_keeps_sending_events(
    realserver: RealServer, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    c = client(realserver, "free")
    c.track_llm("gpt-4o", distinct_id=unique, input_tokens=1, output_tokens=1)
    c.track("llm_gate_checked", unique, {"n": 1})
    c.flush(timeout=60)
    assert c.stats()["lanes"]["llm"]["disabled"]
    assert c.track_llm("gpt-4o", distinct_id=unique) is False
    c.track("llm_gate_checked", unique, {"n": 2})
    assert c.shutdown(timeout=60)
    events = realserver.sql(
        f"select properties from events where distinct_id = '{unique}' order by timestamp"
    )
    assert [e["properties"]["n"] for e in events] == [1, 2]
    assert rows_for(realserver, unique) == []
