"""``serla.integrations.django`` in a real Django project (auth, sessions, SQLite), sync and async stacks.

Django's settings are process-wide, so the project runs in a subprocess; its events go to the contract
server here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from serla.devtools.server import SerlaServer

from .conftest import BROWSER_SESSION, KEY, by_name

pytest.importorskip("django")

PROJECT = """
import asyncio, json, os, sys
import django
from django.conf import settings

settings.configure(
    DEBUG=True,
    SECRET_KEY="test-only",
    ALLOWED_HOSTS=["testserver"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.abspath("db.sqlite3")}},
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "serla.integrations.django.SerlaMiddleware",
    ],
    SERLA_INTEGRATION={
        "groups": "__main__.company",
        "properties": lambda request: {"path": request.path},
    },
)
django.setup()

from django.core.management import call_command
from django.contrib.auth.models import User
from django.http import JsonResponse
from django.test import AsyncClient, Client
from django.urls import path

import serla

client = serla.Serla(os.environ["SERLA_API_KEY"], host=os.environ["SERLA_HOST"],
                     flush_interval_seconds=60, flush_on_exit=False)


def company(request):
    return {"company": request.headers.get("X-Company")}


def checkout(request):  # no user, session or group here: the middleware's context has them
    client.track("checkout_started")
    client.track("checkout_paid", properties={"total": 12})
    return JsonResponse({"ok": True})


async def async_checkout(request):
    client.track("async_checkout")
    return JsonResponse({"ok": True})


urlpatterns = [path("checkout/", checkout), path("async-checkout/", async_checkout)]

call_command("migrate", verbosity=0)
user = User.objects.create_user("alice", password="pw")
http = Client()
http.force_login(user)
statuses = [
    http.post("/checkout/", HTTP_X_COMPANY="acme").status_code,
    http.post("/checkout/", HTTP_X_SERLA_SESSION_ID=sys.argv[1]).status_code,
    Client().post("/checkout/").status_code,  # anonymous: the view's events are dropped
]


async def async_requests():
    ahttp = AsyncClient()
    await ahttp.aforce_login(user)
    response = await ahttp.post("/async-checkout/", headers={"X-Company": "globex"})
    return response.status_code

statuses.append(asyncio.run(async_requests()))
print(json.dumps({"statuses": statuses, "user": user.pk, "flushed": client.flush(10),
                  "dropped": client.stats()["dropped"]}))
"""


def test_django_requests_carry_the_logged_in_user_session_and_groups(
    server: SerlaServer, tmp_path: Path
) -> None:
    script = tmp_path / "project.py"
    script.write_text(PROJECT, encoding="utf-8")
    env = dict(os.environ, SERLA_API_KEY=KEY, SERLA_HOST=server.url)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.run(
        [sys.executable, str(script), BROWSER_SESSION],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["statuses"] == [200, 200, 200, 200]
    assert result["flushed"] is True
    assert result["dropped"] == {"invalid_call": 2}  # the anonymous request's two events
    user = str(result["user"])

    events = by_name(server.events)
    started, paid = events["checkout_started"], events["checkout_paid"]
    assert [e["distinctId"] for e in started + paid] == [user] * 4
    # Request 1: a fresh server-side session shared by its two events, and its group.
    assert started[0]["sessionId"] == paid[0]["sessionId"] != BROWSER_SESSION
    assert started[0]["properties"] == {"path": "/checkout/", "$groups": {"company": "acme"}}
    # Request 2: the browser's session header adopted; no company header, no group.
    assert started[1]["sessionId"] == paid[1]["sessionId"] == BROWSER_SESSION
    assert started[1]["properties"] == {"path": "/checkout/"}
    # The async stack (ASGI handler, request.auser()).
    (async_event,) = events["async_checkout"]
    assert async_event["distinctId"] == user
    assert async_event["properties"]["$groups"] == {"company": "globex"}
    assert len(async_event["sessionId"]) == 32
