"""Error reports: the stack the server groups by, in-app rules, paths, chains, limits, level, the hook.

Every grouping assertion goes through ``serla.devtools.errors.compute_fingerprint``, the port of the real
server's function (checked against the server's own vectors in ``test_errors_devtools.py``).
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serla._errors import (
    LIBRARY_TAG,
    MAX_MESSAGE,
    MAX_STACK,
    MAX_TYPE,
    PathRules,
    RateLimiter,
    build_report,
    build_report_from_text,
    check_fields,
    map_level,
    parses_as_frame,
    truncate,
    type_name,
    utf16_len,
)
from serla.devtools.errors import compute_fingerprint, parse_top_frame

APP = """
import json

class CardDeclined(Exception):
    pass

class Checkout:
    def pay(self, card):
        raise CardDeclined(f"card {card} declined")

def refund(order):
    raise CardDeclined(f"order {order} can't be refunded")

def parse(text):
    return json.loads(text)

def wrapped(card):
    try:
        json.loads("{bad")
    except ValueError as exc:
        raise CardDeclined(f"card {card}") from exc

def implicit():
    try:
        {}["missing"]
    except KeyError:
        raise CardDeclined("while handling")

def recurse(n):
    if n == 0:
        raise CardDeclined("deep")
    return recurse(n - 1)

def group():
    raise ExceptionGroup("several", [ValueError("one"), CardDeclined("two")])

def noted():
    exc = CardDeclined("with a note")
    exc.add_note("order 42")
    raise exc
"""


def _import_app(root: Path, package: str = "shop") -> Any:
    pkg = root / package
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "billing.py").write_text(textwrap.dedent(APP))
    sys.path.insert(0, str(root))
    try:
        importlib.invalidate_caches()
        return importlib.import_module(f"{package}.billing")
    finally:
        sys.path.remove(str(root))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    module = _import_app(tmp_path)
    sys.path.insert(0, str(tmp_path))
    yield module
    sys.path.remove(str(tmp_path))
    for name in [n for n in sys.modules if n == "shop" or n.startswith("shop.")]:
        del sys.modules[name]


def _raise(fn: Any, *args: Any) -> BaseException:
    try:
        fn(*args)
    except BaseException as exc:
        return exc
    raise AssertionError("no exception")


def _fingerprint(fields: dict[str, Any]) -> str:
    return compute_fingerprint(fields.get("type"), fields.get("message"), fields.get("stack"))


def test_the_fingerprint_frame_is_the_innermost_in_app_frame(app: Any) -> None:
    report = build_report(_raise(app.Checkout().pay, 4242), PathRules())
    top = parse_top_frame(report.fields["stack"])
    assert top is not None
    assert top.file == "shop/billing.py"
    assert top.fn == "pay"  # co_name: the same on every Python version
    assert report.fields["type"] == "shop.billing.CardDeclined"
    assert report.fields["message"] == "card 4242 declined"
    assert report.fields["stack"].startswith("shop.billing.CardDeclined: card 4242 declined\n    at ")
    assert report.key == ("shop.billing.carddeclined", "shop/billing.py", top.fn)


def test_two_messages_from_one_function_are_one_group_two_functions_two(app: Any) -> None:
    rules = PathRules()
    a = build_report(_raise(app.Checkout().pay, 1), rules).fields
    b = build_report(_raise(app.Checkout().pay, 2), rules).fields
    c = build_report(_raise(app.refund, 3), rules).fields
    assert a["message"] != b["message"]
    assert _fingerprint(a) == _fingerprint(b)
    assert _fingerprint(a) != _fingerprint(c)


def test_the_same_code_from_two_install_paths_is_one_group(tmp_path: Path) -> None:
    fingerprints = []
    for place in ("checkout-a/src", "elsewhere/b"):
        module = _import_app(tmp_path / place, "shop2")
        sys.path.insert(0, str(tmp_path / place))
        try:
            report = build_report(_raise(module.refund, 7), PathRules())
        finally:
            sys.path.remove(str(tmp_path / place))
            for name in [n for n in sys.modules if n == "shop2" or n.startswith("shop2.")]:
                del sys.modules[name]
        assert parse_top_frame(report.fields["stack"]).file == "shop2/billing.py"  # type: ignore[union-attr]
        fingerprints.append(_fingerprint(report.fields))
    assert fingerprints[0] == fingerprints[1]


def test_library_frames_deeper_than_the_app_never_parse_as_frames(app: Any) -> None:
    report = build_report(_raise(app.parse, "{bad"), PathRules())
    lines = report.fields["stack"].split("\n")
    library = [line for line in lines if line.endswith(LIBRARY_TAG)]
    assert library and all("json/" in line for line in library)  # shown relative to the stdlib
    assert not any(parses_as_frame(line) for line in library)
    first = next(line for line in lines if parses_as_frame(line))
    assert "shop/billing.py" in first and " parse (" in first
    assert report.fields["type"] == "json.decoder.JSONDecodeError"


def test_in_app_options_decide_by_module_name(app: Any) -> None:
    exc = _raise(app.parse, "{bad")
    excluded = build_report(exc, PathRules(in_app_exclude=["shop", __name__])).fields
    # Nothing is in-app: the innermost frame (the json module's) decides, so it still groups by location.
    assert parse_top_frame(excluded["stack"]).file == "json/decoder.py"  # type: ignore[union-attr]
    included = build_report(exc, PathRules(in_app_include=["json"])).fields
    assert parse_top_frame(included["stack"]).file == "json/decoder.py"  # type: ignore[union-attr]
    default = build_report(exc, PathRules()).fields
    assert parse_top_frame(default["stack"]).file == "shop/billing.py"  # type: ignore[union-attr]


def test_project_root_makes_paths_relative_to_it(app: Any, tmp_path: Path) -> None:
    report = build_report(_raise(app.refund, 1), PathRules(project_root=str(tmp_path.parent)))
    top = parse_top_frame(report.fields["stack"])
    assert top is not None and top.file == f"{tmp_path.name}/shop/billing.py"


def test_chained_exceptions_follow_the_frames_and_do_not_decide_the_group(app: Any) -> None:
    rules = PathRules()
    explicit = build_report(_raise(app.wrapped, 1), rules).fields
    stack = explicit["stack"]
    assert "Caused by (raise ... from): json.decoder.JSONDecodeError" in stack
    assert stack.index("Caused by") > stack.index(" at wrapped (")
    assert parse_top_frame(stack).fn == "wrapped"  # type: ignore[union-attr]
    implicit = build_report(_raise(app.implicit), rules).fields["stack"]
    assert "While handling: KeyError: 'missing'" in implicit


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup and add_note are Python 3.11+")
def test_exception_groups_and_notes_are_shown(app: Any) -> None:
    stack = build_report(_raise(app.group), PathRules()).fields["stack"]
    assert stack.startswith("ExceptionGroup: several (2 sub-exceptions)")
    assert "Exception 1 of 2 in the group: ValueError: one" in stack
    assert "Exception 2 of 2 in the group: shop.billing.CardDeclined: two" in stack
    assert parse_top_frame(stack).fn == "group"  # type: ignore[union-attr]
    noted = build_report(_raise(app.noted), PathRules()).fields["stack"]
    assert noted.split("\n")[:2] == ["shop.billing.CardDeclined: with a note", "order 42"]


def test_recursion_is_summarised(app: Any) -> None:
    stack = build_report(_raise(app.recurse, 50), PathRules()).fields["stack"]
    assert "repeated" in stack
    assert stack.count(" at recurse (") < 10


def test_syntax_error_points_at_its_file(tmp_path: Path) -> None:
    (tmp_path / "broken_mod.py").write_text("x = 1\ndef f(:\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        exc = _raise(importlib.import_module, "broken_mod")
        report = build_report(exc, PathRules())
    finally:
        sys.path.remove(str(tmp_path))
    top = parse_top_frame(report.fields["stack"])
    assert report.fields["type"] == "SyntaxError"
    assert top is not None and top.file == "broken_mod.py" and top.fn == "<module>" and top.line == 2


def test_an_exception_never_raised_takes_the_callers_stack() -> None:
    exc = ValueError("made, not raised")
    report = build_report(exc, PathRules(), caller=sys._getframe())
    top = parse_top_frame(report.fields["stack"])
    assert top is not None and top.fn is not None
    assert top.fn.endswith("test_an_exception_never_raised_takes_the_callers_stack")
    assert top.file == "test_errors.py" or top.file.endswith("tests/test_errors.py")
    bare = build_report(exc, PathRules())
    assert parse_top_frame(bare.fields["stack"]) is None  # no frame at all: the server groups by message
    assert bare.key == ("valueerror", "made, not raised")


def test_message_lines_that_look_like_frames_do_not_hijack_the_group(app: Any) -> None:
    class Tricky(Exception):
        pass

    try:
        raise Tricky("see below\nat evil (/somewhere/else.js:1:2)\nuser@host:3:4")
    except Tricky as exc:
        report = build_report(exc, PathRules())
    top = parse_top_frame(report.fields["stack"])
    assert top is not None and top.fn is not None
    assert "test_message_lines_that_look_like_frames" in top.fn
    assert "evil" in report.fields["stack"]  # still shown to a reader


def test_type_names_are_module_qualified() -> None:
    assert type_name(ValueError) == "ValueError"
    assert type_name(KeyError) == "KeyError"
    assert type_name(importlib.util.__class__) == "module"  # type: ignore[attr-defined]
    assert type_name(json_error()) == "json.decoder.JSONDecodeError"


def json_error() -> type:
    import json

    return json.JSONDecodeError


def test_empty_message_uses_the_type() -> None:
    try:
        raise RuntimeError
    except RuntimeError as exc:
        report = build_report(exc, PathRules())
    assert report.fields["message"] == "RuntimeError"


def test_utf16_truncation() -> None:
    assert utf16_len("a\U0001f600") == 3
    text = "\U0001f600" * 10  # 20 units
    cut = truncate(text, 7)
    assert utf16_len(cut) <= 7 and cut.endswith("\u2026") and "\ud83d" not in cut
    assert truncate("abc", 3) == "abc"
    tail = truncate("a.b.c.VeryLongName", 10, keep_end=True)
    assert tail.startswith("\u2026") and tail.endswith("LongName") and utf16_len(tail) <= 10


def test_every_field_fits_the_server_maxima() -> None:
    name = "M" * 150
    cls = type(name, (Exception,), {})
    cls.__module__ = "pkg." + "sub." * 20
    try:
        raise cls("\U0001f600" * 3000)
    except Exception as exc:
        report = build_report(exc, PathRules())
    fields = report.fields
    assert utf16_len(fields["message"]) <= MAX_MESSAGE
    assert utf16_len(fields["type"]) <= MAX_TYPE and fields["type"].endswith("M" * 20)
    assert utf16_len(fields["stack"]) <= MAX_STACK


def test_a_huge_stack_is_cut_from_its_outer_end(app: Any) -> None:
    import sys as _sys

    old = _sys.getrecursionlimit()
    _sys.setrecursionlimit(5000)
    try:
        exc = _raise(lambda: nested(300))
    finally:
        _sys.setrecursionlimit(old)
    stack = build_report(exc, PathRules()).fields["stack"]
    assert utf16_len(stack) <= MAX_STACK
    assert stack.endswith("(cut to the server's 20,000-character limit)")  # before 200 frames
    assert parse_top_frame(stack).fn == "last"  # type: ignore[union-attr]
    assert " at deep_0_" in stack  # the innermost frames are kept, the outermost cut


def nested(n: int) -> None:
    # 300 distinct functions with long names: no repeat summary applies.
    fns = []
    for i in range(n):
        name = f"deep_{i}_" + "x" * 150
        code = f"def {name}(next_fn):\n    return next_fn()\n"
        namespace: dict[str, Any] = {}
        exec(compile(code, f"/tmp/generated/module_{i}.py", "exec"), namespace)
        fns.append(namespace[name])

    def last() -> None:
        raise ValueError("bottom")

    call: Any = last
    for fn in fns:
        call = (lambda f, c: lambda: f(c))(fn, call)
    call()


def test_level_mapping() -> None:
    assert map_level("critical") == "error"
    assert map_level("FATAL") == "error"
    assert map_level("debug") == "info"
    assert map_level("warn") == "warning"
    assert map_level(50) == "error"
    assert map_level(30) == "warning"
    assert map_level(10) == "info"
    assert map_level("loud") is None
    assert map_level(None) is None


def test_the_text_form_of_a_traceback_groups_like_the_exception(app: Any) -> None:
    import traceback

    exc = _raise(app.Checkout().pay, 9)
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    from_text = build_report_from_text("shop.billing.CardDeclined", "card 9 declined", text, PathRules())
    from_exc = build_report(exc, PathRules())
    assert _fingerprint(from_text.fields) == _fingerprint(from_exc.fields)
    assert "Python traceback:" in from_text.fields["stack"]


def test_check_fields_after_the_hook() -> None:
    assert check_fields(None) is None
    assert check_fields({"message": ""}) is None
    out = check_fields(
        {"message": "x" * 3000, "level": "critical", "metadata": [1], "bogus": 1, "release": 12, "type": None}
    )
    assert out is not None
    assert len(out["message"]) == MAX_MESSAGE and out["level"] == "error" and out["release"] == "12"
    assert "metadata" not in out and "bogus" not in out and "type" not in out


def test_rate_limiter_counts_per_key_per_minute() -> None:
    now = [1000.0]
    limiter = RateLimiter(3, lambda: now[0])
    assert [limiter.allow(("a",)) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(("b",))
    now[0] += 59.9
    assert not limiter.allow(("a",))
    now[0] += 0.1
    assert limiter.allow(("a",))


def test_rate_limiter_forgets_old_keys_when_full() -> None:
    now = [0.0]
    limiter = RateLimiter(1, lambda: now[0], max_keys=2)
    assert limiter.allow(("a",)) and limiter.allow(("b",))
    now[0] = 61.0
    assert limiter.allow(("c",))  # the expired windows made room
    assert not limiter.allow(("c",))


def test_local_variables_are_never_sent(app: Any) -> None:
    def handler(password: str) -> None:
        token = "tok_" + password  # noqa: F841 - a local the report must not show
        raise PermissionError("denied")

    exc = _raise(handler, "hunter2-secret")
    fields = build_report(exc, PathRules()).fields  # type: ignore[union-attr]
    assert "hunter2" not in repr(fields)


def test_options_are_checked_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    from serla import Serla

    with pytest.raises(TypeError):
        Serla("sk_live_x", release=1.0, disabled=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Serla("sk_live_x", in_app_include="myapp", disabled=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Serla("sk_live_x", in_app_include=[""], disabled=True)
    with pytest.raises(TypeError):
        Serla("sk_live_x", before_send_error="scrub", disabled=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Serla("sk_live_x", capture_exceptions=1, disabled=True)  # type: ignore[arg-type]
    monkeypatch.setenv("SERLA_RELEASE", "  9.9.9 ")
    monkeypatch.setenv("SERLA_ENVIRONMENT", "staging")
    client = Serla("sk_live_x", disabled=True)
    assert (client.config.release, client.config.environment) == ("9.9.9", "staging")
    assert Serla("sk_live_x", release="1", disabled=True).config.release == "1"
    from serla import Config

    config = Config.from_env({"SERLA_API_KEY": "sk_live_x", "SERLA_RELEASE": "2"})
    assert config.release == "2" and config.environment is None


def test_asyncio_handlers_still_run_and_the_exception_is_reported_once() -> None:
    import asyncio

    from serla import Serla

    client = Serla("sk_live_x", disabled=True, capture_exceptions=True)
    seen: list[Any] = []
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(lambda lp, ctx: seen.append(ctx["exception"]))
        error = OSError("callback failed")
        loop.call_exception_handler({"message": "x", "exception": error})
        loop.call_exception_handler({"message": "again", "exception": error})
        loop.call_exception_handler({"message": "no exception"})
    finally:
        loop.close()
        client.shutdown(1)
    assert seen == [error, error]  # the loop's own handler ran every time
    assert client.stats()["errors"] == {"captured": 1, "duplicate": 1}


def test_hooks_skip_keyboard_interrupt_and_restore_on_shutdown() -> None:
    import threading

    from serla import Serla

    before = (sys.excepthook, threading.excepthook)
    calls: list[Any] = []
    sys.excepthook = lambda *args: calls.append(args[0])
    try:
        client = Serla("sk_live_x", disabled=True, capture_exceptions=True)
        assert threading.excepthook is not before[1]
        sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
        assert calls == [KeyboardInterrupt]  # chained, not reported
        assert client.stats()["errors"] == {}
        client.shutdown(1)
        assert threading.excepthook is before[1] and sys.excepthook is not before[0]
    finally:
        sys.excepthook = before[0]
