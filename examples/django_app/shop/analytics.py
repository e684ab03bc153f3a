"""One shared client for the whole process (the README's ``analytics.py``)."""

from django.conf import settings

from serla import Serla

serla = Serla(api_key=settings.SERLA_API_KEY, host=settings.SERLA_HOST)
