"""``serla dev``: a local Serla server with a SQLite store and a live web page of the events it received.

::

    serla dev [--port 8787] [--host 127.0.0.1] [--db serla-dev.db] [--keep-rejected 100] [--flags flags.json]
              [--no-rate-limits] [--rate-limit-window 60] [--plan free] [--dedupe] [--quiet] [--open]

It is :class:`serla.devtools.server.SerlaServer` (the same request handling, validation, error bodies and
per-minute limits as the real Serla server, see ``SERLA_API.md``) with these additions:

* a :class:`~serla.devtools.store.SQLiteStore`, so events and identities survive restarts (``--db``,
  default ``serla-dev.db`` in the current directory; ``:memory:`` keeps nothing);
* a web page at ``/`` and JSON endpoints under ``/api/dev/`` listing recent events, identified people,
  the requests the server refused with its error details, and how many were rate limited (429);
* feature flags for ``GET /api/v1/flags`` (the real evaluation, :mod:`serla.devtools.flags`), defined in a
  JSON file (``--flags FILE``, re-read when it changes, written back by the page) or with the form at
  ``/flags``.

Like the real server it enforces the per-minute limits (batch 100 requests a minute; ``--no-rate-limits``
lifts them) and stores every request, retries included. ``--dedupe`` is an opt-in that stores a request
only once per ``X-Idempotency-Key``, which the real server never does; it is off by default and the banner
and page say which is in effect. Any non-empty API key is accepted, all in one project.

Only the standard library is used (``http.server`` through :mod:`serla.devtools.server`, and :mod:`sqlite3`).
The page is static files shipped as package data (``serla/devtools/static/``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import html
import json
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Mapping, Sequence
from importlib import resources
from types import FrameType
from typing import Any, Callable, Final, Optional, TextIO
from urllib.parse import parse_qs

from serla._version import __version__
from serla.devtools.errors import register_dev
from serla.devtools.flags import PAGE_PATH as FLAGS_PAGE
from serla.devtools.limits import PLAN_QUOTAS, RATE_LIMIT_WINDOW
from serla.devtools.server import (
    BATCH_PATH,
    EVENTS_PATH,
    RecordedRequest,
    Response,
    SerlaServer,
)
from serla.devtools.store import DEFAULT_DB, DEFAULT_KEEP_REJECTED, SQLiteStore
from serla.devtools.validation import dumps

__all__ = [
    "DEFAULT_DB",
    "DEFAULT_KEEP_REJECTED",
    "DEFAULT_PORT",
    "DevServer",
    "SQLiteStore",
    "build_parser",
    "main",
    "run",
]

DEFAULT_PORT: Final = 8787
MAX_LIMIT: Final = 1000
"""The largest ``limit`` the JSON endpoints accept."""

EVENTS_API: Final = "/api/dev/events"
IDENTITIES_API: Final = "/api/dev/identities"
REJECTED_API: Final = "/api/dev/rejected"
STATUS_API: Final = "/api/dev/status"
CLEAR_API: Final = "/api/dev/clear"
SESSIONS_API: Final = "/api/dev/sessions"
CLEAR_HEADER: Final = "X-Serla-Dev"
"""``POST /api/dev/clear`` needs this header (any value): a cross-site form or ``fetch`` can't send it."""

_DEV_PREFIX: Final = "/api/dev/"
_LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


# --------------------------------------------------------------------------------------------------------
# The server


def _json_response(status: int, payload: Any) -> Response:
    return Response(
        status,
        dumps(payload, ensure_ascii=True).encode("ascii"),
        {
            "Content-Type": "application/json; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )


_STATIC_TYPES: Final[Mapping[str, str]] = {
    "index.html": "text/html; charset=utf-8",
    "dev.js": "text/javascript; charset=utf-8",
    "dev.css": "text/css; charset=utf-8",
}
# The page's script and style are files of this server; nothing else may load or run.
_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def _static_file(name: str) -> bytes:
    """A file of the page, from the package data (``serla/devtools/static/``)."""
    return resources.files("serla.devtools").joinpath("static").joinpath(name).read_bytes()


def _static_headers(name: str) -> dict[str, str]:
    return {
        "Content-Type": _STATIC_TYPES[name],
        "Content-Security-Policy": _CSP,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


class _BadParam(ValueError):
    """A query parameter of a JSON endpoint is invalid (answered with a 400)."""


def _params(request: RecordedRequest) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(request.query, keep_blank_values=True).items()}


def _limit(params: Mapping[str, str], default: int) -> int:
    text = params.get("limit", "")
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise _BadParam(f"limit must be an integer from 1 to {MAX_LIMIT}, not {text!r}")
    return value


def _issue_summary(response: Response) -> str:
    """One line saying why a request was refused, from the server's error body."""
    text = response.body.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
    except ValueError:
        return text.strip().splitlines()[0] if text.strip() else ""
    if not isinstance(payload, dict):
        return text
    parts = [str(payload.get("error", ""))]
    if isinstance(payload.get("retryAfter"), int):
        parts[0] += f" (per-minute limit; retry after {payload['retryAfter']} s)"
    elif isinstance(payload.get("message"), str):
        parts.append(payload["message"])
    details = payload.get("details")
    if isinstance(details, list) and details:
        issues = [
            f"{'.'.join(str(p) for p in issue.get('path', []))}: {issue.get('message', '')}"
            for issue in details[:3]
            if isinstance(issue, dict)
        ]
        more = f" (+{len(details) - 3} more)" if len(details) > 3 else ""
        parts.append("; ".join(issues) + more)
    return ": ".join(p for p in parts if p)


class DevServer(SerlaServer):
    """The ``serla dev`` server: a :class:`SerlaServer` on a :class:`SQLiteStore`, with a web page.

    Ingest requests are handled exactly as :class:`SerlaServer` handles them (any non-empty API key is
    accepted). On top of that:

    * ``GET /``: the live page of recent events, people, rejected and rate-limited requests (its script and
      style are ``GET /static/dev.js`` and ``/static/dev.css``);
    * ``GET /api/dev/events?name=&distinct_id=&limit=``: recent events, newest first;
    * ``GET /api/dev/identities?distinct_id=&limit=``: identified people;
    * ``GET /api/dev/rejected?limit=&status=``: requests the server refused, with its error details
      (``status=429``: the rate-limited ones);
    * ``GET /api/dev/status``: the limits in effect, dedupe, and how many requests were answered 429;
    * ``GET /api/dev/sessions?limit=``: the newest events grouped by session id and by ``$groups``;
    * ``POST /api/dev/clear`` (with an ``X-Serla-Dev`` header): forget everything.

    The ``/`` and ``/api/dev/`` routes send no CORS headers, and when the server listens on a loopback
    address they answer only requests whose ``Host`` is a loopback name (DNS rebinding can't read them).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        store: SQLiteStore,
        dedupe: bool = False,
        plan: str | None = None,
        rate_limits: bool | Mapping[str, int | None] = True,
        rate_limit_window: float = RATE_LIMIT_WINDOW,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """Configure the server; nothing is bound until :meth:`start`.

        Args:
            host: Interface to listen on.
            port: TCP port; ``0`` picks a free one.
            store: Where events, identities and rejected requests go. The server does not close it.
            dedupe: Store an events request only once per ``X-Idempotency-Key``. Off by default, like the
                real server, which stores every retry.
            plan: The plan of the one project every key belongs to (see :class:`SerlaServer`).
            rate_limits: Enforce the real per-minute limits (batch 100 requests a minute...), on by default;
                ``False`` lifts them; a mapping replaces some (as for :class:`SerlaServer`).
            rate_limit_window: Seconds per rate-limit window (60 on the real server).
            log: Called with one line per request that is not for the page or ``/api/dev/``; ``None`` is
                silent.
        """
        # The page polls /api/dev/ every second: keep the in-memory request log short.
        super().__init__(
            host,
            port,
            store=store,
            dedupe=dedupe,
            plan=plan,
            rate_limits=rate_limits,
            rate_limit_window=rate_limit_window,
            max_recorded_requests=200,
        )
        self._dev_store = store
        self._dev_log = log
        self._dedupe_enabled = dedupe
        self._duplicates = 0
        self._dup_lock = threading.Lock()
        self._loopback_only = host in _LOOPBACK_NAMES or host.startswith("127.")
        self.add_route("GET", "/", self._guard(self._page))
        self.add_route("GET", EVENTS_API, self._guard(self._events_api))
        self.add_route("GET", IDENTITIES_API, self._guard(self._identities_api))
        self.add_route("GET", REJECTED_API, self._guard(self._rejected_api))
        self.add_route("GET", STATUS_API, self._guard(self._status_api))
        for name in _STATIC_TYPES:
            self.add_route("GET", f"/static/{name}", self._guard(self._static))
        self.add_route("POST", CLEAR_API, self._guard(self._clear_api))
        self.add_route("GET", SESSIONS_API, self._guard(self._sessions_api))
        self.flags.install_page(self._guard)
        self.errors = register_dev(self)  # issue 14: /api/v1/errors in SQLite, the /errors page
        from serla.devtools.llm import LLM_API, LLM_PAGE, LlmEndpoint, SQLiteLlmStore

        self.llm = LlmEndpoint(self, store=SQLiteLlmStore(store))  # LLM calls in the same file
        self.add_route("GET", LLM_PAGE, self._guard(self.llm.page))
        self.add_route("GET", LLM_API, self._guard(self.llm.api))

    @property
    def store(self) -> SQLiteStore:
        """The SQLite store the server writes to."""
        return self._dev_store

    @property
    def dedupe(self) -> bool:
        """Whether events requests are deduplicated by ``X-Idempotency-Key``."""
        return self._dedupe_enabled

    @property
    def duplicates_ignored(self) -> int:
        """How many events requests were answered but not stored again (since this server started)."""
        with self._dup_lock:
            return self._duplicates

    def handle(self, request: RecordedRequest) -> Response | None:
        """Answer a request like :class:`SerlaServer`, then keep it if it was refused and log it.

        Args:
            request: The request, already read off the wire.

        Returns:
            The response, or ``None`` when an injected
            :class:`~serla.devtools.server.Fault` drops the connection
            (``serla dev`` itself injects none).
        """
        dev_route = request.path in ("/", FLAGS_PAGE) or request.path.startswith((_DEV_PREFIX, "/static/"))
        if not dev_route:
            self._dev_store.reset_duplicate_flag()
        response = super().handle(request)
        if dev_route or response is None:
            return response
        duplicate = self._dev_store.take_duplicate_flag()
        if duplicate:
            with self._dup_lock:
                self._duplicates += 1
        if response.status >= 300 and (
            request.method not in ("GET", "HEAD") or request.path.startswith("/api/")
        ):
            try:
                self._dev_store.add_rejected(request, response)
            except sqlite3.Error as exc:  # e.g. the store was closed while stopping
                self._say(f"could not keep the rejected request: {exc}")
        self._log_request(request, response, duplicate)
        return response

    def _say(self, line: str) -> None:
        if self._dev_log is not None:
            with contextlib.suppress(Exception):
                self._dev_log(line)

    def _log_request(self, request: RecordedRequest, response: Response, duplicate: bool) -> None:
        if self._dev_log is None:
            return
        now = datetime.datetime.now().strftime("%H:%M:%S")
        line = f"{now}  {request.method} {request.path}  {response.status}"
        if response.status < 300:
            if request.path in (BATCH_PATH, EVENTS_PATH):
                count = request.event_count
                line += f"  {count} event{'s' if count != 1 else ''}"
                if duplicate:
                    line += f" (X-Idempotency-Key {request.idempotency_key} seen before: not stored again)"
        else:
            line += f"  {_issue_summary(response)}"
        self._say(line)

    # ---- routes ----------------------------------------------------------------------------------------

    def _guard(self, route: Callable[[RecordedRequest], Response]) -> Callable[[RecordedRequest], Response]:
        """Wrap a dev route: check the Host header, turn bad parameters into 400 and errors into 500."""

        def guarded(request: RecordedRequest) -> Response:
            if self._loopback_only and not self._host_allowed(request.headers.get("host")):
                return Response(
                    403, b"serla dev answers only loopback host names\n", {"Content-Type": "text/plain"}
                )
            try:
                return route(request)
            except _BadParam as exc:
                return _json_response(400, {"error": str(exc)})
            except Exception as exc:
                return _json_response(500, {"error": f"{type(exc).__name__}: {exc}"})

        return guarded

    @staticmethod
    def _host_allowed(host: str | None) -> bool:
        if host is None:  # HTTP/1.0 without Host: not a browser
            return True
        if host.startswith("["):
            name = host[: host.find("]") + 1]
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        name = name.lower()
        return name in _LOOPBACK_NAMES or name.startswith("127.")

    def _limits_text(self) -> str:
        limits = self.rate_limits
        if not limits:
            return "rate limits off"
        window = self.rate_limit_window
        per = "minute" if window == RATE_LIMIT_WINDOW else f"{window:g} s"
        batch = limits.get("batch")
        if batch is None:
            return "rate limits on (batch requests unlimited)"
        return f"rate limits on (batch {batch} requests a {per} per project)"

    def _page(self, request: RecordedRequest) -> Response:
        info = (
            f"database {_describe_db(self._dev_store.path)} · {self._limits_text()} · dedupe by "
            f"X-Idempotency-Key {'on' if self._dedupe_enabled else 'off'} · serla-py {__version__}"
        )
        page = _static_file("index.html").decode("utf-8").replace("__INFO__", html.escape(info))
        return Response(200, page.encode("utf-8"), _static_headers("index.html"))

    def _static(self, request: RecordedRequest) -> Response:
        name = request.path.rsplit("/", 1)[-1]
        return Response(200, _static_file(name), _static_headers(name))

    def _status_api(self, request: RecordedRequest) -> Response:
        return _json_response(
            200,
            {
                "rateLimited": self.rate_limited,
                "rateLimits": self.rate_limits,
                "rateLimitWindow": self.rate_limit_window,
                "plan": self.plan,
                "dedupe": self._dedupe_enabled,
                "duplicatesIgnored": self.duplicates_ignored,
                "version": __version__,
            },
        )

    def _events_api(self, request: RecordedRequest) -> Response:
        params = _params(request)
        events, matching = self._dev_store.query_events(
            name=params.get("name") or None,
            distinct_id=params.get("distinct_id") or None,
            limit=_limit(params, 100),
        )
        return _json_response(
            200,
            {
                "events": events,
                "matching": matching,
                "total": self._dev_store.event_count(),
                "dedupe": self._dedupe_enabled,
                "duplicatesIgnored": self.duplicates_ignored,
                "rateLimited": self.rate_limited,
            },
        )

    def _identities_api(self, request: RecordedRequest) -> Response:
        params = _params(request)
        people, total = self._dev_store.people(
            distinct_id=params.get("distinct_id") or None, limit=_limit(params, 100)
        )
        return _json_response(200, {"identities": people, "total": total})

    def _sessions_api(self, request: RecordedRequest) -> Response:
        return _json_response(200, self._dev_store.sessions(limit=_limit(_params(request), 50)))

    def _rejected_api(self, request: RecordedRequest) -> Response:
        params = _params(request)
        status_text = params.get("status", "")
        if status_text and not (status_text.isdigit() and 100 <= int(status_text) <= 599):
            raise _BadParam(f"status must be an HTTP status code, not {status_text!r}")
        rejected, total = self._dev_store.rejected(
            limit=_limit(params, 100), status=int(status_text) if status_text else None
        )
        return _json_response(200, {"rejected": rejected, "total": total})

    def _clear_api(self, request: RecordedRequest) -> Response:
        if CLEAR_HEADER.lower() not in request.headers:
            return _json_response(403, {"error": f"send the {CLEAR_HEADER} header to clear the database"})
        self.clear()
        self.llm.clear()
        with self._dup_lock:
            self._duplicates = 0
        return _json_response(200, {"cleared": True})


# --------------------------------------------------------------------------------------------------------
# Command line


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the ``serla dev`` argument parser.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="serla dev",
        description="Run a local Serla server with a live web page of the events it receives, until "
        "Ctrl-C. It validates like the real server and keeps events in an SQLite file. Point your app at "
        f"it with SERLA_HOST=http://127.0.0.1:{DEFAULT_PORT} (any API key is accepted).",
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}; 0 picks one"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="FILE",
        help=f"the SQLite file for events and people (default: ./{DEFAULT_DB}); :memory: keeps nothing",
    )
    parser.add_argument(
        "--no-rate-limits",
        dest="rate_limits",
        action="store_false",
        help="lift the real server's per-minute limits (by default, as on the real server: batch 100 "
        "requests a minute per project, events 1,000; over them the answer is 429 with Retry-After)",
    )
    parser.add_argument(
        "--rate-limit-window",
        type=_seconds,
        default=RATE_LIMIT_WINDOW,
        metavar="SECONDS",
        help=f"length of a rate-limit window (default: {RATE_LIMIT_WINDOW:g}, like the real server)",
    )
    parser.add_argument(
        "--plan",
        choices=sorted(PLAN_QUOTAS),
        default=None,
        help="act as a project on this plan: free has the 25,000-event monthly quota and answers 402 on "
        "/errors, /llm and /flags (default: no quota, every feature)",
    )
    parser.add_argument(
        "--dedupe",
        dest="dedupe",
        action="store_true",
        default=False,
        help="store a request only once per X-Idempotency-Key (the real server never dedupes, so this is "
        "off by default: every retry is stored, as it would be there)",
    )
    parser.add_argument(
        "--no-dedupe", dest="dedupe", action="store_false", help="the default: store every request"
    )
    parser.add_argument(
        "--keep-rejected",
        type=_count,
        default=DEFAULT_KEEP_REJECTED,
        metavar="N",
        help=f"how many rejected requests to keep for the page (default: {DEFAULT_KEEP_REJECTED})",
    )
    parser.add_argument(
        "--flags",
        metavar="FILE",
        help="feature flags for GET /api/v1/flags: a JSON list of definitions, re-read when it changes; "
        "the form at /flags writes to it (see serla.devtools.flags)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="don't print a line per request")
    parser.add_argument("--open", action="store_true", help="open the page in a web browser")
    return parser


def _describe_db(path: str) -> str:
    return path if path == ":memory:" else os.path.abspath(path)


def run(
    args: argparse.Namespace,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the dev server in the foreground until Ctrl-C, SIGTERM or ``stop`` is set.

    Signal handlers are installed only when called on the main thread.

    Args:
        args: Options from :func:`build_parser`.
        out: Where the URL and the request lines go (default: ``sys.stdout``).
        err: Where startup errors go (default: ``sys.stderr``).
        stop: An event that stops the server when set (for tests and embedding).

    Returns:
        The exit status: ``0`` after a clean stop, ``2`` when the database can't be opened or the port
        can't be bound.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    stop = threading.Event() if stop is None else stop
    write_lock = threading.Lock()

    def say(line: str) -> None:
        with write_lock, contextlib.suppress(OSError, ValueError):
            out.write(line + "\n")
            out.flush()

    try:
        store = SQLiteStore(args.db, keep_rejected=args.keep_rejected)
    except (sqlite3.Error, ValueError, OSError) as exc:
        err.write(f"serla dev: cannot use --db {args.db}: {exc}\n")
        return 2
    try:
        server = DevServer(
            args.host,
            args.port,
            store=store,
            dedupe=args.dedupe,
            plan=args.plan,
            rate_limits=args.rate_limits,
            rate_limit_window=args.rate_limit_window,
            log=None if args.quiet else say,
        )
        if getattr(args, "flags", None):
            try:
                server.flags.load(args.flags, missing_ok=True)  # the form creates it
            except (OSError, ValueError) as exc:
                err.write(f"serla dev: cannot use --flags {args.flags}: {exc}\n")
                return 2
        try:
            server.start()
        except OSError as exc:
            err.write(
                f"serla dev: cannot listen on {args.host}:{args.port}: {exc}"
                " (is another serla dev running? try --port 0)\n"
            )
            return 2
        in_main = threading.current_thread() is threading.main_thread()
        previous: dict[int, Any] = {}
        try:
            try:
                if in_main:
                    for signum in (signal.SIGINT, signal.SIGTERM):
                        previous[signum] = signal.signal(signum, _raise_stop)
                _banner(server, store, args, say)
                stop.wait()
            except (_Stop, KeyboardInterrupt):
                pass
            # A second Ctrl-C or SIGTERM while stopping ends the process at once.
            for sig in previous:
                signal.signal(sig, signal.SIG_DFL)
            server.stop()
        finally:
            server.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        say(f"stopped; {store.event_count()} events in {_describe_db(store.path)}")
    finally:
        store.close()
    return 0


class _Stop(BaseException):
    """Raised by the SIGTERM/SIGINT handlers to leave the wait."""


def _raise_stop(signum: int, frame: Optional[FrameType]) -> None:
    raise _Stop(signum)


def _banner(
    server: DevServer, store: SQLiteStore, args: argparse.Namespace, say: Callable[[str], None]
) -> None:
    counts = store.counts()
    kept = ""
    if counts["events"] or counts["people"]:
        kept = f" ({counts['events']} events and {counts['people']} people from earlier runs)"
    url = server.url
    say(f"Serla dev server listening on {url} (Ctrl-C to stop)")
    say(f"  events page:  {url}/")
    say(f"  database:     {_describe_db(store.path)}{kept}")
    say(f"  limits:       {server._limits_text()}{'' if args.rate_limits else ' (--no-rate-limits)'}")
    if args.plan is not None:
        quota = PLAN_QUOTAS[args.plan]
        quota_text = "no monthly quota" if quota is None else f"a quota of {quota:,} events a month"
        say(f"  plan:         {args.plan} ({quota_text})")
    flags = server.flags.definitions()
    source = f"from {args.flags}" if getattr(args, "flags", None) else "in memory"
    say(f"  flags:        {len(flags)} {source}; define them at {url}/flags")
    if args.dedupe:
        say(
            "  dedupe:       on (--dedupe): a retry whose X-Idempotency-Key is stored is not stored again;"
            " the real server stores it"
        )
    else:
        say("  dedupe:       off: every request is stored, retries included, like the real server")
    say(f"  export SERLA_HOST={url} SERLA_API_KEY=sk_live_dev   # any key is accepted")
    if args.open:
        import webbrowser

        webbrowser.open(f"{url}/")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``serla dev`` (called by :func:`serla._cli.main`).

    Args:
        argv: The arguments after ``dev`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status (``0`` after Ctrl-C or SIGTERM, ``2`` on a startup error). Usage errors exit through
        argparse with status 2.
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return run(args)
