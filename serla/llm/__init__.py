"""LLM analytics for the OpenAI and Anthropic Python clients: wrap a client, every generation is recorded.

Install with ``pip install "serla-py[llm]"`` (it needs ``wrapt``; ``openai`` / ``anthropic`` are yours).

Example:
    >>> import openai, serla  # doctest: +SKIP
    >>> from serla.llm import wrap_openai  # doctest: +SKIP
    >>> ai = wrap_openai(openai.OpenAI(), serla_client=serla.Serla("sk_live_..."))  # doctest: +SKIP
    >>> ai.chat.completions.create(  # doctest: +SKIP
    ...     model="gpt-4o-mini", messages=[...], serla_distinct_id="user_1"
    ... )

What is recorded (one ``POST /api/v1/llm`` record per call, through :meth:`serla.Serla.track_llm`):

* OpenAI ``chat.completions.create`` and ``responses.create``; Anthropic ``messages.create``; each
  synchronous or ``async``, plain or ``stream=True``; and Anthropic's ``messages.stream()`` helper
  (recorded from the accumulated message when its ``with`` block ends).
* The model (the response's, else the requested one), the provider, the prompt (``input``: the messages,
  with ``system`` / ``instructions`` first as a ``system`` message) and the reply (``output``:
  ``[{"role": "assistant", "content": ...}]``), token counts from the usage, latency (the whole call; for
  a stream, until its last chunk), and ``metadata`` with ``api``, ``finish_reason`` / ``stop_reason`` and,
  for a stream, ``time_to_first_chunk_ms``. ``capture_llm_content=False`` on the client leaves the
  prompt and the reply out.
* An exception from the call: ``status="error"`` with ``"Type: message"``, then re-raised unchanged.
* A stream closed before its end (``break`` out of a ``with`` block, ``close()``): recorded with what it
  gave so far and ``metadata["stream_closed_early"] = True``. A stream never iterated to its end and never
  closed is not recorded.

Per call, four extra keyword arguments are taken off before the original method sees them:
``serla_distinct_id``, ``serla_trace_id``, ``serla_parent_id`` and ``serla_metadata``. Without
``serla_distinct_id`` the wrapper's ``distinct_id`` is used, else the context's
(:func:`serla.set_distinct_id`).

Everything else is the original client: other methods, ``with_raw_response`` / ``with_streaming_response``
and OpenAI's ``.stream()`` helpers are not recorded, and nothing is patched globally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

try:
    import wrapt  # noqa: F401
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise ModuleNotFoundError(
        f'serla.llm needs wrapt: pip install "serla-py[llm]" ({_exc})', name=_exc.name
    ) from _exc

from serla._client import Serla
from serla.llm import _anthropic, _openai
from serla.llm._core import Node, Options

__all__ = ["wrap", "wrap_anthropic", "wrap_openai"]

T = TypeVar("T")


def wrap_openai(
    client: T,
    *,
    serla_client: Serla | None = None,
    distinct_id: str | None = None,
    trace_id: str | None = None,
    parent_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> T:
    """Wrap an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` (or ``AzureOpenAI``) client.

    Args:
        client: The client to wrap; it is not changed.
        serla_client: Where records go; ``None`` uses :func:`serla.get_default_client` (made from
            ``SERLA_API_KEY`` on first use).
        distinct_id: The user of every call of this wrapper (a call's ``serla_distinct_id`` wins).
        trace_id: A trace id for every call (a call's ``serla_trace_id`` wins).
        parent_id: A parent id for every call (a call's ``serla_parent_id`` wins).
        metadata: Added to every record's metadata (a call's ``serla_metadata`` is merged over it).

    Returns:
        A proxy that behaves as ``client`` (``isinstance`` included) and records generations.

    Raises:
        TypeError: For a ``serla_client`` that is not a :class:`serla.Serla`, or metadata not a dict.
    """
    opts = Options(serla_client, distinct_id, trace_id, parent_id, metadata)
    return Node(client, _openai.TREE, opts)  # type: ignore[return-value]


def wrap_anthropic(
    client: T,
    *,
    serla_client: Serla | None = None,
    distinct_id: str | None = None,
    trace_id: str | None = None,
    parent_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> T:
    """Wrap an ``anthropic.Anthropic`` or ``anthropic.AsyncAnthropic`` client.

    Args:
        client: The client to wrap; it is not changed.
        serla_client: See :func:`wrap_openai`.
        distinct_id: See :func:`wrap_openai`.
        trace_id: See :func:`wrap_openai`.
        parent_id: See :func:`wrap_openai`.
        metadata: See :func:`wrap_openai`.

    Returns:
        A proxy that behaves as ``client`` and records generations.

    Raises:
        TypeError: As :func:`wrap_openai`.
    """
    opts = Options(serla_client, distinct_id, trace_id, parent_id, metadata)
    return Node(client, _anthropic.TREE, opts)  # type: ignore[return-value]


def wrap(client: T, **options: Any) -> T:
    """Wrap an OpenAI or Anthropic client, chosen by the client's module (``openai`` / ``anthropic``).

    Args:
        client: The client.
        **options: As :func:`wrap_openai`.

    Raises:
        TypeError: For a client of neither library.
    """
    module = type(client).__module__.split(".")[0]
    if module == "openai":
        return wrap_openai(client, **options)
    if module == "anthropic":
        return wrap_anthropic(client, **options)
    raise TypeError(f"serla.llm.wrap: not an OpenAI or Anthropic client: {type(client).__name__}")
