"""Fixtures for the integration tests: the contract server, a client, HTTP helpers for loopback servers."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any, Optional

import pytest

import serla
from serla.devtools.server import SerlaServer

KEY = "sk_live_integrations_test"
BROWSER_SESSION = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY}) as srv:
        yield srv


@pytest.fixture
def client(server: SerlaServer) -> Iterator[serla.Serla]:
    c = serla.Serla(KEY, host=server.url, flush_interval_seconds=60, flush_on_exit=False)
    yield c
    c.shutdown(5)


def request(
    port: int, method: str, path: str, headers: Optional[dict[str, str]] = None, body: bytes = b""
) -> tuple[int, Any]:
    """One HTTP request to 127.0.0.1:port; the status and the JSON (or text) body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(data)
    except ValueError:
        return response.status, data.decode("utf-8", "replace")


def by_name(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        out.setdefault(event["name"], []).append(event)
    return out
