from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from .forms import ApiTokenForm, PersonalTokenForm
from .selectors import api_tokens_of
from .services import api_token_create, api_token_create_personal, api_token_revoke

PERSONAL = "personal"
# The session key of a secret just minted: shown by the next GET, then forgotten.
NEW_TOKEN = "new_api_token"

class HttpResponseSeeOther(HttpResponseRedirect):
    status_code = 303


@login_required
@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    personal = request.method == "POST" and request.POST.get("kind") == PERSONAL
    form = ApiTokenForm(None if personal else request.POST or None, user=request.user)
    personal_form = PersonalTokenForm(request.POST if personal else None, prefix=PERSONAL)
    created = None
    if personal and personal_form.is_valid():
        created = api_token_create_personal(
            user=request.user, name=personal_form.cleaned_data["name"], expires_at=personal_form.expires_at()
        )
    elif request.method == "POST" and not personal and form.is_valid():
        try:
            created = api_token_create(
                publisher=form.cleaned_data["publisher"],
                created_by=request.user,
                name=form.cleaned_data["name"],
                permission=form.cleaned_data["permission"],
                template_names=form.cleaned_data["template_names"],
                expires_at=form.expires_at(),
            )
        except PermissionDenied as exc:
            form.add_error("publisher", str(exc))
    if created is not None:
        # Post/redirect/get: a reload of the page that shows the secret must not mint another.
        request.session[NEW_TOKEN] = {"secret": created.secret, "name": created.token.name,
                                      "can_publish": created.token.can_publish}
        return HttpResponseSeeOther(reverse("catalog:token_list"))
    context = {
        "form": form, "personal_form": personal_form, "created": _created_once(request),
        "tokens": api_tokens_of(request.user), "hub_url": settings.HUB_PUBLIC_URL.rstrip("/"),
    }
    response = render(request, "catalog/tokens.html", context)
    # The page may show a secret once: never let a cache keep it.
    response["Cache-Control"] = "no-store"
    return response


def _created_once(request: HttpRequest) -> dict | None:
    return request.session.pop(NEW_TOKEN, None) if request.method == "GET" else None


@login_required
@require_http_methods(["GET", "POST"])
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """GET asks for confirmation (a page, so it works without JavaScript); POST revokes."""
    token = get_object_or_404(api_tokens_of(request.user), pk=token_id)
    if request.method == "GET":
        return render(request, "catalog/token_revoke.html", {"token": token})
    api_token_revoke(token=token, revoked_by=request.user)
    messages.success(request, f"Token “{token.name}” ({token.prefix}…) is revoked.")
    return redirect("catalog:token_list")
