"""The real-server tier: tests marked ``realserver`` run against the real Serla server.

The server is the project's own source, pinned, run locally by ``../shared/realserver`` (see its
README): ``setup.sh`` (about 1-4 minutes the first time, then about a second) and ``start.sh``. The
session fixture :func:`realserver` runs both when the server is not up yet, then reads the keys from
``$REALSERLA_ROOT/env.sh``.

When the scripts are missing (a checkout without ``../shared``), the tier is skipped with the reason,
unless ``SERLA_REQUIRE_REALSERVER=1`` (set by ``.ci/run``): then it fails loudly, never skips silently.

Each helper of the real server's projects (``max``, ``free``, ``rl``, ``quota``) is described in
``../shared/realserver/README.md``. Tests use distinct ids and event names of their own (``unique()``)
and read back what PostgreSQL stored with :meth:`RealServer.sql`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(os.environ.get("SERLA_REALSERVER_DIR", REPO.parent / "shared" / "realserver"))
ROOT = Path(os.environ.get("REALSERLA_ROOT", os.path.join(os.environ.get("TMPDIR", "/tmp"), "realserla")))
PROJECTS = {
    "max": "00000000-0000-4000-8000-00000000b001",
    "free": "00000000-0000-4000-8000-00000000b002",
    "rl": "00000000-0000-4000-8000-00000000b003",
    "quota": "00000000-0000-4000-8000-00000000b004",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder is in the ``realserver`` tier (``-m realserver`` / ``-m 'not realserver'``)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.realserver)


_START_RESULT: list[str] = []  # the reason start-up failed ("" when it worked), once tried


def pytest_collection_finish(session: pytest.Session) -> None:
    """Set up and start the server before the first test, outside any test's timeout.

    A first ``setup.sh`` takes 1-4 minutes (npm install, next build): longer than a test may take. Only
    when a test of this tier was selected and the server is not up already.
    """
    here = Path(__file__).parent
    if not any(here in Path(str(item.fspath)).parents for item in session.items):
        return
    env_file = ROOT / "env.sh"
    if env_file.exists() and _up(_read_env(env_file)):
        return
    _START_RESULT.append(_start())


@dataclass
class RealServer:
    """A running real Serla server: its base URL, its keys, and SQL on its database."""

    host: str
    database_url: str
    keys: dict[str, str] = field(default_factory=dict)
    """``max``, ``public``, ``free``, ``free_public``, ``rl``, ``quota``: see the harness README."""
    log: Path | None = None
    root: Path = ROOT

    def sql(self, query: str) -> list[dict[str, Any]]:
        """Run one SELECT with ``psql`` and return its rows as dicts (JSON-typed values)."""
        wrapped = f"select coalesce(json_agg(t), '[]'::json) from ({query.rstrip().rstrip(';')}) t"
        out = subprocess.run(
            ["psql", "-X", "-q", "-A", "-t", self.database_url, "-c", wrapped],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        return list(json.loads(out))

    def execute(self, statement: str) -> None:
        """Run a statement (an insert of feature flags, a quota fill, a cleanup) with ``psql``."""
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.database_url, "-c", statement],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def access_log(self) -> list[str]:
        """The server's ``[access]`` lines so far: ``[access] <time> <method> <path> <status> ...``."""
        if self.log is None or not self.log.exists():
            return []
        return [line for line in self.log.read_text(errors="replace").splitlines() if "[access]" in line]


def _read_env(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export ") :]
        if "=" not in line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        parts = shlex.split(value)
        env[name] = parts[0] if parts else ""
    return env


def _up(env: dict[str, str]) -> bool:
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(env.get("SERLA_HOST", ""))
    if not url.hostname:
        return False
    try:
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=5)
        conn.request("POST", "/api/v1/events/batch", body=b"{}", headers={"Authorization": "Bearer x"})
        status = conn.getresponse().status
        conn.close()
        return status == 401
    except OSError:
        return False


def _start() -> str:
    """Run setup.sh (when needed) and start.sh; return '' or the reason it failed."""
    if not (SCRIPTS / "start.sh").exists():
        return f"the real-server scripts are not at {SCRIPTS} (set SERLA_REALSERVER_DIR)"
    env = dict(os.environ, REALSERLA_ROOT=str(ROOT))
    for script, limit in (("setup.sh", 900), ("start.sh", 300)):
        try:
            done = subprocess.run(
                ["bash", str(SCRIPTS / script)], env=env, capture_output=True, text=True, timeout=limit
            )
        except subprocess.TimeoutExpired:
            return f"{script} did not finish in {limit} s"
        if done.returncode != 0:
            return f"{script} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return ""


@pytest.fixture(scope="session")
def realserver() -> Iterator[RealServer]:
    """The real server, started for this session when it is not running yet."""
    env_file = ROOT / "env.sh"
    env = _read_env(env_file) if env_file.exists() else {}
    if not env or not _up(env):
        reason = _START_RESULT[0] if _START_RESULT else _start()
        env = _read_env(env_file) if env_file.exists() else {}
        if not reason and not _up(env):
            reason = "the real server does not answer after start.sh"
        if reason:
            if os.environ.get("SERLA_REQUIRE_REALSERVER") == "1":
                pytest.fail(f"real-server tier required but unavailable: {reason}", pytrace=False)
            pytest.skip(f"real server unavailable: {reason}")
    yield RealServer(
        host=env["SERLA_HOST"],
        database_url=env["DATABASE_URL"],
        keys={
            "max": env["SERLA_API_KEY"],
            "public": env["SERLA_PUBLIC_KEY"],
            "free": env["SERLA_FREE_API_KEY"],
            "free_public": env["SERLA_FREE_PUBLIC_KEY"],
            "rl": env["SERLA_RL_API_KEY"],
            "quota": env["SERLA_QUOTA_API_KEY"],
        },
        log=Path(env["REALSERLA_SERVER_LOG"]) if env.get("REALSERLA_SERVER_LOG") else None,
    )


@pytest.fixture
def unique() -> str:
    """A fresh token for this test's distinct ids and event names, so tests never read each other's rows."""
    return "t" + uuid.uuid4().hex[:12]
