"""Fixtures of the reliability suite: a real SerlaServer on 127.0.0.1 and real clients (see
``reliability_support``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reliability_support import API_KEY, Clients

from serla.devtools.server import SerlaServer


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    """A started loopback server; stopped (and every hanging request released) after the test."""
    with SerlaServer(api_keys={API_KEY}) as srv:
        yield srv


@pytest.fixture
def dedupe_server() -> Iterator[SerlaServer]:
    """A loopback server that answers a repeated ``X-Idempotency-Key`` with success and stores nothing."""
    with SerlaServer(api_keys={API_KEY}, dedupe=True) as srv:
        yield srv


@pytest.fixture
def make_client() -> Iterator[Clients]:
    """``make_client(url, **options) -> Serla``; all of them are shut down (bounded) at teardown."""
    clients = Clients()
    yield clients
    for client in clients.made:
        client.shutdown(0.5)
