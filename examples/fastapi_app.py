"""The README's FastAPI example: one client for the app, the ASGI integration, shut down by the lifespan.

``SerlaMiddleware`` puts each request in its own context: the user (here from an ``X-User-Id`` header, a
stand-in for your authentication), the browser's session (``X-Serla-Session-Id``, sent by your page)
or else one session per request. Views then call ``track()`` without naming anyone.

Run it against a local server::

    serla dev &                                   # http://127.0.0.1:8787
    SERLA_API_KEY=sk_live_dev uvicorn fastapi_app:app --app-dir examples
    curl -X POST 'http://127.0.0.1:8000/signup?user_id=user_123'
    curl -X POST http://127.0.0.1:8000/checkout -H 'X-User-Id: user_123'
"""

import os
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from serla import Serla
from serla.integrations.asgi import SerlaMiddleware

serla = Serla(
    api_key=os.environ["SERLA_API_KEY"],
    host=os.environ.get("SERLA_HOST", "http://127.0.0.1:8787"),
)


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    await serla.ashutdown()  # flushes without blocking the event loop


def user_id(scope) -> "str | None":
    """The request's user: replace with what your authentication knows (a JWT's subject, ...)."""
    return dict(scope["headers"]).get(b"x-user-id", b"").decode() or None


app = FastAPI(lifespan=lifespan)
app.add_middleware(SerlaMiddleware, distinct_id=user_id)


def get_serla() -> Serla:
    return serla


@app.post("/signup")
async def signup(user_id: str, serla: Serla = Depends(get_serla)):  # noqa: B008 - the FastAPI idiom
    serla.track(
        event="signup_completed",
        distinct_id=user_id,  # the new user: explicit arguments win over the request's context
        properties={"source": "api"},
    )
    return {"ok": True}


@app.post("/checkout")
async def checkout(serla: Serla = Depends(get_serla)):  # noqa: B008
    serla.track("checkout_started")  # user and session come from the middleware
    return {"ok": True}
