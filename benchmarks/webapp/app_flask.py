"""The WSGI app: Flask on gunicorn (one sync worker). ``GET /`` does one configuration's per-request work.

Run by ``run.py`` as ``gunicorn app_flask:app`` with ``WEBBENCH_SDK`` / ``WEBBENCH_SINK`` set (see
``webbench_sdk.py``); the app is imported in the worker (no ``--preload``), so every SDK starts its
threads there. ``GET /__flush`` delivers what the SDK holds and ``GET /__stats`` reports the requests
served; neither counts as a served request.
"""

from __future__ import annotations

from typing import Any

import webbench_sdk  # first: sentry-sdk patches the frameworks in init()
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index() -> dict[str, Any]:
    webbench_sdk.handle()
    return {"ok": True}


@app.get("/__flush")
def flush() -> dict[str, Any]:
    return webbench_sdk.flush()


@app.get("/__stats")
def stats() -> dict[str, Any]:
    return webbench_sdk.stats()
