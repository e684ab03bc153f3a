"""The tier's own check: a client's event reaches the real server's database."""

from __future__ import annotations

from serla import Serla

from .conftest import RealServer


def test_one_event_is_stored(realserver: RealServer, unique: str) -> None:
    client = Serla(realserver.keys["max"], host=realserver.host, flush_on_exit=False)
    assert client.track("smoke_checked", unique, {"n": 1})
    assert client.shutdown(timeout=60)
    rows = realserver.sql(f"select name, properties from events where distinct_id = '{unique}'")
    assert rows == [{"name": "smoke_checked", "properties": {"n": 1}}]
