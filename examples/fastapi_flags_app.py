"""Gating a FastAPI view on a feature flag (``docs/flags.md``).

The flag call is awaited (``ais_feature_enabled``): a cached answer returns at once, a miss waits at most
``flags_timeout`` without blocking the event loop, and any failure gives the fallback (the old checkout).
Run it against a local server with the flags in a file::

    echo '[{"key": "new-checkout", "rollout_percentage": 50},
           {"key": "button-color", "variants": [{"key": "red", "weight": 50}, {"key": "blue", "weight": 50}]}]' > flags.json
    serla dev --flags flags.json &                # http://127.0.0.1:8787, flags editable at /flags
    SERLA_API_KEY=sk_live_dev uvicorn fastapi_flags_app:app --app-dir examples
    curl 'http://127.0.0.1:8000/checkout?user_id=user_123'
"""

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serla import Serla

serla = Serla(
    api_key=os.environ["SERLA_API_KEY"],
    host=os.environ.get("SERLA_HOST", "http://127.0.0.1:8787"),
    flags_timeout=0.5,  # the most a request waits for a flag answer that is not cached yet
    send_flag_events=True,  # one $feature_flag_called event per user, flag and value every 30 s
)


@asynccontextmanager
async def lifespan(app: FastAPI):
    yield
    serla.shutdown()


app = FastAPI(lifespan=lifespan)


@app.get("/checkout")
async def checkout(user_id: str, plan: str = "free"):
    if await serla.ais_feature_enabled("new-checkout", distinct_id=user_id, properties={"plan": plan}):
        color = await serla.aget_feature_flag("button-color", "grey", distinct_id=user_id)
        return {"checkout": "new", "button": color}
    return {"checkout": "old", "button": "grey"}
