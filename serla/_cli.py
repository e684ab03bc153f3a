"""The ``serla`` command: send an event or identify a person from a shell script or cron job.

::

    serla track EVENT --distinct-id ID [--prop KEY=VALUE ...] [--json-props JSON] [--timestamp ISO]
    serla identify ID [--prop KEY=VALUE ...] [--json-props JSON]
    serla dev [--port 8787] [--db serla-dev.db] ...   # a local server with a live page (serla dev --help)
    serla demo                                # start a local server, send demo events, open the page
    serla spool status [--dir DIR] [--json]   # what waits in a spool directory (see docs/spool.md)
    serla spool send [--dir DIR] [--timeout S]  # deliver what waits there for this host and key
    python -m serla ...                       # the same

``track`` and ``identify`` read ``SERLA_API_KEY`` and ``SERLA_HOST`` (``--api-key`` and ``--host`` win),
wait for the server's answer (at most ``--timeout`` seconds) and exit with:

* ``0``: delivered (or ``SERLA_DISABLED`` is set, and nothing was sent);
* ``1``: not delivered: one line on stderr says why (refused key, unreachable host, timeout...);
* ``2``: a usage or configuration mistake (no API key, a bad ``--prop``, an unreadable timestamp).

``--prop`` values are read as JSON when they are a JSON number, ``true``, ``false``, ``null`` or a
double-quoted string, and as plain strings otherwise: ``n=3`` sends the number 3, ``ok=true`` the boolean,
``zip=02134`` and ``name=Ada`` strings, ``id='"42"'`` the string ``"42"``. ``--json-props`` takes a JSON
object (for lists and nested values); ``--prop`` keys override its keys.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Final, TextIO

from serla._version import __version__

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

DEFAULT_TIMEOUT: Final = 10.0


class UsageError(Exception):
    """A mistake in the command line or the environment (exit status 2)."""


# -- argument parsing ------------------------------------------------------------------------------------


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the ``serla`` argument parser.

    Returns:
        The parser, with the ``track``, ``identify``, ``spool``, ``dev`` and ``demo`` subcommands.
    """
    parser = argparse.ArgumentParser(
        prog="serla",
        description="Send Serla analytics events from the command line, or run a local Serla server.",
        epilog="Exit status: 0 delivered, 1 not delivered, 2 usage or configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"serla-py {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    conn = argparse.ArgumentParser(add_help=False)
    group = conn.add_argument_group("connection")
    group.add_argument("--api-key", help="the project's API key (default: $SERLA_API_KEY)")
    group.add_argument(
        "--host", help="base URL of the Serla server (default: $SERLA_HOST or https://serla.dev)"
    )
    group.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for delivery, retries included (default: {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument("--debug", action="store_true", help="log what the SDK does to stderr")

    props = argparse.ArgumentParser(add_help=False)
    pgroup = props.add_argument_group("properties")
    pgroup.add_argument(
        "--prop",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a property; repeatable. VALUE is read as JSON if it is a number, true, false, null or a "
        "quoted string, else taken as text (n=3 -> 3, ok=true -> true, name=Ada -> 'Ada')",
    )
    pgroup.add_argument("--json-props", metavar="JSON", help="properties as a JSON object; --prop keys win")

    track = sub.add_parser(
        "track",
        parents=[conn, props],
        help="send one event",
        description="Send one event and wait for delivery.",
    )
    track.add_argument("event", metavar="EVENT", help="the event name, e.g. cron_finished")
    track.add_argument("--distinct-id", "-d", required=True, metavar="ID", help="who or what did it")
    track.add_argument(
        "--timestamp",
        metavar="ISO",
        help="when it happened, ISO-8601 (an offset is converted to UTC; no offset means UTC). Default: now",
    )

    identify = sub.add_parser(
        "identify",
        parents=[conn, props],
        help="set properties on a person",
        description="Set properties on a person (merged into the ones the server has).",
    )
    identify.add_argument("distinct_id", metavar="ID", help="the person's distinct ID")

    spool = sub.add_parser(
        "spool",
        help="show or send what waits in a durable spool (Serla(spool_dir=...))",
        description="Show or deliver the events waiting in a spool directory.",
    )
    spool_sub = spool.add_subparsers(dest="spool_command", metavar="ACTION")
    spool_sub.required = True
    dir_opt = argparse.ArgumentParser(add_help=False)
    dir_opt.add_argument("--dir", metavar="DIR", help="the spool directory (default: $SERLA_SPOOL_DIR)")
    status = spool_sub.add_parser(
        "status",
        parents=[dir_opt],
        help="events waiting per host and key",
        description="List the events waiting in the spool, per host, API key (shown as a hint) and lane.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    spool_sub.add_parser(
        "send",
        parents=[dir_opt, conn],
        help="deliver what waits for this host and key now",
        description="Deliver the events waiting for this host and API key (rows of others stay). "
        "Exit 0 when none is left, 1 otherwise.",
    )

    # ``dev`` and ``demo`` parse their own options (``serla dev --help``); listed here for ``serla --help``.
    sub.add_parser("dev", help="run a local Serla server with a live page of events", add_help=False)
    sub.add_parser("demo", help="start a local server, send demo events and show them", add_help=False)
    return parser


# -- properties ----------------------------------------------------------------------------------------


def _reject_constant(token: str) -> Any:
    raise ValueError(token)


def parse_value(text: str) -> Any:
    """Read a ``--prop`` value: a JSON scalar or quoted string when it is one, else the text itself.

    Args:
        text: What follows ``=``.

    Returns:
        An ``int``/``float`` for a JSON number, ``True``/``False``/``None`` for ``true``/``false``/``null``,
        the unquoted string for a JSON string, and ``text`` unchanged for anything else (including JSON
        lists and objects, ``NaN``, numbers with leading zeros and values with surrounding spaces).
    """
    if not text or text != text.strip() or text[0] in "[{":
        return text
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text
    if isinstance(value, float) and not math.isfinite(value):  # 1e999
        return text
    return value


def parse_props(props: Sequence[str], json_props: str | None) -> dict[str, Any]:
    """Combine ``--json-props`` and ``--prop KEY=VALUE`` options into one dict.

    Args:
        props: The ``--prop`` values, in order (a later key wins).
        json_props: The ``--json-props`` text, or ``None``.

    Returns:
        The properties.

    Raises:
        UsageError: For a ``--prop`` without ``=`` or with an empty key, or ``--json-props`` that is not a
            JSON object.
    """
    out: dict[str, Any] = {}
    if json_props is not None:
        try:
            parsed = json.loads(json_props, parse_constant=_reject_constant)
        except ValueError as exc:
            raise UsageError(f"--json-props is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise UsageError(f"--json-props must be a JSON object, not {type(parsed).__name__}")
        out.update(parsed)
    for item in props:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--prop needs KEY=VALUE, got {item!r}")
        out[key] = parse_value(value)
    return out


# -- track / identify ------------------------------------------------------------------------------------


class _Collector(logging.Handler):
    """Keeps the SDK's WARNING messages, to say why something failed in one line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _collect_warnings() -> Iterator[_Collector]:
    collector = _Collector()
    log = logging.getLogger("serla")
    log.addHandler(collector)
    try:
        yield collector
    finally:
        log.removeHandler(collector)


def _make_client(args: argparse.Namespace) -> Any:
    from serla._client import Serla
    from serla._config import DEFAULT_HOST

    api_key = args.api_key or os.environ.get("SERLA_API_KEY", "")
    host = args.host or os.environ.get("SERLA_HOST") or DEFAULT_HOST
    if not api_key:
        raise UsageError("no API key: set SERLA_API_KEY or pass --api-key")
    try:
        return Serla(
            api_key,
            host=host,
            debug=args.debug,
            flush_on_exit=False,
            timeout=args.timeout,
            shutdown_timeout=args.timeout,
            batch_size=1,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def _last(messages: list[str]) -> str:
    """The last SDK warning, without the prefixes that repeat what the CLI's own message says."""
    if not messages:
        return ""
    text = messages[-1]
    for prefix in ("serla: ", "call dropped: ", "identify: ", "identify() failed: "):
        text = text.removeprefix(prefix)
    return text


def _cmd_track(args: argparse.Namespace, err: TextIO) -> int:
    from serla._encode import format_timestamp

    properties = parse_props(args.prop, args.json_props)
    if args.timestamp is not None and format_timestamp(args.timestamp) is None:
        raise UsageError(f"--timestamp {args.timestamp!r} is not an ISO-8601 date and time (1970-2100)")
    client = _make_client(args)
    with _collect_warnings() as warnings:
        try:
            if not client.track(args.event, args.distinct_id, properties, timestamp=args.timestamp):
                raise UsageError(_last(warnings.messages) or "the event was refused")
            delivered = client.shutdown(timeout=args.timeout)
        finally:
            client.shutdown(timeout=0)
        if delivered:
            return EXIT_OK
        stats = client.stats()
        reason = stats.get("last_error") or _last(warnings.messages) or "no answer"
    err.write(
        f"serla: event {args.event!r} was not delivered to {client.host} "
        f"within {args.timeout:g} s: {reason}\n"
    )
    return EXIT_FAILED


def _cmd_identify(args: argparse.Namespace, err: TextIO) -> int:
    properties = parse_props(args.prop, args.json_props)
    client = _make_client(args)
    with _collect_warnings() as warnings:
        try:
            ok = client.identify(args.distinct_id, properties)
        finally:
            client.shutdown(timeout=0)
    if ok:
        return EXIT_OK
    reason = _last(warnings.messages) or "no answer"
    if warnings.messages and "call dropped" in warnings.messages[-1]:
        raise UsageError(reason)
    err.write(f"serla: identify {args.distinct_id!r} failed at {client.host}: {reason}\n")
    return EXIT_FAILED


# -- spool -----------------------------------------------------------------------------------------------


def _spool_dir(args: argparse.Namespace) -> str:
    directory = args.dir or os.environ.get("SERLA_SPOOL_DIR", "")
    if not directory:
        raise UsageError("no spool directory: pass --dir or set SERLA_SPOOL_DIR")
    return str(directory)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _cmd_spool_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import time

    from serla._spool import FILE_NAME, Spool, SpoolUnavailable

    directory = _spool_dir(args)
    rows: list[dict[str, Any]] = []
    if os.path.exists(os.path.join(directory, FILE_NAME)):  # status never creates a spool
        try:
            spool = Spool(directory)
            try:
                rows = spool.status()
            finally:
                spool.close()
        except SpoolUnavailable as exc:
            err.write(f"serla spool: {directory}: {exc}\n")
            return EXIT_FAILED
    if args.json:
        out.write(json.dumps({"dir": directory, "waiting": rows}, indent=2) + "\n")
        return EXIT_OK
    if not rows:
        out.write(f"{directory}: nothing waiting\n")
        return EXIT_OK
    now = time.time()
    table = [("HOST", "KEY", "LANE", "EVENTS", "LEASED", "OLDEST", "SIZE")]
    for row in rows:
        oldest = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["oldest"]))
        age = max(0, int(now - row["oldest"]))
        table.append(
            (
                row["host"],
                row["key"],
                row["lane"],
                str(row["events"]),
                str(row["leased"]),
                f"{oldest} ({age} s ago)",
                _human_bytes(row["bytes"]),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() + "\n")
    total = sum(row["events"] for row in rows)
    out.write(f"{total} events waiting in {directory}\n")
    return EXIT_OK


def _cmd_spool_send(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from serla._client import Serla
    from serla._config import DEFAULT_HOST

    directory = _spool_dir(args)
    api_key = args.api_key or os.environ.get("SERLA_API_KEY", "")
    host = args.host or os.environ.get("SERLA_HOST") or DEFAULT_HOST
    if not api_key:
        raise UsageError("no API key: set SERLA_API_KEY or pass --api-key")
    try:
        client = Serla(
            api_key,
            host=host,
            debug=args.debug,
            flush_on_exit=False,
            timeout=min(args.timeout, 30.0),
            batch_size=100,
            spool_dir=directory,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    with _collect_warnings() as warnings:
        try:
            delivered = client.shutdown(timeout=args.timeout)
        finally:
            client.shutdown(timeout=0)
        stats = client.stats()
    spool_stats: dict[str, Any] = dict(stats.get("spool") or {})
    if spool_stats.get("error"):
        err.write(f"serla spool send: the spool in {directory} can't be used: {spool_stats['error']}\n")
        return EXIT_FAILED
    sent = spool_stats.get("sent_from_spool", 0)
    left = spool_stats.get("waiting", 0)
    out.write(f"{sent} events sent from {directory} to {client.host}; {left} left\n")
    if delivered and not left:
        return EXIT_OK
    reason = stats.get("last_error") or _last(warnings.messages) or "not finished"
    err.write(f"serla spool send: {left} events still waiting after {args.timeout:g} s: {reason}\n")
    return EXIT_FAILED


# -- entry point -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``serla`` command.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 delivered, 1 not delivered, 2 usage or configuration error.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    err = sys.stderr
    if args_list and args_list[0] in ("dev", "demo"):  # they parse their own options
        module = importlib.import_module(f"serla.devtools.{args_list[0]}")
        return int(module.main(args_list[1:]) or 0)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "track":
            return _cmd_track(args, err)
        if args.command == "identify":
            return _cmd_identify(args, err)
        if args.command == "spool":
            if args.spool_command == "status":
                return _cmd_spool_status(args, sys.stdout, err)
            return _cmd_spool_send(args, sys.stdout, err)
    except UsageError as exc:
        err.write(f"serla {args.command}: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.write("serla: interrupted\n")
        return 130
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover - argparse rejects it first
    return EXIT_USAGE  # pragma: no cover
