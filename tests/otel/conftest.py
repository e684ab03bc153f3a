"""Fixtures for the OpenTelemetry bridge tests: a real local server, a real client, real SDK providers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

import serla
from serla.devtools.server import SerlaServer

API_KEY = "sk_live_otel_test"


@pytest.fixture
def api_key() -> str:
    return API_KEY


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={API_KEY}) as srv:
        yield srv


@pytest.fixture
def client(server: SerlaServer) -> Iterator[serla.Serla]:
    """A client whose interval is long: anything delivered promptly was delivered by a flush."""
    c = serla.Serla(API_KEY, host=server.url, flush_interval_seconds=60.0, flush_on_exit=False, timeout=5.0)
    yield c
    c.shutdown(timeout=5.0)


@pytest.fixture(autouse=True)
def _no_default_client() -> Iterator[None]:
    """Each test starts and ends with no registered default client (closing one a test created)."""
    serla.set_default_client(None)
    yield
    leftover = serla.get_default_client(create=False)
    serla.set_default_client(None)
    if leftover is not None:
        leftover.shutdown(timeout=5.0)
