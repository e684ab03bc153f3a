"""OpenAI: ``chat.completions.create`` and ``responses.create`` (sync, async, streamed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serla.llm._core import REWRAP, Api, Observer, usage_number
from serla.llm._core import get_field as _get


class ChatCompletions(Api):
    """``client.chat.completions.create``.

    A stream carries usage only when the request asks for it (``stream_options={"include_usage":
    True}``): the wrapper does not add it, because the extra final chunk (with ``choices == []``) would
    change what your code iterates over. Without it, a streamed call is recorded without token counts
    (and so without a server-computed cost).
    """

    provider = "openai"
    name = "chat.completions"

    def request(self, kwargs: Mapping[str, Any], capture: bool) -> tuple[Any, Any]:
        """The model and the messages."""
        return kwargs.get("model"), (kwargs.get("messages") if capture else None)

    def response(self, response: Any, capture: bool) -> dict[str, Any]:
        """Model, usage and the choices' messages."""
        usage = _get(response, "usage")
        out: dict[str, Any] = {
            "model": _get(response, "model"),
            "input_tokens": usage_number(usage, "prompt_tokens"),
            "output_tokens": usage_number(usage, "completion_tokens"),
            "total_tokens": usage_number(usage, "total_tokens"),
        }
        choices = _get(response, "choices") or []
        if capture:
            messages = []
            for choice in choices:
                message = _get(choice, "message")
                item: dict[str, Any] = {"role": _get(message, "role") or "assistant"}
                item["content"] = _get(message, "content")
                tool_calls = _get(message, "tool_calls")
                if tool_calls:
                    item["tool_calls"] = tool_calls  # pydantic models: coerced by the encoder
                messages.append(item)
            out["output"] = messages
        reasons = [_get(c, "finish_reason") for c in choices]
        if reasons and reasons[0] is not None:
            out["metadata"] = {"finish_reason": reasons[0]}
        return out

    def observer(self, capture: bool) -> Observer:
        """Reads ``chat.completion.chunk`` objects."""
        return _ChatObserver(capture)


class _ChatObserver(Observer):
    """Reads chat chunks: the text and tool calls of each choice (by ``index``), the finish reason, usage."""

    def __init__(self, capture: bool) -> None:
        super().__init__(capture)
        self.choices: dict[int, list[str]] = {}
        self.tools: dict[int, dict[int, dict[str, Any]]] = {}

    def on_chunk(self, chunk: Any) -> None:
        if self.model is None:
            self.model = _get(chunk, "model")
        for choice in _get(chunk, "choices") or ():
            if self.capture:
                delta = _get(choice, "delta")
                if delta is not None:
                    index = _get(choice, "index") or 0
                    content = _get(delta, "content")
                    if content:
                        self.choices.setdefault(index, []).append(content)
                    for call in _get(delta, "tool_calls") or ():
                        self._tool_delta(index, call)
            reason = _get(choice, "finish_reason")
            if reason is not None:
                self.meta["finish_reason"] = reason
        usage = _get(chunk, "usage")
        if usage is not None:
            self.input_tokens = usage_number(usage, "prompt_tokens")
            self.output_tokens = usage_number(usage, "completion_tokens")
            self.total_tokens = usage_number(usage, "total_tokens")

    def _tool_delta(self, choice: int, call: Any) -> None:
        slot = self.tools.setdefault(choice, {}).setdefault(
            _get(call, "index") or 0,
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if _get(call, "id"):
            slot["id"] = _get(call, "id")
        function = _get(call, "function")
        if function is not None:
            slot["function"]["name"] += _get(function, "name") or ""
            slot["function"]["arguments"] += _get(function, "arguments") or ""

    def fields(self) -> dict[str, Any]:
        """One assistant message per choice, with its tool calls when it made any."""
        out = super().fields()
        if self.capture:
            messages = []
            for index in sorted(set(self.choices) | set(self.tools)) or [0]:
                item: dict[str, Any] = {"role": "assistant", "content": "".join(self.choices.get(index, ()))}
                tools = self.tools.get(index)
                if tools:
                    item["tool_calls"] = [tools[i] for i in sorted(tools)]
                messages.append(item)
            out["output"] = messages
        return out


class Responses(Api):
    """``client.responses.create``: usage comes in the final ``response.completed`` event of a stream."""

    provider = "openai"
    name = "responses"

    def request(self, kwargs: Mapping[str, Any], capture: bool) -> tuple[Any, Any]:
        """The model, and ``instructions`` + ``input`` as a message list."""
        if not capture:
            return kwargs.get("model"), None
        given = kwargs.get("input")
        messages: list[Any] = []
        instructions = kwargs.get("instructions")
        if isinstance(instructions, str):
            messages.append({"role": "system", "content": instructions})
        if isinstance(given, str):
            messages.append({"role": "user", "content": given})
        elif given is not None:
            messages.extend(given if isinstance(given, (list, tuple)) else [given])
        return kwargs.get("model"), messages or None

    def response(self, response: Any, capture: bool) -> dict[str, Any]:
        """Model, usage and the output text."""
        usage = _get(response, "usage")
        out: dict[str, Any] = {
            "model": _get(response, "model"),
            "input_tokens": usage_number(usage, "input_tokens"),
            "output_tokens": usage_number(usage, "output_tokens"),
            "total_tokens": usage_number(usage, "total_tokens"),
        }
        if capture:
            out["output"] = [{"role": "assistant", "content": _output_text(response)}]
        status = _get(response, "status")
        if status == "failed":
            out["status"] = "error"
            error = _get(response, "error")
            out["error_message"] = str(_get(error, "message") or "response failed")
        return out

    def observer(self, capture: bool) -> Observer:
        """Reads the Responses stream events."""
        return _ResponsesObserver(capture)


def _output_text(response: Any) -> str:
    text = getattr(response, "output_text", None)
    if isinstance(text, str):
        return text
    parts = []
    for item in _get(response, "output") or ():
        for content in _get(item, "content") or ():
            if _get(content, "type") == "output_text":
                parts.append(_get(content, "text") or "")
    return "".join(parts)


class _ResponsesObserver(Observer):
    def on_chunk(self, chunk: Any) -> None:
        kind = _get(chunk, "type")
        if kind == "response.output_text.delta":
            if self.capture:
                delta = _get(chunk, "delta")
                if delta:
                    self.text.append(delta)
            return
        response = _get(chunk, "response")
        if response is None:
            return
        model = _get(response, "model")
        if model:
            self.model = model
        usage = _get(response, "usage")
        if usage is not None:
            self.input_tokens = usage_number(usage, "input_tokens")
            self.output_tokens = usage_number(usage, "output_tokens")
            self.total_tokens = usage_number(usage, "total_tokens")
        if kind == "response.failed":
            error = _get(response, "error")
            self.error = str(_get(error, "message") or "response failed")
        elif kind == "response.incomplete":
            self.meta["incomplete"] = True


CHAT = ChatCompletions()
RESPONSES = Responses()
TREE: Mapping[str, Any] = {
    "chat": {"completions": {"create": CHAT}},
    "responses": {"create": RESPONSES},
    "with_options": REWRAP,
    "copy": REWRAP,
}
"""The paths of an ``OpenAI`` / ``AsyncOpenAI`` client that are recorded."""
