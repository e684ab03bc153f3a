"""What travels on the wire between a client and the local servers: paths, requests, responses.

Shared by :mod:`serla.devtools.server` (routing), the endpoint modules (:mod:`serla.devtools.ingest` and
the others listed in the server's routing table) and :mod:`serla.devtools.store`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Final

from serla.devtools.validation import MISSING, parse_json

if TYPE_CHECKING:
    from serla.devtools.limits import Project
    from serla.devtools.server import Fault, SerlaServer

__all__ = [
    "BATCH_PATH",
    "CORS_HEADERS",
    "ERRORS_PATH",
    "EVENTS_PATH",
    "EXPORT_PATH",
    "FLAGS_PATH",
    "IDENTIFY_PATH",
    "LLM_PATH",
    "Caller",
    "Endpoint",
    "RecordedRequest",
    "Response",
    "json_response",
    "parsed_body",
]

BATCH_PATH: Final = "/api/v1/events/batch"
EVENTS_PATH: Final = "/api/v1/events"
IDENTIFY_PATH: Final = "/api/v1/identify"
ERRORS_PATH: Final = "/api/v1/errors"
LLM_PATH: Final = "/api/v1/llm"
FLAGS_PATH: Final = "/api/v1/flags"
EXPORT_PATH: Final = "/api/v1/export"

CORS_HEADERS: Final[Mapping[str, str]] = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Idempotency-Key",
}
"""What every answer of the ingest routes carries (their ``corsHeaders``)."""
JSON_TYPE: Final = "application/json"
TEXT_TYPE: Final = "text/plain; charset=utf-8"


@dataclass
class RecordedRequest:
    """One HTTP request the server received, including rejected ones.

    The server appends the record when the request arrives (``status`` is ``0`` then) and sets ``status``
    just before it writes the response, so once a client has its response the record is complete.

    Attributes:
        method: The HTTP method, e.g. ``"POST"``.
        path: The request path without the query string, e.g. ``"/api/v1/events/batch"``.
        headers: Request headers with lower-case names. Values are stripped of surrounding spaces and tabs
            (as the real server's fetch ``Headers`` does); repeated headers are joined with ``", "``.
        body: The raw request body.
        status: The status code sent, or ``0`` if no response was sent (the connection was dropped by a
            fault, or the request is still being handled).
        idempotency_key: The ``X-Idempotency-Key`` header, or ``None`` when absent or empty.
        event_count: How many events the body carries: the length of ``events`` for a parseable batch,
            ``1`` for a JSON object sent to ``/api/v1/events``, otherwise ``0``. It does not depend on
            whether the events were stored.
        query: The raw query string without the ``?`` (``""`` when there is none).
        fault: The fault applied to this request, if any.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    idempotency_key: str | None = None
    event_count: int = 0
    query: str = ""
    fault: Fault | None = None
    _parsed: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._parsed = MISSING

    def json(self) -> Any:
        """Parse the body as JSON.

        Returns:
            The decoded JSON value.

        Raises:
            ValueError: If the body is not valid JSON.
        """
        return json.loads(self.body.decode("utf-8"))


@dataclass(frozen=True)
class Response:
    """An HTTP response produced by a route.

    Attributes:
        status: The status code.
        body: The response body. ``Content-Length`` is computed by the server; don't set it.
        headers: Extra response headers.
    """

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer, as ``NextResponse.json`` sends it.

    Args:
        status: The status code.
        payload: The JSON value.
        headers: The headers besides ``Content-Type`` (``None``: :data:`CORS_HEADERS`).

    Returns:
        The response.
    """
    merged = {"Content-Type": JSON_TYPE, **(CORS_HEADERS if headers is None else headers)}
    return Response(status, _ENCODER.encode(payload).encode("utf-8"), merged)


def parsed_body(request: RecordedRequest) -> Any:
    """The request's body parsed as the real server parses it (cached on the request).

    Args:
        request: The request.

    Returns:
        The JSON value, or :data:`~serla.devtools.validation.MALFORMED`.
    """
    if request._parsed is MISSING:
        request._parsed = parse_json(request.body)
    return request._parsed


@dataclass(frozen=True)
class Caller:
    """Who sent a request that passed :meth:`serla.devtools.server.SerlaServer.authorize`.

    Attributes:
        project: The project of the key.
        key: The API key.
        scope: ``"secret"`` or ``"public"``.
    """

    project: Project
    key: str
    scope: str


EndpointHandler = Callable[["SerlaServer", RecordedRequest], Response]
"""Answers one request of a route: ``handler(server, request) -> Response``."""


@dataclass(frozen=True)
class Endpoint:
    """A Serla route of the local server (an entry of :data:`serla.devtools.server.ROUTES`).

    Attributes:
        methods: The methods the route has besides ``OPTIONS`` (others get 405), e.g. ``("POST",)``.
        handler: Answers a request with one of ``methods``.
        bucket: The route's rate-limit bucket (``"batch"``, ``"events"``, ``"errors"``...), ``None`` for none.
        preflight_status: What ``OPTIONS`` answers (200 on the event routes, 204 on errors/llm/flags).
        cors: The route's CORS headers, sent with its answers and its preflight.
        counts_events: Whether :attr:`RecordedRequest.event_count` is computed for it (event routes).
    """

    methods: tuple[str, ...]
    handler: EndpointHandler
    bucket: str | None = None
    preflight_status: int = 200
    cors: Mapping[str, str] = field(default_factory=lambda: dict(CORS_HEADERS))
    counts_events: bool = False
