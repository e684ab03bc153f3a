"""``POST /api/v1/llm`` on the contract server and ``serla dev``: the real route's checks, price table and page."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from serla.devtools.dev import DevServer, SQLiteStore
from serla.devtools.llm import PRICES, compute_cost, lookup_price, totals_by_model
from serla.devtools.server import SerlaServer

KEY = "sk_live_" + "s" * 43
FREE = "sk_live_" + "f" * 43


def post(server: SerlaServer, body: Any, *, key: str = KEY, raw: bytes | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request("POST", "/api/v1/llm", data, headers)
        response = conn.getresponse()
        payload = response.read()
        return response.status, json.loads(payload) if payload else None
    finally:
        conn.close()


def get(server: SerlaServer, path: str) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


@pytest.fixture
def server() -> Iterator[SerlaServer]:
    with SerlaServer(api_keys={KEY, FREE}) as s:
        s.llm.free_keys.add(FREE)
        yield s


def test_a_generation_is_stored_with_cost_and_total_filled(server: SerlaServer) -> None:
    status, body = post(
        server,
        {"model": "gpt-4o-mini", "inputTokens": 1000, "outputTokens": 500, "latencyMs": 12.0, "junk": 1},
    )
    assert (status, body) == (200, {"success": True})
    (row,) = server.llm.rows
    assert row["costUsd"] == pytest.approx((1000 * 0.15 + 500 * 0.6) / 1e6)
    assert row["totalTokens"] == 1500
    assert row["latencyMs"] == 12
    assert row["status"] == "success" and row["metadata"] == {}
    assert "junk" not in row
    assert server.llm.wait_for(1, timeout=0)


def test_cost_is_left_alone_when_given_or_unknown(server: SerlaServer) -> None:
    post(server, {"model": "gpt-4o", "inputTokens": 10, "outputTokens": 10, "costUsd": 0.5})
    post(server, {"model": "my-private-model", "inputTokens": 10, "outputTokens": 10})
    post(server, {"model": "gpt-4o", "inputTokens": 10})
    post(server, {"model": "gpt-4o", "inputTokens": 0, "outputTokens": 0})
    rows = server.llm.rows
    assert [r["costUsd"] for r in rows] == [0.5, None, None, 0.0]
    assert [r["totalTokens"] for r in rows] == [20, 20, 10, None]  # a sum of 0 becomes null


@pytest.mark.parametrize(
    ("model", "price"),
    [
        ("gpt-4o", (2.5, 10)),
        ("GPT-4o", (2.5, 10)),
        ("openai/gpt-4o-mini", (0.15, 0.6)),
        ("azure:gpt-4.1", (2, 8)),
        ("gpt-4o-2024-05-13", (5, 15)),  # its own entry wins over the undated name
        ("gpt-4.1-mini-2099-01-01", (0.4, 1.6)),  # unknown snapshot: the date is stripped
        ("claude-sonnet-4-5-20990101", (3, 15)),
        ("claude-3-7-sonnet-latest", (3.3, 16.5)),
        ("claude-haiku-4-5-latest", (1, 5)),
        ("nonexistent", None),
        ("", None),
    ],
)
def test_price_lookup_resolves_names_like_the_real_server(model: str, price: Any) -> None:
    assert lookup_price(model) == price


def test_price_table_is_per_million_tokens() -> None:
    assert compute_cost("claude-opus-4-1", 1_000_000, 0) == 15
    assert compute_cost("claude-opus-4-1", None, 5) is None
    assert all(len(v) == 2 and v[0] >= 0 and v[1] >= 0 for v in PRICES.values())


@pytest.mark.parametrize(
    ("body", "path", "code"),
    [
        ({}, ["model"], "invalid_type"),
        ({"model": ""}, ["model"], "too_small"),
        ({"model": "m" * 201}, ["model"], "too_big"),
        ({"model": "m", "provider": "p" * 51}, ["provider"], "too_big"),
        ({"model": "m", "distinctId": 5}, ["distinctId"], "invalid_type"),
        ({"model": "m", "inputTokens": 1.5}, ["inputTokens"], "invalid_type"),
        ({"model": "m", "outputTokens": -1}, ["outputTokens"], "too_small"),
        ({"model": "m", "latencyMs": 2.5}, ["latencyMs"], "invalid_type"),
        ({"model": "m", "costUsd": -0.1}, ["costUsd"], "too_small"),
        ({"model": "m", "status": None}, ["status"], "invalid_value"),
        ({"model": "m", "status": "ok"}, ["status"], "invalid_value"),
        ({"model": "m", "errorMessage": "e" * 2001}, ["errorMessage"], "too_big"),
        ({"model": "m", "metadata": [1]}, ["metadata"], "invalid_type"),
        ({"model": "m", "timestamp": "2024-01-01T00:00:00+00:00"}, ["timestamp"], "invalid_format"),
    ],
)
def test_validation_answers_400_with_details(
    server: SerlaServer, body: Any, path: list[str], code: str
) -> None:
    status, payload = post(server, body)
    assert status == 400
    assert payload["error"] == "Invalid generation"
    assert [(d["path"], d["code"]) for d in payload["details"]] == [(path, code)]
    assert server.llm.rows == []


def test_integral_floats_nulls_and_defaults_pass(server: SerlaServer) -> None:
    status, _ = post(
        server,
        {
            "model": "m",
            "inputTokens": 12.0,
            "provider": None,
            "metadata": None,
            "status": "error",
            "input": None,
        },
    )
    assert status == 200
    row = server.llm.rows[0]
    assert row["inputTokens"] == 12 and row["provider"] is None and row["metadata"] == {}
    assert row["status"] == "error"


def test_order_of_checks_auth_plan_json(server: SerlaServer) -> None:
    assert post(server, {"model": "m"}, key="")[0] == 401
    assert post(server, {"model": "m"}, key="sk_live_unknown")[0] == 401
    assert post(server, {}, key=FREE) == (
        402,
        {"error": "LLM observability requires the Hobby plan or above"},
    )
    assert post(server, None, raw=b"{not json") == (400, {"error": "Invalid JSON"})
    assert post(server, None, raw=b'{"model":"m","inputTokens":NaN}') == (400, {"error": "Invalid JSON"})
    assert post(server, [1])[0] == 400


def test_size_cap_413(server: SerlaServer) -> None:
    status, payload = post(server, {"model": "m", "input": "x" * 200_000, "output": "y" * 70_000})
    assert status == 413
    assert payload["error"] == "Payload too large"
    assert "(got 264KB)" in payload["message"]


def test_rate_limit_window_with_an_injected_clock() -> None:
    now = [100.0]
    with SerlaServer(clock=lambda: now[0], rate_limits={"llm": 2}) as server:
        assert [post(server, {"model": "m"})[0] for _ in range(3)] == [200, 200, 429]
        now[0] += 60.0  # the window's last instant: the real limiter resets only once resetAt < now
        assert post(server, {"model": "m"})[0] == 429
        now[0] += 0.001
        assert post(server, {"model": "m"})[0] == 200


def test_options_preflight(server: SerlaServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("OPTIONS", "/api/v1/llm")
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 204
    assert response.getheader("Access-Control-Allow-Methods") == "POST, OPTIONS"


def test_totals_per_model() -> None:
    rows = [
        {
            "model": "a",
            "inputTokens": 1,
            "outputTokens": 2,
            "totalTokens": 3,
            "costUsd": 0.5,
            "latencyMs": 10,
        },
        {"model": "a", "inputTokens": 1, "costUsd": None, "latencyMs": 30, "status": "error"},
        {"model": "b", "outputTokens": 4},
    ]
    totals = totals_by_model(rows)
    assert totals[0] == {
        "model": "a",
        "calls": 2,
        "errors": 1,
        "inputTokens": 2,
        "outputTokens": 2,
        "totalTokens": 3,
        "costUsd": 0.5,
        "meanLatencyMs": 20,
    }
    assert totals[1]["model"] == "b" and totals[1]["costUsd"] is None


def test_serla_dev_keeps_llm_calls_in_sqlite_and_lists_them(tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    with SQLiteStore(db) as store:
        dev = DevServer(port=0, store=store)
        with dev:
            assert (
                post(dev, {"model": "gpt-4o", "inputTokens": 100, "outputTokens": 50, "latencyMs": 7})[0]
                == 200
            )
            assert post(dev, {"model": "gpt-4o", "status": "error", "errorMessage": "boom"})[0] == 200
            assert post(dev, {"model": "m", "input": "x" * 300_000})[0] == 413
            status, data, _ = get(dev, "/api/dev/llm?limit=1")
            assert status == 200
            listing = json.loads(data)
            assert listing["total"] == 2
            assert [c["status"] for c in listing["calls"]] == ["error"]  # newest first
            assert listing["totals"][0]["model"] == "gpt-4o"
            assert listing["totals"][0]["calls"] == 2
            assert listing["totals"][0]["costUsd"] == pytest.approx((100 * 2.5 + 50 * 10) / 1e6)
            status, page, headers = get(dev, "/llm")
            assert status == 200 and b"Totals per model" in page
            assert "nonce-" in headers["Content-Security-Policy"]
            _, rejected, _ = get(dev, "/api/dev/rejected")
            assert json.loads(rejected)["rejected"][0]["status"] == 413
    with SQLiteStore(db) as store:
        dev = DevServer(port=0, store=store)
        with dev:
            assert len(dev.llm.rows) == 2  # survived the restart
            conn = http.client.HTTPConnection("127.0.0.1", dev.port, timeout=10)
            conn.request("POST", "/api/dev/clear", b"", {"X-Serla-Dev": "1"})
            assert conn.getresponse().status == 200
            conn.close()
            assert dev.llm.rows == []


# -- the /llm page in headless Chromium --------------------------------------------------------------------


def _chromium() -> str | None:
    import os
    import shutil

    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


class _Cells(HTMLParser):
    """The text of every table cell, per table id, and the document title."""

    def __init__(self, dom: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[str]]] = {}
        self.title = ""
        self.images = 0
        self._table = ""
        self._in_cell = False
        self._in_title = False
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag == "td" and self._table:
            self.tables[self._table][-1].append("")
            self._in_cell = True
        elif tag == "title":
            self._in_title = True
        elif tag == "img":
            self.images += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_cell and self._table:
            self.tables[self._table][-1][-1] += data
        elif self._in_title:
            self.title += data


def test_the_llm_page_renders_calls_and_totals_in_chromium(tmp_path: Path) -> None:
    import subprocess

    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (Debian/Ubuntu: apt-get install chromium)")
    xss = "<img src=x onerror=\"document.title='pwned'\">"
    with SQLiteStore(tmp_path / "dev.db") as store, DevServer(port=0, store=store) as dev:
        post(
            dev,
            {
                "model": "gpt-4o-mini",
                "inputTokens": 1000,
                "outputTokens": 500,
                "latencyMs": 40,
                "distinctId": xss,
            },
        )
        post(
            dev,
            {
                "model": "gpt-4o-mini",
                "inputTokens": 10,
                "outputTokens": 5,
                "latencyMs": 20,
                "status": "error",
            },
        )
        post(dev, {"model": xss, "input": [{"role": "user", "content": xss}]})
        proc = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-proxy-server",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--virtual-time-budget=3000",
                "--dump-dom",
                f"http://127.0.0.1:{dev.port}/llm",
            ],
            capture_output=True,
            timeout=90,
            start_new_session=True,
        )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    page = _Cells(proc.stdout.decode())
    assert page.title == "serla dev: LLM calls" and page.images == 0  # names are text, never markup
    totals = [row for row in page.tables["totals"] if row]
    assert totals[0][:4] == ["gpt-4o-mini", "2", "1", "1010"]
    assert totals[0][5] == f"{(1010 * 0.15 + 505 * 0.6) / 1e6:.6f}"
    assert totals[0][6] == "30"
    assert totals[1][0] == xss and totals[1][5] == "unpriced"
    calls = [row for row in page.tables["calls"] if row]
    assert [c[1] for c in calls] == [xss, "gpt-4o-mini", "gpt-4o-mini"]  # newest first
    assert calls[2][3] == xss and calls[1][7] == "error"
