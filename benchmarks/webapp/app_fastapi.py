"""The ASGI app: FastAPI on uvicorn (one process). ``GET /`` does one configuration's per-request work.

Run by ``run.py`` as ``uvicorn app_fastapi:app`` with ``WEBBENCH_SDK`` / ``WEBBENCH_SINK`` set (see
``webbench_sdk.py``). ``GET /__flush`` delivers what the SDK holds and ``GET /__stats`` reports the
requests served; neither counts as a served request.
"""

from __future__ import annotations

from typing import Any

import webbench_sdk  # first: sentry-sdk patches the frameworks in init()
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def index() -> dict[str, Any]:
    webbench_sdk.handle()
    return {"ok": True}


@app.get("/__flush")
def flush() -> dict[str, Any]:  # a plain def: FastAPI runs it in a thread, off the event loop
    return webbench_sdk.flush()


@app.get("/__stats")
async def stats() -> dict[str, Any]:
    return webbench_sdk.stats()
