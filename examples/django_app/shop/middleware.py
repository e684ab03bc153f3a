"""The README's middleware idea (track every request), and a stand-in for ``django.contrib.auth``.

``serla.integrations.django.SerlaMiddleware`` (in ``settings.MIDDLEWARE``) has already put the request in
its context (``request.user`` and the session), so ``track()`` here names no one.
"""

from dataclasses import dataclass

from .analytics import serla


class AnalyticsMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.user.is_authenticated:
            serla.track(
                event="request_handled",
                properties={"path": request.path, "status": response.status_code},
            )
        return response


@dataclass
class DemoUser:
    id: str
    is_authenticated: bool = True


class DemoUserMiddleware:
    """Sets ``request.user`` from the ``X-Demo-User`` header, so the example needs no database.

    In a real project, ``django.contrib.auth``'s ``AuthenticationMiddleware`` does this.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user_id = request.headers.get("X-Demo-User")
        request.user = DemoUser(user_id) if user_id else DemoUser("", is_authenticated=False)
        return self.get_response(request)
