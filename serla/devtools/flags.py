"""Feature flags for the local servers: the real server's evaluation, ported, and ``GET /api/v1/flags``.

The evaluation is ``lib/flags/evaluate.ts`` of the Serla server (commit ``eb01610``), line for line
(``SERLA_API.md`` section 7.2), and ``tests/test_flags_eval.py`` plus
``tests/realserver/test_flags.py`` compare its answers with the real server's for the same definitions:

1. a disabled flag is ``False``;
2. any matching condition turns the flag on: ``distinct_id_in`` (the id is in ``values``, exact string
   equality) or ``property_equals`` (``properties[field] === value``: JavaScript's strict equality, so
   ``"1"`` is not ``1``, ``True`` is not ``1``, objects and arrays never match, and a condition without
   ``value`` matches a missing property); unknown types never match;
3. otherwise ``bucket(key, distinct_id) < rollout_percentage`` turns it on;
4. on: the variant (``bucket(key + ":variant", distinct_id)`` walked over the cumulative weights, the last
   variant when none is reached) for a multivariate flag, else ``True``.

``bucket(k, id)`` is the first 4 bytes of SHA-256 of UTF-8 ``k:id``, big-endian, ``mod 10000``, ``/ 100``.

The route (:class:`FlagRoute`) answers like the real one: 401 for a bad key, 402 for keys listed in
``payment_required_keys`` (the Free plan), the server's per-minute limit (its own window), every flag
evaluated, ``Cache-Control: private, max-age=30`` and ``Vary: Authorization``; the ``properties`` query
parameter is base64 (standard or URL-safe, padding optional) of a JSON object, ignored when it does not
decode. Definitions are set in Python (:meth:`FlagRoute.define`), from a JSON file (:func:`load_flags_file`,
``serla dev --flags FILE``) or with the form of ``serla dev``'s page (``/flags``).

A definitions file is a JSON list (or ``{"flags": [...]}``) of objects::

    [{"key": "new-checkout", "enabled": true, "rollout_percentage": 50,
      "conditions": [{"type": "distinct_id_in", "values": ["u1"]}],
      "variants": [{"key": "red", "weight": 50}, {"key": "blue", "weight": 50}]}]

(``rolloutPercentage`` is accepted for ``rollout_percentage``; ``enabled`` defaults to ``true`` and
``rollout_percentage`` to 100 here, the real dashboard's defaults for a new flag.)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import html
import json
import math
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Union
from urllib.parse import parse_qs, parse_qsl

if TYPE_CHECKING:
    from serla.devtools.server import RecordedRequest, Response, SerlaServer

__all__ = [
    "FLAGS_PATH",
    "FlagDefinition",
    "FlagRoute",
    "bucket",
    "decode_properties",
    "evaluate_all",
    "evaluate_flag",
    "load_flags_file",
    "parse_definitions",
]

FLAGS_PATH: Final = "/api/v1/flags"
PAGE_PATH: Final = "/flags"
MAX_AGE: Final = 30
_KEY_RE: Final = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_CORS: Final[Mapping[str, str]] = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Idempotency-Key",
}
# Names every JavaScript object inherits (Object.prototype): ``properties[field]`` finds a function there,
# which no JSON value equals (so even a condition without ``value`` does not match them).
_OBJECT_PROTO: Final = frozenset(
    {
        "constructor",
        "hasOwnProperty",
        "isPrototypeOf",
        "propertyIsEnumerable",
        "toLocaleString",
        "toString",
        "valueOf",
        "__defineGetter__",
        "__defineSetter__",
        "__lookupGetter__",
        "__lookupSetter__",
        "__proto__",
    }
)

FlagValue = Union[bool, str]


class _Undefined:
    """JavaScript's ``undefined``: a property that is not there (equal only to itself)."""

    def __repr__(self) -> str:
        return "undefined"


class _Opaque:
    """A JavaScript value no JSON value is strictly equal to (an inherited function)."""


UNDEFINED: Final = _Undefined()
_OPAQUE: Final = _Opaque()


@dataclass(frozen=True)
class FlagDefinition:
    """One flag, as a row of the real server's ``feature_flags`` table.

    Attributes:
        key: The flag's key (``^[A-Za-z0-9_-]{1,100}$``).
        enabled: A disabled flag is ``False`` for everyone.
        rollout_percentage: 0-100: the share of users (by hash bucket) that get the flag.
        conditions: ``{"type": "distinct_id_in", "values": [...]}`` or ``{"type": "property_equals",
            "field": ..., "value": ...}`` dicts; any match turns the flag on.
        variants: ``{"key": ..., "weight": ...}`` dicts (weights summing to 100) for a multivariate flag.
        name: A display name.
    """

    key: str
    enabled: bool = True
    rollout_percentage: float = 100
    conditions: tuple[Mapping[str, Any], ...] = ()
    variants: tuple[Mapping[str, Any], ...] = ()
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        """The definition as a JSON object (the file format)."""
        return {
            "key": self.key,
            "name": self.name or self.key,
            "enabled": self.enabled,
            "rollout_percentage": self.rollout_percentage,
            "conditions": [dict(c) for c in self.conditions],
            "variants": [dict(v) for v in self.variants],
        }


def bucket(flag_key: str, distinct_id: str) -> float:
    """The deterministic 0.00-99.99 bucket of ``(flag_key, distinct_id)`` (``bucketFor`` of the server)."""
    digest = hashlib.sha256(f"{flag_key}:{distinct_id}".encode("utf-8", "surrogatepass")).digest()
    return (int.from_bytes(digest[:4], "big") % 10000) / 100


def _js_get(container: Any, field_name: Any) -> Any:
    """``container?.[field]`` as JavaScript reads it, for the values ``JSON.parse`` makes."""
    if container is None:
        return UNDEFINED
    if isinstance(field_name, bool) or not isinstance(field_name, (str, int, float)):
        return UNDEFINED  # String([...]) / String({...}) keys: not worth porting
    name = field_name if isinstance(field_name, str) else _js_number_str(field_name)
    if isinstance(container, dict):
        if name in container:
            return container[name]
        return _OPAQUE if name in _OBJECT_PROTO else UNDEFINED
    if isinstance(container, (list, str)):
        if name == "length":
            return len(container) if isinstance(container, list) else len(container.encode("utf-16-le")) // 2
        if name.isdigit() and (name == "0" or not name.startswith("0")) and isinstance(container, list):
            index = int(name)
            return container[index] if index < len(container) else UNDEFINED
        return _OPAQUE if name in _OBJECT_PROTO else UNDEFINED
    return _OPAQUE if name in _OBJECT_PROTO else UNDEFINED


def _js_number_str(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value) and abs(value) < 1e21):
        return str(int(value))
    return repr(value)


def _js_truthy(value: Any) -> bool:
    if value is None or value is UNDEFINED or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0 and value == value
    if isinstance(value, str):
        return value != ""
    return True


def strict_equal(a: Any, b: Any) -> bool:
    """JavaScript's ``a === b`` for values from ``JSON.parse`` (objects and arrays are never equal)."""
    if a is UNDEFINED or b is UNDEFINED:
        return a is b
    if a is _OPAQUE or b is _OPAQUE:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return _as_double(a) == _as_double(b)
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def _as_double(value: float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _matches(condition: Any, distinct_id: str, properties: Any) -> bool:
    if not isinstance(condition, Mapping):
        raise TypeError("a condition must be an object")  # the server throws reading .type of a non-object
    kind = condition.get("type", UNDEFINED)
    values = condition.get("values", UNDEFINED)
    if kind == "distinct_id_in" and isinstance(values, list):
        return any(isinstance(v, str) and v == distinct_id for v in values)
    field_name = condition.get("field", UNDEFINED)
    if kind == "property_equals" and _js_truthy(field_name):
        return strict_equal(_js_get(properties, field_name), condition.get("value", UNDEFINED))
    return False


def _pick_variant(variants: Sequence[Any], flag_key: str, distinct_id: str) -> Any:
    if not variants:
        return None
    point = bucket(f"{flag_key}:variant", distinct_id)
    cumulative = 0.0
    for variant in variants:
        cumulative += float(variant.get("weight", math.nan)) if isinstance(variant, Mapping) else math.nan
        if point < cumulative:
            return variant.get("key") if isinstance(variant, Mapping) else None
    last = variants[-1]
    return last.get("key") if isinstance(last, Mapping) else None


def evaluate_flag(flag: FlagDefinition, distinct_id: str, properties: Any = None) -> tuple[FlagValue, str]:
    """Evaluate one flag for a user, as the server does.

    Args:
        flag: The definition.
        distinct_id: The user (``""`` when the request had none).
        properties: What ``JSON.parse`` gave for the ``properties`` parameter (``{}`` when absent).

    Returns:
        ``(value, reason)``: the value (``False``, ``True`` or a variant key) and ``"disabled"``,
        ``"condition_match"``, ``"rollout"`` or ``"rollout_excluded"``.

    Raises:
        TypeError: For a malformed definition (the route then answers ``False`` for that flag, as the
            server does).
    """
    if not flag.enabled:
        return False, "disabled"
    variants = list(flag.variants)
    if any(_matches(c, distinct_id, properties) for c in flag.conditions):
        variant = _pick_variant(variants, flag.key, distinct_id) if variants else None
        return (True if variant is None else variant), "condition_match"
    if bucket(flag.key, distinct_id) < flag.rollout_percentage:
        variant = _pick_variant(variants, flag.key, distinct_id) if variants else None
        return (True if variant is None else variant), "rollout"
    return False, "rollout_excluded"


def evaluate_all(
    flags: Iterable[FlagDefinition], distinct_id: str, properties: Any = None
) -> dict[str, FlagValue]:
    """Every flag's value for a user (a malformed flag is ``False``, the others unaffected)."""
    out: dict[str, FlagValue] = {}
    for flag in flags:
        try:
            out[flag.key] = evaluate_flag(flag, distinct_id, {} if properties is None else properties)[0]
        except Exception:
            out[flag.key] = False
    return out


_B64_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")


def decode_properties(param: str | None) -> Any:
    """The ``properties`` query parameter as the server reads it: ``{}`` when absent or undecodable.

    Node's ``Buffer.from(s, "base64")`` takes both alphabets, skips characters outside them (a ``+``
    turned into a space by query parsing is skipped, corrupting the value) and stops at ``=``; then
    ``JSON.parse`` (no ``NaN``/``Infinity``).
    """
    if not param:
        return {}
    text = "".join(c for c in param.partition("=")[0] if c in _B64_CHARS)
    text = text.replace("-", "+").replace("_", "/")
    text = text[: len(text) - (len(text) % 4 == 1)]  # a lone trailing character carries no full byte
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4))
        return json.loads(raw.decode("utf-8", "replace"), parse_constant=_reject_constant)
    except (ValueError, binascii.Error, RecursionError):
        return {}


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


# -- definitions -------------------------------------------------------------------------------------------


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a number, not {value!r}")
    return value


def parse_definition(obj: Any) -> FlagDefinition:
    """Check one flag definition (a JSON object; see the module docstring).

    Raises:
        ValueError: For anything the real dashboard would not store.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"a flag definition must be an object, not {obj!r}")
    key = obj.get("key")
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"flag key must match ^[A-Za-z0-9_-]{{1,100}}$, not {key!r}")
    enabled = obj.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError(f"{key}: enabled must be true or false")
    rollout = _number(obj.get("rollout_percentage", obj.get("rolloutPercentage", 100)), f"{key}: rollout")
    if not 0 <= rollout <= 100 or rollout != int(rollout):
        raise ValueError(f"{key}: rollout_percentage must be an integer 0-100, not {rollout!r}")
    conditions = obj.get("conditions") or []
    if not isinstance(conditions, list):
        raise ValueError(f"{key}: conditions must be a list")
    for condition in conditions:
        if not isinstance(condition, Mapping) or not isinstance(condition.get("type"), str):
            raise ValueError(f"{key}: each condition must be an object with a type: {condition!r}")
        if condition["type"] == "distinct_id_in" and not isinstance(condition.get("values"), list):
            raise ValueError(f"{key}: a distinct_id_in condition needs a values list")
        if condition["type"] == "property_equals" and not isinstance(condition.get("field"), str):
            raise ValueError(f"{key}: a property_equals condition needs a field")
    variants = obj.get("variants") or []
    if not isinstance(variants, list):
        raise ValueError(f"{key}: variants must be a list")
    for variant in variants:
        if not isinstance(variant, Mapping) or not isinstance(variant.get("key"), str) or not variant["key"]:
            raise ValueError(f"{key}: each variant needs a non-empty key: {variant!r}")
        _number(variant.get("weight"), f"{key}: variant {variant['key']!r} weight")
    name = obj.get("name")
    return FlagDefinition(
        key=key,
        enabled=enabled,
        rollout_percentage=int(rollout),
        conditions=tuple(dict(c) for c in conditions),
        variants=tuple(dict(v) for v in variants),
        name=name if isinstance(name, str) else "",
    )


def parse_definitions(data: Any) -> list[FlagDefinition]:
    """Definitions from a JSON list, or an object with a ``flags`` list.

    Raises:
        ValueError: For a malformed definition or a repeated key.
    """
    if isinstance(data, Mapping) and "flags" in data:
        data = data["flags"]
    if not isinstance(data, list):
        raise ValueError('flag definitions must be a JSON list (or {"flags": [...]})')
    out: list[FlagDefinition] = []
    seen: set[str] = set()
    for obj in data:
        flag = parse_definition(obj)
        if flag.key in seen:
            raise ValueError(f"flag {flag.key!r} is defined twice")
        seen.add(flag.key)
        out.append(flag)
    return out


def load_flags_file(path: str) -> list[FlagDefinition]:
    """Read definitions from a JSON file.

    Raises:
        OSError: When the file can't be read.
        ValueError: When it is not valid JSON or holds a malformed definition.
    """
    with open(path, encoding="utf-8") as f:
        return parse_definitions(json.load(f))


def save_flags_file(path: str, flags: Iterable[FlagDefinition]) -> None:
    """Write definitions to a JSON file (atomically: a temporary file renamed over it)."""
    text = json.dumps([f.to_json() for f in flags], indent=2, ensure_ascii=False) + "\n"
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".flags-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the route ---------------------------------------------------------------------------------------------


@dataclass
class FlagRoute:
    """``GET /api/v1/flags`` on a :class:`~serla.devtools.server.SerlaServer`, with its definitions.

    Created by the server itself (``server.flags``). Thread-safe.

    Attributes:
        payment_required_keys: API keys answered 402, as the real server answers a Free-plan project.
        path: A JSON file the definitions are read from (again whenever it changes) and that
            :meth:`define`/:meth:`remove` write back to; ``None`` keeps them in memory.
    """

    server: SerlaServer
    payment_required_keys: set[str] = field(default_factory=set)
    path: str | None = None
    _flags: dict[str, FlagDefinition] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _mtime: float | None = None
    _token: str = field(default_factory=lambda: secrets.token_urlsafe(16))

    # The server's routing table (serla.devtools.server.ROUTES) sends GET /api/v1/flags to handle() and
    # answers OPTIONS (204) and other methods (405) itself.

    # -- definitions ---------------------------------------------------------------------------------

    def define(self, key: str, **options: Any) -> FlagDefinition:
        """Add or replace a flag: ``define("new-checkout", rollout_percentage=50, variants=[...])``.

        Args:
            key: The flag's key.
            **options: ``enabled``, ``rollout_percentage``, ``conditions``, ``variants``, ``name``.

        Returns:
            The checked definition.

        Raises:
            ValueError: For a malformed definition.
        """
        flag = parse_definition({"key": key, **options})
        with self._lock:
            self._reload()
            self._flags[key] = flag
            self._save()
        return flag

    def set_definitions(self, flags: Iterable[FlagDefinition | Mapping[str, Any]]) -> None:
        """Replace every definition (``FlagDefinition`` objects or JSON-like dicts)."""
        checked = [f if isinstance(f, FlagDefinition) else parse_definition(f) for f in flags]
        with self._lock:
            self._flags = {f.key: f for f in checked}
            self._save()

    def remove(self, key: str) -> bool:
        """Delete a flag; False if there was none."""
        with self._lock:
            self._reload()
            found = self._flags.pop(key, None) is not None
            self._save()
        return found

    def definitions(self) -> list[FlagDefinition]:
        """The current definitions, in the order they were defined."""
        with self._lock:
            self._reload()
            return list(self._flags.values())

    def load(self, path: str, *, missing_ok: bool = False) -> list[FlagDefinition]:
        """Use ``path`` (a JSON definitions file) from now on; read it now.

        Args:
            path: The file.
            missing_ok: Start with no flags when the file does not exist (the first save creates it).

        Raises:
            OSError, ValueError: When it can't be read or is malformed.
        """
        flags = [] if missing_ok and not os.path.exists(path) else load_flags_file(path)
        with self._lock:
            self.path = path
            self._flags = {f.key: f for f in flags}
            self._mtime = _mtime(path)
        return flags

    def evaluate(self, distinct_id: str, properties: Any = None) -> dict[str, FlagValue]:
        """What ``GET /api/v1/flags`` answers for this user and these (decoded) properties."""
        return evaluate_all(self.definitions(), distinct_id, properties)

    def _reload(self) -> None:
        """Re-read the file if it changed since (the caller holds the lock); keep the last good set."""
        if self.path is None:
            return
        mtime = _mtime(self.path)
        if mtime is None or mtime == self._mtime:
            return
        try:
            self._flags = {f.key: f for f in load_flags_file(self.path)}
        except (OSError, ValueError) as exc:
            self.server._emit_log(f"flags: cannot read {self.path}: {exc}; keeping the previous flags")
        self._mtime = mtime

    def _save(self) -> None:
        if self.path is not None:
            save_flags_file(self.path, self._flags.values())
            self._mtime = _mtime(self.path)

    # -- HTTP ----------------------------------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> Response:
        """Answer ``GET /api/v1/flags`` like the real route: auth, plan, rate limit, evaluation."""
        from serla.devtools.server import Response

        server = self.server
        caller = server.authenticate(request, cors=_CORS)  # the header only, like the real route
        if isinstance(caller, Response):
            return caller
        if caller.key in self.payment_required_keys:
            return _json(402, {"error": "Feature flags require the Hobby plan or above"})
        refused = server.check_limits(caller, bucket="flags", cors=_CORS)
        if refused is not None:
            return refused
        query = parse_qs(request.query, keep_blank_values=True, errors="replace")
        distinct_id = (query.get("distinct_id") or [""])[0]
        properties = decode_properties((query.get("properties") or [""])[0])
        flags = self.evaluate(distinct_id, properties)
        return _json(
            200, {"flags": flags}, {"Cache-Control": f"private, max-age={MAX_AGE}", "Vary": "Authorization"}
        )

    # -- the serla dev page --------------------------------------------------------------------------

    def install_page(self, guard: Any) -> None:
        """Serve the definitions form at ``/flags`` (for ``serla dev``; ``guard`` wraps its routes)."""
        self.server.add_route("GET", PAGE_PATH, guard(self._page))
        self.server.add_route("POST", PAGE_PATH, guard(self._form))

    def _page(self, request: RecordedRequest, message: str = "") -> Response:
        from serla.devtools.server import Response

        rows = []
        for flag in self.definitions():
            variants = ", ".join(f"{v.get('key')} {v.get('weight')}" for v in flag.variants) or "boolean"
            conditions = (
                html.escape(json.dumps([dict(c) for c in flag.conditions])) if flag.conditions else ""
            )
            rows.append(
                f"<tr><td><code>{html.escape(flag.key)}</code></td><td>{'on' if flag.enabled else 'off'}</td>"
                f"<td>{flag.rollout_percentage}%</td><td>{html.escape(variants)}</td><td><code>{conditions}</code></td>"
                f'<td><form method="post" action="{PAGE_PATH}">'
                f'<input type="hidden" name="token" value="{self._token}">'
                f'<input type="hidden" name="action" value="delete"><input type="hidden" name="key" '
                f'value="{html.escape(flag.key)}"><button>delete</button></form></td></tr>'
            )
        where = (
            f"saved to {html.escape(self.path)}"
            if self.path
            else "kept in memory (serla dev --flags FILE saves them)"
        )
        body = _PAGE.format(
            rows="\n".join(rows) or '<tr><td colspan="6">no flags yet</td></tr>',
            token=self._token,
            where=where,
            message=f'<p class="msg">{html.escape(message)}</p>' if message else "",
            action=PAGE_PATH,
        )
        return Response(
            200,
            body.encode("utf-8"),
            {
                "Content-Type": "text/html; charset=utf-8",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    def _form(self, request: RecordedRequest) -> Response:
        from serla.devtools.server import Response

        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        if not secrets.compare_digest(form.get("token", ""), self._token):
            return Response(
                403, b"stale or missing form token: reload /flags\n", {"Content-Type": "text/plain"}
            )
        try:
            if form.get("action") == "delete":
                self.remove(form.get("key", ""))
            else:
                self.define(
                    form.get("key", "").strip(),
                    enabled=form.get("enabled") == "on",
                    rollout_percentage=int(form.get("rollout_percentage") or "100"),
                    conditions=json.loads(form.get("conditions") or "[]"),
                    variants=json.loads(form.get("variants") or "[]"),
                )
        except ValueError as exc:
            response = self._page(request, f"Not saved: {exc}")
            return Response(400, response.body, response.headers)
        return Response(303, b"", {"Location": PAGE_PATH})


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime_ns / 1e9
    except OSError:
        return None


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    from serla.devtools.server import Response

    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(status, body, {"Content-Type": "application/json", **_CORS, **(headers or {})})


_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Serla dev: feature flags</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3em .8em; text-align: left; }}
label {{ display: block; margin: .4em 0; }}
input[type=text], textarea {{ width: 40em; font: 13px monospace; }}
.msg {{ color: #a00; }}
</style></head><body>
<p><a href="/">&larr; events</a></p>
<h1>Feature flags</h1>
<p>Answered at <code>GET /api/v1/flags</code> with the real server's evaluation; {where}.</p>
{message}
<table><tr><th>key</th><th>state</th><th>rollout</th><th>variants</th><th>conditions</th><th></th></tr>
{rows}
</table>
<h2>Add or replace a flag</h2>
<form method="post" action="{action}">
<input type="hidden" name="token" value="{token}">
<label>key <input type="text" name="key" required pattern="[A-Za-z0-9_-]{{1,100}}"></label>
<label><input type="checkbox" name="enabled" checked> enabled</label>
<label>rollout % <input type="number" name="rollout_percentage" min="0" max="100" value="100"></label>
<label>conditions (JSON) <textarea name="conditions" rows="2">[]</textarea></label>
<label>variants (JSON, e.g. [{{"key":"red","weight":50}},{{"key":"blue","weight":50}}])
<textarea name="variants" rows="2">[]</textarea></label>
<button>save</button>
</form>
</body></html>
"""
