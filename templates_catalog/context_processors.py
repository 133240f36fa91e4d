from django.conf import settings
from django.http import HttpRequest


def accounts(request: HttpRequest) -> dict:
    """What the site navigation needs to know about accounts on every page."""
    return {"signup_open": settings.SIGNUP_MODE == "open"}
