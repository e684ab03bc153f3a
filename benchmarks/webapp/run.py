#!/usr/bin/env python3
"""A web app under load: what each SDK costs a real request, in CPU and in tail latency.

    python3 benchmarks/webapp/run.py            # full run: 8 rounds, about 20 minutes on 2 cores
    python3 benchmarks/webapp/run.py --quick    # smoke run: 2 rounds, short phases, under 3 minutes
    python3 benchmarks/webapp/run.py --rounds 4 --servers uvicorn --configs none_a,none_b,serla

Two servers, each in one process pinned to CPU 0 (``taskset -c 0``): FastAPI on uvicorn (ASGI) and Flask
on gunicorn (WSGI, one sync worker). Each configuration (see ``webbench_sdk.py``) does its per-request
work in ``GET /``. The load generators (``wrk``, closed loop, for CPU per request; ``loadgen.py``, fixed
rate, for p99) and this runner with its loopback sink (``../sink.py``) run on CPU 1. Needs Linux, 2+ CPUs,
``taskset`` and ``wrk`` (Debian: ``apt-get install -y wrk``).

Per round, server and configuration (the order alternates each round, forward then reversed, for the
servers and the configurations): start the app on a fresh port, wait until it answers, 1 s of ``wrk``
warm-up, ``GET /__flush`` (the SDK delivers what it holds) and read the app's CPU time (utime + stime of
the process and its children, from ``/proc/<pid>/stat``), ``wrk`` for ``--seconds``, ``GET /__flush`` and
read the CPU time again: CPU µs per request is the difference over the requests the app served in
between (its own counter). Then the fixed-rate run (``--rate`` requests/s for ``--fixed-seconds``), a final
flush, the sink's count of distinct items against what the app should have sent, and SIGTERM.

With ``--serla-alt GIT_REF`` a configuration ``serla_alt`` runs the same work as ``serla`` with this SDK at
another revision (a branch or commit of this repository, in ``benchmarks/.venvs/web_serla_alt``), for
example to see what a transport change costs a request.

Writes ``results/latest.{md,json}`` next to this file, prints the table, and (a full run only) replaces the
block between ``<!-- webapp-results:start -->`` and ``<!-- webapp-results:end -->`` in
``docs/benchmarks.md``. Progress goes to stderr. Methodology: ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
ROOT = BENCH.parent
DOC = ROOT / "docs" / "benchmarks.md"
DOC_START = "<!-- webapp-results:start -->"
DOC_END = "<!-- webapp-results:end -->"
RESULTS = HERE / "results"

import venvs  # noqa: E402  (this folder is sys.path[0])

child_env = venvs._bench.child_env
log = venvs._bench.log
machine_info = venvs._bench.machine_info
from sink import SinkServer  # noqa: E402  (benchmarks/, added by venvs)

CONFIGS = ("none_a", "serla", "otel_spans", "serla_spans", "posthog", "sentry", "none_b")
VENV_OF = {
    "none_a": "web_serla",
    "none_b": "web_serla",
    "serla": "web_serla",
    "otel_spans": "web_serla",
    "serla_spans": "web_serla",
    "posthog": "web_posthog",
    "sentry": "web_sentry",
    "serla_alt": "web_serla_alt",
}
LABEL = {
    "none_a": "no SDK (A)",
    "none_b": "no SDK (B, A/A)",
    "serla": "serla: track() + log line via SerlaHandler",
    "otel_spans": "OTel span + event, no processor",
    "serla_spans": "serla: OTel span + event via SerlaSpanProcessor",
    "posthog": "posthog: capture()",
    "sentry": "sentry-sdk: capture_message() + log line (enable_logs)",
    "serla_alt": "serla at --serla-alt: track() + log line via SerlaHandler",
}
ITEMS = {
    "none_a": 0,
    "none_b": 0,
    "serla": 2,
    "otel_spans": 0,
    "serla_spans": 1,
    "posthog": 1,
    "sentry": 2,
    "serla_alt": 2,
}
SERVERS = ("uvicorn", "gunicorn")
SERVER_LABEL = {"uvicorn": "FastAPI on uvicorn (ASGI)", "gunicorn": "Flask on gunicorn (WSGI, sync worker)"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
APP_CPU = "0"
LOAD_CPU = "1"


# ---------------------------------------------------------------------------------------------------------
# The app process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_command(server: str, config: str, port: int) -> list[str]:
    py = str(venvs.python(VENV_OF[config]))
    if server == "uvicorn":
        return [
            *("taskset", "-c", APP_CPU, py, "-m", "uvicorn", "app_fastapi:app"),
            *("--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port)),
            *("--no-access-log", "--log-level", "warning"),
        ]
    return [
        *("taskset", "-c", APP_CPU, py, "-m", "gunicorn", "app_flask:app"),
        *("--pythonpath", str(HERE), "--bind", f"127.0.0.1:{port}", "--workers", "1"),
        *("--log-level", "warning"),
    ]


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its descendants (all threads, exited threads included)."""
    total = 0.0
    todo = [pid]
    seen: set[int] = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            pass
    return total


def cpu_busy_seconds(cpu: str) -> float:
    """Busy time of one CPU (every state but idle and iowait), from ``/proc/stat``."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK  # user nice system idle iowait irq softirq steal
    return 0.0


def get_json(port: int, path: str, timeout: float = 60.0) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
        return dict(json.loads(body))
    finally:
        conn.close()


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}")
        try:
            get_json(port, "/__stats", timeout=2)
            return
        except (OSError, RuntimeError, http.client.HTTPException):
            time.sleep(0.05)
    raise RuntimeError("app did not answer in time")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ---------------------------------------------------------------------------------------------------------
# Load


def wrk(port: int, seconds: float, connections: int) -> dict[str, Any]:
    cmd = [
        *("taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"),
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    res: dict[str, Any] = {"raw": out.strip().splitlines()[-6:]}
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return res


def fixed_rate(port: int, rate: float, seconds: float) -> dict[str, Any]:
    cmd = [
        *("taskset", "-c", LOAD_CPU, sys.executable, str(HERE / "loadgen.py")),
        *(f"http://127.0.0.1:{port}/", "--rate", str(rate), "--seconds", str(seconds)),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        return {"error": proc.stderr[-500:]}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# ---------------------------------------------------------------------------------------------------------
# One run


def run_one(
    server: str, config: str, sink: SinkServer, plan: argparse.Namespace, workdir: str
) -> dict[str, Any]:
    port = free_port()
    env = child_env()
    env["WEBBENCH_SDK"] = config
    env["WEBBENCH_SINK"] = sink.url
    sink.stats.reset()
    proc = subprocess.Popen(
        app_command(server, config, port),
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    res: dict[str, Any] = {"server": server, "config": config}
    try:
        wait_ready(proc, port)
        wrk(port, plan.warmup, plan.connections)
        before = get_json(port, "/__flush")
        cpu0 = tree_cpu_seconds(proc.pid)
        busy0, t0 = cpu_busy_seconds(APP_CPU), time.monotonic()
        load = wrk(port, plan.seconds, plan.connections)
        after = get_json(port, "/__flush")
        cpu1 = tree_cpu_seconds(proc.pid)
        busy1, t1 = cpu_busy_seconds(APP_CPU), time.monotonic()
        # Other processes' share of the app's CPU during the window: the machine is shared.
        res["others_on_app_cpu"] = max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / (t1 - t0)
        res["loadavg"] = float(Path("/proc/loadavg").read_text().split()[0])
        served = after["served"] - before["served"]
        res["wrk"] = {k: v for k, v in load.items() if k != "raw"}
        res["served"] = served
        res["cpu_s"] = cpu1 - cpu0
        res["cpu_us_per_request"] = (cpu1 - cpu0) * 1e6 / served if served else None
        fr = fixed_rate(port, plan.rate, plan.fixed_seconds)
        res["latencies_us"] = fr.pop("latencies_us", [])
        res["fixed"] = fr
        final = get_json(port, "/__flush")
        expected = final["served"] * ITEMS[config]
        deadline = time.monotonic() + 3.0
        while sink.stats.snapshot()["unique_ids"] < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        snap = sink.stats.snapshot()
        res["total_served"] = final["served"]
        res["expected_items"] = expected
        res["delivered_items"] = snap["unique_ids"]
        res["sink"] = {
            k: snap[k]
            for k in (
                "requests",
                "events",
                "unique_ids",
                "bad_bodies",
                "item_types",
                "sentry_discarded",
                "count_mismatches",
            )
        }
    except Exception as exc:  # one failed run is reported, not fatal
        res["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        stop(proc)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if err.strip() and "error" in res:
            res["stderr"] = err[-1500:]
    return res


# ---------------------------------------------------------------------------------------------------------
# Summary


def _median(xs: list[float]) -> Optional[float]:
    return statistics.median(xs) if xs else None


def summarize(runs: list[dict[str, Any]], servers: list[str], configs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for server in servers:
        by_round: dict[int, dict[str, dict[str, Any]]] = {}
        for r in runs:
            if r["server"] == server:
                by_round.setdefault(r["round"], {})[r["config"]] = r
        rows: dict[str, Any] = {}
        for config in configs:
            mine = [rr[config] for rr in by_round.values() if config in rr]
            cpu = [r["cpu_us_per_request"] for r in mine if r.get("cpu_us_per_request")]
            # Added CPU, paired per round: this config minus that round's baseline (the mean of the two
            # no-SDK runs, or the one there is). For none_b it is none_b - none_a: the A/A difference.
            added: list[float] = []
            for rr in by_round.values():
                me = rr.get(config, {}).get("cpu_us_per_request")
                a = rr.get("none_a", {}).get("cpu_us_per_request")
                b = rr.get("none_b", {}).get("cpu_us_per_request")
                if me is None:
                    continue
                if config == "none_b":
                    if a is not None:
                        added.append(me - a)
                elif config == "none_a":
                    if b is not None:
                        added.append(me - b)
                else:
                    base = [x for x in (a, b) if x is not None]
                    if base:
                        added.append(me - sum(base) / len(base))
            # serla_spans over the span alone (otel_spans), paired per round.
            over_span = [
                rr[config]["cpu_us_per_request"] - rr["otel_spans"]["cpu_us_per_request"]
                for rr in by_round.values()
                if config == "serla_spans"
                and rr.get(config, {}).get("cpu_us_per_request") is not None
                and rr.get("otel_spans", {}).get("cpu_us_per_request") is not None
            ]
            p99 = [r["fixed"]["p99"] for r in mine if r.get("fixed", {}).get("p99") is not None]
            p50 = [r["fixed"]["p50"] for r in mine if r.get("fixed", {}).get("p50") is not None]
            pooled = sorted(x for r in mine for x in r.get("latencies_us", []))
            rps = [r["wrk"]["rps"] for r in mine if r.get("wrk", {}).get("rps")]
            expected = sum(r.get("expected_items", 0) for r in mine)
            delivered = sum(r.get("delivered_items", 0) for r in mine)
            late = sum(r.get("fixed", {}).get("late_sends", 0) for r in mine)
            others = [r["others_on_app_cpu"] for r in mine if "others_on_app_cpu" in r]
            errs = sum(r.get("fixed", {}).get("errors", 0) for r in mine)
            rows[config] = {
                "rounds": len(cpu),
                "cpu_us": _median(cpu),
                "cpu_us_min": min(cpu) if cpu else None,
                "cpu_us_max": max(cpu) if cpu else None,
                "added_us": _median(added),
                "added_us_all": [round(x, 1) for x in added],
                "over_span_us": _median(over_span),
                "rps": _median(rps),
                "p50_us": _median(p50),
                "p99_us": _median(p99),
                "p99_us_pooled": pooled[min(len(pooled) - 1, int(0.99 * len(pooled)))] if pooled else None,
                "latency_samples": len(pooled),
                "late_sends": late,
                "others_on_app_cpu": _median(others),
                "fixed_errors": errs,
                "expected_items": expected,
                "delivered_items": delivered,
                "delivery": (delivered / expected) if expected else None,
                "sentry_discarded": sum(r.get("sink", {}).get("sentry_discarded", 0) for r in mine),
                "errors": [r["error"] for r in mine if "error" in r],
            }
        out[server] = rows
    return out


def _f(v: Optional[float], digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def render(doc: dict[str, Any]) -> str:
    plan = doc["plan"]
    m = doc["machine"]
    lines = [
        f"### Web app under load, {m['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}. App on CPU {APP_CPU}, load generators and sink on CPU {LOAD_CPU}. "
        f"{plan['rounds']} alternating rounds; per round and cell: {plan['seconds']:g} s of `wrk -t1 "
        f"-c{plan['connections']}` after {plan['warmup']:g} s of warm-up, then {plan['fixed_seconds']:g} s "
        f"at a fixed {plan['rate']:g} requests/s. Versions: {doc['versions']}.",
        "",
    ]
    for server in plan["servers"]:
        rows = doc["summary"][server]
        lines += [
            f"**{SERVER_LABEL[server]}**",
            "",
            "| configuration | CPU µs/request (median, min-max) | added µs/request (paired, median) "
            "| requests/s (wrk) | p50 / p99 µs at fixed rate (median of rounds) | p99 µs, all rounds pooled "
            "| delivered |",
            "|---|---|---|---|---|---|---|",
        ]
        for config in plan["configs"]:
            r = rows[config]
            added = r["added_us"]
            if config == "none_b":
                added_s = f"{_f(added, 1)} (A/A: B - A)"
            elif config == "none_a":
                added_s = "baseline"
            else:
                added_s = _f(added, 1)
            if r.get("over_span_us") is not None:
                added_s += f" ({_f(r['over_span_us'], 1)} over the span alone)"
            if r["delivery"] is None:
                deliv = "-"
            else:
                deliv = f"{r['delivery'] * 100:.2f}% ({r['delivered_items']:,}/{r['expected_items']:,})"
                if r["sentry_discarded"]:
                    deliv += f"; {r['sentry_discarded']:,} discards reported"
            err = f" ⚠ {len(r['errors'])} failed" if r["errors"] else ""
            lines.append(
                f"| {LABEL[config]}{err} | {_f(r['cpu_us'])} ({_f(r['cpu_us_min'])}-{_f(r['cpu_us_max'])}) "
                f"| {added_s} | {_f(r['rps'])} | {_f(r['p50_us'])} / {_f(r['p99_us'])} "
                f"| {_f(r['p99_us_pooled'])} | {deliv} |"
            )
        others = [r["others_on_app_cpu"] for r in rows.values() if r.get("others_on_app_cpu") is not None]
        late = sum(r.get("late_sends", 0) for r in rows.values())
        samples = sum(r.get("latency_samples", 0) for r in rows.values())
        lines.append("")
        if others:
            lines.append(
                f"The machine is shared: during the `wrk` windows, time on CPU {APP_CPU} not charged to the app (other "
                f"processes, interrupts) was a median "
                f"{statistics.median(others) * 100:.0f}% of the window (per configuration: "
                f"{min(others) * 100:.0f}-{max(others) * 100:.0f}%). The fixed-rate generator started "
                f"{late:,} of {samples:,} requests more than 1 ms late."
            )
            lines.append("")
    return "\n".join(lines)


def update_doc(table: str) -> None:
    text = DOC.read_text()
    block = f"{DOC_START}\n{table}\n{DOC_END}"
    if DOC_START in text and DOC_END in text:
        text = re.sub(re.escape(DOC_START) + r".*?" + re.escape(DOC_END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def versions() -> str:
    code = (
        "import importlib.metadata as m, sys\n"
        "out = []\n"
        "for d in sys.argv[1:]:\n"
        "    try: out.append(f'{d} {m.version(d)}')\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(', '.join(out))\n"
    )
    got: list[str] = []
    for key, dists in (
        ("web_serla", ["serla-py", "opentelemetry-sdk", "fastapi", "uvicorn", "flask", "gunicorn"]),
        ("web_posthog", ["posthog"]),
        ("web_sentry", ["sentry-sdk"]),
    ):
        out = subprocess.run([str(venvs.python(key)), "-c", code, *dists], capture_output=True, text=True)
        got.append(out.stdout.strip())
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    got.append((wrk_v.stdout + wrk_v.stderr).strip().splitlines()[0].split(" [")[0] if wrk_v else "wrk ?")
    return ", ".join(x for x in got if x)


# ---------------------------------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 rounds, short phases (under 3 minutes)")
    ap.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 8; --quick 2)")
    ap.add_argument(
        "--seconds", type=float, default=None, help="wrk phase per cell, whole seconds (default 3; --quick 1)"
    )
    ap.add_argument("--fixed-seconds", type=float, default=None, help="fixed-rate phase (default 3; quick 1)")
    ap.add_argument("--rate", type=float, default=300.0, help="fixed rate, requests/s (default 300)")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument(
        "--serla-alt",
        metavar="GIT_REF",
        help="also run config serla_alt: serla's work with this SDK at that branch or commit (another "
        "revision, e.g. to compare a transport change); add serla_alt to --configs",
    )
    ap.add_argument("--out", default="latest", help="results/<OUT>.{md,json} (default latest)")
    ap.add_argument("--no-docs", action="store_true", help="don't update docs/benchmarks.md")
    ap.add_argument(
        "--render",
        action="store_true",
        help="only render results/<OUT>.json again (and update the docs)",
    )
    args = ap.parse_args(argv)
    if args.render:
        doc = json.loads((RESULTS / f"{args.out}.json").read_text())
        # Recompute the summary from the runs (the raw latencies are not kept: pooled p99s stay as saved).
        old = doc["summary"]
        doc["summary"] = summarize(doc["runs"], doc["plan"]["servers"], doc["plan"]["configs"])
        for server, rows in doc["summary"].items():
            for config, row in rows.items():
                saved = old.get(server, {}).get(config, {})
                row["p99_us_pooled"] = saved.get("p99_us_pooled")
                row["latency_samples"] = saved.get("latency_samples", 0)
        (RESULTS / f"{args.out}.json").write_text(json.dumps(doc, indent=1) + "\n")
        table = render(doc)
        print(table)
        (RESULTS / f"{args.out}.md").write_text(table + "\n")
        p = doc["plan"]
        if (
            not p["quick"]
            and not p.get("serla_alt")
            and p["configs"] == list(CONFIGS)
            and p["servers"] == list(SERVERS)
            and not args.no_docs
            and args.out == "latest"  # the docs show the latest full run only
        ):
            update_doc(table)
        return 0
    args.rounds = args.rounds or (2 if args.quick else 8)
    args.seconds = max(1, round(args.seconds or (1 if args.quick else 3)))  # wrk takes whole seconds
    args.fixed_seconds = args.fixed_seconds or (1.0 if args.quick else 3.0)
    args.warmup = 1
    servers = [s for s in args.servers.split(",") if s]
    configs = [c for c in args.configs.split(",") if c]
    for s in servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s!r}")
    for c in configs:
        if c not in CONFIGS and c != "serla_alt":
            ap.error(f"unknown config {c!r}")
    if args.serla_alt and "serla_alt" not in configs:
        configs.insert(configs.index("serla") + 1 if "serla" in configs else 1, "serla_alt")
    if "serla_alt" in configs and not args.serla_alt:
        ap.error("config serla_alt needs --serla-alt GIT_REF")

    if not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2:
        raise SystemExit("needs Linux with at least 2 CPUs")
    for tool in ("taskset", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(
                f"needs {tool} (Debian: apt-get install -y {'util-linux' if tool == 'taskset' else tool})"
            )
    os.sched_setaffinity(0, {int(LOAD_CPU)})  # this runner and its sink share the load generators' CPU
    for key in sorted({VENV_OF[c] for c in configs}):
        if key == "web_serla_alt":
            venvs.ensure_alt(args.serla_alt)
        else:
            venvs.ensure(key)

    sink = SinkServer(0).start()
    runs: list[dict[str, Any]] = []
    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(
        prefix="webbench-"
    )  # not inside the git repo: sentry-sdk reads git for a release
    try:
        for rnd in range(args.rounds):
            srv_order = servers if rnd % 2 == 0 else servers[::-1]
            cfg_order = configs if rnd % 2 == 0 else configs[::-1]
            for server in srv_order:
                for config in cfg_order:
                    res = run_one(server, config, sink, args, workdir)
                    res["round"] = rnd
                    runs.append(res)
                    fx = res.get("fixed", {})
                    log(
                        f"round {rnd + 1}/{args.rounds} {server:8} {config:12} "
                        f"cpu/req {_f(res.get('cpu_us_per_request'), 1)} µs, "
                        f"wrk {_f(res.get('wrk', {}).get('rps'))} req/s, p99 {_f(fx.get('p99'))} µs, "
                        f"delivered {res.get('delivered_items', '-')}/{res.get('expected_items', '-')}"
                        + (f"  ERROR {res['error']}" if "error" in res else "")
                    )
    finally:
        sink.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    summary = summarize(runs, servers, configs)
    plan = {
        "rounds": args.rounds,
        "seconds": args.seconds,
        "fixed_seconds": args.fixed_seconds,
        "warmup": args.warmup,
        "rate": args.rate,
        "connections": args.connections,
        "servers": servers,
        "configs": configs,
        "quick": args.quick,
        "serla_alt": args.serla_alt,
        "elapsed_s": round(time.monotonic() - t_start, 1),
    }
    doc = {"machine": machine_info(), "plan": plan, "versions": versions(), "summary": summary}
    table = render(doc)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    for r in runs:
        r.pop("latencies_us", None)  # pooled into the summary; too large to keep
    doc["runs"] = runs
    (RESULTS / f"{args.out}.json").write_text(json.dumps(doc, indent=1) + "\n")
    (RESULTS / f"{args.out}.md").write_text(table + "\n")
    full = (
        not args.quick
        and not args.serla_alt
        and args.configs == ",".join(CONFIGS)
        and args.servers == ",".join(SERVERS)
    )
    if full and not args.no_docs and args.out == "latest":
        update_doc(table)
        log(f"updated {DOC.relative_to(ROOT)}")
    log(f"done in {plan['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
