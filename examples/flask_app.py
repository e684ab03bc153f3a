"""The README's Flask example: one module-level client, the WSGI integration, flushed at interpreter exit.

``SerlaMiddleware`` puts each request in its own context: the user (here from an ``X-User-Id`` header, a
stand-in for your login), the browser's session (``X-Serla-Session-Id``, sent by your page) or else one
session per request. Views then call ``track()`` without naming anyone.

Run it against a local server::

    serla dev &                                   # http://127.0.0.1:8787
    SERLA_API_KEY=sk_live_dev flask --app examples/flask_app.py run
    curl -X POST http://127.0.0.1:5000/signup -H 'Content-Type: application/json' \\
         -d '{"user_id": "user_123", "plan": "pro"}'
    curl -X POST http://127.0.0.1:5000/checkout -H 'X-User-Id: user_123'
"""

import atexit
import os

from flask import Flask, request

from serla import Serla
from serla.integrations.wsgi import SerlaMiddleware

app = Flask(__name__)
app.wsgi_app = SerlaMiddleware(app.wsgi_app, distinct_id=lambda environ: environ.get("HTTP_X_USER_ID"))
serla = Serla(
    api_key=os.environ["SERLA_API_KEY"],
    host=os.environ.get("SERLA_HOST", "http://127.0.0.1:8787"),
)


@app.post("/signup")
def signup():
    serla.track(
        event="signup_completed",
        distinct_id=request.json["user_id"],  # the new user: explicit arguments win over the context
        properties={"plan": request.json.get("plan")},
    )
    return {"ok": True}


@app.post("/checkout")
def checkout():
    serla.track("checkout_started")  # user and session come from the middleware
    return {"ok": True}


atexit.register(serla.shutdown)
