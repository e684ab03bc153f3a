"""OpenTelemetry GenAI spans as LLM records (``SerlaSpanProcessor(..., llm=True)``).

Any instrumentation that follows the GenAI semantic conventions (``opentelemetry-instrumentation-openai-v2``,
OpenLLMetry, pydantic-ai, LangChain's) produces one span per model call. When such a span ends, this
turns it into one :meth:`serla.Serla.track_llm` record:

==========================  ==============================================================================
record field                span
==========================  ==============================================================================
``model``                   ``gen_ai.response.model``, else ``gen_ai.request.model``
``provider``                ``gen_ai.provider.name``, else the older ``gen_ai.system``
``inputTokens``             ``gen_ai.usage.input_tokens`` (older: ``gen_ai.usage.prompt_tokens``)
``outputTokens``            ``gen_ai.usage.output_tokens`` (older: ``gen_ai.usage.completion_tokens``)
``latencyMs``               the span's duration
``timestamp``               the span's start
``traceId`` / ``parentId``  the span's trace id and its parent span's id (hex)
``status``                  ``error`` when the span's status is ERROR or it has ``error.type``
``errorMessage``            the status description, else ``error.type``
``input``                   ``gen_ai.system_instructions`` + ``gen_ai.input.messages`` (JSON), or the older
                            ``gen_ai.prompt.<i>.role`` / ``.content`` attributes, when captured
``output``                  ``gen_ai.output.messages`` (JSON), or ``gen_ai.completion.<i>.*``
``distinctId``              ``enduser.id`` / ``user.id`` (or the bridge's ``distinct_id_key``), else the
                            context's
``metadata``                ``span_id``, ``span_name``, ``operation``, ``service.name``, ``response_id``,
                            ``finish_reasons`` and the ``gen_ai.request.*`` parameters
==========================  ==============================================================================

Which spans: those with a model and an operation that is a model call (``chat``, ``text_completion``,
``generate_content``, ``embeddings``), or, for instrumentations that predate ``gen_ai.operation.name``,
a model and ``gen_ai.system``. Agent and tool spans (``invoke_agent``, ``execute_tool``) are not model
calls and are skipped, so nothing is counted twice. Unsampled spans are skipped, like every span the
bridge sees. Message content is only there when the instrumentation captured it (for openai-v2:
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``); ``capture_llm_content=False`` on the client
drops it in any case.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Callable

from serla._client import Serla

ENV_LLM = "SERLA_OTEL_LLM"
"""``1``/``true`` turns GenAI spans into LLM records when the ``llm`` option is not given (exporters)."""

MODEL_CALLS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
"""``gen_ai.operation.name`` values that are one model call each."""

_TRUE = frozenset({"1", "true", "yes", "on"})


def llm_enabled(option: bool | None) -> bool:
    """The ``llm`` option, or ``SERLA_OTEL_LLM`` when it is ``None``.

    Raises:
        TypeError: For an option that is not a bool or None.
    """
    if option is None:
        return os.environ.get(ENV_LLM, "").strip().lower() in _TRUE
    if not isinstance(option, bool):
        raise TypeError("serla.otel: llm must be a bool or None")
    return option


def _json_attr(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, (tuple, list)):
        return list(value)
    return value


def _indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """The older ``gen_ai.prompt.<i>.<field>`` attributes as a list of dicts, in index order."""
    items: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        index, _, field = key[len(prefix) :].partition(".")
        if index.isdigit() and field:
            items.setdefault(int(index), {})[field] = value
    return [items[i] for i in sorted(items)]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class GenAiTranslator:
    """Turns ended GenAI spans into LLM records on a client.

    Args:
        client: Returns the client to record with (the bridge's: given or the process default).
        distinct_id_keys: Span attribute keys tried, in order, for the user.
    """

    def __init__(self, client: Callable[[], Serla | None], distinct_id_keys: tuple[str, ...]) -> None:
        self._client = client
        self._keys = distinct_id_keys
        self.recorded = 0
        self.dropped = 0

    def on_span(self, span: Any) -> None:
        """Record ``span`` if it is a model call (called on the thread that ended it)."""
        attrs = span.attributes
        if not attrs:
            return
        model = attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model")
        if not isinstance(model, str) or not model:
            return
        operation = attrs.get("gen_ai.operation.name")
        provider = attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system")
        if operation is None and provider is None:
            return
        if operation is not None and operation not in MODEL_CALLS:
            return
        ctx = span.context
        if ctx is None or not ctx.trace_flags.sampled:
            return
        client = self._client()
        if client is None:
            self.dropped += 1
            return
        capture = client.config.capture_llm_content
        status_code = getattr(getattr(span.status, "status_code", None), "name", "")
        error_type = attrs.get("error.type")
        failed = status_code == "ERROR" or error_type is not None
        error_message = None
        if failed:
            error_message = getattr(span.status, "description", None) or (
                str(error_type) if error_type is not None else "error"
            )
        meta: dict[str, Any] = {"span_id": f"{ctx.span_id:016x}", "span_name": span.name}
        if operation is not None:
            meta["operation"] = operation
        service = getattr(span.resource, "attributes", {}).get("service.name") if span.resource else None
        if service is not None:
            meta["service.name"] = service
        if attrs.get("gen_ai.response.id") is not None:
            meta["response_id"] = attrs["gen_ai.response.id"]
        if attrs.get("gen_ai.response.finish_reasons") is not None:
            meta["finish_reasons"] = list(attrs["gen_ai.response.finish_reasons"])
        for key, value in attrs.items():
            if key.startswith("gen_ai.request.") and key != "gen_ai.request.model":
                meta[key[len("gen_ai.request.") :]] = list(value) if isinstance(value, tuple) else value
        inp: Any = None
        out: Any = None
        if capture:
            inp, out = self._content(attrs)
        distinct_id = None
        for key in self._keys:
            value = attrs.get(key)
            if isinstance(value, str) and value:
                distinct_id = value
                break
        parent = span.parent
        start, end = span.start_time, span.end_time
        latency = (end - start) / 1e6 if start and end and end >= start else None
        ok = client.track_llm(
            model,
            provider=provider if isinstance(provider, str) else None,
            distinct_id=distinct_id,
            trace_id=f"{ctx.trace_id:032x}",
            parent_id=f"{parent.span_id:016x}" if parent is not None else None,
            input=inp,
            output=out,
            input_tokens=_int(
                attrs.get("gen_ai.usage.input_tokens", attrs.get("gen_ai.usage.prompt_tokens"))
            ),
            output_tokens=_int(
                attrs.get("gen_ai.usage.output_tokens", attrs.get("gen_ai.usage.completion_tokens"))
            ),
            latency_ms=latency,
            status="error" if failed else "success",
            error_message=error_message,
            metadata=meta,
            timestamp=start / 1e9 if start else None,
        )
        if ok:
            self.recorded += 1
        else:
            self.dropped += 1

    @staticmethod
    def _content(attrs: Mapping[str, Any]) -> tuple[Any, Any]:
        inp: Any = None
        messages = attrs.get("gen_ai.input.messages")
        system = attrs.get("gen_ai.system_instructions")
        if messages is not None or system is not None:
            parts: list[Any] = []
            if system is not None:
                parts.append({"role": "system", "parts": _json_attr(system)})
            if messages is not None:
                parsed = _json_attr(messages)
                parts.extend(parsed if isinstance(parsed, list) else [parsed])
            inp = parts
        else:
            legacy = _indexed(attrs, "gen_ai.prompt.")
            inp = legacy or None
        outputs = attrs.get("gen_ai.output.messages")
        if outputs is not None:
            return inp, _json_attr(outputs)
        return inp, _indexed(attrs, "gen_ai.completion.") or None


def for_translator(translator: Any, option: bool | None) -> GenAiTranslator | None:
    """A :class:`GenAiTranslator` sharing a span translator's client and user keys, if ``llm`` is on."""
    if not llm_enabled(option):
        return None
    return GenAiTranslator(translator.client, translator.distinct_id_keys)
