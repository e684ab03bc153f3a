"""The resolvers every integration shares: odd results and failures are ignored, never raised."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest

import serla
from serla.integrations._common import Resolvers, browser_session, session_from_cookie

from .conftest import BROWSER_SESSION


def scope_of(resolvers: Resolvers, request: Any = None, browser: Any = None) -> serla.Scope:
    return resolvers.scope(resolvers.resolve(request), browser)


def test_values_are_coerced_or_ignored(caplog: pytest.LogCaptureFixture) -> None:
    uid = uuid.UUID(int=7)
    with caplog.at_level(logging.WARNING, logger="serla"):
        assert scope_of(Resolvers(distinct_id=lambda r: 42, request_sessions=False)).distinct_id == "42"
        assert scope_of(Resolvers(distinct_id=lambda r: uid, request_sessions=False)).distinct_id == str(uid)
        assert scope_of(Resolvers(distinct_id=lambda r: True, request_sessions=False)).distinct_id is None
        odd = Resolvers(groups=lambda r: ["company"], properties=lambda r: "x", request_sessions=False)
        assert scope_of(odd) == serla.Scope()
    assert "distinct_id resolver returned bool" in caplog.text
    assert "groups resolver returned list" in caplog.text
    assert "properties resolver returned str" in caplog.text


def test_async_resolvers_are_awaited_and_their_failures_ignored(caplog: pytest.LogCaptureFixture) -> None:
    async def user(request: Any) -> str:
        return "u"

    async def groups(request: Any) -> Any:
        raise RuntimeError("backend down")

    resolvers = Resolvers(distinct_id=user, groups=groups)
    with caplog.at_level(logging.WARNING, logger="serla"):
        scope = resolvers.scope(asyncio.run(resolvers.aresolve(None)), BROWSER_SESSION)
    assert scope == serla.Scope("u", BROWSER_SESSION)
    assert "the groups resolver raised RuntimeError('backend down')" in caplog.text


def test_the_request_scope_merges_into_the_enclosing_one() -> None:
    resolvers = Resolvers(groups=lambda r: {"team": "red"}, properties=lambda r: {"b": 2})
    with serla.context(
        distinct_id="outer", session_id=BROWSER_SESSION, groups={"company": "acme"}, properties={"a": 1}
    ):
        scope = scope_of(resolvers)
    assert scope == serla.Scope(
        "outer", BROWSER_SESSION, {"company": "acme", "team": "red"}, {"a": 1, "b": 2}
    )


def test_browser_session_sources() -> None:
    other = "a" * 32
    assert browser_session(f" {BROWSER_SESSION} ", None) == BROWSER_SESSION
    assert browser_session("nope", f"serla_session_id={other}") == other
    assert browser_session(None, f'x=1; serla_session_id="{other}"') == other
    assert session_from_cookie("serla_session_id=short") is None
    assert session_from_cookie("my_serla_session_id=" + other) is None
    assert browser_session(None, None) is None
