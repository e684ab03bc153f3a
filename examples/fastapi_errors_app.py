"""Error tracking in a FastAPI app: a failing view is reported to Serla, grouped by where it failed.

Run it against a local server (its page at http://127.0.0.1:8787/errors lists the groups)::

    serla dev &
    SERLA_API_KEY=sk_live_dev uvicorn fastapi_errors_app:app --app-dir examples
    curl 'http://127.0.0.1:8000/orders/42/refund'      # 500, reported
    curl 'http://127.0.0.1:8000/orders/43/refund'      # another message, the same group

An exception handler reports every unhandled exception with the user and the request in ``context``;
``release`` and ``environment`` come from ``SERLA_RELEASE`` / ``SERLA_ENVIRONMENT`` when set.
"""

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from serla import Serla

serla = Serla(
    api_key=os.environ["SERLA_API_KEY"],
    host=os.environ.get("SERLA_HOST", "http://127.0.0.1:8787"),
    in_app_include=["fastapi_errors_app"],  # this module is the app, wherever it is installed
)


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    serla.shutdown()


app = FastAPI(lifespan=lifespan)


class RefundRefused(Exception):
    """A business error: grouped as ``fastapi_errors_app.RefundRefused``."""


def refund(order_id: int) -> None:
    raise RefundRefused(f"order {order_id} was already refunded")


@app.get("/orders/{order_id}/refund")
async def refund_order(order_id: int, request: Request):
    refund(order_id)
    return {"ok": True}


@app.exception_handler(Exception)
async def report_unhandled(request: Request, exc: Exception):
    serla.capture_exception(
        exc,
        distinct_id=request.headers.get("x-user-id"),
        context={"method": request.method, "path": request.url.path},
    )
    return JSONResponse({"error": "internal error"}, status_code=500)
