"""Shared fixtures for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serla import _log


@pytest.fixture(autouse=True)
def _fresh_warning_limits() -> Iterator[None]:
    """Each test starts with the rate-limited warnings unsaid, so one test's WARNING can't mute another's."""
    _log.reset_warnings()
    yield
    _log.reset_warnings()
