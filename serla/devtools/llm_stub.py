"""A loopback stand-in for the OpenAI and Anthropic HTTP APIs, for tests, examples and benchmarks.

:class:`VendorStub` answers the three generation endpoints the ``serla.llm`` wrappers and the
OpenTelemetry GenAI instrumentations see, in the shapes the vendors document, JSON or server-sent events
(``stream: true``), with usage:

* ``POST /v1/chat/completions`` (OpenAI Chat Completions): a ``chat.completion`` object, or
  ``chat.completion.chunk`` events ending in ``data: [DONE]``; the usage chunk (``choices: []``) comes
  only when the request asks for it with ``stream_options: {"include_usage": true}``, as OpenAI does.
* ``POST /v1/responses`` (OpenAI Responses): a ``response`` object, or ``response.created``,
  ``response.output_text.delta`` ... ``response.completed`` events (usage in the last).
* ``POST /v1/messages`` (Anthropic Messages): a ``message`` object, or ``message_start`` (input tokens),
  ``content_block_delta`` ..., ``message_delta`` (output tokens), ``message_stop`` events.

The reply is ``"Echo: <the last user text>"`` (or :attr:`VendorStub.reply`), streamed one word per event;
token counts are words (whitespace-separated) of the prompt and of the reply, so tests can predict them.
Point a real client at it: ``openai.OpenAI(base_url=stub.openai_url, api_key="test")``,
``anthropic.Anthropic(base_url=stub.anthropic_url, api_key="test")``.

Only the standard library; nothing runs at import time.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["VendorStub"]


def _words(text: str) -> int:
    return len(text.split())


def _text_of(content: Any) -> str:
    """The text of a message's ``content``: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part
        )
    return ""


class VendorStub:
    """An HTTP/1.1 server on ``127.0.0.1`` speaking just enough OpenAI and Anthropic for real clients.

    Attributes:
        reply: When set, the text every call answers with (instead of the echo).
        requests: ``(path, json_body)`` of every request, in arrival order.
        hold: When set to an :class:`threading.Event`, a stream pauses after its first event until the
            event is set (at most ``hold_timeout`` seconds): a test can see that the first
            chunk reached the caller before the rest was even sent.
        chunk_delay: Seconds to sleep before each streamed event (for latency benchmarks).
        cut_after: When set, a stream's connection is dropped after this many events, mid-response (the
            chunked body never ends): the client library raises a connection error while iterating.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Configure; :meth:`start` binds.

        Args:
            host: A loopback address.
            port: ``0`` picks a free port.
        """
        self._address = (host, port)
        self.reply: str | None = None
        self.requests: list[tuple[str, Any]] = []
        self.hold: threading.Event | None = None
        self.hold_timeout = 10.0
        self.chunk_delay = 0.0
        self.cut_after: int | None = None
        self._failures: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> VendorStub:
        """Bind and serve on a daemon thread; returns ``self``."""
        stub = self

        class Handler(_Handler):
            owner = stub

        httpd = _Server(self._address, Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name="vendor-stub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self.hold is not None:
            self.hold.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5.0)

    def __enter__(self) -> VendorStub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        assert self._httpd is not None, "start() the stub first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def openai_url(self) -> str:
        """The ``base_url`` for ``openai.OpenAI`` (``.../v1``)."""
        return self.url + "/v1"

    @property
    def anthropic_url(self) -> str:
        """The ``base_url`` for ``anthropic.Anthropic`` (it appends ``/v1/messages`` itself)."""
        return self.url

    def fail_next(self, status: int = 400, message: str = "stub failure", n: int = 1) -> None:
        """Answer the next ``n`` generation requests with ``status`` and the vendor's error body."""
        with self._lock:
            self._failures.extend([(status, message)] * n)

    def _take_failure(self) -> tuple[int, str] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _record(self, path: str, body: Any) -> None:
        with self._lock:
            self.requests.append((path, body))

    # ---- answers --------------------------------------------------------------------------------------

    def answer_text(self, prompt: str) -> str:
        """What a call whose last user text is ``prompt`` answers."""
        return self.reply if self.reply is not None else f"Echo: {prompt}"

    def _pause(self, index: int) -> None:
        if self.chunk_delay:
            time.sleep(self.chunk_delay)
        if index == 1 and self.hold is not None:
            self.hold.wait(self.hold_timeout)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops its connection (a pool closing, a test ending) is not an error here."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: VendorStub

    def setup(self) -> None:
        super().setup()
        # Each event is one small write: without TCP_NODELAY, Nagle's algorithm and the client's delayed
        # ACK hold the first event back for ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        stub = self.owner
        stub._record(path, body)
        routes = {
            "/v1/chat/completions": self._chat,
            "/v1/responses": self._responses,
            "/v1/messages": self._messages,
        }
        route = routes.get(path)
        if route is None or not isinstance(body, dict):
            self._json(404 if route is None else 400, {"error": {"message": "not found", "type": "stub"}})
            return
        failure = stub._take_failure()
        if failure is not None:
            status, message = failure
            if path == "/v1/messages":
                payload: Any = {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": message},
                }
            else:
                payload = {
                    "error": {
                        "message": message,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                }
            self._json(status, payload)
            return
        route(body)

    # ---- wire helpers ---------------------------------------------------------------------------------

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: Iterator[tuple[str | None, str]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, (event, data) in enumerate(events):
            if self.owner.cut_after is not None and index >= self.owner.cut_after:
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.owner._pause(index)
            frame = (f"event: {event}\n" if event else "") + f"data: {data}\n\n"
            chunk = frame.encode("utf-8")
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # ---- OpenAI chat completions ----------------------------------------------------------------------

    def _chat(self, body: dict[str, Any]) -> None:
        messages = body.get("messages") or []
        prompt_words = sum(_words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        text = self.owner.answer_text(_text_of(users[-1].get("content")) if users else "")
        model = str(body.get("model", ""))
        usage = {
            "prompt_tokens": prompt_words,
            "completion_tokens": _words(text),
            "total_tokens": prompt_words + _words(text),
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        ident, created = "chatcmpl-stub", int(time.time())
        tools = [
            t for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("function"), dict)
        ]
        if tools:  # call the first tool with the last user text as its argument
            name = str(tools[0]["function"].get("name", "tool"))
            arguments = json.dumps({"query": _text_of(users[-1].get("content")) if users else ""})
            self._chat_tool_call(body, ident, created, model, usage, name, arguments)
            return
        if not body.get("stream"):
            self._json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_stub",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None) -> str:
            return json.dumps(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_stub",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                    **({"usage": None} if include_usage else {}),
                }
            )

        def events() -> Iterator[tuple[str | None, str]]:
            yield None, chunk({"role": "assistant", "content": "", "refusal": None}, None)
            for i, word in enumerate(text.split(" ")):
                yield None, chunk({"content": word if i == 0 else " " + word}, None)
            yield None, chunk({}, "stop")
            if include_usage:
                yield (
                    None,
                    json.dumps(
                        {
                            "id": ident,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "system_fingerprint": "fp_stub",
                            "choices": [],
                            "usage": usage,
                        }
                    ),
                )
            yield None, "[DONE]"

        self._sse(events())

    def _chat_tool_call(
        self,
        body: dict[str, Any],
        ident: str,
        created: int,
        model: str,
        usage: Any,
        name: str,
        arguments: str,
    ) -> None:
        call = {"id": "call_stub", "type": "function", "function": {"name": name, "arguments": arguments}}
        if not body.get("stream"):
            message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
            self._json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                },
            )
            return

        def chunk(delta: dict[str, Any], finish: str | None) -> tuple[str | None, str]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
            return None, json.dumps({**data, "choices": [choice]})

        half = len(arguments) // 2
        first = {
            "index": 0,
            "id": "call_stub",
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        parts = [
            {"index": 0, "function": {"arguments": part}} for part in (arguments[:half], arguments[half:])
        ]

        def events() -> Iterator[tuple[str | None, str]]:
            yield chunk({"role": "assistant", "content": None, "tool_calls": [first]}, None)
            for part in parts:
                yield chunk({"tool_calls": [part]}, None)
            yield chunk({}, "tool_calls")
            yield None, "[DONE]"

        self._sse(events())

    # ---- OpenAI responses -----------------------------------------------------------------------------

    def _responses(self, body: dict[str, Any]) -> None:
        given = body.get("input")
        if isinstance(given, str):
            prompt_words, last = _words(given), given
        else:
            items = [m for m in (given or []) if isinstance(m, dict)]
            prompt_words = sum(_words(_text_of(m.get("content"))) for m in items)
            users = [m for m in items if m.get("role") == "user"]
            last = _text_of(users[-1].get("content")) if users else ""
        if isinstance(body.get("instructions"), str):
            prompt_words += _words(body["instructions"])
        text = self.owner.answer_text(last)
        model = str(body.get("model", ""))
        usage = {
            "input_tokens": prompt_words,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": _words(text),
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_words + _words(text),
        }

        def response(status: str, final: bool) -> dict[str, Any]:
            output = [
                {
                    "type": "message",
                    "id": "msg_stub",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
                }
            ]
            return {
                "id": "resp_stub",
                "object": "response",
                "created_at": int(time.time()),
                "status": status,
                "model": model,
                "output": output if final else [],
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": usage if final else None,
            }

        if not body.get("stream"):
            self._json(200, response("completed", True))
            return

        def events() -> Iterator[tuple[str | None, str]]:
            seq = 0

            def event(kind: str, **fields: Any) -> tuple[str | None, str]:
                nonlocal seq
                seq += 1
                return kind, json.dumps({"type": kind, "sequence_number": seq - 1, **fields})

            yield event("response.created", response=response("in_progress", False))
            for i, word in enumerate(text.split(" ")):
                yield event(
                    "response.output_text.delta",
                    item_id="msg_stub",
                    output_index=0,
                    content_index=0,
                    delta=word if i == 0 else " " + word,
                    logprobs=[],
                )
            yield event(
                "response.output_text.done",
                item_id="msg_stub",
                output_index=0,
                content_index=0,
                text=text,
                logprobs=[],
            )
            yield event("response.completed", response=response("completed", True))

        self._sse(events())

    # ---- Anthropic messages ---------------------------------------------------------------------------

    def _messages(self, body: dict[str, Any]) -> None:
        messages = [m for m in (body.get("messages") or []) if isinstance(m, dict)]
        prompt_words = sum(_words(_text_of(m.get("content"))) for m in messages)
        system = body.get("system")
        if system is not None:
            prompt_words += _words(_text_of(system))
        users = [m for m in messages if m.get("role") == "user"]
        text = self.owner.answer_text(_text_of(users[-1].get("content")) if users else "")
        model = str(body.get("model", ""))
        message: dict[str, Any] = {
            "id": "msg_stub",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt_words,
                "output_tokens": _words(text),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        if not body.get("stream"):
            self._json(200, message)
            return

        def events() -> Iterator[tuple[str | None, str]]:
            start = {**message, "content": [], "stop_reason": None}
            start["usage"] = {**message["usage"], "output_tokens": 1}
            yield "message_start", json.dumps({"type": "message_start", "message": start})
            yield (
                "content_block_start",
                json.dumps(
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
                ),
            )
            yield "ping", json.dumps({"type": "ping"})
            for i, word in enumerate(text.split(" ")):
                delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
                yield (
                    "content_block_delta",
                    json.dumps({"type": "content_block_delta", "index": 0, "delta": delta}),
                )
            yield "content_block_stop", json.dumps({"type": "content_block_stop", "index": 0})
            yield (
                "message_delta",
                json.dumps(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": _words(text)},
                    }
                ),
            )
            yield "message_stop", json.dumps({"type": "message_stop"})

        self._sse(events())
