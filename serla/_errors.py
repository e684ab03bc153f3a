"""Error reports for ``POST /api/v1/errors``, built so the real server groups Python exceptions well.

The server groups occurrences by a fingerprint of ``lower(type) | file | function`` of the first stack
line that parses as a V8 frame (``at fn (file:line:col)``) or a Firefox one (``fn@file:line:col``); see
``SERLA_API.md`` section 7.1 and ``serla.devtools.errors`` (a port of the server's function). A Python
traceback parses as neither, so this module writes the stack in V8 form, innermost frame first:

.. code-block:: text

    myapp.billing.CardDeclined: card 4242 declined
        at charge_card (stripe/api.py:88:0) [library]
        at Checkout.pay (myapp/billing.py:42:9)
        at checkout (myapp/views.py:17:5)

Choices (documented in ``docs/errors.md``):

* **The fingerprint frame** is the innermost *in-app* frame: it is the first line written as a V8 frame.
  Library frames end with a ``[library]`` tag, so they never parse as a frame (both of the server's
  patterns need the line to end with ``:line:col`` or ``:line:col)``; tests check this against the ported
  function). When no frame is in-app, the innermost frame is written as a V8 frame instead, so the
  report still groups by code location rather than by message.
* **In-app** is decided per frame: the module name matches ``in_app_include`` (a dotted prefix) -> in-app;
  matches ``in_app_exclude`` -> library; otherwise the file is a library file when it lies in a
  ``site-packages`` or ``dist-packages`` directory, in the standard library, is frozen
  (``<frozen ...>``) or belongs to serla itself, and in-app otherwise.
* **Paths** are relative, so a group is the same from host to host and from checkout to checkout:
  relative to ``project_root`` when the file lies under it, else to the longest ``sys.path`` entry
  holding it (the import root: ``myapp/billing.py``, ``requests/sessions.py``, ``json/decoder.py``),
  else to the working directory the client saw when it was created; else the absolute path.
* **The type** is module-qualified (``myapp.billing.CardDeclined``; builtins are bare: ``ValueError``).
* **The function** is the code object's name (``pay``, not 3.11's qualified ``Checkout.pay``), as
  tracebacks show it: the same on every Python version and from a traceback's text.
* **Chained exceptions** (``__cause__``, ``__context__``), ``ExceptionGroup`` members and ``__notes__``
  are written after the frames, so they never decide the fingerprint. A ``SyntaxError`` gets a first
  frame at its own file and line (function ``<module>``).
* **Local variables are never read.** Only code objects, line numbers and the module's ``__name__``.
* **Limits**: every field is cut to the server's maxima in UTF-16 code units (as zod counts); the stack
  is cut from its end (outermost frames and chained exceptions go first). ``level`` is mapped
  (``critical``/``fatal`` -> ``error``, ``debug`` -> ``info``, logging's numbers too).
* **Rate limit**: at most :data:`ERRORS_PER_MINUTE` reports per fingerprint per minute leave the process
  (fixed one-minute windows per fingerprint); the rest are counted (``stats()["errors"]``).
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from itertools import islice

from serla._encode import _clean_str

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from types import FrameType, TracebackType
    from typing import Any, Callable, Final, Optional

    BeforeSend = Callable[[dict[str, Any], Optional[BaseException]], Optional[dict[str, Any]]]

ERRORS_PATH: Final = "/api/v1/errors"

ERRORS_PER_MINUTE: Final = 10
"""At most this many reports per fingerprint leave the process per minute; the rest are counted."""

MAX_MESSAGE: Final = 2000
MAX_TYPE: Final = 100
MAX_STACK: Final = 20000
MAX_DISTINCT_ID: Final = 200
MAX_SESSION_ID: Final = 200
MAX_RELEASE: Final = 100
MAX_ENVIRONMENT: Final = 50
MAX_URL: Final = 2048
MAX_USER_AGENT: Final = 500
MAX_BODY_BYTES: Final = 1_000_000
"""A report whose JSON is larger than this loses its ``metadata`` (replaced by a note)."""

_STRING_LIMITS: Final = {
    "message": MAX_MESSAGE,
    "type": MAX_TYPE,
    "stack": MAX_STACK,
    "url": MAX_URL,
    "userAgent": MAX_USER_AGENT,
    "distinctId": MAX_DISTINCT_ID,
    "sessionId": MAX_SESSION_ID,
    "release": MAX_RELEASE,
    "environment": MAX_ENVIRONMENT,
}
_WIRE_FIELDS: Final = frozenset({*_STRING_LIMITS, "level", "metadata", "timestamp"})

LEVELS: Final = {
    "error": "error",
    "exception": "error",
    "critical": "error",
    "fatal": "error",
    "warning": "warning",
    "warn": "warning",
    "info": "info",
    "debug": "info",
    "notset": "info",
}
"""Accepted ``level`` names (case-insensitive) and what is sent; numbers follow ``logging``'s levels."""

LIBRARY_TAG: Final = "[library]"
MAX_FRAMES: Final = 200  # frames written per exception (innermost first); more are summarised
MAX_CHAIN: Final = 5  # chained exceptions followed
MAX_GROUP_MEMBERS: Final = 10  # ExceptionGroup members shown per group
_REPEAT_SHOWN: Final = 3  # identical consecutive frames (recursion) kept before summarising
_SAME_FILE_CACHE: Final = 4096

# The server's frame patterns (lib/errors/fingerprint.ts), used to keep text that is not a frame from
# being read as one. Compiled on first use: ``re`` is not imported by ``import serla``.
_V8: Any = None
_MOZ: Any = None


def _patterns() -> tuple[Any, Any]:
    global _V8, _MOZ
    if _V8 is None:
        import re

        _MOZ = re.compile(r"^(.+?)@(.+?):(\d+):(\d+)$")
        _V8 = re.compile(r"^at\s+(?:(.+?)\s+\()?(.+?):(\d+):(\d+)\)?$")
    return _V8, _MOZ


def parses_as_frame(line: str) -> bool:
    """Whether the server would read this stack line as a frame (after trimming it, as the server does).

    Args:
        line: One line of a stack.
    """
    text = line.strip()
    if not text.startswith("at ") and "@" not in text:
        return False
    v8, moz = _patterns()
    return bool(v8.match(text) or moz.match(text))


def _safe_text(line: str) -> str:
    """``line``, changed just enough that the server can't read it as a frame (it is text, not a frame)."""
    if parses_as_frame(line):
        return line + " (text)"
    return line


# -- strings ------------------------------------------------------------------------------------------------


def _clean(value: str) -> str:
    """Remove U+0000 and replace lone surrogates (the server's database rejects both)."""
    if value.isascii() and "\x00" not in value:
        return value
    return _clean_str(value)


def utf16_len(value: str) -> int:
    """The length of ``value`` in UTF-16 code units (JavaScript's ``.length``, what zod counts)."""
    if value.isascii():
        return len(value)
    return len(value) + sum(1 for c in value if ord(c) > 0xFFFF)


def truncate(value: str, limit: int, *, keep_end: bool = False, marker: str = "\u2026") -> str:
    """Cut ``value`` to at most ``limit`` UTF-16 code units, never splitting a surrogate pair.

    Args:
        value: A clean string (no lone surrogates).
        limit: The maximum in UTF-16 code units.
        keep_end: Keep the end of the string instead of its start (for type names).
        marker: Appended (or prepended, with ``keep_end``) when something was cut; counted in ``limit``.
    """
    if len(value) <= limit and utf16_len(value) <= limit:
        return value
    room = max(0, limit - utf16_len(marker))
    data = value.encode("utf-16-le")
    if keep_end:
        cut = data[len(data) - 2 * room :]
        if cut and 0xDC00 <= int.from_bytes(cut[:2], "little") <= 0xDFFF:
            cut = cut[2:]  # the low half of a pair whose high half was cut
        return marker + cut.decode("utf-16-le")
    cut = data[: 2 * room]
    if cut and 0xD800 <= int.from_bytes(cut[-2:], "little") <= 0xDBFF:
        cut = cut[:-2]  # the high half of a pair whose low half was cut
    return cut.decode("utf-16-le") + marker


def _str(value: Any) -> str:
    try:
        return _clean(str(value))
    except Exception:
        try:
            return f"<unprintable {type(value).__name__}>"
        except Exception:
            return "<unprintable>"


def type_name(exc_type: Any) -> str:
    """The module-qualified name of an exception class (``myapp.billing.CardDeclined``; ``ValueError``)."""
    try:
        qualname = getattr(exc_type, "__qualname__", None) or getattr(exc_type, "__name__", None)
        if not isinstance(qualname, str):
            return _str(exc_type)
        module = getattr(exc_type, "__module__", None)
        if not isinstance(module, str) or module in ("builtins", "exceptions"):
            return qualname
        return f"{module}.{qualname}"
    except Exception:
        return "Exception"


def map_level(level: Any) -> str | None:
    """The server's ``level`` for ``level`` (a name or a ``logging`` number), or None if unknown."""
    if isinstance(level, str):
        return LEVELS.get(level.strip().lower())
    if isinstance(level, int) and not isinstance(level, bool):
        if level >= 40:
            return "error"
        return "warning" if level >= 30 else "info"
    return None


# -- frames -------------------------------------------------------------------------------------------------


class Frame:
    """One stack frame, as reported: where, which function, and whether it is the application's code."""

    __slots__ = ("_code", "_colno", "_lasti", "filename", "function", "in_app", "lineno", "module", "path")

    def __init__(
        self,
        filename: str,
        lineno: int,
        function: str,
        module: str | None = None,
        colno: int = 0,
        code: Any = None,
        lasti: int = -1,
    ) -> None:
        self.filename = filename
        self.lineno = lineno
        self._colno = colno
        self._code = code
        self._lasti = lasti
        self.function = function
        self.module = module
        self.in_app = False
        self.path = filename

    @property
    def colno(self) -> int:
        """The 1-based column (Python 3.11+, read when first needed), or 0 when unknown."""
        code = self._code
        if code is not None:
            self._code = None
            self._colno = _column(code, self._lasti)
        return self._colno

    def __repr__(self) -> str:
        return f"<Frame {self.function} {self.path}:{self.lineno} in_app={self.in_app}>"


def _function_name(code: Any) -> str:
    # ``co_name``, not 3.11's ``co_qualname``: the group must be the same on every Python version of a
    # fleet and the same as from a traceback's text (which names ``co_name``).
    name: str = code.co_name
    return name


def _column(code: Any, lasti: int) -> int:
    """The 1-based column of the instruction at ``lasti`` (Python 3.11+), else 0 (unknown)."""
    positions = getattr(code, "co_positions", None)
    if positions is None or lasti < 0:
        return 0
    try:
        pos = next(islice(positions(), lasti // 2, None), None)
    except Exception:
        return 0
    col = pos[2] if pos is not None else None
    return col + 1 if isinstance(col, int) else 0


def _frame_from(frame: FrameType, lineno: int | None, lasti: int) -> Frame:
    code = frame.f_code
    module = frame.f_globals.get("__name__")  # the module's globals, never a local variable
    return Frame(
        code.co_filename,
        lineno if lineno is not None else (frame.f_lineno or 0),
        _function_name(code),
        module if isinstance(module, str) else None,
        0,
        code,
        lasti,
    )


def frames_from_traceback(tb: TracebackType | None) -> list[Frame]:
    """The frames of a traceback, innermost first (at most :data:`MAX_FRAMES` * 2, the middle dropped)."""
    frames: list[Frame] = []
    seen = 0
    while tb is not None and seen < 10000:
        frames.append(_frame_from(tb.tb_frame, tb.tb_lineno, tb.tb_lasti))
        tb = tb.tb_next
        seen += 1
    frames.reverse()
    return frames


_SERLA_DIR: Final = os.path.dirname(os.path.abspath(__file__))


def frames_from_stack(frame: FrameType | None) -> list[Frame]:
    """The calling frames, innermost first, without serla's own (for an exception that was never raised)."""
    frames: list[Frame] = []
    while frame is not None and len(frames) < MAX_FRAMES:
        filename = frame.f_code.co_filename
        if not (filename.startswith(_SERLA_DIR) and filename[len(_SERLA_DIR) : len(_SERLA_DIR) + 1] in "/\\"):
            frames.append(_frame_from(frame, frame.f_lineno, frame.f_lasti))
        frame = frame.f_back
    return frames


_TB_FILE_LINE: Any = None


def frames_from_text(text: str) -> list[Frame]:
    """Parse the frames of a Python traceback's text (the last ``Traceback`` section), innermost first.

    Used for exceptions known only as text, such as OpenTelemetry's ``exception.stacktrace``.
    """
    global _TB_FILE_LINE
    if _TB_FILE_LINE is None:
        import re

        _TB_FILE_LINE = re.compile(r'^\s*File "(.+)", line (\d+), in (.+?)\s*$')
    lines = text.splitlines()
    start = 0
    for i, line in enumerate(lines):
        if line.startswith(("Traceback (most recent call last):", "  + Exception Group Traceback")):
            start = i
    frames: list[Frame] = []
    for line in lines[start:]:
        m = _TB_FILE_LINE.match(line)
        if m is not None:
            frames.append(Frame(m.group(1), int(m.group(2)), m.group(3)))
    frames.reverse()
    return frames


# -- in-app and paths ---------------------------------------------------------------------------------------


def _norm(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


class PathRules:
    """Decides in-app and shown paths for frames. Built once per client, lazily; caches per file name.

    Args:
        in_app_include: Dotted module prefixes that are always in-app (``["myapp"]``).
        in_app_exclude: Dotted module prefixes that are never in-app (``["myapp.vendored"]``).
        project_root: Paths under it are shown relative to it (``None``: see the module's docstring).
        cwd: The working directory to fall back to (the client's at creation).
    """

    def __init__(
        self,
        in_app_include: Sequence[str] = (),
        in_app_exclude: Sequence[str] = (),
        project_root: str | None = None,
        cwd: str | None = None,
    ) -> None:
        self.include = tuple(in_app_include)
        self.exclude = tuple(in_app_exclude)
        self.project_root = _norm(project_root) if project_root else None
        self.cwd = _norm(cwd) if cwd else None
        self._library_dirs: tuple[str, ...] | None = None
        self._roots: tuple[str, ...] = ()
        self._sys_path: list[str] = []
        self._cache: dict[str, tuple[str, bool]] = {}
        self._lock = threading.Lock()

    def _library_roots(self) -> tuple[str, ...]:
        if self._library_dirs is None:
            dirs = {_SERLA_DIR}
            try:
                import sysconfig

                paths = sysconfig.get_paths()
                for key in ("stdlib", "platstdlib"):
                    if paths.get(key):
                        dirs.add(paths[key])
                for var in ("stdlib", "platstdlib"):
                    value = sysconfig.get_path(
                        var, vars={"base": sys.base_prefix, "platbase": sys.base_prefix}
                    )
                    if value:
                        dirs.add(value)
            except Exception:
                pass
            self._library_dirs = tuple(_norm(d) for d in dirs)
        return self._library_dirs

    def _module_rule(self, module: str | None) -> bool | None:
        if module is None:
            return None
        for prefix in self.exclude:
            if module == prefix or module.startswith(prefix + "."):
                return False
        for prefix in self.include:
            if module == prefix or module.startswith(prefix + "."):
                return True
        return None

    def _file_info(self, filename: str) -> tuple[str, bool]:
        """(shown path, in-app by location) for a code file name (cached)."""
        cached = self._cache.get(filename)
        if cached is not None and self._sys_path == sys.path:
            return cached
        with self._lock:
            if self._sys_path != sys.path:
                self._sys_path = list(sys.path)
                roots = {_norm(p or os.curdir) for p in self._sys_path if isinstance(p, str)}
                self._roots = tuple(sorted(roots, key=len, reverse=True))
                self._cache.clear()
            if len(self._cache) > _SAME_FILE_CACHE:
                self._cache.clear()
        info = self._compute(filename)
        self._cache[filename] = info
        return info

    def _compute(self, filename: str) -> tuple[str, bool]:
        if filename.startswith("<"):
            return filename, not filename.startswith("<frozen")
        path = _norm(filename)
        parts = path.replace("\\", "/").split("/")
        library = "site-packages" in parts or "dist-packages" in parts
        if not library:
            for root in self._library_roots():
                if _under(path, root):
                    library = True
                    break
        shown = None
        if self.project_root is not None and _under(path, self.project_root):
            shown = _relative(path, self.project_root)
        if shown is None:
            for root in self._roots:
                if _under(path, root):
                    shown = _relative(path, root)
                    break
        if shown is None and self.cwd is not None and _under(path, self.cwd):
            shown = _relative(path, self.cwd)
        if shown is None:
            shown = path.replace("\\", "/")
        return shown, not library

    def apply(self, frames: Iterable[Frame]) -> None:
        """Set each frame's ``path`` and ``in_app``."""
        for frame in frames:
            shown, in_app = self._file_info(frame.filename)
            frame.path = shown
            by_module = self._module_rule(frame.module)
            frame.in_app = in_app if by_module is None else by_module


def _under(path: str, root: str) -> bool:
    if not path.startswith(root):
        return False
    rest = path[len(root) : len(root) + 1]
    return rest in ("/", "\\") or root.endswith(("/", "\\"))


def _relative(path: str, root: str) -> str:
    rel = path[len(root) :].lstrip("/\\")
    return rel.replace("\\", "/") or os.path.basename(path)


# -- the stack text -----------------------------------------------------------------------------------------


def _frame_line(frame: Frame, as_frame: bool) -> str:
    function = _clean(frame.function) or "<anonymous>"
    # The column is read for the application's frames only (it costs a walk of the code's positions).
    location = f"{_clean(frame.path)}:{frame.lineno}:{frame.colno if frame.in_app or as_frame else 0}"
    if as_frame:
        line = f"    at {function} ({location})"
        if parses_as_frame(line):
            return line
        return f"    at {location}"  # an odd name: the anonymous form still parses
    line = f"    at {function} ({location}) {LIBRARY_TAG}"
    if parses_as_frame(line):  # pragma: no cover - a line ending in the tag can't end like a frame
        line += " (text)"
    return line


def _frame_lines(frames: Sequence[Frame], key_index: int | None) -> list[str]:
    """Lines for frames, innermost first; ``key_index`` is the one frame written as a V8 frame."""
    lines: list[str] = []
    previous: tuple[str, int, str] | None = None
    repeats = 0
    shown = 0
    for i, frame in enumerate(frames):
        ident = (frame.path, frame.lineno, frame.function)
        if ident == previous and i != key_index:
            repeats += 1
            if repeats >= _REPEAT_SHOWN:
                continue
        else:
            if repeats >= _REPEAT_SHOWN:
                lines.append(f"    ... (the frame above repeated {repeats - _REPEAT_SHOWN + 1} more times)")
            repeats = 0
            previous = ident
        if shown >= MAX_FRAMES and i != key_index:
            lines.append(f"    ... ({len(frames) - i} more frames)")
            break
        as_frame = frame.in_app if key_index is None or i >= key_index else False
        if i == key_index:
            as_frame = True
        lines.append(_frame_line(frame, as_frame))
        shown += 1
    if repeats >= _REPEAT_SHOWN:
        lines.append(f"    ... (the frame above repeated {repeats - _REPEAT_SHOWN + 1} more times)")
    return lines


def _header(label: str, exc: BaseException) -> list[str]:
    message = _str(exc)
    head = f"{label}{type_name(type(exc))}"
    text = f"{head}: {message}" if message else head
    lines = [_safe_text(line) for line in truncate(text, MAX_MESSAGE + MAX_TYPE + 2).split("\n")]
    notes = getattr(exc, "__notes__", None)
    if isinstance(notes, (list, tuple)):
        for note in list(notes)[:10]:
            lines.extend(_safe_text(line) for line in truncate(_str(note), 500).split("\n"))
    return lines


def _key_index(frames: Sequence[Frame]) -> int | None:
    for i, frame in enumerate(frames):
        if frame.in_app:
            return i
    return 0 if frames else None


def _grouping_key(
    etype: str, message: str, frames: Sequence[Frame], key_index: int | None
) -> tuple[str, ...]:
    """The report's grouping key: type and key frame's path and function, else type and message."""
    if key_index is not None:
        frame = frames[key_index]
        return (etype.lower(), frame.path, frame.function)
    return (etype.lower(), message[:200])


def _syntax_frame(exc: BaseException) -> Frame | None:
    if not isinstance(exc, SyntaxError):
        return None
    filename = getattr(exc, "filename", None)
    lineno = getattr(exc, "lineno", None)
    if not isinstance(filename, str) or not filename:
        return None
    offset = getattr(exc, "offset", None)
    return Frame(
        filename,
        lineno if isinstance(lineno, int) and lineno > 0 else 0,
        "<module>",
        None,
        offset if isinstance(offset, int) and offset > 0 else 0,
    )


class Report:
    """What :func:`build_report` made: the wire body's fields and the grouping key it was built for."""

    __slots__ = ("fields", "key")

    def __init__(self, fields: dict[str, Any], key: tuple[str, ...]) -> None:
        self.fields = fields
        self.key = key


def _exception_frames(exc: BaseException, rules: PathRules, caller: FrameType | None) -> list[Frame]:
    tb = exc.__traceback__
    if tb is not None:
        frames = frames_from_traceback(tb)
    elif caller is not None:
        frames = frames_from_stack(caller)
    else:
        frames = []
    syntax = _syntax_frame(exc)
    if syntax is not None:
        frames.insert(0, syntax)
    rules.apply(frames)
    return frames


def _chained_lines(exc: BaseException, rules: PathRules, parse_ok: bool) -> list[str]:
    """The text after the primary frames: ExceptionGroup members, then the chain of causes."""
    lines: list[str] = []
    _group_lines(exc, rules, lines, 1, parse_ok)
    seen = {id(exc)}
    current = exc
    for _ in range(MAX_CHAIN):
        cause = current.__cause__
        if cause is not None:
            label = "Caused by (raise ... from): "
        else:
            cause = current.__context__ if not current.__suppress_context__ else None
            label = "While handling: "
        if cause is None or id(cause) in seen:
            break
        seen.add(id(cause))
        frames = _exception_frames(cause, rules, None)
        lines.append("")
        lines.extend(_header(label, cause))
        lines.extend(_frame_lines(frames, None) if parse_ok else _frame_lines_text(frames))
        _group_lines(cause, rules, lines, 1, parse_ok)
        current = cause
    return lines


def _frame_lines_text(frames: Sequence[Frame]) -> list[str]:
    return [_frame_line(f, False) for f in frames[:MAX_FRAMES]]


def _group_lines(exc: BaseException, rules: PathRules, lines: list[str], depth: int, parse_ok: bool) -> None:
    members = getattr(exc, "exceptions", None)
    if depth > 3 or not isinstance(members, (list, tuple)) or not isinstance(exc, BaseException):
        return
    if not hasattr(exc, "split") or not hasattr(exc, "derive"):  # not an ExceptionGroup
        return
    total = len(members)
    for n, member in enumerate(list(members)[:MAX_GROUP_MEMBERS], 1):
        if not isinstance(member, BaseException):
            continue
        frames = _exception_frames(member, rules, None)
        lines.append("")
        lines.extend(_header(f"{'  ' * (depth - 1)}Exception {n} of {total} in the group: ", member))
        lines.extend(_frame_lines(frames, None) if parse_ok else _frame_lines_text(frames))
        _group_lines(member, rules, lines, depth + 1, parse_ok)
    if total > MAX_GROUP_MEMBERS:
        lines.append(f"... and {total - MAX_GROUP_MEMBERS} more exceptions in the group")


def _fit_stack(lines: list[str]) -> str:
    text = "\n".join(lines)
    if utf16_len(text) <= MAX_STACK:
        return text
    note = "\n    ... (cut to the server's 20,000-character limit)"
    room = MAX_STACK - len(note)
    cut = truncate(text, room, marker="")
    newline = cut.rfind("\n")
    if newline > 0:
        cut = cut[:newline]
    return cut + note


def build_report(
    exc: BaseException,
    rules: PathRules,
    *,
    caller: FrameType | None = None,
    allow: Callable[[tuple[str, ...]], bool] | None = None,
) -> Report | None:
    """Build ``message``, ``type`` and ``stack`` for an exception, and its grouping key.

    Args:
        exc: The exception.
        rules: The in-app and path rules.
        caller: The frame to take the stack from when ``exc`` was never raised (no traceback).
        allow: Asked with the grouping key before any text is written (the rate limit); when it says
            False, None is returned.
    """
    frames = _exception_frames(exc, rules, caller)
    key_index = _key_index(frames)
    etype = truncate(type_name(type(exc)), MAX_TYPE, keep_end=True)
    message = truncate(_str(exc).strip() or etype, MAX_MESSAGE)
    key = _grouping_key(etype, message, frames, key_index)
    if allow is not None and not allow(key):
        return None
    lines = _header("", exc)
    lines.extend(_frame_lines(frames, key_index))
    lines.extend(_chained_lines(exc, rules, key_index is not None))
    return Report({"message": message, "type": etype, "stack": _fit_stack(lines)}, key)


def build_report_from_text(
    type_text: str,
    message: str,
    traceback_text: str | None,
    rules: PathRules,
    allow: Callable[[tuple[str, ...]], bool] | None = None,
) -> Report | None:
    """Like :func:`build_report` for an exception known only as text (an OpenTelemetry span event).

    The frames come from the traceback's text (module names unknown: in-app is decided by path only);
    the original text follows the frames.
    """
    etype = truncate(_clean(type_text) or "Exception", MAX_TYPE, keep_end=True)
    message = _clean(message).strip() or etype
    frames = frames_from_text(traceback_text) if traceback_text else []
    rules.apply(frames)
    key_index = _key_index(frames)
    message = truncate(message, MAX_MESSAGE)
    key = _grouping_key(etype, message, frames, key_index)
    if allow is not None and not allow(key):
        return None
    lines = [
        _safe_text(line) for line in truncate(f"{etype}: {message}", MAX_MESSAGE + MAX_TYPE + 2).split("\n")
    ]
    lines.extend(_frame_lines(frames, key_index))
    if traceback_text:
        lines.append("")
        lines.append("Python traceback:")
        lines.extend(_safe_text(line) for line in _clean(traceback_text).rstrip("\n").split("\n"))
    return Report({"message": message, "type": etype, "stack": _fit_stack(lines)}, key)


# -- checks after the hook ----------------------------------------------------------------------------------


def check_fields(report: Any) -> dict[str, Any] | None:
    """The wire fields of a report a ``before_send_error`` hook returned, checked and cut; None if unusable.

    Unknown keys are dropped (the server would drop them silently), strings are cleaned and cut to the
    server's maxima, ``level`` is mapped, ``metadata`` must be a dict, ``message`` must be non-empty.
    """
    if not isinstance(report, dict):
        return None
    out: dict[str, Any] = {}
    for key, value in report.items():
        if key not in _WIRE_FIELDS or value is None:
            continue
        limit = _STRING_LIMITS.get(key)
        if limit is not None:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                continue
            value = _clean(value)
            if key == "type":
                value = truncate(value, limit, keep_end=True)
            elif key == "stack":
                value = _fit_stack(value.split("\n")) if utf16_len(value) > limit else value
            else:
                value = truncate(value, limit)
            if not value and key == "message":
                return None
            out[key] = value
        elif key == "level":
            level = map_level(value)
            out[key] = level if level is not None else "error"
        elif key == "metadata":
            if isinstance(value, dict):
                out[key] = value
        elif key == "timestamp" and isinstance(value, str):
            out[key] = value
    if not out.get("message"):
        return None
    return out


# -- rate limit and counters --------------------------------------------------------------------------------


class RateLimiter:
    """At most ``limit`` reports per key in each fixed one-minute window (per key). Thread-safe.

    Args:
        limit: Reports per key per window.
        clock: Seconds (monotonic), injectable for tests.
        max_keys: Keys remembered at most; when full, expired windows are forgotten first, then all.
    """

    def __init__(self, limit: int, clock: Callable[[], float], max_keys: int = 2048) -> None:
        self.limit = limit
        self._clock = clock
        self._max_keys = max_keys
        self._windows: dict[tuple[str, ...], list[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: tuple[str, ...]) -> bool:
        """Count one report for ``key``; False when the key's window is already full."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now >= window[0] + 60.0:
                if window is None and len(self._windows) >= self._max_keys:
                    self._windows = {k: w for k, w in self._windows.items() if now < w[0] + 60.0}
                    if len(self._windows) >= self._max_keys:
                        self._windows.clear()
                window = [now, 0.0]
                self._windows[key] = window
            if window[1] >= self.limit:
                return False
            window[1] += 1
            return True

    def reinit(self) -> None:
        """A fresh lock and no windows (in a forked child)."""
        self._lock = threading.Lock()
        self._windows = {}


_REPORTED: Final = "__serla_reported__"


def mark_reported(exc: BaseException) -> bool:
    """Mark ``exc`` as seen by serla; False if it already was (so each exception is reported once)."""
    try:
        if getattr(exc, _REPORTED, False):
            return False
        setattr(exc, _REPORTED, True)
    except Exception:  # an exception class that refuses attributes: report it, unmarked
        pass
    return True


class ErrorReporter:
    """A client's error reporting: the options, the path rules, the rate limiter and the counters.

    Created by the client on first use. Every method is called on the application's thread.
    """

    def __init__(
        self,
        *,
        release: str | None,
        environment: str | None,
        before_send: BeforeSend | None,
        in_app_include: Sequence[str],
        in_app_exclude: Sequence[str],
        project_root: str | None,
        clock: Callable[[], float] | None = None,
        per_minute: int = ERRORS_PER_MINUTE,
    ) -> None:
        import time

        self.release = release
        self.environment = environment
        self.before_send = before_send
        try:
            cwd: str | None = os.getcwd()
        except OSError:
            cwd = None
        self.rules = PathRules(in_app_include, in_app_exclude, project_root, cwd)
        self.limiter = RateLimiter(per_minute, clock or time.monotonic)
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):
            ref = weakref.ref(self)

            def _child() -> None:
                reporter = ref()
                if reporter is not None:
                    reporter._lock = threading.Lock()
                    reporter.counts = {}
                    reporter.limiter.reinit()
                    reporter.rules._lock = threading.Lock()

            os.register_at_fork(after_in_child=_child)

    def allow(self, key: tuple[str, ...]) -> bool:
        """The rate limit: False (and counted as ``rate_limited``) past the key's budget for this minute."""
        if self.limiter.allow(key):
            return True
        self.count("rate_limited")
        return False

    def count(self, reason: str) -> None:
        """Add one to a counter (``captured``, ``rate_limited``, ``dropped_by_hook``, ...)."""
        with self._lock:
            self.counts[reason] = self.counts.get(reason, 0) + 1

    def stats(self) -> dict[str, int]:
        """A copy of the counters."""
        with self._lock:
            return dict(self.counts)

    def finish(
        self,
        report: Report,
        *,
        exc: BaseException | None,
        level: str,
        distinct_id: str | None,
        context: Mapping[str, Any] | None,
        release: str | None,
        environment: str | None,
        timestamp: str,
        session_id: str | None = None,
    ) -> dict[str, Any] | None:
        """Fill in the rest of the fields and run the hook; the wire body's fields, or None (dropped)."""
        fields = report.fields
        fields["level"] = level
        fields["timestamp"] = timestamp
        if distinct_id is not None:
            fields["distinctId"] = truncate(_clean(distinct_id), MAX_DISTINCT_ID, marker="")
        if session_id is not None:
            fields["sessionId"] = truncate(_clean(session_id), MAX_SESSION_ID, marker="")
        rel = release if release is not None else self.release
        if rel:
            fields["release"] = truncate(_clean(rel), MAX_RELEASE, marker="")
        env = environment if environment is not None else self.environment
        if env:
            fields["environment"] = truncate(_clean(env), MAX_ENVIRONMENT, marker="")
        if context:
            fields["metadata"] = dict(context)
        hook = self.before_send
        if hook is not None:
            try:
                result = hook(dict(fields), exc)
            except Exception:
                self.count("hook_error")
                from serla._config import log_exception

                log_exception("serla: before_send_error raised; the error report is dropped")
                return None
            if result is None:
                self.count("dropped_by_hook")
                return None
            checked = check_fields(result)
            if checked is None:
                self.count("dropped_by_hook")
                from serla._config import warn_limited

                warn_limited(
                    "before_send_error",
                    "serla: before_send_error returned something that is not a report dict with a message; "
                    "the error report is dropped",
                )
                return None
            fields = checked
        return fields


def encode_report(fields: Mapping[str, Any]) -> bytes:
    """The JSON body of one report; ``metadata`` is replaced by a note if the body would be too large."""
    from serla._encode import encode

    body = encode(fields)
    if len(body) > MAX_BODY_BYTES and "metadata" in fields:
        smaller = dict(fields)
        smaller["metadata"] = {"serla": f"metadata dropped: the report was {len(body)} bytes of JSON"}
        body = encode(smaller)
    return body
