"""``serla.llm`` wrappers with the real ``openai`` and ``anthropic`` clients against the loopback vendor stub.

Records are read through ``before_send_llm`` (see tests/test_llm_record.py); delivery to a server is in
tests/test_llm_delivery.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import serla
from serla.devtools.llm_stub import VendorStub
from serla.llm import wrap, wrap_anthropic, wrap_openai

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

KEY = "sk_live_" + "w" * 43
USER = [{"role": "user", "content": "hello there world"}]


class Recorder:
    def __init__(self, **options: Any) -> None:
        self.records: list[dict[str, Any]] = []
        self.vendor_clients: list[Any] = []
        self.client = serla.Serla(
            KEY, host="http://127.0.0.1:9", flush_on_exit=False, before_send_llm=self._keep, **options
        )

    def _keep(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def own(self, vendor_client: Any) -> Any:
        """Close ``vendor_client`` (its connection pool) when the test ends."""
        self.vendor_clients.append(vendor_client)
        return vendor_client

    def close(self) -> None:
        for vendor_client in self.vendor_clients:
            vendor_client.close()
        self.client.shutdown(timeout=1)

    @property
    def one(self) -> dict[str, Any]:
        assert len(self.records) == 1, self.records
        return self.records[0]


@pytest.fixture
def stub() -> Iterator[VendorStub]:
    with VendorStub() as s:
        yield s


@pytest.fixture
def rec() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def oai(stub: VendorStub, rec: Recorder, **options: Any) -> Any:
    return wrap_openai(
        openai.OpenAI(base_url=stub.openai_url, api_key="test", max_retries=0),
        serla_client=rec.client,
        **options,
    )


def ant(stub: VendorStub, rec: Recorder, **options: Any) -> Any:
    raw = rec.own(anthropic.Anthropic(base_url=stub.anthropic_url, api_key="test", max_retries=0))
    return wrap_anthropic(raw, serla_client=rec.client, **options)


def test_the_wrapper_is_the_client_for_everything_else(stub: VendorStub, rec: Recorder) -> None:
    raw = rec.own(openai.OpenAI(base_url=stub.openai_url, api_key="test", max_retries=0))
    client = wrap_openai(raw, serla_client=rec.client)
    assert isinstance(client, openai.OpenAI)
    assert client.base_url == raw.base_url
    assert client.models is raw.models
    assert client.chat.completions.with_raw_response is not None
    assert type(client.chat.completions.create(model="gpt-4o-mini", messages=USER)) is type(
        raw.chat.completions.create(model="gpt-4o-mini", messages=USER)
    )
    assert len(rec.records) == 1  # only the wrapped call
    assert wrap(raw, serla_client=rec.client).chat is not raw.chat
    with pytest.raises(TypeError):
        wrap(object())
    with pytest.raises(TypeError):
        wrap_openai(raw, serla_client="nope")  # type: ignore[arg-type]


def test_openai_chat_completion(stub: VendorStub, rec: Recorder) -> None:
    client = oai(stub, rec, metadata={"app": "demo"})
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=USER,
        serla_distinct_id="u1",
        serla_trace_id="t1",
        serla_metadata={"step": 2},
    )
    assert reply.choices[0].message.content == "Echo: hello there world"
    r = rec.one
    assert r["model"] == "gpt-4o-mini" and r["provider"] == "openai" and r["status"] == "success"
    assert (r["inputTokens"], r["outputTokens"], r["totalTokens"]) == (3, 4, 7)
    assert r["distinctId"] == "u1" and r["traceId"] == "t1"
    assert r["input"] == USER
    assert r["output"] == [{"role": "assistant", "content": "Echo: hello there world"}]
    assert r["metadata"] == {"api": "chat.completions", "app": "demo", "finish_reason": "stop", "step": 2}
    assert isinstance(r["latencyMs"], int) and r["latencyMs"] >= 0
    sent = stub.requests[-1][1]
    assert not any(k.startswith("serla_") for k in sent)  # the vendor never sees the serla_* arguments


def test_openai_stream_passes_chunks_through_and_reads_usage_at_the_end(
    stub: VendorStub, rec: Recorder
) -> None:
    raw = rec.own(openai.OpenAI(base_url=stub.openai_url, api_key="test", max_retries=0))
    kwargs: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    plain = [c.model_dump() for c in raw.chat.completions.create(**kwargs)]
    stream = oai(stub, rec).chat.completions.create(**kwargs)
    chunks = []
    for chunk in stream:
        assert type(chunk).__name__ == "ChatCompletionChunk"
        chunks.append(chunk.model_dump())
        assert rec.records == [] or chunk is None  # nothing recorded before the end
    assert [{**c, "created": 0} for c in chunks] == [{**c, "created": 0} for c in plain]
    r = rec.one
    assert (r["inputTokens"], r["outputTokens"]) == (3, 4)
    assert r["output"] == [{"role": "assistant", "content": "Echo: hello there world"}]
    assert r["metadata"]["time_to_first_chunk_ms"] >= 0


def test_openai_stream_without_usage_is_recorded_without_tokens(stub: VendorStub, rec: Recorder) -> None:
    with oai(stub, rec).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True) as stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Echo: hello there world"
    assert "inputTokens" not in rec.one and rec.one["status"] == "success"
    assert "stream_closed_early" not in rec.one["metadata"]


def test_the_first_chunk_arrives_before_the_rest_is_sent(stub: VendorStub, rec: Recorder) -> None:
    stub.hold = threading.Event()
    stream = oai(stub, rec).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    first = next(iter(stream))  # the stub is holding everything after its first event
    assert first.choices[0].delta.role == "assistant"
    assert not stub.hold.is_set() and rec.records == []
    stub.hold.set()
    assert len(list(stream)) == 5
    assert rec.one["status"] == "success"


def test_a_stream_closed_early_is_recorded_with_what_it_gave(stub: VendorStub, rec: Recorder) -> None:
    stream = oai(stub, rec).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    r = rec.one
    assert r["metadata"]["stream_closed_early"] is True
    assert r["output"] == [{"role": "assistant", "content": "Echo:"}]
    stream.close()
    assert len(rec.records) == 1  # once


def test_errors_are_recorded_and_re_raised_unchanged(stub: VendorStub, rec: Recorder) -> None:
    stub.fail_next(400, "context length exceeded")
    client = oai(stub, rec)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=USER)
    assert caught.value.status_code == 400
    r = rec.one
    assert r["status"] == "error" and r["model"] == "gpt-4o"
    assert (
        r["errorMessage"].startswith("BadRequestError: ") and "context length exceeded" in r["errorMessage"]
    )
    assert r["input"] == USER and "output" not in r


def test_a_type_error_from_the_library_is_re_raised_too(stub: VendorStub, rec: Recorder) -> None:
    with pytest.raises(TypeError):
        oai(stub, rec).chat.completions.create(model="gpt-4o", messages=USER, not_an_argument=1)
    assert rec.one["errorMessage"].startswith("TypeError")


def test_openai_responses_plain_and_streamed(stub: VendorStub, rec: Recorder) -> None:
    client = oai(stub, rec)
    reply = client.responses.create(model="gpt-4.1", instructions="be brief", input="hi you")
    assert reply.output_text == "Echo: hi you"
    with client.responses.create(
        model="gpt-4.1", input=[{"role": "user", "content": "a b"}], stream=True
    ) as s:
        kinds = [event.type for event in s]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    plain, streamed = rec.records
    assert plain["input"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi you"},
    ]
    assert (plain["inputTokens"], plain["outputTokens"], plain["totalTokens"]) == (4, 3, 7)
    assert plain["output"] == [{"role": "assistant", "content": "Echo: hi you"}]
    assert (streamed["inputTokens"], streamed["outputTokens"]) == (2, 3)
    assert streamed["output"] == [{"role": "assistant", "content": "Echo: a b"}]
    assert streamed["metadata"]["api"] == "responses"


def test_anthropic_messages_plain_and_streamed(stub: VendorStub, rec: Recorder) -> None:
    client = ant(stub, rec, distinct_id="default_user")
    message = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=50,
        system="be nice",
        messages=[{"role": "user", "content": "hey you"}],
    )
    assert message.content[0].text == "Echo: hey you"
    events = [
        e.type
        for e in client.messages.create(
            model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "x"}], stream=True
        )
    ]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    plain, streamed = rec.records
    assert plain["provider"] == "anthropic" and plain["distinctId"] == "default_user"
    assert plain["input"][0] == {"role": "system", "content": "be nice"}
    assert (plain["inputTokens"], plain["outputTokens"]) == (4, 3)
    assert plain["metadata"]["stop_reason"] == "end_turn"
    assert (streamed["inputTokens"], streamed["outputTokens"]) == (1, 2)
    assert streamed["output"] == [{"role": "assistant", "content": "Echo: x"}]


def test_anthropic_error(stub: VendorStub, rec: Recorder) -> None:
    stub.fail_next(400, "bad request")
    with pytest.raises(anthropic.BadRequestError):
        ant(stub, rec).messages.create(model="claude-opus-4-1", max_tokens=5, messages=USER)
    assert rec.one["status"] == "error" and rec.one["provider"] == "anthropic"


def test_async_clients(stub: VendorStub, rec: Recorder) -> None:
    async def main() -> list[str]:
        ao = wrap_openai(
            openai.AsyncOpenAI(base_url=stub.openai_url, api_key="t", max_retries=0), serla_client=rec.client
        )
        aa = wrap_anthropic(
            anthropic.AsyncAnthropic(base_url=stub.anthropic_url, api_key="t", max_retries=0),
            serla_client=rec.client,
        )
        out = []
        reply = await ao.chat.completions.create(model="gpt-4o-mini", messages=USER)
        out.append(reply.choices[0].message.content)
        stream = await ao.chat.completions.create(
            model="gpt-4o-mini", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        async with stream as s:
            out.append("".join([c.choices[0].delta.content or "" async for c in s if c.choices]))
        message = await aa.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=USER)
        out.append(message.content[0].text)
        events = await aa.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=USER, stream=True)
        out.append(str(len([e async for e in events])))
        stub.fail_next(400, "nope")
        try:
            await ao.responses.create(model="gpt-4o", input="x")
        except openai.BadRequestError:
            out.append("raised")
        await ao.close()
        await aa.close()
        return out

    assert asyncio.run(main()) == ["Echo: hello there world"] * 3 + ["9", "raised"]
    statuses = [(r["provider"], r["status"], r.get("outputTokens")) for r in rec.records]
    assert statuses == [
        ("openai", "success", 4),
        ("openai", "success", 4),
        ("anthropic", "success", 4),
        ("anthropic", "success", 4),
        ("openai", "error", None),
    ]


def test_distinct_id_from_the_context_and_capture_off(stub: VendorStub) -> None:
    rec = Recorder(capture_llm_content=False)
    client = oai(stub, rec)
    with serla.distinct_id_context("ctx_user"):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    r = rec.one
    assert r["distinctId"] == "ctx_user"
    assert "input" not in r and "output" not in r and r["inputTokens"] == 3
    rec.close()


def test_the_default_client_is_used_when_none_is_given(stub: VendorStub) -> None:
    rec = Recorder()
    serla.set_default_client(rec.client)
    try:
        client = wrap_openai(rec.own(openai.OpenAI(base_url=stub.openai_url, api_key="t", max_retries=0)))
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)
    finally:
        serla.set_default_client(None)
        rec.close()
    assert rec.one["model"] == "gpt-4o-mini"


def test_anthropic_messages_stream_helper(stub: VendorStub, rec: Recorder) -> None:
    client = ant(stub, rec)
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=USER) as stream:
        assert type(stream).__name__ == "MessageStream"  # the library's own stream, untouched
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: hello there world" and final.usage.output_tokens == 4
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=50, messages=USER) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                break
    complete, early = rec.records
    assert complete["metadata"]["api"] == "messages.stream"
    assert (complete["inputTokens"], complete["outputTokens"]) == (3, 4)
    assert complete["output"] == [{"role": "assistant", "content": "Echo: hello there world"}]
    assert "stream_closed_early" not in complete["metadata"]
    assert early["metadata"]["stream_closed_early"] is True
    assert early["output"] == [{"role": "assistant", "content": "Echo:"}]


def test_anthropic_async_messages_stream_helper_and_error(stub: VendorStub, rec: Recorder) -> None:
    async def main() -> str:
        raw = anthropic.AsyncAnthropic(base_url=stub.anthropic_url, api_key="t", max_retries=0)
        client = wrap_anthropic(raw, serla_client=rec.client)
        async with client.messages.stream(model="claude-haiku-4-5", max_tokens=5, messages=USER) as stream:
            text = "".join([t async for t in stream.text_stream])
        stub.fail_next(400, "nope")
        try:
            async with client.messages.stream(
                model="claude-haiku-4-5", max_tokens=5, messages=USER
            ) as stream:
                pass
        except anthropic.BadRequestError:
            text += " / raised"
        await raw.close()
        return text

    assert asyncio.run(main()) == "Echo: hello there world / raised"
    done, failed = rec.records
    assert done["status"] == "success" and done["outputTokens"] == 4
    assert failed["status"] == "error" and failed["errorMessage"].startswith("BadRequestError")


def test_without_any_serla_client_calls_pass_through_unrecorded(
    stub: VendorStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SERLA_API_KEY", raising=False)
    serla.set_default_client(None)
    raw = openai.OpenAI(base_url=stub.openai_url, api_key="t", max_retries=0)
    client = wrap_openai(raw)
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=USER, serla_distinct_id="u")
    assert reply.choices[0].message.content == "Echo: hello there world"
    assert "serla_distinct_id" not in stub.requests[-1][1]
    assert serla.get_default_client(create=False) is None
    raw.close()


def test_with_options_and_copy_stay_wrapped(stub: VendorStub, rec: Recorder) -> None:
    client = oai(stub, rec, distinct_id="u_opts")
    faster = client.with_options(timeout=5.0)
    assert isinstance(faster, openai.OpenAI) and faster.timeout == 5.0
    faster.chat.completions.create(model="gpt-4o-mini", messages=USER)
    ant(stub, rec).copy(max_retries=1).messages.create(model="claude-haiku-4-5", max_tokens=5, messages=USER)
    assert [(r["provider"], r.get("distinctId")) for r in rec.records] == [
        ("openai", "u_opts"),
        ("anthropic", None),
    ]


def test_a_stream_cut_off_mid_response_is_an_error_re_raised(stub: VendorStub, rec: Recorder) -> None:
    stub.cut_after = 3
    stream = oai(stub, rec).chat.completions.create(model="gpt-4o-mini", messages=USER, stream=True)
    seen = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["", "Echo:", " hello"]
    r = rec.one
    assert r["status"] == "error" and r["errorMessage"].startswith("APIConnectionError")
    assert r["output"] == [{"role": "assistant", "content": "Echo: hello"}]


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_orders",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


def test_tool_calls_are_recorded_plain_and_streamed(stub: VendorStub, rec: Recorder) -> None:
    client = oai(stub, rec)
    reply = client.chat.completions.create(model="gpt-4o", messages=USER, tools=TOOLS)
    assert reply.choices[0].message.tool_calls[0].function.name == "search_orders"
    stream = client.chat.completions.create(model="gpt-4o", messages=USER, tools=TOOLS, stream=True)
    assert len(list(stream)) == 4
    plain, streamed = rec.records
    call = {
        "id": "call_stub",
        "type": "function",
        "function": {"name": "search_orders", "arguments": '{"query": "hello there world"}'},
    }
    assert plain["output"] == [{"role": "assistant", "content": None, "tool_calls": [call]}]
    assert plain["metadata"]["finish_reason"] == "tool_calls"
    assert streamed["output"] == [{"role": "assistant", "content": "", "tool_calls": [call]}]
    assert streamed["metadata"]["finish_reason"] == "tool_calls"
