"""All the settings of the example project, in one file.

No database and no ``django.contrib`` apps, so it runs as is: :class:`shop.middleware.DemoUserMiddleware`
stands in for ``django.contrib.auth`` (it reads the user from an ``X-Demo-User`` header).
"""

import os

SERLA_API_KEY = os.environ["SERLA_API_KEY"]
SERLA_HOST = os.environ.get("SERLA_HOST", "http://127.0.0.1:8787")

SECRET_KEY = "example-only-not-a-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"
INSTALLED_APPS: list = []
MIDDLEWARE = [
    "shop.middleware.DemoUserMiddleware",  # stands in for django.contrib.auth's AuthenticationMiddleware
    "serla.integrations.django.SerlaMiddleware",  # each request's user (request.user) and session
    "shop.middleware.AnalyticsMiddleware",
]
DATABASES: dict = {}
USE_TZ = True
