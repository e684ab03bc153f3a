"""The OpenTelemetry section of the docs names what the code uses (keys, markers, variables, entry points)."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

from serla.otel import DEFAULT_DISTINCT_ID_KEYS, EVENT_NAME_ATTRIBUTES, EXCEPTION_EVENT, TRACKED_MARKER
from serla.otel._translate import ENV_DISTINCT_ID_KEY, ENV_FALLBACK_DISTINCT_ID, ENV_SPANS

ROOT = Path(__file__).resolve().parents[2]


def otel_docs() -> str:
    """docs/opentelemetry.md."""
    section = (ROOT / "docs" / "opentelemetry.md").read_text(encoding="utf-8")
    assert "## The mapping" in section and "SerlaSpanProcessor" in section
    return section


def test_the_mapping_names_the_codes_keys() -> None:
    text = otel_docs()
    first, second = DEFAULT_DISTINCT_ID_KEYS
    assert f"then `{first}`, then `{second}`" in text  # the distinct_id order
    assert all(f"`{key}`" in text for key in EVENT_NAME_ATTRIBUTES)
    assert f"`{EXCEPTION_EVENT}`" in text and f"`{TRACKED_MARKER}`" in text
    for variable in (ENV_DISTINCT_ID_KEY, ENV_FALLBACK_DISTINCT_ID, ENV_SPANS):
        assert f"| `{variable}` |" in text


@pytest.mark.parametrize(
    ("group", "target"),
    [
        ("opentelemetry_traces_exporter", "serla.otel:SerlaSpanExporter"),
        ("opentelemetry_logs_exporter", "serla.otel:SerlaLogRecordExporter"),
        ("opentelemetry_instrumentor", "serla.otel:SerlaInstrumentor"),
    ],
)
def test_the_documented_entry_points_are_installed_and_load(group: str, target: str) -> None:
    eps = entry_points()
    group_eps = eps.select(group=group) if hasattr(eps, "select") else eps.get(group, [])  # Python 3.9
    # One entry point, possibly seen twice (an editable install next to a source tree's .egg-info).
    [found] = {ep.value: ep for ep in group_eps if ep.name == "serla"}.values()
    assert found.value == target
    assert found.load().__name__ == target.split(":")[1]
    assert target.split(":")[1] in otel_docs()
