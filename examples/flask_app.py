"""The README's Flask example: one module-level client, flushed at interpreter exit.

Run it against a local server::

    serla dev &                                   # http://127.0.0.1:8787
    SERLA_API_KEY=sk_live_dev flask --app examples/flask_app.py run
    curl -X POST http://127.0.0.1:5000/signup -H 'Content-Type: application/json' \\
         -d '{"user_id": "user_123", "plan": "pro"}'
"""

import atexit
import os

from flask import Flask, request

from serla import Serla

app = Flask(__name__)
serla = Serla(
    api_key=os.environ["SERLA_API_KEY"],
    host=os.environ.get("SERLA_HOST", "http://127.0.0.1:8787"),
)


@app.post("/signup")
def signup():
    serla.track(
        event="signup_completed",
        distinct_id=request.json["user_id"],
        properties={"plan": request.json.get("plan")},
    )
    return {"ok": True}


@app.teardown_appcontext
def _teardown(_exc):
    # Optional: ensure pending events are flushed at the end of each request.
    # In a long-running gunicorn worker, the periodic flusher will handle
    # this on its own - you only need this for short-lived processes.
    pass


atexit.register(serla.shutdown)
