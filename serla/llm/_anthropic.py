"""Anthropic: ``messages.create`` (sync, async, ``stream=True``) and ``messages.stream()``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serla.llm._core import REWRAP, Api, Observer, usage_number
from serla.llm._core import get_field as _get


def _cache_meta(usage: Any, meta: dict[str, Any]) -> None:
    for name in ("cache_read_input_tokens", "cache_creation_input_tokens"):
        value = usage_number(usage, name)
        if value:
            meta[name] = value


class Messages(Api):
    """``client.messages.create``. Anthropic's ``input_tokens`` excludes cached prompt tokens; those go
    to ``metadata`` (``cache_read_input_tokens``, ``cache_creation_input_tokens``) when non-zero."""

    provider = "anthropic"
    name = "messages"

    def request(self, kwargs: Mapping[str, Any], capture: bool) -> tuple[Any, Any]:
        """The model, and ``system`` + ``messages`` as one message list."""
        if not capture:
            return kwargs.get("model"), None
        messages = list(kwargs.get("messages") or ())
        system = kwargs.get("system")
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        return kwargs.get("model"), messages or None

    def response(self, response: Any, capture: bool) -> dict[str, Any]:
        """Model, usage and the content blocks (text, tool use)."""
        usage = _get(response, "usage")
        meta: dict[str, Any] = {}
        _cache_meta(usage, meta)
        stop = _get(response, "stop_reason")
        if stop is not None:
            meta["stop_reason"] = stop
        out: dict[str, Any] = {
            "model": _get(response, "model"),
            "input_tokens": usage_number(usage, "input_tokens"),
            "output_tokens": usage_number(usage, "output_tokens"),
            "metadata": meta,
        }
        if capture:
            blocks = _get(response, "content") or ()
            texts = [_get(b, "text") or "" for b in blocks if _get(b, "type") == "text"]
            item: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
            tools = [
                {"type": "tool_use", "name": _get(b, "name"), "input": _get(b, "input")}
                for b in blocks
                if _get(b, "type") == "tool_use"
            ]
            if tools:
                item["tool_calls"] = tools
            out["output"] = [item]
        return out

    def observer(self, capture: bool) -> Observer:
        """Reads the Messages stream events."""
        return _MessagesObserver(capture)


class _MessagesObserver(Observer):
    def on_chunk(self, chunk: Any) -> None:
        kind = _get(chunk, "type")
        if kind == "content_block_delta":
            if self.capture:
                delta = _get(chunk, "delta")
                if _get(delta, "type") == "text_delta":
                    self.text.append(_get(delta, "text") or "")
        elif kind == "message_start":
            message = _get(chunk, "message")
            self.model = _get(message, "model")
            usage = _get(message, "usage")
            self.input_tokens = usage_number(usage, "input_tokens")
            _cache_meta(usage, self.meta)
        elif kind == "message_delta":
            usage = _get(chunk, "usage")
            output = usage_number(usage, "output_tokens")
            if output is not None:
                self.output_tokens = output  # cumulative
            stop = _get(_get(chunk, "delta"), "stop_reason")
            if stop is not None:
                self.meta["stop_reason"] = stop


class MessagesStream(Messages):
    """``client.messages.stream(...)``: recorded from the message the library accumulated, on leaving
    the ``with`` block. A block left before the end records what had arrived, with
    ``metadata["stream_closed_early"]``."""

    name = "messages.stream"
    manager = True

    def final(self, stream: Any) -> Any:
        """The accumulated message (``None`` before ``message_start``)."""
        if stream is None:
            return None
        snapshot = getattr(stream, "_current_snapshot_or_none", None)
        if callable(snapshot):
            return snapshot()
        try:
            return stream.current_message_snapshot
        except Exception:
            return None

    def response(self, response: Any, capture: bool) -> dict[str, Any]:
        """As :meth:`Messages.response`; a message without a ``stop_reason`` was cut short."""
        out = super().response(response, capture)
        if _get(response, "stop_reason") is None:
            out["metadata"]["stream_closed_early"] = True
        return out


MESSAGES = Messages()
MESSAGES_STREAM = MessagesStream()
TREE: Mapping[str, Any] = {
    "messages": {"create": MESSAGES, "stream": MESSAGES_STREAM},
    "with_options": REWRAP,
    "copy": REWRAP,
}
"""The paths of an ``Anthropic`` / ``AsyncAnthropic`` client that are recorded."""
