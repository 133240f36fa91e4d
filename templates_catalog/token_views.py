from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from .forms import ApiTokenForm, PersonalTokenForm
from .selectors import api_tokens_of
from .services import api_token_create, api_token_create_personal, api_token_revoke

PERSONAL = "personal"


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
        personal_form = PersonalTokenForm(prefix=PERSONAL)
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
        else:
            form = ApiTokenForm(user=request.user)
    context = {"form": form, "personal_form": personal_form, "created": created, "tokens": api_tokens_of(request.user)}
    response = render(request, "catalog/tokens.html", context)
    # The page may show a secret once: never let a cache keep it.
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    token = get_object_or_404(api_tokens_of(request.user), pk=token_id)
    api_token_revoke(token=token, revoked_by=request.user)
    messages.success(request, f"Token “{token.name}” ({token.prefix}…) is revoked.")
    return redirect("catalog:token_list")
