"""LLM records delivered on the worker's ``llm`` lane to the contract server (real HTTP on 127.0.0.1), and the
two LLM examples run as a user would run them."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import serla
from serla import _llm
from serla.devtools.llm_stub import VendorStub
from serla.devtools.server import SerlaServer

KEY = "sk_live_" + "d" * 43
FREE = "sk_live_" + "e" * 43
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY, FREE}) as s:
        s.llm.free_keys.add(FREE)
        yield s


def client_for(server: SerlaServer, key: str = KEY, **options: object) -> serla.Serla:
    return serla.Serla(key, host=server.url, flush_on_exit=False, **options)  # type: ignore[arg-type]


def test_track_llm_is_delivered_one_record_per_request(server: SerlaServer) -> None:
    client = client_for(server)
    assert client.track_llm(
        "gpt-4o-mini", input_tokens=1000, output_tokens=500, latency_ms=321, distinct_id="u1"
    )
    assert client.track_llm(
        "claude-haiku-4-5", input_tokens=10, output_tokens=20, status="error", error_message="x"
    )
    assert client.flush(timeout=10)
    rows = server.llm.rows
    assert [r["model"] for r in rows] == ["gpt-4o-mini", "claude-haiku-4-5"]
    assert rows[0]["costUsd"] == pytest.approx(0.00045)
    assert rows[0]["latencyMs"] == 321 and rows[0]["distinctId"] == "u1"
    assert rows[1]["status"] == "error" and rows[1]["costUsd"] == pytest.approx(0.00011)
    llm_requests = [r for r in server.requests if r.path == "/api/v1/llm"]
    assert len(llm_requests) == 2 and all(r.idempotency_key for r in llm_requests)
    assert client.stats()["lanes"]["llm"]["sent"] == 2
    client.shutdown(timeout=5)


def test_an_oversized_prompt_is_stored_truncated_not_refused(server: SerlaServer) -> None:
    client = client_for(server)
    client.track_llm("gpt-4o", input=[{"role": "user", "content": "z" * 1_000_000}], output="ok")
    assert client.flush(timeout=10)
    (row,) = server.llm.rows
    assert row["input"][0]["content"].endswith(_llm.TRUNCATION_MARK)
    assert row["metadata"]["serla_truncated"]["limit"] == _llm.MAX_IO_BYTES
    assert all(r.status == 200 for r in server.requests if r.path == "/api/v1/llm")
    client.shutdown(timeout=5)


def test_a_free_plan_turns_llm_off_with_one_warning_and_events_go_on(
    server: SerlaServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = client_for(server, FREE)
    with caplog.at_level(logging.WARNING, logger="serla"):
        client.track_llm("gpt-4o", input_tokens=1, output_tokens=1)
        client.track("signup", "u1")
        client.flush(timeout=10)
        assert client.track_llm("gpt-4o") is False  # the lane is off now
        for i in range(3):
            client.track("page_viewed", f"u{i}")
        assert client.flush(timeout=10)
    assert server.llm.rows == []
    assert [e["name"] for e in server.events] == ["signup", "page_viewed", "page_viewed", "page_viewed"]
    warnings = [r for r in caplog.records if "402" in r.getMessage() or "Hobby" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert client.stats()["lanes"]["llm"]["disabled"]
    assert len([r for r in server.requests if r.path == "/api/v1/llm"]) == 1
    client.shutdown(timeout=5)


def test_a_wrapped_stream_is_delivered(server: SerlaServer) -> None:
    openai = pytest.importorskip("openai")
    from serla.llm import wrap_openai

    client = client_for(server)
    with VendorStub() as stub:
        raw = openai.OpenAI(base_url=stub.openai_url, api_key="t", max_retries=0)
        ai = wrap_openai(raw, serla_client=client, distinct_id="u_stream")
        stream = ai.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Echo: one two three"
        raw.close()
    assert client.flush(timeout=10)
    (row,) = server.llm.rows
    assert (row["model"], row["inputTokens"], row["outputTokens"], row["totalTokens"]) == (
        "gpt-4o-mini",
        3,
        4,
        7,
    )
    assert row["costUsd"] == pytest.approx((3 * 0.15 + 4 * 0.6) / 1e6)
    assert row["distinctId"] == "u_stream" and row["status"] == "success"
    client.shutdown(timeout=5)


def _env(server: SerlaServer) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"SERLA_API_KEY": KEY, "SERLA_HOST": server.url})
    env.pop("SERLA_DISABLED", None)
    return env


def test_example_openai_wrapper(server: SerlaServer) -> None:
    pytest.importorskip("openai")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "llm_openai_wrapper.py")],
        env=_env(server),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "llm records sent: 2" in proc.stdout
    rows = server.llm.rows
    assert [r["distinctId"] for r in rows] == ["user_123", "user_123"]
    assert rows[1]["traceId"] == "conversation-42" and rows[1]["inputTokens"] == 4
    assert all(r["costUsd"] is not None for r in rows)


@pytest.mark.skipif(not INSTRUMENT.exists(), reason="opentelemetry-instrument is not installed")
def test_example_opentelemetry_instrument_with_openai_v2(server: SerlaServer) -> None:
    pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    env = _env(server)
    env.update(
        {
            "OTEL_TRACES_EXPORTER": "serla",
            "SERLA_OTEL_LLM": "1",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
            "OTEL_SERVICE_NAME": "llm-example",
        }
    )
    proc = subprocess.run(
        [str(INSTRUMENT), sys.executable, str(EXAMPLES / "llm_otel_openai_v2.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert "reply: Echo: Say hello to Serla" in proc.stdout
    (row,) = server.llm.rows
    assert (row["model"], row["provider"], row["inputTokens"], row["outputTokens"]) == (
        "gpt-4o-mini",
        "openai",
        4,
        5,
    )
    assert row["costUsd"] is not None and row["latencyMs"] is not None
    assert row["metadata"]["service.name"] == "llm-example"
    assert row["input"] == [{"role": "user", "parts": [{"content": "Say hello to Serla", "type": "text"}]}]
