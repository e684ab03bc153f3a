"""Sessions against the real server: the events of one request land in one session (``sessions``/``events``)."""

from __future__ import annotations

from typing import Any

import pytest

import serla
from serla import Serla

from .conftest import PROJECTS, RealServer

flask = pytest.importorskip("flask")


def make_app(client: Serla) -> Any:
    from serla.integrations.wsgi import SerlaMiddleware

    app = flask.Flask("realserver_sessions")

    @app.post("/checkout/<tag>")
    def checkout(tag: str) -> Any:
        for step in ("cart_viewed", "checkout_started", "checkout_paid"):
            client.track(f"{tag}_{step}")  # no user or session in the view
        return {"ok": True}

    app.wsgi_app = SerlaMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        distinct_id=lambda environ: environ.get("HTTP_X_USER"),
        groups=lambda environ: {"company": "acme"},
    )
    return app


def test_the_events_of_one_request_land_in_one_session(realserver: RealServer, unique: str) -> None:
    client = Serla(
        realserver.keys["max"], host=realserver.host, flush_on_exit=False, flush_interval_seconds=60
    )
    browser = serla.new_session_id()
    try:
        http = make_app(client).test_client()
        assert http.post(f"/checkout/{unique}", headers={"X-User": unique}).status_code == 200
        assert http.post(f"/checkout/{unique}", headers={"X-User": unique}).status_code == 200
        headers = {"X-User": unique, "X-Serla-Session-Id": browser}
        assert http.post(f"/checkout/{unique}", headers=headers).status_code == 200
        # Without any context or session id, the server makes a session of each event.
        client.track(f"{unique}_bare", unique)
        client.track(f"{unique}_bare", unique)
        assert client.shutdown(timeout=60)
    finally:
        client.shutdown(timeout=5)

    project = PROJECTS["max"]
    rows = realserver.sql(
        "select e.session_id, count(*)::int as events, min(s.event_count) as session_events, "
        "min(s.distinct_id) as session_user, min(e.properties->'$groups'->>'company') as company "
        f"from events e join sessions s on s.id = e.session_id and s.project_id = e.project_id "
        f"where e.project_id = '{project}' and e.distinct_id = '{unique}' and e.name like '{unique}_%' "
        "and e.name <> '" + unique + "_bare' group by e.session_id"
    )
    # Three requests: three sessions of three events each, each session's row counting exactly them.
    assert [(r["events"], r["session_events"], r["session_user"], r["company"]) for r in rows] == [
        (3, 3, unique, "acme")
    ] * 3
    sessions = {r["session_id"] for r in rows}
    assert len(sessions) == 3
    assert browser in sessions  # the browser's session id was adopted as is

    bare = realserver.sql(
        f"select session_id from events where project_id = '{project}' and name = '{unique}_bare'"
    )
    assert len(bare) == 2 and bare[0]["session_id"] != bare[1]["session_id"]
