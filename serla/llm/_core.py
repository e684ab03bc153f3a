"""What the client wrappers share: the proxy tree, the call wrapper, the stream proxies and the record.

A wrapped client is a :class:`wrapt.ObjectProxy` around the original: every attribute is the original's,
except along the few paths that lead to a generation method (``chat.completions.create``, ...), where
the method comes back wrapped. Nothing is patched: the original client, its class and every other
client of the library are untouched.

A wrapped call measures the time around the original call, then builds one LLM record from the request
and the response and hands it to :meth:`serla.Serla.track_llm` (encode and enqueue, no I/O). A streamed
response is returned inside a proxy whose iteration passes each chunk through as it arrives (the same
object, nothing buffered) while noting the model, the text and the usage; the record is made when the
stream ends, fails or is closed. An exception from the original call is recorded with ``status="error"``
and re-raised unchanged. The wrapper's own failures are logged and never reach the caller.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from typing import Any, Callable, Union

import wrapt

from serla._client import Serla
from serla._log import logger

_SERLA_KWARGS = ("serla_distinct_id", "serla_trace_id", "serla_parent_id", "serla_metadata")


class Api:
    """How one vendor endpoint's requests, responses and stream chunks read (a subclass per endpoint)."""

    provider = ""
    name = ""

    def request(self, kwargs: Mapping[str, Any], capture: bool) -> tuple[Any, Any]:
        """``(model, input)`` of a request's keyword arguments (``input`` ``None`` unless ``capture``)."""
        raise NotImplementedError

    def response(self, response: Any, capture: bool) -> dict[str, Any]:
        """The record fields read from a complete response (``model``, ``output``, token counts, ...)."""
        raise NotImplementedError

    def is_stream(self, kwargs: Mapping[str, Any]) -> bool:
        """Whether the call returns a stream."""
        return bool(kwargs.get("stream"))

    def observer(self, capture: bool) -> Observer:
        """A fresh :class:`Observer` for one stream."""
        raise NotImplementedError

    manager = False
    """True for a method that returns a stream *manager* (``with client.messages.stream(...) as s:``)."""

    def final(self, stream: Any) -> Any:
        """The complete response a managed stream accumulated (``None`` if it never started)."""
        return None


class Observer:
    """Notes what a stream's chunks say; :meth:`fields` gives the record fields at the end."""

    def __init__(self, capture: bool) -> None:
        self.capture = capture
        self.model: str | None = None
        self.text: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.total_tokens: int | None = None
        self.error: str | None = None
        self.meta: dict[str, Any] = {}

    def on_chunk(self, chunk: Any) -> None:
        """Read one chunk (never changes it)."""
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:
        """The record fields gathered so far."""
        out: dict[str, Any] = {
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "metadata": self.meta,
        }
        if self.capture:
            out["output"] = [{"role": "assistant", "content": "".join(self.text)}]
        if self.error is not None:
            out["status"] = "error"
            out["error_message"] = self.error
        return out


class Options:
    """The wrapper's settings: where records go and the defaults every call of this client gets."""

    __slots__ = ("client", "distinct_id", "metadata", "parent_id", "trace_id")

    def __init__(
        self,
        client: Serla | None,
        distinct_id: str | None,
        trace_id: str | None,
        parent_id: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        if client is not None and not isinstance(client, Serla):
            raise TypeError(
                f"serla.llm: serla_client must be a serla.Serla or None, not {type(client).__name__}"
            )
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError("serla.llm: metadata must be a dict or None")
        self.client = client
        self.distinct_id = distinct_id
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.metadata = dict(metadata) if metadata else None

    def serla(self) -> Serla | None:
        """The client records go to: the one given, else the process default (made from the environment)."""
        if self.client is not None:
            return self.client
        from serla._registry import get_default_client

        return get_default_client(create=True)


class _Call:
    """One wrapped call: its request side, its timing, and the one record it ends in."""

    __slots__ = ("api", "capture", "client", "done", "extra", "first", "input", "model", "opts", "start")

    def __init__(self, api: Api, opts: Options, kwargs: dict[str, Any]) -> None:
        self.api = api
        self.opts = opts
        self.done = False
        self.first: float | None = None
        extra = {k: kwargs.pop(k) for k in _SERLA_KWARGS if k in kwargs}
        self.extra = extra
        self.client = opts.serla()
        self.capture = self.client is not None and self.client.config.capture_llm_content
        self.model: Any = None
        self.input: Any = None
        try:
            self.model, self.input = api.request(kwargs, self.capture)
        except Exception:
            logger.warning("serla.llm: reading the request failed", exc_info=True)
        self.start = time.perf_counter()

    def finish(self, fields: Mapping[str, Any]) -> None:
        """Make the record (once) and queue it; never raises."""
        if self.done:
            return
        self.done = True
        end = time.perf_counter()
        client = self.client
        if client is None:
            return
        try:
            opts, extra = self.opts, self.extra
            metadata: dict[str, Any] = {"api": self.api.name}
            if opts.metadata:
                metadata.update(opts.metadata)
            if fields.get("metadata"):
                metadata.update(fields["metadata"])
            if self.first is not None:
                metadata["time_to_first_chunk_ms"] = round((self.first - self.start) * 1000.0, 3)
            if extra.get("serla_metadata"):
                metadata.update(extra["serla_metadata"])
            model = fields.get("model") or self.model
            client.track_llm(
                model if isinstance(model, str) and model else "unknown",
                provider=self.api.provider,
                distinct_id=extra.get("serla_distinct_id", opts.distinct_id),
                trace_id=extra.get("serla_trace_id", opts.trace_id),
                parent_id=extra.get("serla_parent_id", opts.parent_id),
                input=self.input,
                output=fields.get("output"),
                input_tokens=fields.get("input_tokens"),
                output_tokens=fields.get("output_tokens"),
                total_tokens=fields.get("total_tokens"),
                latency_ms=(end - self.start) * 1000.0,
                status=fields.get("status", "success"),
                error_message=fields.get("error_message"),
                metadata=metadata,
            )
        except Exception:
            logger.warning("serla.llm: recording an LLM call failed", exc_info=True)

    def failed(self, exc: BaseException) -> None:
        """Record the call as an error (the exception itself is re-raised by the caller)."""
        from serla._llm import error_text

        self.finish({"status": "error", "error_message": error_text(exc)})

    def response(self, response: Any) -> None:
        try:
            fields = self.api.response(response, self.capture)
        except Exception:
            logger.warning("serla.llm: reading the response failed", exc_info=True)
            fields = {}
        self.finish(fields)


def _begin(api: Api, opts: Options, kwargs: dict[str, Any]) -> _Call | None:
    try:
        return _Call(api, opts, kwargs)
    except Exception:
        logger.warning("serla.llm: starting to record a call failed; it is not recorded", exc_info=True)
        for key in _SERLA_KWARGS:
            kwargs.pop(key, None)
        return None


def wrap_method(method: Callable[..., Any], api: Api, opts: Options) -> Callable[..., Any]:
    """``method`` (a bound generation method) wrapped to record each call.

    An ``async`` client's methods return an awaitable (the libraries decorate ``async def`` methods, so
    they are not always coroutine functions themselves): the wrapper then returns a coroutine that awaits
    it and records the result.
    """

    def call_(*args: Any, **kwargs: Any) -> Any:
        call = _begin(api, opts, kwargs)
        try:
            result = method(*args, **kwargs)
        except BaseException as exc:
            if call is not None:
                call.failed(exc)
            raise
        if call is None:
            return result
        if api.manager:
            return ManagerProxy(result, call)
        stream = api.is_stream(kwargs)
        if inspect.isawaitable(result):
            return _settle(result, call, stream)
        if stream:
            return StreamProxy(result, call)
        call.response(result)
        return result

    return call_


async def _settle(awaitable: Any, call: _Call, stream: bool) -> Any:
    try:
        result = await awaitable
    except BaseException as exc:
        call.failed(exc)
        raise
    if stream:
        return AsyncStreamProxy(result, call)
    call.response(result)
    return result


class _StreamBase(wrapt.ObjectProxy):  # type: ignore[type-arg]
    def __init__(self, stream: Any, call: _Call) -> None:
        super().__init__(stream)
        self._self_call = call
        self._self_obs: Observer | None = None
        try:
            self._self_obs = call.api.observer(call.capture)
        except Exception:
            logger.warning("serla.llm: observing a stream failed", exc_info=True)

    def _self_chunk(self, chunk: Any) -> None:
        call = self._self_call
        if call.first is None:
            call.first = time.perf_counter()
        obs = self._self_obs
        if obs is not None:
            try:
                obs.on_chunk(chunk)
            except Exception:
                self._self_obs = None
                logger.warning("serla.llm: reading a stream chunk failed", exc_info=True)

    def _self_end(self, exc: BaseException | None = None, *, closed: bool = False) -> None:
        call = self._self_call
        if call.done:
            return
        obs = self._self_obs
        fields = obs.fields() if obs is not None else {}
        if closed:
            fields.setdefault("metadata", {})["stream_closed_early"] = True
        if exc is not None:
            from serla._llm import error_text

            fields["status"] = "error"
            fields["error_message"] = error_text(exc)
        call.finish(fields)


class StreamProxy(_StreamBase):
    """A synchronous stream, passed through chunk by chunk; the record is made when it ends."""

    def __iter__(self) -> StreamProxy:
        return self

    def __next__(self) -> Any:
        try:
            chunk = self.__wrapped__.__next__()
        except StopIteration:
            self._self_end()
            raise
        except BaseException as exc:
            self._self_end(exc)
            raise
        self._self_chunk(chunk)
        return chunk

    def __enter__(self) -> StreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            self._self_end(exc_info[1], closed=exc_info[1] is None)

    def close(self) -> None:
        """Close the underlying stream; a stream closed before its end is recorded with what it gave."""
        try:
            self.__wrapped__.close()
        finally:
            self._self_end(closed=True)


class AsyncStreamProxy(_StreamBase):
    """An asynchronous stream, passed through chunk by chunk; the record is made when it ends."""

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_end()
            raise
        except BaseException as exc:
            self._self_end(exc)
            raise
        self._self_chunk(chunk)
        return chunk

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            self._self_end(exc_info[1], closed=exc_info[1] is None)

    async def close(self) -> None:
        """Close the underlying stream; a stream closed before its end is recorded with what it gave."""
        try:
            await self.__wrapped__.close()
        finally:
            self._self_end(closed=True)


class ManagerProxy(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """A stream manager (``with client.messages.stream(...) as stream:``): the request is made on entering,
    the stream inside is the library's own, untouched; on leaving, the record is made from the complete
    message the library accumulated (no ``time_to_first_chunk_ms``: the chunks are not seen)."""

    def __init__(self, manager: Any, call: _Call) -> None:
        super().__init__(manager)
        self._self_call = call
        self._self_stream: Any = None

    def _self_exit(self, exc: BaseException | None) -> None:
        call = self._self_call
        if exc is not None:
            call.failed(exc)
            return
        try:
            final = call.api.final(self._self_stream)
        except Exception:
            final = None
        if final is None:
            call.finish({"metadata": {"stream_closed_early": True}})
            return
        call.response(final)

    def __enter__(self) -> Any:
        self._self_call.start = time.perf_counter()  # the request is made now
        try:
            self._self_stream = self.__wrapped__.__enter__()
        except BaseException as exc:
            self._self_call.failed(exc)
            raise
        return self._self_stream

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            self._self_exit(exc_info[1])

    async def __aenter__(self) -> Any:
        self._self_call.start = time.perf_counter()
        try:
            self._self_stream = await self.__wrapped__.__aenter__()
        except BaseException as exc:
            self._self_call.failed(exc)
            raise
        return self._self_stream

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            self._self_exit(exc_info[1])


class Rewrap:
    """A tree entry for a method that returns a new client (``with_options``, ``copy``): wrapped alike."""


REWRAP = Rewrap()

Tree = Mapping[str, Union["Tree", Api, Rewrap]]
"""Attribute paths to wrap: a name leads to a deeper tree or, at a method, to its :class:`Api`."""


class Node(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """A proxy that returns the original's attributes, wrapping only the names in its tree."""

    def __init__(self, wrapped: Any, tree: Tree, opts: Options) -> None:
        super().__init__(wrapped)
        self._self_tree = tree
        self._self_opts = opts
        self._self_cache: dict[str, tuple[Any, Any]] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.__wrapped__, name)
        sub = self._self_tree.get(name) if not name.startswith("_self_") else None
        if sub is None:
            return value
        cached = self._self_cache.get(name)
        if cached is not None and cached[0] is value:
            return cached[1]
        opts = self._self_opts
        out: Any
        if isinstance(sub, Api):
            out = wrap_method(value, sub, opts)
        elif isinstance(sub, Rewrap):
            out = _rewrapping(value, self._self_tree, opts)
        else:
            out = Node(value, sub, opts)
        self._self_cache[name] = (value, out)
        return out

    def __repr__(self) -> str:
        return f"<serla.llm wrapped {self.__wrapped__!r}>"


def _rewrapping(method: Callable[..., Any], tree: Tree, opts: Options) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return Node(method(*args, **kwargs), tree, opts)

    return call


def get_field(obj: Any, name: str) -> Any:
    """``obj.name`` (the libraries' pydantic objects), or ``obj[name]`` for a plain dict or Mapping."""
    if type(obj) is dict:
        return obj.get(name)
    value = getattr(obj, name, None)
    if value is None and isinstance(obj, Mapping):
        return obj.get(name)
    return value


def usage_number(usage: Any, name: str) -> int | None:
    """``usage.<name>`` as an int, or ``None`` when absent or not an int."""
    value = get_field(usage, name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
