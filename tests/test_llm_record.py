"""LLM records: the checks, limits, coercions and the 256 KiB truncation of ``track_llm`` (``serla._llm``).

Records are read through ``before_send_llm`` (the public hook sees each finished record on the caller's
thread); a hook that returns ``None`` drops the record, so these tests need no delivery. Sizes are checked
against the contract server's ``/api/v1/llm`` (real HTTP) and, when ``node`` is installed, against
JavaScript's own ``JSON.stringify``.
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import random
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import serla
from serla import _llm
from serla.devtools.server import SerlaServer

KEY = "sk_live_" + "r" * 43


class Capture:
    """A client whose ``before_send_llm`` keeps each record and drops it (nothing is sent)."""

    def __init__(self, **options: Any) -> None:
        self.records: list[dict[str, Any]] = []

        def hook(record: dict[str, Any]) -> None:
            self.records.append(record)
            return None

        self.client = serla.Serla(
            KEY, host="http://127.0.0.1:9", flush_on_exit=False, before_send_llm=hook, **options
        )

    @property
    def last(self) -> dict[str, Any]:
        assert self.records, "no record reached before_send_llm"
        return self.records[-1]

    def invalid(self) -> int:
        return int(self.client.stats()["dropped"].get("invalid_call", 0))


@pytest.fixture
def cap() -> Iterator[Capture]:
    capture = Capture()
    yield capture
    capture.client.shutdown(timeout=1)


def test_a_full_record_has_the_wire_names(cap: Capture) -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc)
    cap.client.track_llm(
        "gpt-4o-mini",
        provider="openai",
        distinct_id="user_1",
        trace_id="t1",
        parent_id="p1",
        input=[{"role": "user", "content": "hi"}],
        output={"role": "assistant", "content": "hello"},
        input_tokens=12,
        output_tokens=3.0,
        total_tokens=15,
        cost_usd=decimal.Decimal("0.0001"),
        latency_ms=datetime.timedelta(milliseconds=1234.6),
        status="ERROR",
        error_message=ValueError("boom"),
        metadata={"k": {1, 2}},
        timestamp=when,
    )
    assert cap.last == {
        "model": "gpt-4o-mini",
        "status": "error",
        "provider": "openai",
        "distinctId": "user_1",
        "traceId": "t1",
        "parentId": "p1",
        "inputTokens": 12,
        "outputTokens": 3,
        "totalTokens": 15,
        "costUsd": 0.0001,
        "latencyMs": 1235,
        "errorMessage": "ValueError: boom",
        "metadata": {"k": [1, 2]},
        "timestamp": "2026-01-02T03:04:05.678Z",
        "input": [{"role": "user", "content": "hi"}],
        "output": {"role": "assistant", "content": "hello"},
    }


def test_strings_are_cut_to_the_server_limits_in_utf16_units(cap: Capture) -> None:
    emoji = "\U0001f600"  # two UTF-16 units
    cap.client.track_llm(
        emoji * 150,
        provider="p" * 60,
        distinct_id="d" * 250,
        trace_id=emoji * 101,
        error_message="e" * 2500,
    )
    rec = cap.last
    assert rec["model"] == emoji * 100  # 200 units, not 150 code points
    assert rec["provider"] == "p" * 50
    assert rec["distinctId"] == "d" * 200
    assert rec["traceId"] == emoji * 100
    assert rec["errorMessage"] == "e" * 2000
    assert _llm.utf16_len(emoji + "a") == 3
    assert _llm.cut_utf16(emoji * 3, 5) == emoji * 2  # never half a pair


def test_large_numbers_are_clamped_and_timestamps_default_to_now() -> None:
    capture = Capture(_clock=lambda: 1_767_225_600.25)  # 2026-01-01T00:00:00.250Z
    capture.client.track_llm("m", input_tokens=2**40, latency_ms=1e12)
    assert capture.last["inputTokens"] == _llm.MAX_INT
    assert capture.last["latencyMs"] == _llm.MAX_INT
    assert capture.last["timestamp"] == "2026-01-01T00:00:00.250Z"
    capture.client.shutdown(timeout=1)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"model": ""}, "model"),
        ({"model": "   "}, "model"),
        ({"model": None}, "model"),
        ({"model": "m", "input_tokens": -1}, "input_tokens"),
        ({"model": "m", "output_tokens": 1.5}, "output_tokens"),
        ({"model": "m", "total_tokens": "12"}, "total_tokens"),
        ({"model": "m", "input_tokens": True}, "input_tokens"),
        ({"model": "m", "latency_ms": -3}, "latency_ms"),
        ({"model": "m", "latency_ms": float("nan")}, "latency_ms"),
        ({"model": "m", "cost_usd": -0.5}, "cost_usd"),
        ({"model": "m", "cost_usd": float("inf")}, "cost_usd"),
        ({"model": "m", "status": "failed"}, "status"),
        ({"model": "m", "status": None}, "status"),
        ({"model": "m", "metadata": [1, 2]}, "metadata"),
        ({"model": "m", "timestamp": "yesterday"}, "timestamp"),
    ],
)
def test_wrong_calls_are_dropped_counted_and_warned(
    cap: Capture, caplog: pytest.LogCaptureFixture, kwargs: dict[str, Any], reason: str
) -> None:
    model = kwargs.pop("model")
    with caplog.at_level(logging.WARNING, logger="serla"):
        assert cap.client.track_llm(model, **kwargs) is False
    assert cap.records == []
    assert cap.invalid() == 1
    assert any(reason in r.getMessage() for r in caplog.records), caplog.text


def test_distinct_id_comes_from_the_context(cap: Capture) -> None:
    with serla.distinct_id_context("ctx_user"):
        cap.client.track_llm("m")
        cap.client.track_llm("m", distinct_id=42)  # type: ignore[arg-type]
    cap.client.track_llm("m")
    assert [r.get("distinctId") for r in cap.records] == ["ctx_user", "42", None]


def test_capture_llm_content_false_leaves_prompts_and_replies_out() -> None:
    capture = Capture(capture_llm_content=False)
    capture.client.track_llm("m", input="my secret", output="the answer", input_tokens=1)
    assert "input" not in capture.last and "output" not in capture.last
    assert capture.last["inputTokens"] == 1
    capture.client.shutdown(timeout=1)


def test_the_record_is_a_snapshot(cap: Capture) -> None:
    messages = [{"role": "user", "content": "first"}]
    cap.client.track_llm("m", input=messages)
    messages[0]["content"] = "changed"
    assert cap.last["input"] == [{"role": "user", "content": "first"}]


def test_before_send_llm_can_redact_drop_and_is_checked_again(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[dict[str, Any]] = []

    def hook(record: dict[str, Any]) -> Any:
        if record["model"] == "drop":
            return None
        if record["model"] == "raise":
            raise RuntimeError("hook bug")
        if record["model"] == "bad":
            return {**record, "inputTokens": -5}
        record["input"] = "[redacted]"
        seen.append(record)
        return {**record, "model": "checked-again", "status": "weird"} if record["model"] == "x" else None

    client = serla.Serla(KEY, host="http://127.0.0.1:9", flush_on_exit=False, before_send_llm=hook)
    with caplog.at_level(logging.WARNING, logger="serla"):
        assert client.track_llm("drop") is False
        assert client.track_llm("raise", input="secret") is False
        assert client.track_llm("bad") is False
        assert client.track_llm("x", input="secret") is False
    assert client.stats()["dropped"]["invalid_call"] == 3  # raise, bad, and x's bad status
    assert seen[0]["input"] == "[redacted]"
    assert "hook bug" in caplog.text and "secret" not in caplog.text
    client.shutdown(timeout=1)


def test_before_send_llm_must_be_callable() -> None:
    with pytest.raises(TypeError):
        serla.Serla(KEY, before_send_llm="nope")  # type: ignore[arg-type]


# -- the 256 KiB rule ------------------------------------------------------------------------------------


JS_FORMS = [
    (1.0, "1"),
    (-0.0, "0"),
    (100.5, "100.5"),
    (1e16, "10000000000000000"),
    (1.5e20, "150000000000000000000"),
    (1e21, "1e+21"),
    (1.25e-5, "0.0000125"),
    (1e-7, "1e-7"),
    (-2.5e-300, "-2.5e-300"),
    (123456789.125, "123456789.125"),
]


@pytest.mark.parametrize(("value", "js"), JS_FORMS)
def test_number_sizes_follow_javascript(value: float, js: str) -> None:
    assert _llm.json_size(value) == len(js)
    assert _llm.json_size({"v": [value]}) == len(json.dumps({"v": [0]}, separators=(",", ":"))) - 1 + len(js)


def test_sizes_match_node_json_stringify() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the number rules are checked against fixed values above)")
    rng = random.Random(7)
    values: list[Any] = [None, 'é\U0001f600\n"\\', {"a": [1, 2.5, True, None]}, "\x01\x7f"]
    for _ in range(300):
        exponent = rng.randint(-25, 25)
        values.append([rng.choice([1, -1]) * rng.random() * 10**exponent, float(rng.randint(0, 10**6))])
    script = (
        "const v=JSON.parse(require('fs').readFileSync(0,'utf8'));"
        "process.stdout.write(JSON.stringify(v.map(x=>Buffer.byteLength(JSON.stringify(x??null)))))"
    )
    out = subprocess.run(
        [node, "-e", script], input=json.dumps(values), capture_output=True, text=True, timeout=60, check=True
    )
    assert [_llm.json_size(_llm.sanitize(v)) for v in values] == json.loads(out.stdout)


def _messages(n: int, size: int) -> list[dict[str, Any]]:
    return [{"role": "user" if i % 2 else "assistant", "content": "x" * size} for i in range(n)]


def test_a_record_under_the_limit_is_unchanged() -> None:
    record = {"model": "m", "input": _messages(3, 100), "output": "ok"}
    assert _llm.fit(dict(record)) == record


def test_an_oversized_prompt_keeps_its_structure_and_short_messages() -> None:
    big = "A" * 400_000
    record: dict[str, Any] = {
        "model": "m",
        "metadata": {"keep": 1},
        "input": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": big},
            {"role": "user", "content": "short question"},
        ],
        "output": "short answer",
    }
    original_input = len(json.dumps(record["input"], separators=(",", ":")))
    _llm.fit(record)
    assert _llm.io_size(record) <= _llm.MAX_IO_BYTES
    assert _llm.io_size(record) > _llm.MAX_IO_BYTES - 1024  # it keeps as much as fits
    roles = [m["role"] for m in record["input"]]
    assert roles == ["system", "user", "user"]
    assert record["input"][0]["content"] == "be brief"
    assert record["input"][2]["content"] == "short question"
    assert record["input"][1]["content"].startswith("AAAA")
    assert record["input"][1]["content"].endswith(_llm.TRUNCATION_MARK)
    assert record["output"] == "short answer"
    assert record["metadata"] == {
        "keep": 1,
        "serla_truncated": {"input_bytes": original_input, "output_bytes": 14, "limit": _llm.MAX_IO_BYTES},
    }


def test_both_sides_oversized_share_the_budget() -> None:
    record: dict[str, Any] = {"model": "m", "input": "é" * 300_000, "output": ["z" * 300_000, 1.0e16]}
    _llm.fit(record)
    assert _llm.json_size(record["input"]) <= _llm.MAX_IO_BYTES // 2
    assert _llm.json_size(record["output"]) <= _llm.MAX_IO_BYTES // 2
    assert record["output"][1] == 1.0e16


def test_structure_too_big_for_the_budget_becomes_its_json_head() -> None:
    record: dict[str, Any] = {"model": "m", "input": list(range(100_000))}
    _llm.fit(record)
    assert isinstance(record["input"], str)
    assert record["input"].startswith("[0,1,2,3")
    assert record["input"].endswith(_llm.TRUNCATION_MARK)
    assert _llm.io_size(record) <= _llm.MAX_IO_BYTES


def test_escapes_and_multibyte_text_are_counted_in_the_cut() -> None:
    for text in ("\n" * 200_000, "\U0001f600" * 100_000, '"\\' * 90_000):
        record: dict[str, Any] = {"model": "m", "input": [{"content": text}], "output": {"content": text}}
        _llm.fit(record)
        assert _llm.io_size(record) <= _llm.MAX_IO_BYTES


def _post(url: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url + "/api/v1/llm",
        data=json.dumps(body, ensure_ascii=False).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_the_contract_server_takes_the_truncated_record_and_refuses_the_original() -> None:
    original = {"model": "gpt-4o", "input": [{"role": "user", "content": "q" * 300_000}], "output": "a"}
    fitted = _llm.fit(json.loads(json.dumps(original)))
    with SerlaServer() as server:
        assert _post(server.url, original) == 413
        assert _post(server.url, fitted) == 200
        # the exact edge: one byte under, at and over the limit
        edge = _llm.MAX_IO_BYTES - len('""') - 4  # input string, output null
        assert _post(server.url, {"model": "m", "input": "x" * edge}) == 200
        assert _post(server.url, {"model": "m", "input": "x" * (edge + 1)}) == 413
        assert len(server.llm.rows) == 2


def test_track_llm_truncates_before_it_queues(cap: Capture) -> None:
    cap.client.track_llm("m", input="p" * 600_000, output="o" * 10)
    rec = _llm.fit(dict(cap.last))  # the hook saw the record before fitting: fit it as track_llm does
    assert _llm.io_size(rec) <= _llm.MAX_IO_BYTES
    assert rec["output"] == "o" * 10


def test_llm_code_loads_only_when_used() -> None:
    import sys

    code = (
        "import sys, serla\n"
        "c = serla.Serla('sk_live_x', host='http://127.0.0.1:9', flush_on_exit=False)\n"
        "print('serla._llm' in sys.modules)\n"
        "c.track_llm('m')\n"
        "print('serla._llm' in sys.modules, 'json' in sys.modules)\n"
        "import serla.llm\n"
        "print('openai' in sys.modules, 'anthropic' in sys.modules, 'serla.devtools' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split("\n")
    # track_llm loads serla._llm on first use; its fast path needs no json module.
    assert out[:3] == ["False", "True False", "False False False"]
