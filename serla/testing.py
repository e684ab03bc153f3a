"""Test helpers: run a real :class:`~serla.Serla` client in your tests, with no network, and assert on events.

The client is the real one (same checks, same encoder, same batching thread); only the last step differs:
instead of an HTTP request, each batch is handed to an in-process copy of the local Serla server's request
handling, which decodes the body and validates it exactly as the server would (so an event the real server
would refuse with a 400 or a 500 is refused here too), then stores it.

With pytest (this module is a pytest plugin, loaded automatically once ``serla-py`` is installed)::

    def test_signup(serla_events):
        signup(user_id="u1")                      # your code, using serla.get_default_client()
        serla_events.assert_tracked("signup_completed", distinct_id="u1", properties={"plan": "pro"})

Without pytest, or for a client your code already created::

    from serla.testing import capture

    with capture(myapp.analytics.serla) as events:
        myapp.signup(user_id="u1")
        events.assert_tracked("signup_completed", distinct_id="u1")

Reading :attr:`CapturedEvents.events` (and every ``find``/``assert_*`` method) first flushes the capturing
clients, so events tracked *before* the read are there: ``client.track(...); events.assert_tracked(...)``
works without sleeping. Events tracked concurrently by other threads after the read started are not
waited for.

Feature flags never reach a server from a capture: ``serla_events.set_flags({"new-checkout": True})`` sets
the values its clients answer (an unset flag gives the caller's fallback), and :func:`set_feature_flags`
does the same for any client.

Importing this module is cheap: it imports neither pytest (unless pytest is already running) nor the
server code (that happens when the first :class:`CapturedEvents` is created).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Optional

from serla._client import IDENTIFY_PATH, Serla
from serla._encode import encode
from serla._log import logger
from serla._registry import get_default_client, set_default_client
from serla._retry import SendResult
from serla._transport import USER_AGENT

if TYPE_CHECKING:
    from serla.devtools.server import SerlaServer

__all__ = [
    "TEST_API_KEY",
    "CaptureTransport",
    "CapturedEvents",
    "Rejection",
    "capture",
    "clear_feature_flags",
    "set_feature_flags",
]

TEST_API_KEY: Final = "sk_live_serla_testing"
"""The API key of clients made by this module (any non-empty key is accepted by the capture)."""

CAPTURE_HOST: Final = "https://capture.serla.invalid"
"""The ``host`` of clients made by this module. Nothing is ever sent there (``.invalid`` never resolves)."""

FLUSH_TIMEOUT: Final = 5.0
"""Seconds a read of :class:`CapturedEvents` waits for the capturing clients to flush."""

_CLIENT_DEFAULTS: Final[Mapping[str, Any]] = {
    "host": CAPTURE_HOST,
    "flush_interval_seconds": 0.05,
    "flush_on_exit": False,
    "disabled": False,
    "timeout": 5.0,
    "shutdown_timeout": 5.0,
}
_SHOWN: Final = 10  # events listed in an assertion message

_attached_lock = threading.Lock()
_attached: weakref.WeakKeyDictionary[Serla, CapturedEvents] = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A request the capture refused, as the real server would have (the SDK then drops or retries it).

    Attributes:
        path: The request path, e.g. ``"/api/v1/events/batch"``.
        status: The HTTP status the server would answer (400, 500...).
        response: The response body, e.g. ``{"error": "Invalid batch data", "details": [...]}``.
        body: The request body that was refused.
    """

    path: str
    status: int
    response: bytes
    body: bytes

    def __str__(self) -> str:
        return f"HTTP {self.status} for POST {self.path}: {self.response[:300].decode('utf-8', 'replace')}"


class CaptureTransport:
    """A transport that hands each request to a :class:`CapturedEvents` instead of the network.

    It implements the client's transport interface (``post(path, body, headers) -> SendResult`` and
    ``close()``). Use it through :meth:`CapturedEvents.make_client` or :func:`capture`; it is public for
    code that builds clients its own way.

    Args:
        sink: Where requests go.
        api_key: Sent as ``Authorization: Bearer <api_key>``, as the real transport does.
    """

    def __init__(self, sink: CapturedEvents, api_key: str) -> None:
        self._sink = sink
        self._api_key = api_key

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> SendResult:
        """Process one request like the server would and return its answer; never raises.

        Args:
            path: The API path, e.g. ``"/api/v1/events/batch"``.
            body: The JSON request body.
            headers: Extra request headers (the idempotency key).

        Returns:
            The server's status and body: ``201 {"success":true,"count":n}`` for an accepted batch,
            ``200`` for an identify, ``400``/``500`` for what the server would refuse.
        """
        try:
            return self._sink._receive(path, body, headers, self._api_key)
        except Exception as exc:  # a bug here must look like a network error, not kill the flusher
            logger.warning("serla.testing: capture failed", exc_info=True)
            return SendResult(None, error=f"capture failed: {type(exc).__name__}: {exc}")

    def get(self, path_with_query: str, headers: dict[str, str]) -> SendResult:
        """GET requests are not captured: answered ``404``, as by a server without that route."""
        return SendResult(404, b'{"error":"Not found"}')

    def close(self) -> None:
        """Nothing to release."""


class CapturedEvents:
    """Events and identify calls captured from one or more clients, with assertion helpers.

    Event dicts are exactly what went over the wire (after the SDK's encoding and the server's
    validation): ``{"name": ..., "distinctId": ..., "properties": {...}, "timestamp": "...Z"}``. So
    property values are JSON values: a tuple arrives as a list, a ``datetime`` as an ISO string, a
    ``Decimal`` as a number. Expected values given to :meth:`find` and the ``assert_*`` methods are encoded
    the same way before comparing, so you can pass the values you passed to ``track()``.

    Attributes:
        client: The client made by :func:`capture` / :meth:`make_client` (or attached with
            :meth:`attach`) first; ``None`` until there is one.
    """

    def __init__(self) -> None:
        from serla.devtools.server import SerlaServer

        # An in-process server that is never started: no socket, no thread. Only its request handling is
        # used, so the capture validates and stores exactly like the local server (and the real one).
        # Without the real per-minute limits: a unit test's many quick flushes are not a fleet's load (the
        # limits are the contract server's default, tested there and against the real server).
        self._server: SerlaServer = SerlaServer(max_recorded_requests=10_000, rate_limits=False)
        self._lock = threading.Lock()
        self._clients: list[Serla] = []  # flushed before every read
        self._all_clients: list[Serla] = []  # including detached ones, for assertion messages
        self._wirings: dict[int, _Wiring] = {}
        self._rejections: list[Rejection] = []
        self._flag_values: dict[str, Any] = {}
        self._user_flag_values: dict[str, dict[str, Any]] = {}
        self.client: Optional[Serla] = None

    # -- wiring clients ---------------------------------------------------------------------------------

    def make_client(self, api_key: str = TEST_API_KEY, **options: Any) -> Serla:
        """Create a real client whose requests are captured here.

        Defaults suited to tests: ``flush_on_exit=False``, ``flush_interval_seconds=0.05``,
        ``disabled=False`` (even when ``SERLA_DISABLED`` is set: nothing leaves the process anyway) and a
        ``host`` that is never contacted. Call ``client.shutdown()`` when done (:func:`capture` does).

        Args:
            api_key: The client's API key.
            **options: Any other :class:`~serla.Serla` option, overriding the defaults above.

        Returns:
            The client.

        Raises:
            TypeError: If ``options`` has ``_transport_factory``.
            ValueError: For a bad option value (as ``Serla()`` raises).
        """
        if "_transport_factory" in options:
            raise TypeError("make_client() chooses the transport itself")
        merged = {**_CLIENT_DEFAULTS, **options}
        client = Serla(api_key, _transport_factory=lambda: CaptureTransport(self, api_key), **merged)
        set_feature_flags(client, self._flag_values)  # flags never reach the network from a capture
        for user, values in self._user_flag_values.items():
            set_feature_flags(client, values, distinct_id=user)
        with self._lock:
            self._clients.append(client)
            self._all_clients.append(client)
            if self.client is None:
                self.client = client
        return client

    def attach(self, client: Serla) -> None:
        """Capture the requests of a client your code already created, until :meth:`detach`.

        Events still buffered in the client are captured too. A disabled client (``SERLA_DISABLED``) is
        enabled while attached, since nothing leaves the process. Prefer :func:`capture`, which detaches
        for you.

        Args:
            client: The client to capture.

        Raises:
            ValueError: If the client is attached to a capture already.
        """
        with _attached_lock:
            if client in _attached:
                raise ValueError(f"{client!r} is already being captured")
            _attached[client] = self
        wiring = _Wiring(client, CaptureTransport(self, client.config.api_key))
        flags = client._flag_client()
        wiring.flags_local = flags._local  # put back by detach()
        flags.set_local(self._flag_values)  # while captured, flags come from set_flags(), not a server
        for user, values in self._user_flag_values.items():
            flags.set_local(values, user)
        with self._lock:
            self._clients.append(client)
            self._all_clients.append(client)
            self._wirings[id(client)] = wiring
            if self.client is None:
                self.client = client

    def detach(self, client: Serla, timeout: float = FLUSH_TIMEOUT) -> None:
        """Flush ``client`` into this capture, then give it back its own transport. Safe to call twice.

        Args:
            client: A client passed to :meth:`attach`.
            timeout: Seconds to wait for the flush.
        """
        with self._lock:
            wiring = self._wirings.pop(id(client), None)
        if wiring is None:
            return
        client.flush(timeout)
        with self._lock:
            self._clients.remove(client)  # later reads must not flush it towards its real host
        wiring.undo()
        client._flag_client()._local = wiring.flags_local
        with _attached_lock:
            _attached.pop(client, None)

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Flush every capturing client, so that everything tracked so far is captured.

        The reading methods call it for you.

        Args:
            timeout: Seconds to wait at most, for each client.

        Returns:
            True when every client flushed all its events (False if any was dropped or the wait timed out).
        """
        with self._lock:
            clients = list(self._clients)
        ok = True
        for client in clients:
            ok = client.flush(timeout) and ok
        return ok

    # -- reading ----------------------------------------------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every captured event as sent on the wire, oldest first (a copy; flushes the clients first)."""
        self.flush()
        return copy.deepcopy(self._server.events)

    @property
    def names(self) -> list[str]:
        """The captured events' names, oldest first (flushes first)."""
        return [event["name"] for event in self.events]

    @property
    def identities(self) -> dict[str, dict[str, Any]]:
        """Each identified person's properties, merged as the server merges them (a copy).

        Keyed by ``distinctId``. ``identify()`` is synchronous, so no flush is needed.
        """
        return copy.deepcopy(self._server.identities)

    @property
    def identify_calls(self) -> list[dict[str, Any]]:
        """Each accepted identify body (``{"distinctId": ..., "properties": {...}}``), in order.

        Kept for the last 10,000 requests of this capture.
        """
        return [
            request.json()
            for request in self._server.requests
            if request.path == IDENTIFY_PATH and request.status == 200
        ]

    @property
    def rejections(self) -> list[Rejection]:
        """Requests refused like the server would refuse them (an SDK bug, or a fault of yours)."""
        self.flush()
        with self._lock:
            return list(self._rejections)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.events)

    def __repr__(self) -> str:
        return f"<CapturedEvents events={len(self._server.events)} clients={len(self._clients)}>"

    def find(
        self,
        name: Optional[str] = None,
        /,
        *,
        distinct_id: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        **props: Any,
    ) -> list[dict[str, Any]]:
        """Return the captured events that match, oldest first.

        Args:
            name: The event name; ``None`` matches every name.
            distinct_id: Only events of this ``distinctId``.
            properties: Only events whose properties include these keys with these values (other keys are
                ignored). Values are compared as JSON: ``1`` matches ``1.0`` but not ``True``.
            **props: More expected properties, as keywords: ``find("signup", plan="pro")``.

        Returns:
            The matching events (copies).
        """
        expected = _expected_props(properties, props)
        return [e for e in self.events if not _mismatches(e, name, distinct_id, expected)]

    def assert_tracked(
        self,
        name: str,
        distinct_id: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
        count: Optional[int] = None,
    ) -> list[dict[str, Any]]:
        """Assert that an event was captured.

        Args:
            name: The event name.
            distinct_id: The expected ``distinctId``; ``None`` accepts any.
            properties: Properties the event must include (a subset match: other keys are ignored).
            count: How many matching events there must be exactly; ``None`` means at least one.

        Returns:
            The matching events, oldest first.

        Raises:
            AssertionError: With the events that came closest, how they differ, and any event the capture
                refused or the client dropped.
        """
        expected = _expected_props(properties, {})
        events = self.events
        matches = [e for e in events if not _mismatches(e, name, distinct_id, expected)]
        if (count is None and matches) or (count is not None and len(matches) == count):
            return matches
        want = "at least 1" if count is None else f"exactly {count}"
        lines = [
            f"expected {want} {_what(name, distinct_id, expected)}; captured {len(matches)} matching"
            f" out of {len(events)} events."
        ]
        if matches:
            lines.append("Matching events:")
            lines += [f"  - {_describe(e)}" for e in matches[:_SHOWN]]
        else:
            same_name = [e for e in events if e.get("name") == name]
            if same_name:
                lines.append(f"Captured {name!r} events and how they differ:")
                for e in same_name[:_SHOWN]:
                    why = "; ".join(_mismatches(e, name, distinct_id, expected))
                    lines.append(f"  - {_describe(e)}\n      differs: {why}")
            elif events:
                lines.append(f"No {name!r} event was captured. Captured names: {_name_counts(events)}.")
            else:
                lines.append("No event was captured at all.")
        lines += self._notes()
        raise AssertionError("\n".join(lines))

    def assert_not_tracked(
        self,
        name: str,
        distinct_id: Optional[str] = None,
        properties: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Assert that no matching event was captured.

        Args:
            name: The event name.
            distinct_id: Only fail for this ``distinctId``; ``None`` means any.
            properties: Only fail for events including these properties.

        Raises:
            AssertionError: Listing the matching events.
        """
        expected = _expected_props(properties, {})
        matches = [e for e in self.events if not _mismatches(e, name, distinct_id, expected)]
        if matches:
            lines = [f"expected no {_what(name, distinct_id, expected)}; captured {len(matches)}:"]
            lines += [f"  - {_describe(e)}" for e in matches[:_SHOWN]]
            raise AssertionError("\n".join(lines))

    def assert_identified(self, distinct_id: str, properties: Optional[Mapping[str, Any]] = None) -> None:
        """Assert that ``identify(distinct_id)`` was called and the merged properties include these.

        Args:
            distinct_id: The person's distinct ID.
            properties: Properties the merged person must have (subset match).

        Raises:
            AssertionError: Saying who was identified instead, or how the properties differ.
        """
        expected = _expected_props(properties, {})
        people = self.identities
        if distinct_id not in people:
            known = ", ".join(repr(k) for k in list(people)[:_SHOWN]) or "nobody"
            lines = [f"expected identify({distinct_id!r}); identified: {known}."]
            lines += self._notes()
            raise AssertionError("\n".join(lines))
        why = _prop_mismatches(people[distinct_id], expected)
        if why:
            raise AssertionError(
                f"identify({distinct_id!r}) properties differ: {'; '.join(why)}\n"
                f"  merged properties: {_short(people[distinct_id])}"
            )

    def set_flags(self, values: Mapping[str, Any], *, distinct_id: Optional[str] = None) -> None:
        """Set the feature flag values the capturing clients answer, without a server.

        Clients made by this capture answer flags only from these values (an unset flag gives the
        caller's fallback); no flag request ever leaves the process. Calls add up: later values for a
        key win, and values for one ``distinct_id`` win over the values for everyone.

        Args:
            values: Flag key -> ``True``/``False``/variant key.
            distinct_id: Only for this user; ``None`` for every user.
        """
        with self._lock:
            if distinct_id is None:
                self._flag_values.update(values)
                target = dict(self._flag_values)
            else:
                self._user_flag_values.setdefault(distinct_id, {}).update(values)
                target = dict(self._user_flag_values[distinct_id])
            clients = list(self._clients)
        for client in clients:
            set_feature_flags(client, target, distinct_id=distinct_id)

    def clear(self) -> None:
        """Flush the clients, then forget every captured event, identity and rejection."""
        self.flush()
        self._server.clear()
        with self._lock:
            self._rejections.clear()

    # -- internals --------------------------------------------------------------------------------------

    def _receive(self, path: str, body: bytes, headers: Mapping[str, str], api_key: str) -> SendResult:
        """Handle one request from a :class:`CaptureTransport` (flusher or identify thread)."""
        from serla.devtools.server import RecordedRequest

        lowered = {
            "authorization": f"Bearer {api_key}",
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        lowered.update({k.lower(): v for k, v in headers.items()})
        request = RecordedRequest(
            method="POST",
            path=path,
            headers=lowered,
            body=body,
            idempotency_key=lowered.get("x-idempotency-key") or None,
        )
        # Private on purpose: the capture needs the server's request handling without its socket.
        response = self._server.handle(request)
        if response is None:  # only a fault does this, and the capture injects none
            return SendResult(None, error="no response")
        if response.status >= 300:
            with self._lock:
                self._rejections.append(Rejection(path, response.status, response.body, body))
            logger.debug("serla.testing: request refused: HTTP %d %r", response.status, response.body)
        return SendResult(response.status, response.body, response.headers.get("Retry-After"))

    def _notes(self) -> list[str]:
        notes: list[str] = []
        with self._lock:
            rejections = list(self._rejections)
            clients = list(self._all_clients)
        if rejections:
            notes.append(f"The capture refused {len(rejections)} request(s), as the server would:")
            notes += [f"  - {r}" for r in rejections[:_SHOWN]]
        for client in clients:
            dropped = {k: v for k, v in client.stats()["dropped"].items() if v}
            if dropped:
                notes.append(
                    f"{client!r} dropped events: {dropped} (the reasons are WARNINGs on the 'serla' logger)."
                )
        if not clients:
            notes.append("No client is capturing into this CapturedEvents.")
        elif all(c.stats()["accepted"] == 0 for c in clients):
            notes.append(
                "No track() call reached the capturing client. If your code uses a client of its own, "
                "capture that one: serla.testing.capture(your_client), or have it use "
                "serla.get_default_client() (the serla_events fixture registers its client there)."
            )
        return notes


@contextlib.contextmanager
def capture(
    client: Optional[Serla] = None,
    *,
    set_default: bool = False,
    api_key: str = TEST_API_KEY,
    **options: Any,
) -> Iterator[CapturedEvents]:
    """Capture a client's events for the duration of a ``with`` block.

    Args:
        client: A client your code already created (for example the module-level one of your app): it is
            attached for the block (:meth:`CapturedEvents.attach`) and given back its own transport after.
            ``None`` creates a fresh capturing client (:meth:`CapturedEvents.make_client`), shut down after.
        set_default: Also register the client as the default one (:func:`serla.set_default_client`) for
            the block, and restore the previous default after.
        api_key: The API key of a fresh client.
        **options: :class:`~serla.Serla` options for a fresh client.

    Yields:
        The captured events; the client is ``events.client``. They stay readable after the block.

    Raises:
        TypeError: If ``options`` are given together with an existing ``client``.
    """
    events = CapturedEvents()
    owned = client is None
    if client is None:
        client = events.make_client(api_key, **options)
    else:
        if options:
            raise TypeError("capture(client) takes no client options: the client exists already")
        events.attach(client)
    previous = get_default_client(create=False) if set_default else None
    if set_default:
        set_default_client(client)
    try:
        yield events
    finally:
        if set_default:
            set_default_client(previous)
        if owned:
            client.shutdown(FLUSH_TIMEOUT)
        else:
            events.detach(client)


# -- feature flags -------------------------------------------------------------------------------------


def set_feature_flags(client: Serla, values: Mapping[str, Any], *, distinct_id: Optional[str] = None) -> None:
    """Make ``client`` answer feature flags from ``values``, without a server (until cleared).

    From then on the client makes no flag request: ``get_feature_flag(key)`` returns ``values[key]``
    (a value for ``distinct_id`` wins over one for every user), the caller's fallback for an unset key.
    Exposure events are not sent for these values.

    Args:
        client: Any client (a capturing one or your app's).
        values: Flag key -> ``True``/``False``/variant key. Replaces the earlier values for the same
            ``distinct_id`` (or for everyone).
        distinct_id: Only for this user; ``None`` for every user.
    """
    client._flag_client().set_local(dict(values), distinct_id)


def clear_feature_flags(client: Serla) -> None:
    """Undo :func:`set_feature_flags`: the client asks the server again (its cache is emptied)."""
    flags = client._flag_client()
    flags.set_local(None)
    flags.clear()


# -- wiring internals ----------------------------------------------------------------------------------


class _Wiring:
    """Points an existing client at a capture transport and can put everything back."""

    def __init__(self, client: Serla, transport: CaptureTransport) -> None:
        worker = client._worker
        self._client = client
        self._factory = worker._transport_factory
        self._transport = worker._transport
        self._client_factory = client._transport_factory
        self._disabled = client._disabled
        self.flags_local: Any = None
        worker._transport_factory = lambda: transport
        # The flusher reads ``_transport`` once per send (no lock needed for one attribute store); the
        # previous transport is kept, unused, to be put back (closing it here could race a send).
        worker._transport = transport
        client._transport_factory = lambda: transport
        client._disabled = False

    def undo(self) -> None:
        client = self._client
        worker = client._worker
        worker._transport_factory = self._factory
        worker._transport = self._transport
        client._transport_factory = self._client_factory
        client._disabled = self._disabled


# -- matching and messages -----------------------------------------------------------------------------


def _expected_props(properties: Optional[Mapping[str, Any]], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Encode expected properties the way ``track()`` encodes them, so they compare as wire values."""
    merged = {**(properties or {}), **extra}
    if not merged:
        return {}
    decoded: dict[str, Any] = json.loads(encode(merged))
    return decoded


def _same(a: Any, b: Any) -> bool:
    """JSON equality: like ``==`` but a bool never equals a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _prop_mismatches(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    why = []
    for key, want in expected.items():
        if key not in actual:
            why.append(f"properties[{key!r}] is missing (expected {want!r})")
        elif not _same(actual[key], want):
            why.append(f"properties[{key!r}] is {actual[key]!r}, expected {want!r}")
    return why


def _mismatches(
    event: Mapping[str, Any], name: Optional[str], distinct_id: Optional[str], expected: Mapping[str, Any]
) -> list[str]:
    """Why ``event`` doesn't match (empty when it does)."""
    why = []
    if name is not None and event.get("name") != name:
        why.append(f"name is {event.get('name')!r}, expected {name!r}")
    if distinct_id is not None and event.get("distinctId") != distinct_id:
        why.append(f"distinctId is {event.get('distinctId')!r}, expected {distinct_id!r}")
    if expected:
        props = event.get("properties")
        why += _prop_mismatches(props if isinstance(props, dict) else {}, expected)
    return why


def _what(name: str, distinct_id: Optional[str], expected: Mapping[str, Any]) -> str:
    text = f"{name!r} event"
    if distinct_id is not None:
        text += f" for distinct_id={distinct_id!r}"
    if expected:
        text += f" with properties including {_short(expected)}"
    return text


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(event: Mapping[str, Any]) -> str:
    return (
        f"{event.get('name')!r} distinctId={event.get('distinctId')!r} "
        f"properties={_short(event.get('properties'))} timestamp={event.get('timestamp')!r}"
    )


def _name_counts(events: list[dict[str, Any]]) -> str:
    counts = Counter(str(e.get("name")) for e in events)
    return ", ".join(f"{name!r} x{n}" for name, n in counts.most_common(_SHOWN))


# -- the pytest plugin ---------------------------------------------------------------------------------
# Registered with the ``pytest11`` entry point. pytest is only imported when it is running already, so
# ``import serla.testing`` in a program costs nothing more.

if "pytest" in sys.modules:
    import pytest

    @pytest.fixture
    def serla_events() -> Iterator[CapturedEvents]:
        """A fresh capturing client, registered as the default client for the test.

        ``serla_events.client`` is a real :class:`~serla.Serla` whose requests are validated like the
        server's and stored in memory; ``serla.get_default_client()`` returns it during the test and the
        previous default comes back after. The client is shut down at teardown.

        Yields:
            The :class:`CapturedEvents`.
        """
        with capture(set_default=True) as events:
            yield events
