"""The README's signup view."""

import itertools
from dataclasses import dataclass

from django.http import JsonResponse

from .analytics import serla


@dataclass
class User:
    id: int
    plan: str


_ids = itertools.count(1)


def create_user(data):
    """Stands in for your sign-up logic."""
    return User(id=next(_ids), plan=data.get("plan", "free"))


def signup(request):
    user = create_user(request.POST)
    serla.track(
        event="signup_completed",
        distinct_id=str(user.id),
        properties={"plan": user.plan},
    )
    return JsonResponse({"ok": True})
