"""The README's FastAPI example: one client for the app, shut down (flushed) by the lifespan handler.

Run it against a local server::

    serla dev &                                   # http://127.0.0.1:8787
    SERLA_API_KEY=sk_live_dev uvicorn fastapi_app:app --app-dir examples
    curl -X POST 'http://127.0.0.1:8000/signup?user_id=user_123'
"""

import os
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from serla import Serla

serla = Serla(
    api_key=os.environ["SERLA_API_KEY"],
    host=os.environ.get("SERLA_HOST", "http://127.0.0.1:8787"),
)


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    serla.shutdown()


app = FastAPI(lifespan=lifespan)


def get_serla() -> Serla:
    return serla


@app.post("/signup")
async def signup(user_id: str, serla: Serla = Depends(get_serla)):  # noqa: B008 - the FastAPI idiom
    serla.track(
        event="signup_completed",
        distinct_id=user_id,
        properties={"source": "api"},
    )
    return {"ok": True}
