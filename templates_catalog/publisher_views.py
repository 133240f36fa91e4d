from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from .access import is_member, may_manage_members
from .account_forms import InviteForm, PublisherForm, RoleForm
from .cards import catalog_cards
from .memberships import invitation_cancel, membership_add, membership_change_role, membership_invite, membership_remove
from .models import Membership, Publisher, PublisherInvitation
from .selectors import (
    memberships_of,
    publisher_members,
    publisher_pending_invitations,
    publisher_templates,
    template_catalog_page,
)
from .services import publisher_create


@login_required
@require_GET
def publisher_list(request: HttpRequest) -> HttpResponse:
    return render(request, "catalog/publishers/list.html", {"memberships": memberships_of(request.user)})


@login_required
@require_http_methods(["GET", "POST"])
def publisher_new(request: HttpRequest) -> HttpResponse:
    form = PublisherForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            publisher = publisher_create(slug=form.cleaned_data["slug"], name=form.cleaned_data["name"], owner=request.user)
        except ValidationError as exc:
            _add_errors(form, exc)
        else:
            messages.success(request, f"{publisher.name} is created and you are its owner. Create a token to publish.")
            return redirect("catalog:publisher_page", slug=publisher.slug)
    return render(request, "catalog/publishers/new.html", {"form": form})


@require_GET
def publisher_page(request: HttpRequest, slug: str) -> HttpResponse:
    publisher = get_object_or_404(Publisher, slug=slug)
    cards = template_catalog_page(publisher_templates(request.user, publisher), request.GET.get("page"), settings.CATALOG_PAGE_SIZE)
    context = {
        "publisher": publisher,
        "page": cards.page,
        "templates": cards.templates,
        "cards": catalog_cards(cards.templates),
        "is_owner": may_manage_members(request.user, publisher),
    }
    return render(request, "catalog/publishers/page.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def publisher_settings(request: HttpRequest, slug: str) -> HttpResponse:
    publisher = _managed_publisher(request, slug)
    form = InviteForm(request.POST or None)
    created = None
    if request.method == "POST" and form.is_valid():
        try:
            created = _invite_or_add(request, publisher, form)
        except ValidationError as exc:
            form.add_error("who", exc)
        else:
            form = InviteForm()
    context = {
        "publisher": publisher,
        "form": form,
        "created": created,
        "invitation_link": created and request.build_absolute_uri(created.path),
        "members": publisher_members(publisher),
        "invitations": publisher_pending_invitations(publisher),
        "roles": Membership.Role.choices,
    }
    response = render(request, "catalog/publishers/settings.html", context)
    # The page may show an invitation link once: never let a cache keep it.
    response["Cache-Control"] = "no-store"
    return response


def _invite_or_add(request: HttpRequest, publisher: Publisher, form: InviteForm):
    role = form.cleaned_data["role"]
    if form.is_email:
        return membership_invite(publisher=publisher, email=form.cleaned_data["who"], role=role, invited_by=request.user)
    membership_add(publisher=publisher, user=form.user, role=role, added_by=request.user)
    messages.success(request, f"{form.user.get_username()} is now a {role} of {publisher.name}.")
    return None


@login_required
@require_POST
def membership_role(request: HttpRequest, slug: str, membership_id: int) -> HttpResponse:
    publisher = _managed_publisher(request, slug)
    membership = get_object_or_404(Membership.objects.select_related("user", "publisher"), pk=membership_id, publisher=publisher)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role: owner or member.")
    else:
        try:
            membership_change_role(membership=membership, role=form.cleaned_data["role"], changed_by=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"{membership.user.get_username()} is now a {form.cleaned_data['role']}.")
    return redirect("catalog:publisher_settings", slug=publisher.slug)


@login_required
@require_http_methods(["GET", "POST"])
def membership_remove_view(request: HttpRequest, slug: str, membership_id: int) -> HttpResponse:
    """GET asks for confirmation; POST removes."""
    publisher = _managed_publisher(request, slug)
    membership = get_object_or_404(Membership.objects.select_related("user", "publisher"), pk=membership_id, publisher=publisher)
    if request.method == "GET":
        return render(request, "catalog/publishers/remove.html", {"publisher": publisher, "membership": membership})
    try:
        revoked = membership_remove(membership=membership, removed_by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request, f"{membership.user.get_username()} is removed from {publisher.name}; {revoked} of their tokens revoked."
        )
    if membership.user_id == request.user.pk and not is_member(request.user, publisher):
        return redirect("catalog:publisher_page", slug=publisher.slug)
    return redirect("catalog:publisher_settings", slug=publisher.slug)


@login_required
@require_POST
def invitation_cancel_view(request: HttpRequest, slug: str, invitation_id: int) -> HttpResponse:
    publisher = _managed_publisher(request, slug)
    # Scoped to this publisher: an owner elsewhere cannot reach another publisher's invitations.
    invitation = get_object_or_404(PublisherInvitation.objects.select_related("publisher"), pk=invitation_id, publisher=publisher)
    invitation_cancel(invitation=invitation, cancelled_by=request.user)
    messages.success(request, f"The invitation to {invitation.email} is cancelled.")
    return redirect("catalog:publisher_settings", slug=publisher.slug)


def _managed_publisher(request: HttpRequest, slug: str) -> Publisher:
    publisher = get_object_or_404(Publisher, slug=slug)
    if not may_manage_members(request.user, publisher):
        raise PermissionDenied(f"Only owners of {publisher.name} manage its members.")
    return publisher


def _add_errors(form: PublisherForm, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)
