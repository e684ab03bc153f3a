"""Shared fixtures for the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from serla import _log


@pytest.fixture(autouse=True)
def _fresh_warning_limits() -> Iterator[None]:
    """Each test starts with the rate-limited warnings unsaid, so one test's WARNING can't mute another's."""
    _log.reset_warnings()
    yield
    _log.reset_warnings()


@pytest.fixture(autouse=True, scope="session")
def _no_proxy_from_the_environment() -> Iterator[None]:
    """No test inherits a proxy from the machine running the suite (a CI runner's ``HTTPS_PROXY``).

    The SDK honours ``http_proxy``/``https_proxy``/``no_proxy`` (any case) the way ``urllib`` does, and
    does not exempt loopback hosts unless ``NO_PROXY`` says so: an inherited proxy variable would send
    the suite's requests to 127.0.0.1 through it. Every ``*_proxy`` variable is removed for the whole
    session (subprocesses inherit the cleaned environment); tests about proxies set their own with
    ``monkeypatch.setenv``.
    """
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.lower().endswith("_proxy"):
                mp.delenv(name)
        yield
