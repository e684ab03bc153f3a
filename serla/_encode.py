"""Turning a ``track()`` call into the bytes of one event, exactly as the Serla server takes them.

An event is encoded once, on the caller's thread, when ``track()`` is called. The bytes are the snapshot:
mutating the properties afterwards changes nothing, and the worker only joins ready-made bytes into a
request body. The fast path is one C-accelerated JSON encode; whatever it cannot take exactly (NaN,
NUL characters, lone surrogates, cycles, odd keys, absurd depth, a value whose ``__str__`` raises) falls
back to :func:`sanitize`, which never raises.

Coercions (the documented forms; see the README's table):

========================================  ===============================================================
value                                     becomes
========================================  ===============================================================
``datetime``                              ``"2024-01-15T10:30:00.123Z"`` (UTC; naive values are UTC)
``date`` / ``time``                       ``"2024-01-15"`` / ``"10:30:00"`` (``isoformat()``)
``timedelta``                             seconds, as a float
``Decimal``                               float (non-finite: ``null``)
``float`` NaN / Infinity                  ``null``
``UUID``, ``PathLike``                    ``str``
``Enum``                                  its ``.value``, coerced in turn
``set`` / ``frozenset`` / ``tuple``       list (sets sorted when their items are comparable)
``bytes`` / ``bytearray``                 text, decoded as UTF-8 with U+FFFD for bad bytes
dataclass instance                        dict of its fields
object with ``model_dump()`` (pydantic)   ``model_dump(mode="json")``
object with ``tolist()`` (numpy)          ``tolist()``
other ``Mapping`` / ``Sequence``          dict / list
non-string dict keys                      ``str(key)``
strings                                   U+0000 removed, lone surrogates become U+FFFD
cycles, nesting deeper than 32            the string ``"<cycle>"`` / ``"<max depth>"``
anything else                             ``str(value)`` (``"<unprintable T>"`` if that raises)
========================================  ===============================================================
"""

from __future__ import annotations

import os
import sys
import time

# ``_collections_abc`` is what ``collections.abc`` re-exports; it is loaded at interpreter start, while
# ``collections.abc`` would import the ``collections`` package too.
from _collections_abc import Mapping, Sequence
from _collections_abc import Set as AbstractSet

# ``import serla`` must stay cheap (see tests/test_import.py): no ``typing``, ``json`` (which imports
# ``re``), ``datetime``, ``decimal``, ``enum``, ``uuid`` or ``dataclasses`` at import. The hot path needs
# only the C encoder from ``_json``; the types that are coerced are looked up in ``sys.modules`` when a
# value needs it (a ``Decimal`` cannot exist unless ``decimal`` was imported).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import datetime as _dt
    from typing import Any, Callable, Final, Union

    Timestamp = Union[_dt.datetime, _dt.date, str, int, float, None]

MAX_DEPTH: Final = 32
MAX_SAFE_INTEGER: Final = 2**53 - 1
"""JavaScript's ``Number.MAX_SAFE_INTEGER``: the server reads numbers as doubles, so a larger int would be
stored rounded; it goes out as a decimal string instead, so the stored value is exact."""
"""Containers nested deeper than this are replaced by ``"<max depth>"``."""

MAX_EVENT_BYTES: Final = 1_000_000
"""An event whose JSON is larger than this is dropped: it could never travel in a request."""

MAX_REQUEST_BYTES: Final = 3_000_000
"""A request body never exceeds this: well under the hosted platform's 4.5 MB cap."""

MIN_YEAR: Final = 1970
MAX_YEAR: Final = 2100


def _fmt_utc(value: _dt.datetime) -> str:
    """Format an aware or naive (= UTC) datetime as the server's strict ``...T...Z`` form."""
    if value.tzinfo is not None:
        import datetime as dt

        value = value.astimezone(dt.timezone.utc)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond // 1000,
    )


# -- property values -------------------------------------------------------------------------------------

_modules: Final = sys.modules


def _coerce(value: Any) -> Any:
    """Map one value JSON cannot take to one it can (one level only; the encoder recurses).

    The stdlib types are looked up in ``sys.modules``: a value of a module's type can only exist once that
    module is imported, so nothing is imported here.
    """
    dt = _modules.get("datetime")
    if dt is not None:
        if isinstance(value, dt.datetime):
            return _fmt_utc(value)
        if isinstance(value, (dt.date, dt.time)):
            return value.isoformat()
        if isinstance(value, dt.timedelta):
            return value.total_seconds()
    decimal = _modules.get("decimal")
    if decimal is not None and isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else None
    enum = _modules.get("enum")
    if enum is not None and isinstance(value, enum.Enum):
        return value.value
    uuid = _modules.get("uuid")
    if uuid is not None and isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, AbstractSet):
        items = list(value)
        try:  # noqa: SIM105 - contextlib.suppress would import contextlib at ``import serla``
            items.sort()
        except TypeError:  # unorderable items keep their iteration order
            pass
        return items
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    dataclasses = _modules.get("dataclasses")
    if dataclasses is not None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return dump(mode="json")
        except TypeError:
            return dump()
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    return str(value)


def _make_encoder() -> Callable[[Any], str]:
    """The fastest compact, ``allow_nan=False`` encoder this interpreter offers.

    ``JSONEncoder.encode`` builds a new C encoder on every call; building it once halves the cost of a
    small event. It is built without a ``markers`` dict (no shared mutable state between threads, nothing
    left behind by a failed encode): a cycle ends in ``RecursionError`` instead, which sends the value to
    :func:`sanitize` like every other refusal. The C encoder comes from ``_json`` directly: importing the
    ``json`` package would import ``re`` and the decoder, which ``import serla`` doesn't need.
    """
    try:
        import _json

        iterencode = _json.make_encoder(
            None, _coerce, _json.encode_basestring, None, ":", ",", False, False, False
        )
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - no accelerator, or a new signature
        import json

        return json.JSONEncoder(
            ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_coerce
        ).encode
    join = "".join

    def encode(value: Any) -> str:
        return join(iterencode(value, 0))

    return encode


def _make_str_encoder() -> Callable[[str], str]:
    """``json.encoder.encode_basestring``: a str as a JSON string literal (non-ASCII kept)."""
    try:
        import _json

        fn: Callable[[str], str] = _json.encode_basestring
        return fn
    except (ImportError, AttributeError):  # pragma: no cover - only without the _json accelerator
        import json.encoder

        return json.encoder.encode_basestring


_encode: Final[Callable[[Any], str]] = _make_encoder()


def _clean_str(value: str) -> str:
    """Remove U+0000 and replace lone surrogates with U+FFFD (the server's database rejects both)."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Pairs of surrogates that came in as separate code points join up; lone ones become U+FFFD.
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def sanitize(value: Any, _depth: int = 0, _seen: frozenset[int] = frozenset()) -> Any:
    """Return a JSON-safe copy of ``value``; never raises.

    This is the slow path of :func:`encode_event`, taken only when the fast encoder refuses a value.

    Args:
        value: Any Python value.

    Returns:
        A structure of ``dict``/``list``/``str``/``int``/``float``/``bool``/``None`` only, with finite
        floats, clean strings, string keys, no cycles and at most ``MAX_DEPTH`` levels.
    """
    try:
        if value is None or value is True or value is False:
            return value
        if isinstance(value, str):
            return _clean_str(str(value))
        if isinstance(value, int):
            value = int(value)
            if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                return value
            try:  # beyond what a double holds exactly: a decimal string keeps every digit
                return value.__repr__()
            except ValueError:  # past the int->str digit limit (sys.set_int_max_str_digits)
                return None  # no JSON number or string can be written for it: like a non-finite float
        if isinstance(value, float):
            return float(value) if _isfinite(value) else None
        if _depth >= MAX_DEPTH:
            return "<max depth>"
        if isinstance(value, (dict, list, tuple)):
            if id(value) in _seen:
                return "<cycle>"
            seen = _seen | {id(value)}
            if isinstance(value, dict):
                out: dict[str, Any] = {}
                for k, v in list(value.items()):
                    key = _clean_str(k if isinstance(k, str) else _key_str(k))
                    out[key] = sanitize(v, _depth + 1, seen)
                return out
            return [sanitize(v, _depth + 1, seen) for v in list(value)]
        coerced = _coerce(value)
        if coerced is value:  # pragma: no cover - _coerce always changes the type or returns str
            return _clean_str(str(value))
        return sanitize(coerced, _depth + 1, _seen | {id(value)})
    except Exception:  # a hostile __str__, __iter__ or property: never let it escape
        return _unprintable(value)


def _isfinite(value: float) -> bool:
    """``math.isfinite`` without importing ``math``: inf - inf and NaN - NaN are NaN."""
    return value - value == 0.0


def _key_str(key: Any) -> str:
    if key is None or isinstance(key, (bool, int, float)):
        import json  # the slow path only: a non-string key of the C encoder's refused kinds

        return json.dumps(key) if key is not None else "null"
    try:
        return str(key)
    except Exception:
        return _unprintable(key)


def _unprintable(value: Any) -> str:
    try:
        return f"<unprintable {type(value).__name__}>"
    except Exception:  # pragma: no cover - type names always format
        return "<unprintable>"


_long_digits: Callable[[str], Any] | None = None  # compiled on first use: ``re`` is not imported eagerly


def _fast_ok(text: str) -> bool:
    """Whether the fast encoder's ``text`` is what :func:`sanitize` would make of the same value.

    Three cheap checks in C: no escaped NUL, at most ``MAX_DEPTH`` brackets (so no deeper nesting), and
    no run of 16 digits (so no int beyond ``MAX_SAFE_INTEGER``). A text that fails one (a string full of
    braces, a 16-digit id) only takes the slow path, which gives the same JSON for such values.
    """
    global _long_digits
    if "\\u0000" in text or text.count("{") + text.count("[") > MAX_DEPTH:
        return False
    if _long_digits is None:
        import re

        _long_digits = re.compile(r"\d{16}").search
    return _long_digits(text) is None


def encode(value: Any) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON the server accepts; never raises.

    Args:
        value: Usually the event or identify body as a dict.

    Returns:
        The JSON bytes.
    """
    try:
        text = _encode(value)
        if _fast_ok(text):
            return text.encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate
    except Exception:
        pass
    return _encode(sanitize(value)).encode("utf-8")


_encode_str: Final[Callable[[str], str]] = _make_str_encoder()


def encode_event(name: str, distinct_id: str, timestamp: str, properties: Any) -> bytes:
    """Encode one event object; the hot path of ``track()``. Never raises.

    The envelope is written directly (``timestamp`` is trusted: it comes from :func:`format_timestamp`
    or :class:`UtcNow`); only ``properties`` goes through the JSON encoder. Anything odd takes the same
    slow path as :func:`encode`.
    """
    try:
        text = '{"name":%s,"distinctId":%s,"timestamp":"%s","properties":%s}' % (
            _encode_str(name),
            _encode_str(distinct_id),
            timestamp,
            _encode(properties),
        )
        if _fast_ok(text):
            return text.encode("utf-8")
    except Exception:
        pass
    return encode({"name": name, "distinctId": distinct_id, "timestamp": timestamp, "properties": properties})


# -- timestamps ------------------------------------------------------------------------------------------

_ISO_PATTERN: Final = (
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)
_iso_fullmatch: Callable[[str], Any] | None = None  # compiled on first use: ``re`` is not imported eagerly


def parse_iso(text: str) -> _dt.datetime | None:
    """Parse an ISO-8601 string into an aware UTC datetime, or return ``None``.

    Accepted: a date, optionally with ``T`` (or a space) and a time with optional seconds and any number
    of fractional digits, and an optional zone (``Z``, ``+HH:MM``, ``+HHMM``). A string without a zone is
    UTC, like a naive datetime. Leading and trailing white space is ignored.
    """
    global _iso_fullmatch
    import datetime as dt

    fullmatch = _iso_fullmatch
    if fullmatch is None:
        import re

        fullmatch = _iso_fullmatch = re.compile(_ISO_PATTERN).fullmatch
    m = fullmatch(text.strip())
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, _zulu, sign, oh, om = m.groups()
    try:
        micro = int((frac or "0")[:6].ljust(6, "0"))
        value = dt.datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0), micro)
        if sign:
            offset = dt.timedelta(hours=int(oh), minutes=int(om))
            value = value - offset if sign == "+" else value + offset
    except (ValueError, OverflowError):
        return None
    return value.replace(tzinfo=dt.timezone.utc)


_EPOCH_LIMIT: Final = 4133980800  # 2101-01-01T00:00:00Z: epoch numbers below it take the fast path
_epoch_second: tuple[int, str] = (-1, "")  # the last formatted second, replaced whole (thread-safe)


def format_timestamp(value: Timestamp) -> str | None:
    """Normalise a user-supplied timestamp to the server's form, or return ``None`` if it is unusable.

    Args:
        value: A ``datetime`` (naive = UTC, aware = converted), a ``date`` (midnight UTC), an ISO-8601
            string (see :func:`parse_iso`) or a number of seconds since the Unix epoch.

    Returns:
        ``"YYYY-MM-DDTHH:MM:SS.mmmZ"``, or ``None`` when the value cannot be read or lies outside
        1970-2100 (years the server's database may refuse).
    """
    global _epoch_second
    kind = type(value)
    if (kind is float or kind is int) and 0 <= value < _EPOCH_LIMIT:  # type: ignore[operator]
        # Rounded to the microsecond first, like ``timedelta(seconds=value)`` on the general path.
        sec, frac = divmod(round(value * 1_000_000) // 1000, 1000)  # type: ignore[operator,arg-type]
        cached = _epoch_second
        if cached[0] != sec:
            cached = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
            _epoch_second = cached
        return "%s.%03dZ" % (cached[1], frac)
    # Only here (a timestamp that is not a plain epoch number) is ``datetime`` needed; a datetime or date
    # value means the module is already loaded, so this import is a dictionary lookup.
    import datetime as dt

    try:
        if isinstance(value, dt.datetime):
            moment = value if value.tzinfo is None else value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        elif isinstance(value, dt.date):
            moment = dt.datetime(value.year, value.month, value.day)
        elif isinstance(value, str):
            parsed = parse_iso(value)
            if parsed is None:
                return None
            moment = parsed.replace(tzinfo=None)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not _isfinite(value):
                return None
            epoch = dt.datetime(1970, 1, 1)
            moment = epoch + dt.timedelta(seconds=value)
        else:
            return None
    except (ValueError, OverflowError, OSError):
        return None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        return None
    return _fmt_utc(moment)


def utc_now(clock: Callable[[], float] = time.time) -> Callable[[], str]:
    """Return a fast "now" formatter: ``f() -> "YYYY-MM-DDTHH:MM:SS.mmmZ"``.

    It caches the text of the last millisecond and of the last second, so the common case is a clock
    read and a comparison.

    Args:
        clock: Wall clock in seconds since the epoch (``time.time``), injectable for tests.
    """
    last_ms: tuple[int, str] = (-1, "")  # replaced whole, never mutated: safe to read from any thread
    last_sec: tuple[int, str] = (-1, "")
    strftime = time.strftime
    gmtime = time.gmtime

    def now() -> str:
        nonlocal last_ms, last_sec
        ms = int(clock() * 1000)
        cached = last_ms
        if cached[0] == ms:
            return cached[1]
        sec, frac = divmod(ms, 1000)
        sec_cached = last_sec
        if sec_cached[0] == sec:
            prefix = sec_cached[1]
        else:
            prefix = strftime("%Y-%m-%dT%H:%M:%S", gmtime(sec))
            last_sec = (sec, prefix)
        text = "%s.%03dZ" % (prefix, frac)
        last_ms = (ms, text)
        return text

    return now
