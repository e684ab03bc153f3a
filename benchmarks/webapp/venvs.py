"""The web benchmark's venvs: ``benchmarks/.venvs/web_<key>``, made by ``run.py``'s ``ensure_venv``.

Each venv holds one SDK (this repo, posthog or sentry-sdk) plus the web stack pinned in
``requirements.txt`` (FastAPI, uvicorn, Flask, gunicorn), so that every configuration of the benchmark runs
the same frameworks at the same versions. The no-SDK baselines run in ``web_serla`` without importing
serla.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent


def _load_bench() -> object:
    """``benchmarks/run.py`` as module ``bench_run`` (by path: this folder has a ``run.py`` too)."""
    if "bench_run" in sys.modules:
        return sys.modules["bench_run"]
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))  # for its own ``from sink import ...``
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module
    spec.loader.exec_module(module)
    return module


_bench: Any = _load_bench()  # ensure_venv, read_pins, this_requirements, child_env, log, machine_info

VENV_KEYS = ("web_serla", "web_posthog", "web_sentry")


def _web_pins() -> tuple[list[str], dict[str, list[str]]]:
    """(requirements for every web venv, requirements for one venv only) from ``requirements.txt``."""
    common: list[str] = []
    only: dict[str, list[str]] = {}
    for line in (HERE / "requirements.txt").read_text().splitlines():
        m = re.match(r"\s*([^#\s]+)\s*(?:#\s*venv:\s*(\S+))?", line)
        if not m or not m.group(1):
            continue
        if m.group(2):
            only.setdefault(m.group(2), []).append(m.group(1))
        else:
            common.append(m.group(1))
    return common, only


def requirements(key: str) -> list[str]:
    """What ``pip install`` gets for venv ``key``."""
    common, only = _web_pins()
    if key == "web_serla":
        base = _bench.this_requirements()
    elif key == "web_posthog":
        base = [_bench.read_pins()["posthog"]]
    else:
        base = []
    return [*base, *only.get(key, []), *common]


def ensure_alt(ref: str) -> Path:
    """``web_serla_alt``: this SDK at git ref ``ref`` (a branch or commit of this repository), not editable.

    The tree is exported with ``git archive`` into a temporary folder and installed from there, so another
    worktree is never written to. The venv is rebuilt when the ref points to another commit.
    """
    import subprocess
    import tempfile

    commit = subprocess.run(
        ["git", "-C", str(BENCH.parent), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    common, _ = _web_pins()
    py = _bench.venv_python("web_serla_alt")
    marker = py.parent.parent / ".bench-spec"
    spec_id = f"git:{commit} " + " ".join(common)
    if py.exists() and marker.exists() and marker.read_text() == spec_id:
        return Path(py)
    with tempfile.TemporaryDirectory(prefix="webbench-alt-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(BENCH.parent), "archive", "--format=tar", commit],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        _bench.ensure_venv("web_serla_alt", [f"{tmp}[otel]", *common])
    marker.write_text(spec_id)
    return Path(py)


def ensure(key: str) -> Path:
    """Create (or reuse) ``benchmarks/.venvs/<key>``; returns its python."""
    return _bench.ensure_venv(key, requirements(key))


def python(key: str) -> Path:
    return _bench.venv_python(key)


if __name__ == "__main__":
    for k in sys.argv[1:] or VENV_KEYS:
        print(k, ensure(k))
