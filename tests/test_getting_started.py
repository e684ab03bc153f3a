"""The README's "Getting started in a minute", followed as written: its commands and its test file.

The commands are read from the README itself, so the section cannot drift from what works. The only
change is the port: ``serla dev`` listens on a free port instead of 8787 (substituted in every command),
and its database goes to a temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from test_dev import DevProcess

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the README's commands are POSIX shell")


def section() -> str:
    """docs/getting-started.md, which the README links to."""
    return (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")


def commands(block: str) -> list[str]:
    """The ``$ `` commands of a console block, with their continuation lines."""
    out: list[str] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            out.append(line[2:])
        elif out and out[-1].count("'") % 2 == 1:
            out[-1] += "\n" + line  # inside a quoted multi-line argument
    return out


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section(), re.S)


def dev_events(url: str) -> list[dict[str, object]]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
    with opener.open(f"{url}/api/dev/events?limit=1000", timeout=10) as resp:
        events: list[dict[str, object]] = json.loads(resp.read())["events"]
    return events


def run_pytest(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The README's pytest command, in ``cwd``, with the venv's tools first on ``PATH``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERLA_", "PYTEST_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-c", f"{command} -p no:cacheprovider"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_newcomer_sees_their_events_in_the_local_server_and_asserts_one_in_a_test(tmp_path: Path) -> None:
    console = blocks("console")
    assert commands(console[0]) == ["serla dev"]
    dev = DevProcess("--port", "0", "--db", str(tmp_path / "serla-dev.db"), "--quiet")
    try:
        url = dev.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        script = "set -e\n" + "\n".join(
            cmd.replace("http://127.0.0.1:8787", url) for block in console[1:3] for cmd in commands(block)
        )
        assert "serla track signup_completed" in script and "examples/oneshot_script.py" in script
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERLA_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv's serla
        done = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        by_name: dict[str, list[dict[str, object]]] = {}
        for event in dev_events(url):
            by_name.setdefault(str(event["name"]), []).append(event)
    finally:
        dev.close()
    [signup] = by_name["signup_completed"]
    assert (signup["distinctId"], signup["properties"]) == ("user_123", {"plan": "pro"})
    [checkout] = by_name["checkout_started"]
    assert (checkout["distinctId"], checkout["properties"]) == ("user_123", {"cart_total": 42.5})
    assert len(by_name["record_processed"]) == 3  # examples/oneshot_script.py's sample records
    assert len(by_name) > 3  # and examples/logging_dictconfig.py's log lines

    # Step 4: the test file from the README, run by pytest in a directory of its own.
    [test_file] = blocks("python")
    assert test_file.startswith("# test_signup.py\n")
    (tmp_path / "test_signup.py").write_text(test_file, encoding="utf-8")
    [run_tests] = commands(console[3])
    done = run_pytest(run_tests, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout

    # The same test fails when the event is not tracked: the fixture really asserts.
    (tmp_path / "test_signup.py").write_text(
        test_file.replace('"plan": "pro"})\n\ndef', '"plan": "free"})\n\ndef', 1), encoding="utf-8"
    )
    done = run_pytest(run_tests, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "properties['plan'] is 'free', expected 'pro'" in done.stdout


def _anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file, by GitHub's rules."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(base, 0)
        anchors.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return anchors


@pytest.mark.parametrize(
    "doc",
    ["README.md", "CHANGELOG.md", "CONTRIBUTING.md", *sorted(p.name for p in (ROOT / "docs").glob("*.md"))],
)
def test_every_link_in_the_docs_leads_somewhere(doc: str) -> None:
    """In-page links name a heading (GitHub's anchor rules); relative links name a file and heading."""
    path = ROOT / doc if (ROOT / doc).exists() else ROOT / "docs" / doc
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    broken = []
    for link in links:
        if link.startswith(("http://", "https://", "mailto:")):
            continue
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in _anchors(file)):
            broken.append(link)
    assert broken == []
