"""``POST /api/v1/llm`` for the local servers: the real route's checks, its 413 rule, plan gate and cost.

:class:`LlmEndpoint` adds the route to a :class:`~serla.devtools.server.SerlaServer` (every server has one,
as :attr:`SerlaServer.llm`) and ``serla dev`` keeps the records in its SQLite file and lists them on the
page at ``/llm`` (calls, and totals per model). The route follows ``app/api/v1/llm/route.ts`` of the real
server (commit eb01610; ``SERLA_API.md`` 7.3) in this order: auth (401), plan (402, for keys listed in
:attr:`LlmEndpoint.free_keys`), per-minute limit and monthly quota (the server's ``llm`` bucket: 429),
JSON parse (400 ``Invalid JSON``), validation (400 ``Invalid generation`` with zod-like ``details``), the
256 KiB input+output cap (413), then the row is stored with ``costUsd`` and ``totalTokens`` backfilled the
way the real server does.

**Prices.** :data:`PRICES` is a trimmed copy of the real server's ``lib/llm/model-prices.json`` (generated
there from LiteLLM's and OpenRouter's catalogs) at serla-server commit eb01610 (2026-08-07): the OpenAI and
Anthropic models this SDK's tests, examples and wrappers name, with their dated snapshots and ``openai/``
/ ``anthropic/`` prefixed spellings, in USD per million tokens. A model outside it is unpriced here
(``costUsd`` stays ``None``) where the real server, with its ~4,150 models, may price it. The name
resolution (:func:`lookup_price`) is the real ``lookupModelPrice``.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from serla._encode import format_timestamp
from serla._llm import MAX_IO_BYTES, json_size
from serla.devtools.validation import MALFORMED as _MALFORMED
from serla.devtools.validation import MISSING, is_valid_timestamp
from serla.devtools.validation import format_issue as _format_issue
from serla.devtools.validation import too_big as _too_big
from serla.devtools.validation import too_small as _too_small
from serla.devtools.validation import type_issue as _type_issue
from serla.devtools.validation import utf16_len as _utf16_len
from serla.devtools.wire import RecordedRequest, Response, parsed_body
from serla.devtools.wire import json_response as _json_response

if TYPE_CHECKING:
    from serla.devtools.server import SerlaServer

__all__ = [
    "LLM_API",
    "LLM_PAGE",
    "LLM_PATH",
    "PRICES",
    "LlmEndpoint",
    "LlmStore",
    "MemoryLlmStore",
    "compute_cost",
    "lookup_price",
    "totals_by_model",
    "validate_generation",
]

LLM_PATH: Final = "/api/v1/llm"
LLM_PAGE: Final = "/llm"
"""``serla dev``'s page of LLM calls."""
LLM_API: Final = "/api/dev/llm"
"""``serla dev``'s JSON list of LLM calls and per-model totals."""
_MAX_SAFE_INT: Final = 2**53 - 1
PRICES: Final[Mapping[str, tuple[float, float]]] = {
    "anthropic/claude-3-haiku": (0.25, 1.25),
    "anthropic/claude-opus-4": (15, 75),
    "anthropic/claude-sonnet-4": (3, 15),
    "claude-3-5-haiku": (1, 5),
    "claude-3-5-sonnet": (3, 15),
    "claude-3-5-sonnet-20241022": (3, 15),
    "claude-3-7-sonnet": (3, 15),
    "claude-3-7-sonnet-20250219": (3, 15),
    "claude-3-7-sonnet-latest": (3.3, 16.5),
    "claude-3-haiku": (0.25, 1.25),
    "claude-3-haiku-20240307": (0.25, 1.25),
    "claude-3-opus": (15, 75),
    "claude-3-opus-20240229": (15, 75),
    "claude-haiku-4-5": (1, 5),
    "claude-haiku-4-5-20251001": (1, 5),
    "claude-opus-4": (15, 75),
    "claude-opus-4-1": (15, 75),
    "claude-opus-4-1-20250805": (15, 75),
    "claude-opus-4-20250514": (15, 75),
    "claude-sonnet-4": (3, 15),
    "claude-sonnet-4-20250514": (3, 15),
    "claude-sonnet-4-5": (3, 15),
    "claude-sonnet-4-5-20250929": (3, 15),
    "gpt-3.5-turbo": (0.5, 1.5),
    "gpt-4": (30, 60),
    "gpt-4-turbo": (10, 30),
    "gpt-4-turbo-2024-04-09": (10, 30),
    "gpt-4.1": (2, 8),
    "gpt-4.1-2025-04-14": (2, 8),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-mini-2025-04-14": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
    "gpt-4.1-nano-2025-04-14": (0.1, 0.4),
    "gpt-4o": (2.5, 10),
    "gpt-4o-2024-05-13": (5, 15),
    "gpt-4o-2024-08-06": (2.5, 10),
    "gpt-4o-2024-11-20": (2.5, 10),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4o-mini-2024-07-18": (0.15, 0.6),
    "gpt-5": (1.25, 10),
    "gpt-5-2025-08-07": (1.25, 10),
    "gpt-5-mini": (0.25, 2),
    "gpt-5-mini-2025-08-07": (0.25, 2),
    "gpt-5-nano": (0.05, 0.4),
    "gpt-5-nano-2025-08-07": (0.05, 0.4),
    "o1": (15, 60),
    "o1-2024-12-17": (15, 60),
    "o1-mini": (1.1, 4.4),
    "o1-mini-2024-09-12": (1.1, 4.4),
    "o3": (2, 8),
    "o3-2025-04-16": (2, 8),
    "o3-mini": (1.1, 4.4),
    "o3-mini-2025-01-31": (1.1, 4.4),
    "o4-mini": (1.1, 4.4),
    "o4-mini-2025-04-16": (1.1, 4.4),
    "openai/gpt-3.5-turbo": (0.5, 1.5),
    "openai/gpt-4": (30, 60),
    "openai/gpt-4-turbo": (10, 30),
    "openai/gpt-4.1": (2, 8),
    "openai/gpt-4.1-mini": (0.4, 1.6),
    "openai/gpt-4.1-nano": (0.1, 0.4),
    "openai/gpt-4o": (2.5, 10),
    "openai/gpt-4o-2024-05-13": (5, 15),
    "openai/gpt-4o-2024-08-06": (2.5, 10),
    "openai/gpt-4o-2024-11-20": (2.5, 10),
    "openai/gpt-4o-mini": (0.15, 0.6),
    "openai/gpt-4o-mini-2024-07-18": (0.15, 0.6),
    "openai/gpt-5": (1.25, 10),
    "openai/gpt-5-mini": (0.25, 2),
    "openai/gpt-5-nano": (0.05, 0.4),
    "openai/o1": (15, 60),
    "openai/o3": (2, 8),
    "openai/o3-mini": (1.1, 4.4),
    "openai/o4-mini": (1.1, 4.4),
    "text-embedding-3-large": (0.13, 0),
    "text-embedding-3-small": (0.02, 0),
}
"""USD per 1M tokens ``(input, output)``; see the module docstring for its source and date."""


def lookup_price(model: str) -> tuple[float, float] | None:
    """Resolve a model name to its price the way the real server's ``lookupModelPrice`` does.

    Candidates, in order: the name, lowercased; the part after the last ``/`` and after the last ``:``
    (each also lowercased); then for the name and those parts, a trailing ``-YYYY-MM-DD``, ``-YYYYMMDD``
    or ``-latest`` removed (also lowercased). The first one in :data:`PRICES` wins.

    Returns:
        ``(input, output)`` in USD per 1M tokens, or ``None`` for an unknown model.
    """
    if not model:
        return None
    candidates: list[str] = []

    def push(text: str) -> None:
        if text and text not in candidates:
            candidates.append(text)

    raw = model.strip()
    push(raw)
    push(raw.lower())
    after_slash = raw[raw.rindex("/") + 1 :] if "/" in raw else ""
    after_colon = raw[raw.rindex(":") + 1 :] if ":" in raw else ""
    for part in (after_slash, after_slash.lower(), after_colon, after_colon.lower()):
        push(part)
    for base in (b for b in (raw, after_slash, after_colon) if b):
        dashed = re.sub(r"-\d{4}-\d{2}-\d{2}$", "", base)
        compact = re.sub(r"-\d{8}$", "", base)
        push(dashed)
        push(compact)
        push(dashed.lower())
        push(compact.lower())
        latest = re.sub(r"-latest$", "", base)
        push(latest)
        push(latest.lower())
    for candidate in candidates:
        hit = PRICES.get(candidate)
        if hit is not None:
            return hit
    return None


def compute_cost(model: str, input_tokens: int | None, output_tokens: int | None) -> float | None:
    """``(in * input_price + out * output_price) / 1e6``, or ``None`` without both counts or a price."""
    if input_tokens is None or output_tokens is None:
        return None
    price = lookup_price(model)
    if price is None:
        return None
    return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000


# --------------------------------------------------------------------------------------------------------
# Validation: the route's zod schema


def _number_issue(value: Any, path: list[str | int], *, integer: bool) -> dict[str, Any] | None:
    if type(value) is bool or not isinstance(value, (int, float)):
        return _type_issue("number", value, path)
    if integer and (isinstance(value, float) and not value.is_integer()):
        return {
            "expected": "int",
            "format": "safeint",
            "code": "invalid_type",
            "path": path,
            "message": "Invalid input: expected int, received number",
        }
    if integer and abs(value) > _MAX_SAFE_INT:
        return {
            "origin": "number",
            "code": "too_big" if value > 0 else "too_small",
            "maximum" if value > 0 else "minimum": _MAX_SAFE_INT if value > 0 else -_MAX_SAFE_INT,
            "inclusive": True,
            "path": path,
            "message": "Invalid input: expected int, received number",
        }
    if value < 0:
        return {
            "origin": "number",
            "code": "too_small",
            "minimum": 0,
            "inclusive": True,
            "path": path,
            "message": "Too small: expected number to be >=0",
        }
    return None


def _optional_string(
    body: dict[str, Any], key: str, limit: int, gen: dict[str, Any], issues: list[dict[str, Any]]
) -> None:
    """Check the optional string ``body[key]`` (at most ``limit`` UTF-16 units) into ``gen`` or ``issues``."""
    value = body.get(key)
    if value is None:
        return
    if type(value) is not str:
        issues.append(_type_issue("string", value, [key]))
    elif _utf16_len(value) > limit:
        issues.append(_too_big("string", limit, [key]))
    else:
        gen[key] = value


def validate_generation(body: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Check a parsed body against the real route's schema.

    Returns:
        ``(generation, [])`` with the known fields only (unknown keys are stripped, ``status`` defaults to
        ``"success"``), or ``(None, issues)`` with zod-like issues.
    """
    issues: list[dict[str, Any]] = []
    if type(body) is not dict:
        return None, [_type_issue("object", body, [])]
    gen: dict[str, Any] = {}
    for key in ("distinctId", "traceId", "parentId"):
        _optional_string(body, key, 200, gen, issues)
    model = body.get("model")
    if type(model) is not str:
        issues.append(_type_issue("string", model if "model" in body else MISSING, ["model"]))
    elif not model:
        issues.append(_too_small("string", 1, ["model"]))
    elif _utf16_len(model) > 200:
        issues.append(_too_big("string", 200, ["model"]))
    else:
        gen["model"] = model
    _optional_string(body, "provider", 50, gen, issues)
    for key in ("input", "output"):
        if body.get(key) is not None:
            gen[key] = body[key]
    for key, integer in (
        ("inputTokens", True),
        ("outputTokens", True),
        ("totalTokens", True),
        ("costUsd", False),
        ("latencyMs", True),
    ):
        value = body.get(key)
        if value is None:
            continue
        issue = _number_issue(value, [key], integer=integer)
        if issue is not None:
            issues.append(issue)
        else:
            gen[key] = int(value) if integer else value
    status = body.get("status", "success") if "status" in body else "success"
    if status not in ("success", "error") or type(status) is not str:
        issues.append(
            {
                "code": "invalid_value",
                "values": ["success", "error"],
                "path": ["status"],
                "message": 'Invalid option: expected one of "success"|"error"',
            }
        )
    else:
        gen["status"] = status
    _optional_string(body, "errorMessage", 2000, gen, issues)
    metadata = body.get("metadata")
    if metadata is not None:
        if type(metadata) is not dict:
            issues.append(_type_issue("record", metadata, ["metadata"]))
        else:
            gen["metadata"] = metadata
    stamp = body.get("timestamp")
    if stamp is not None:
        if type(stamp) is not str:
            issues.append(_type_issue("string", stamp, ["timestamp"]))
        elif not is_valid_timestamp(stamp):
            issues.append(_format_issue(["timestamp"]))
        else:
            gen["timestamp"] = stamp
    return (None, issues) if issues else (gen, [])


# --------------------------------------------------------------------------------------------------------
# Stores


class LlmStore(Protocol):
    """Where :class:`LlmEndpoint` keeps the rows it accepted."""

    def add_generation(self, row: dict[str, Any]) -> None:
        """Keep one stored row (see :meth:`LlmEndpoint.rows` for its keys)."""

    def generations(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The stored rows, oldest first (the newest ``limit`` when given)."""

    def clear_generations(self) -> None:
        """Forget every row."""


class MemoryLlmStore:
    """An :class:`LlmStore` in a list (the contract server's default)."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add_generation(self, row: dict[str, Any]) -> None:
        """Keep one row."""
        with self._lock:
            self._rows.append(row)

    def generations(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The rows, oldest first."""
        with self._lock:
            rows = list(self._rows)
        return rows if limit is None else rows[-limit:] if limit else []

    def clear_generations(self) -> None:
        """Forget every row."""
        with self._lock:
            self._rows.clear()


def totals_by_model(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model: calls, errors, token sums, cost (``None`` while no call of it was priced), mean latency."""
    out: dict[str, dict[str, Any]] = {}
    latency: dict[str, list[int]] = {}
    for row in rows:
        model = row["model"]
        total = out.get(model)
        if total is None:
            total = out[model] = {
                "model": model,
                "calls": 0,
                "errors": 0,
                "inputTokens": 0,
                "outputTokens": 0,
                "totalTokens": 0,
                "costUsd": None,
                "meanLatencyMs": None,
            }
        total["calls"] += 1
        total["errors"] += row.get("status") == "error"
        for key in ("inputTokens", "outputTokens", "totalTokens"):
            total[key] += row.get(key) or 0
        if row.get("costUsd") is not None:
            total["costUsd"] = round((total["costUsd"] or 0.0) + row["costUsd"], 8)
        if row.get("latencyMs") is not None:
            latency.setdefault(model, []).append(row["latencyMs"])
    for model, values in latency.items():
        out[model]["meanLatencyMs"] = round(sum(values) / len(values))
    return sorted(out.values(), key=lambda t: (-t["calls"], t["model"]))


# --------------------------------------------------------------------------------------------------------
# The route


class LlmEndpoint:
    """``POST /api/v1/llm`` on a :class:`~serla.devtools.server.SerlaServer` (registered on creation).

    Attributes:
        free_keys: API keys of "Free-plan projects": their requests get the real 402.
    """

    def __init__(
        self,
        server: SerlaServer,
        *,
        store: LlmStore | None = None,
        free_keys: set[str] | None = None,
    ) -> None:
        """Register the route on ``server``.

        Args:
            server: The server to serve it on; its API keys and clock are used.
            store: Where rows go (default: a new :class:`MemoryLlmStore`).
            free_keys: API keys whose project is on the Free plan (402).
        """
        self._server = server
        self.store: LlmStore = store if store is not None else MemoryLlmStore()
        self.free_keys: set[str] = set(free_keys or ())
        self._cond = threading.Condition()
        self._count = 0
        # The server's routing table (serla.devtools.server.ROUTES) sends POST /api/v1/llm to handle()
        # and answers OPTIONS (204) and other methods (405) itself.

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The stored rows, oldest first: the fields of ``llm_generations`` in camelCase (``id``,
        ``distinctId``, ``traceId``, ``parentId``, ``model``, ``provider``, ``input``, ``output``, the token
        counts, ``costUsd``, ``latencyMs``, ``status``, ``errorMessage``, ``metadata``, ``timestamp``,
        ``createdAt``) plus ``idempotencyKey``.
        """
        return self.store.generations()

    def wait_for(self, n: int, timeout: float | None = 5.0) -> bool:
        """Wait until at least ``n`` rows were stored since creation or :meth:`clear`; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._count >= n, timeout)

    def clear(self) -> None:
        """Forget the stored rows."""
        self.store.clear_generations()
        with self._cond:
            self._count = 0

    def handle(self, request: RecordedRequest) -> Response:
        """Answer one ``POST /api/v1/llm`` the way the real route does."""
        server = self._server
        caller = server.authenticate(request)
        if isinstance(caller, Response):
            return caller
        if caller.key in self.free_keys:
            return _json_response(402, {"error": "LLM observability requires the Hobby plan or above"})
        refused = server.check_limits(caller, bucket="llm", quota_error="Monthly limit exceeded")
        if refused is not None:
            return refused
        parsed = parsed_body(request)
        if parsed is _MALFORMED:
            return _json_response(400, {"error": "Invalid JSON"})
        gen, issues = validate_generation(parsed)
        if gen is None:
            return _json_response(400, {"error": "Invalid generation", "details": issues})
        size = json_size(gen.get("input")) + json_size(gen.get("output"))
        if size > MAX_IO_BYTES:
            return _json_response(
                413,
                {
                    "error": "Payload too large",
                    "message": f"input + output must be under {MAX_IO_BYTES // 1024}KB (got "
                    f"{round(size / 1024)}KB). Truncate the prompt or store it in your own system and "
                    "send a reference in metadata.",
                },
            )
        self._store(gen, request)
        return _json_response(200, {"success": True})

    def _store(self, gen: dict[str, Any], request: RecordedRequest) -> None:
        cost = gen.get("costUsd")
        if cost is None and gen.get("inputTokens") is not None and gen.get("outputTokens") is not None:
            cost = compute_cost(gen["model"], gen["inputTokens"], gen["outputTokens"])
        total = gen.get("totalTokens")
        if total is None:
            total = ((gen.get("inputTokens") or 0) + (gen.get("outputTokens") or 0)) or None
        now = format_timestamp(time.time())
        stamp = gen.get("timestamp")
        row = {
            "id": str(uuid.uuid4()),
            "distinctId": gen.get("distinctId"),
            "traceId": gen.get("traceId"),
            "parentId": gen.get("parentId"),
            "model": gen["model"],
            "provider": gen.get("provider"),
            "input": gen.get("input"),
            "output": gen.get("output"),
            "inputTokens": gen.get("inputTokens"),
            "outputTokens": gen.get("outputTokens"),
            "totalTokens": total,
            "costUsd": None if cost is None else round(float(cost), 8),  # decimal(20, 8)
            "latencyMs": gen.get("latencyMs"),
            "status": gen.get("status", "success"),
            "errorMessage": gen.get("errorMessage"),
            "metadata": gen.get("metadata") or {},
            "timestamp": format_timestamp(stamp) if stamp else now,
            "createdAt": now,
            "idempotencyKey": request.idempotency_key,
        }
        self.store.add_generation(row)
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    # ---- serla dev: the page and its JSON ---------------------------------------------------------------

    def api(self, request: RecordedRequest) -> Response:
        """``GET /api/dev/llm?limit=``: the newest calls (newest first) and the totals per model."""
        params = dict(_query_pairs(request.query))
        try:
            limit = max(1, min(1000, int(params.get("limit", "100"))))
        except ValueError:
            return _json_response(400, {"error": "limit must be an integer"})
        rows = self.store.generations()
        calls = list(reversed(rows[-limit:]))
        cost = sum(r["costUsd"] for r in rows if r.get("costUsd") is not None)
        return Response(
            200,
            json.dumps(
                {"calls": calls, "total": len(rows), "totals": totals_by_model(rows), "costUsd": cost},
                ensure_ascii=False,
            ).encode("utf-8"),
            {"Content-Type": "application/json", "Cache-Control": "no-store"},
        )

    def page(self, request: RecordedRequest) -> Response:
        """``GET /llm``: a live page of the LLM calls and the totals per model."""
        nonce = secrets.token_urlsafe(16)
        body = _PAGE.replace("__NONCE__", nonce).replace("__API__", html.escape(LLM_API))
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        return Response(
            200,
            body.encode("utf-8"),
            {
                "Content-Type": "text/html; charset=utf-8",
                "Content-Security-Policy": csp,
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )


def _query_pairs(query: str) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    return parse_qsl(query or "")


class SQLiteLlmStore:
    """An :class:`LlmStore` in ``serla dev``'s SQLite file (table ``llm_generations``), beside the events.

    Args:
        store: The :class:`serla.devtools.dev.SQLiteStore` whose connection and lock it shares.
    """

    _SCHEMA: Final = (
        "CREATE TABLE IF NOT EXISTS llm_generations (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
        "model TEXT NOT NULL, data TEXT NOT NULL)"
    )

    def __init__(self, store: Any) -> None:
        self._store = store
        with store._write() as conn:
            conn.execute(self._SCHEMA)

    def add_generation(self, row: dict[str, Any]) -> None:
        """Keep one row."""
        with self._store._write() as conn:
            conn.execute(
                "INSERT INTO llm_generations (model, data) VALUES (?, ?)",
                (row["model"], json.dumps(row, ensure_ascii=False)),
            )

    def generations(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The rows, oldest first."""
        if limit is None:
            rows = self._store._query("SELECT data FROM llm_generations ORDER BY seq")
        else:
            rows = self._store._query(
                "SELECT data FROM (SELECT seq, data FROM llm_generations ORDER BY seq DESC LIMIT ?) "
                "ORDER BY seq",
                (limit,),
            )
        return [json.loads(r[0]) for r in rows]

    def clear_generations(self) -> None:
        """Forget every row."""
        with self._store._write() as conn:
            conn.execute("DELETE FROM llm_generations")


_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>serla dev: LLM calls</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style nonce="__NONCE__">
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1b1b1f}
table{border-collapse:collapse;width:100%;margin-bottom:1.5rem}
th,td{border-bottom:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}.error{color:#b00020}
pre{margin:0;max-width:40rem;max-height:6rem;overflow:auto;white-space:pre-wrap}
</style></head><body>
<h1>LLM calls</h1><p><a href="/">events</a> · <span id="summary">loading…</span></p>
<h2>Totals per model</h2>
<table id="totals"><thead><tr><th>model</th><th>calls</th><th>errors</th><th>input tokens</th>
<th>output tokens</th><th>cost (USD)</th><th>mean latency (ms)</th></tr></thead><tbody></tbody></table>
<h2>Recent calls</h2>
<table id="calls"><thead><tr><th>time</th><th>model</th><th>provider</th><th>user</th>
<th>tokens in/out</th><th>cost (USD)</th><th>latency (ms)</th><th>status</th><th>input</th><th>output</th>
</tr></thead><tbody></tbody>
</table>
<script nonce="__NONCE__">
"use strict";
function cell(row, text, cls) {
  const td = document.createElement("td"); td.textContent = text == null ? "" : String(text);
  if (cls) td.className = cls; row.appendChild(td); return td;
}
function pre(row, value) {
  const td = document.createElement("td"); const p = document.createElement("pre");
  p.textContent = value == null ? "" : JSON.stringify(value); td.appendChild(p); row.appendChild(td);
}
function money(v) { return v == null ? "unpriced" : v.toFixed(6); }
async function refresh() {
  const r = await fetch("__API__?limit=200", {cache: "no-store"});
  const data = await r.json();
  document.getElementById("summary").textContent =
    data.total + " calls · " + data.costUsd.toFixed(6) + " USD priced";
  const totals = document.querySelector("#totals tbody"); totals.replaceChildren();
  for (const t of data.totals) {
    const row = document.createElement("tr"); totals.appendChild(row);
    cell(row, t.model); cell(row, t.calls, "n"); cell(row, t.errors, "n"); cell(row, t.inputTokens, "n");
    cell(row, t.outputTokens, "n"); cell(row, money(t.costUsd), "n"); cell(row, t.meanLatencyMs, "n");
  }
  const calls = document.querySelector("#calls tbody"); calls.replaceChildren();
  for (const c of data.calls) {
    const row = document.createElement("tr"); calls.appendChild(row);
    cell(row, c.timestamp); cell(row, c.model); cell(row, c.provider); cell(row, c.distinctId);
    cell(row, (c.inputTokens ?? "-") + " / " + (c.outputTokens ?? "-"), "n");
    cell(row, money(c.costUsd), "n"); cell(row, c.latencyMs, "n");
    cell(row, c.status + (c.errorMessage ? ": " + c.errorMessage : ""), c.status === "error" ? "error" : "");
    pre(row, c.input); pre(row, c.output);
  }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
