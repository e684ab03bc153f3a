"""LLM generation records for ``POST /api/v1/llm``: checked, limited and truncated as the server needs.

:meth:`serla.Serla.track_llm`, the ``serla.llm`` client wrappers and the OpenTelemetry GenAI bridge all
build their record here, on the caller's thread, and hand the finished JSON body to the client's ``llm``
lane. This module is imported on the first ``track_llm()`` call, never by ``import serla``.

The rules (the server's, from ``app/api/v1/llm/route.ts`` at commit eb01610, see ``SERLA_API.md`` 7.3):

* ``model`` 1..200, ``provider`` ..50, ``distinctId`` / ``traceId`` / ``parentId`` ..200, ``errorMessage``
  ..2,000, all counted in UTF-16 code units as JavaScript's ``.length`` does. Longer strings are cut to the
  limit (never inside a surrogate pair); a call is dropped only when ``model`` is empty.
* ``inputTokens`` / ``outputTokens`` / ``totalTokens`` / ``latencyMs``: non-negative integers. An integral
  float (``12.0``) is taken as an int; ``latency_ms`` may be a float (rounded) or a ``timedelta``. A
  negative, fractional or non-numeric token count drops the call (a wrong call). Values above
  2,147,483,647 (the database column) are clamped to it.
* ``costUsd``: a non-negative finite number; ``None`` lets the server fill it from its price table.
* ``status``: ``"success"`` or ``"error"`` (any case); anything else drops the call.
* ``metadata``: a mapping (``None`` is ``{}``).

**The 256 KiB rule.** The server answers ``413`` when the UTF-8 length of ``JSON.stringify(input ?? null)``
plus that of ``JSON.stringify(output ?? null)`` exceeds 262,144 bytes. :func:`io_size` measures exactly
that, including where JavaScript writes numbers differently from Python (``1e+16`` is
``10000000000000000`` in JavaScript, ``1.0`` is ``1``). When the sum is over the limit the record is
truncated before it is queued, never sent to get a 413:

1. Input and output share the budget: a side that fits in half of it keeps all of it, the other side gets
   the rest.
2. A side over its share keeps its structure (messages, roles, keys) and has its *longest strings* cut,
   all to one common length (the largest that fits), each cut string ending in ``…[truncated]``. So short
   messages survive whole and one huge pasted document is what shrinks.
3. If the structure alone is too big (say 50,000 tiny list items), that side becomes one string: the head
   of its compact JSON text, ending in ``…[truncated]``.
4. ``metadata["serla_truncated"]`` then records the original sizes:
   ``{"input_bytes": N, "output_bytes": M, "limit": 262144}``.
"""

from __future__ import annotations

import sys

from serla._encode import encode, format_timestamp, sanitize

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Callable, Final

LLM_PATH: Final = "/api/v1/llm"
MAX_IO_BYTES: Final = 256 * 1024
"""The server's cap on ``input`` + ``output`` (compact JSON, UTF-8 bytes, an absent side counted as null)."""
MAX_MODEL: Final = 200
MAX_PROVIDER: Final = 50
MAX_ID: Final = 200
MAX_ERROR_MESSAGE: Final = 2000
MAX_INT: Final = 2_147_483_647
"""The database's ``integer`` columns hold at most this; larger token counts or latencies are clamped."""
TRUNCATION_MARK: Final = "…[truncated]"
TRUNCATED_KEY: Final = "serla_truncated"


class InvalidRecord(ValueError):
    """A ``track_llm()`` call that can't be sent (the message says why); the caller drops and counts it."""


# -- strings ---------------------------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    """The length of ``text`` in UTF-16 code units (JavaScript's ``.length``)."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def cut_utf16(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-16 code units, never splitting a surrogate pair."""
    if len(text) <= limit and (text.isascii() or utf16_len(text) <= limit):
        return text
    units = 0
    for i, c in enumerate(text):
        units += 2 if ord(c) > 0xFFFF else 1
        if units > limit:
            return text[:i]
    return text  # pragma: no cover - only reached when the text fits, handled above


def _text(value: Any, limit: int) -> str | None:
    """An optional string field: ``None`` stays ``None``; anything else is ``str()``-ed, cleaned and cut."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = sanitize(value)
        if not isinstance(value, str):
            value = encode(value).decode("utf-8")
    else:
        value = sanitize(value)
    return cut_utf16(value, limit) if value else None


def error_text(error: BaseException) -> str:
    """How an exception reads in ``errorMessage``: ``"TypeName: message"`` (cut to the field's limit)."""
    try:
        message = str(error)
    except Exception:
        message = ""
    name = type(error).__name__
    return cut_utf16(f"{name}: {message}" if message else name, MAX_ERROR_MESSAGE)


# -- numbers ---------------------------------------------------------------------------------------------


def _count(name: str, value: Any) -> int | None:
    """A token count: ``None`` or a non-negative integer (integral floats accepted), clamped to int32."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecord(f"{name} must be a non-negative int, got {type(value).__name__}")
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")) or value != int(value):
            raise InvalidRecord(f"{name} must be a non-negative int, got {value!r}")
        value = int(value)
    if value < 0:
        raise InvalidRecord(f"{name} must be a non-negative int, got {value!r}")
    return min(int(value), MAX_INT)


def _latency(value: Any) -> int | None:
    """``latency_ms``: an int or float of milliseconds (rounded) or a ``timedelta``; never negative."""
    if value is None:
        return None
    dt = sys.modules.get("datetime")
    if dt is not None and isinstance(value, dt.timedelta):
        value = value.total_seconds() * 1000.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecord(f"latency_ms must be a number of milliseconds, got {type(value).__name__}")
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise InvalidRecord(f"latency_ms must be a non-negative number, got {value!r}")
    return min(round(value), MAX_INT)


def _cost(value: Any) -> float | None:
    if value is None:
        return None
    decimal = sys.modules.get("decimal")
    if decimal is not None and isinstance(value, decimal.Decimal):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRecord(f"cost_usd must be a non-negative number, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise InvalidRecord(f"cost_usd must be a non-negative finite number, got {value!r}")
    return float(value)


def _status(value: Any) -> str:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("success", "error"):
            return lowered
    raise InvalidRecord(f"status must be 'success' or 'error', got {value!r}")


# -- the record ------------------------------------------------------------------------------------------


def build_record(
    model: Any,
    *,
    provider: Any = None,
    distinct_id: Any = None,
    trace_id: Any = None,
    parent_id: Any = None,
    input: Any = None,
    output: Any = None,
    input_tokens: Any = None,
    output_tokens: Any = None,
    total_tokens: Any = None,
    cost_usd: Any = None,
    latency_ms: Any = None,
    status: Any = "success",
    error_message: Any = None,
    metadata: Any = None,
    timestamp: Any = None,
    capture_content: bool = True,
) -> dict[str, Any]:
    """Check one generation and return its wire record (camelCase keys; ``None`` fields left out).

    ``input``, ``output`` and ``metadata``'s values are kept as given (the caller's objects): the record
    is snapshotted when :func:`encode_body` encodes it, right after. ``timestamp`` ``None`` leaves it out.

    Raises:
        InvalidRecord: For a call that can't be sent (an empty model, a negative token count, ...).
    """
    if not isinstance(model, str):
        raise InvalidRecord(f"model must be a non-empty string, got {type(model).__name__}")
    model_text = _text(model.strip(), MAX_MODEL)
    if not model_text:
        raise InvalidRecord("model must be a non-empty string")
    record: dict[str, Any] = {"model": model_text, "status": _status(status)}
    for key, value, limit in (
        ("provider", provider, MAX_PROVIDER),
        ("distinctId", distinct_id, MAX_ID),
        ("traceId", trace_id, MAX_ID),
        ("parentId", parent_id, MAX_ID),
    ):
        text = _text(value, limit)
        if text is not None:
            record[key] = text
    for key, name, count in (
        ("inputTokens", "input_tokens", input_tokens),
        ("outputTokens", "output_tokens", output_tokens),
        ("totalTokens", "total_tokens", total_tokens),
    ):
        number = _count(name, count)
        if number is not None:
            record[key] = number
    cost = _cost(cost_usd)
    if cost is not None:
        record["costUsd"] = cost
    latency = _latency(latency_ms)
    if latency is not None:
        record["latencyMs"] = latency
    if error_message is not None:
        if isinstance(error_message, BaseException):
            error_message = error_text(error_message)
        text = _text(error_message, MAX_ERROR_MESSAGE)
        if text is not None:
            record["errorMessage"] = text
    if metadata is not None:
        if type(metadata) is not dict:
            if not _is_mapping(metadata):
                raise InvalidRecord(f"metadata must be a dict, got {type(metadata).__name__}")
            metadata = dict(metadata)
        record["metadata"] = metadata
    if timestamp is not None:
        stamp = format_timestamp(timestamp)
        if stamp is None:
            raise InvalidRecord(
                f"timestamp {timestamp!r} is not a datetime, ISO-8601 string or epoch seconds "
                "within 1970-2100"
            )
        record["timestamp"] = stamp
    if capture_content:
        if input is not None:
            record["input"] = input
        if output is not None:
            record["output"] = output
    return record


def _is_mapping(value: Any) -> bool:
    from _collections_abc import Mapping

    return isinstance(value, Mapping)


def from_wire(record: Mapping[str, Any], *, capture_content: bool = True) -> dict[str, Any]:
    """Re-check a wire record (camelCase keys), e.g. what a ``before_send_llm`` hook returned.

    Raises:
        InvalidRecord: As :func:`build_record`; also for a record that is not a dict.
    """
    if not _is_mapping(record):
        raise InvalidRecord(f"before_send_llm must return a dict or None, got {type(record).__name__}")
    get = record.get
    return build_record(
        get("model"),
        provider=get("provider"),
        distinct_id=get("distinctId"),
        trace_id=get("traceId"),
        parent_id=get("parentId"),
        input=get("input"),
        output=get("output"),
        input_tokens=get("inputTokens"),
        output_tokens=get("outputTokens"),
        total_tokens=get("totalTokens"),
        cost_usd=get("costUsd"),
        latency_ms=get("latencyMs"),
        status=get("status", "success"),
        error_message=get("errorMessage"),
        metadata=get("metadata"),
        timestamp=get("timestamp"),
        capture_content=capture_content,
    )


# -- the 256 KiB rule ------------------------------------------------------------------------------------


def _js_number_extra(value: float) -> int:
    """How many more characters JavaScript's ``JSON.stringify`` writes for ``value`` than Python's repr.

    Both print the shortest round-tripping digits; they differ in when they switch to exponent form
    (Python below 1e-4 and from 1e16, JavaScript below 1e-6 and from 1e21) and in its spelling
    (``1e-05`` / ``1e-5``), and Python writes ``1.0`` where JavaScript writes ``1``.
    """
    py = repr(value)
    if value == 0:
        return 1 - len(py)  # JavaScript writes 0 and -0 as "0"
    if "e" not in py:
        return -2 if py.endswith(".0") else 0
    mantissa, _, exp_text = py.partition("e")
    exp = int(exp_text)
    sign = 1 if value < 0 else 0
    digits = mantissa.lstrip("-").replace(".", "")
    if exp >= 21 or exp < -6:  # both use the exponent form; JavaScript doesn't zero-pad the exponent
        js_len = len(mantissa) + 2 + len(str(abs(exp)))
    elif exp >= 0:  # 1e+16 -> 10000000000000000 (at most 17 significant digits, so no fraction part)
        js_len = sign + exp + 1
    else:  # 1e-05 -> 0.00001
        js_len = sign + 2 + (-exp - 1) + len(digits)
    return js_len - len(py)


def _number_extra(value: Any) -> int:
    """The sum of :func:`_js_number_extra` over every float in a sanitised value (iterative walk)."""
    extra = 0
    stack = [value]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        kind = type(item)
        if kind is float:
            extra += _js_number_extra(item)
        elif kind is dict:
            for v in item.values():
                if type(v) is not str:
                    push(v)
        elif kind is list:
            for v in item:
                if type(v) is not str:
                    push(v)
    return extra


def json_size(value: Any) -> int:
    """UTF-8 bytes of ``JSON.stringify(value ?? null)`` for a sanitised value, as the server counts them."""
    if value is None:
        return 4
    return len(encode(value)) + _number_extra(value)


def io_size(record: Mapping[str, Any]) -> int:
    """The server's measure for the 413 rule: ``input`` plus ``output``, each absent side as ``null``."""
    return json_size(record.get("input")) + json_size(record.get("output"))


def _strings(value: Any, out: list[tuple[Any, Any, str]]) -> None:
    """Every string inside ``value`` as ``(container, key, text)`` (iterative, any depth)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            for k, v in item.items():
                if type(v) is str:
                    out.append((item, k, v))
                elif type(v) in (dict, list):
                    stack.append(v)
        elif type(item) is list:
            for i, v in enumerate(item):
                if type(v) is str:
                    out.append((item, i, v))
                elif type(v) in (dict, list):
                    stack.append(v)


def _cut_text(text: str, size: int) -> str:
    """``text`` shortened so that its UTF-8 length is about ``size`` bytes, ending in the truncation mark."""
    data = text.encode("utf-8")
    keep = max(0, size - len(TRUNCATION_MARK.encode("utf-8")))
    return data[:keep].decode("utf-8", "ignore") + TRUNCATION_MARK


def _shrink(value: Any, budget: int) -> Any:
    """``value`` (sanitised) made to measure at most ``budget`` bytes, by the rule in the module docstring."""
    if json_size(value) <= budget:
        return value
    if type(value) is str:
        return _shrink_string(value, budget)
    if type(value) in (dict, list):
        import copy

        work = copy.deepcopy(value)
        for _ in range(6):  # each round re-measures; escapes and multi-byte text make one round inexact
            size = json_size(work)
            if size <= budget:
                return work
            found: list[tuple[Any, Any, str]] = []
            _strings(work, found)
            if not found:
                break
            lengths = sorted((len(t.encode("utf-8")) for _, _, t in found), reverse=True)
            excess = size - budget + 64 * (1 + _)  # a growing margin for escapes and the marks
            cap = _water_level(lengths, excess, len(TRUNCATION_MARK.encode("utf-8")))
            if cap is None:
                break
            for container, key, text in found:
                if len(text.encode("utf-8")) > cap:
                    container[key] = _cut_text(text, cap)
        if json_size(work) <= budget:
            return work
    # The structure itself is too big: keep the head of its JSON text as one string.
    return _shrink_string(encode(value).decode("utf-8"), budget)


def _water_level(lengths: list[int], excess: int, mark: int) -> int | None:
    """The largest cap such that cutting every string longer than it saves at least ``excess`` bytes.

    Args:
        lengths: The strings' UTF-8 lengths, longest first.
        excess: Bytes to save.
        mark: The length of the truncation mark each cut string gains.

    Returns:
        The cap in bytes, or ``None`` when cutting every string to nothing still would not do.
    """
    total = 0
    for i, length in enumerate(lengths):
        total += length
        count = i + 1
        nxt = lengths[i + 1] if i + 1 < len(lengths) else 0
        # Cutting the ``count`` longest strings to ``cap`` (>= nxt) saves total - count * cap - count * mark.
        cap = (total - count * mark - excess) // count
        if cap >= nxt and cap >= 0:
            return cap
    return None


def _shrink_string(text: str, budget: int) -> str:
    size = budget - 2  # the quotes
    out = _cut_text(text, size)
    for _ in range(8):
        over = json_size(out) - budget
        if over <= 0:
            return out
        size -= over
        out = _cut_text(text, max(0, size))
    return TRUNCATION_MARK


def fit(record: dict[str, Any], limit: int = MAX_IO_BYTES) -> dict[str, Any]:
    """Truncate ``input``/``output`` in place so that :func:`io_size` is at most ``limit``; return ``record``.

    The rule is in the module docstring. A record that fits is returned unchanged.
    """
    inp, out = record.get("input"), record.get("output")
    in_size, out_size = json_size(inp), json_size(out)
    if in_size + out_size <= limit:
        return record
    half = limit // 2
    if in_size <= half:
        in_budget, out_budget = in_size, limit - in_size
    elif out_size <= half:
        in_budget, out_budget = limit - out_size, out_size
    else:
        in_budget, out_budget = half, limit - half
    if inp is not None:
        record["input"] = _shrink(inp, in_budget)
    if out is not None:
        record["output"] = _shrink(out, out_budget)
    meta = dict(record.get("metadata") or {})
    meta[TRUNCATED_KEY] = {"input_bytes": in_size, "output_bytes": out_size, "limit": limit}
    record["metadata"] = meta
    return record


def apply_hook(
    hook: Callable[[dict[str, Any]], Any] | None, record: dict[str, Any], capture_content: bool
) -> dict[str, Any] | None:
    """Run ``before_send_llm`` on a record and re-check what it returns; ``None`` means drop.

    Raises:
        InvalidRecord: When the hook returned something that is not a valid record.
    """
    if hook is None:
        return record
    result = hook(record)
    if result is None:
        return None
    return from_wire(result, capture_content=capture_content)


def _assemble(record: dict[str, Any], parts: tuple[tuple[str, bytes | None], ...]) -> bytes:
    """The body: ``record`` encoded, with already-encoded ``(key, json)`` parts appended."""
    head = encode(record)
    extra = b"".join(b',"%s":%s' % (key.encode(), data) for key, data in parts if data is not None)
    if not extra:
        return head
    return head[:-1] + (extra if len(head) > 2 else extra[1:]) + b"}"


def encode_body(record: dict[str, Any]) -> tuple[bytes, bool]:
    """Encode a record once (the snapshot) and tell whether it passes the 256 KiB rule as it is.

    ``input`` and ``output`` are encoded separately first, so their sizes come for free. JavaScript can
    write a number at most 3.4 times as long as Python does (``1e+16``), so below a quarter of the limit
    no walk for numbers is needed; above it, the exact measure (:func:`io_size`) decides.

    Returns:
        ``(body, fits)``; when ``fits`` is False, decode the body, :func:`fit` it and encode it again.
    """
    inp = record.pop("input", None)
    out = record.pop("output", None)
    in_json = None if inp is None else encode(inp)
    out_json = None if out is None else encode(out)
    body = _assemble(record, (("input", in_json), ("output", out_json)))
    size = (4 if in_json is None else len(in_json)) + (4 if out_json is None else len(out_json))
    if size * 4 <= MAX_IO_BYTES:
        return body, True
    return body, io_size(_decode(body)) <= MAX_IO_BYTES


def _decode(body: bytes) -> dict[str, Any]:
    import json

    value: dict[str, Any] = json.loads(body)
    return value


def track_llm(client: Any, model: Any, **fields: Any) -> bool:
    """The body of :meth:`serla.Serla.track_llm`: check, encode (the snapshot), hook, fit, queue.

    The fast path (no hook, under the size limit) encodes with the C JSON encoder only. A hook gets the
    record decoded from those bytes (a plain copy it may change); what it returns is checked again. An
    oversized record is decoded, truncated (:func:`fit`) and encoded again. Raises nothing for a wrong call
    (it is dropped, counted and warned about through ``client._reject``).
    """
    config = client._config
    capture = config.capture_llm_content
    if fields.get("distinct_id") is None:
        from serla._context import get_distinct_id

        fields["distinct_id"] = get_distinct_id()
    stamp = None
    if fields.get("timestamp") is None:
        stamp = client._now()  # already in the wire's form
    try:
        record = build_record(model, capture_content=capture, **fields)
        if stamp is not None:
            record["timestamp"] = stamp
        body, fits = encode_body(record)
        hook = config.before_send_llm
        if hook is not None:
            try:
                result = apply_hook(hook, _decode(body), capture)
            except InvalidRecord:
                raise
            except Exception as exc:
                # A failing hook must not leak what it was meant to redact: the record is dropped.
                return bool(client._reject("track_llm: before_send_llm raised %r; record dropped", exc))
            if result is None:
                return False
            body, fits = encode_body(result)
    except InvalidRecord as exc:
        return bool(client._reject("track_llm: %s (model %r)", exc, model))
    if not fits:
        body = encode(fit(_decode(body)))
    return bool(client._submit("llm", body))
