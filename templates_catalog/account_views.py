from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .account_forms import SignupForm
from .memberships import InvitationInvalid, SignupRefused, invitation_accept, invitation_check, signup_check, user_register


def _refused(request: HttpRequest, message: str) -> HttpResponse:
    return render(request, "catalog/accounts/refused.html", {"message": message}, status=403)


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    secret = request.POST.get("invitation") or request.GET.get("invitation", "")
    invitation = None
    try:
        signup_check(invitation_secret=secret)
        if secret:
            invitation = invitation_check(secret=secret)
    except (SignupRefused, InvitationInvalid) as exc:
        return _refused(request, _message(exc))
    form = SignupForm(request.POST or None, initial={"invitation": secret, "email": invitation and invitation.email})
    if request.method == "POST" and form.is_valid():
        try:
            user = user_register(
                username=form.cleaned_data["username"],
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password1"],
                invitation_secret=secret,
            )
        except InvitationInvalid as exc:
            return _refused(request, _message(exc))
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            if invitation:
                messages.success(request, f"Welcome! You are now a member of {invitation.publisher.name}.")
                return redirect("catalog:publisher_page", slug=invitation.publisher.slug)
            messages.success(request, "Welcome! Create a publisher to publish templates.")
            return redirect("catalog:publisher_list")
    return render(request, "catalog/accounts/signup.html", {"form": form, "invitation": invitation})


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, secret: str) -> HttpResponse:
    try:
        invitation = invitation_check(secret=secret)
    except InvitationInvalid as exc:
        return _refused(request, _message(exc))
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect_to_login(request.path)
        try:
            invitation_accept(secret=secret, user=request.user)
        except InvitationInvalid as exc:
            return _refused(request, _message(exc))
        messages.success(request, f"You are now a member of {invitation.publisher.name}.")
        return redirect("catalog:publisher_page", slug=invitation.publisher.slug)
    context = {"invitation": invitation, "secret": secret, "signup_allowed": settings.SIGNUP_MODE != "closed"}
    response = render(request, "catalog/accounts/invitation.html", context)
    response["Cache-Control"] = "no-store"
    return response


def _message(exc: ValidationError | SignupRefused) -> str:
    return " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
