import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.urls import reverse

from templates_catalog.memberships import invitation_accept, membership_change_role, membership_invite, membership_remove
from templates_catalog.models import ApiToken, Membership, PublisherInvitation
from templates_catalog.services import api_token_create

from .conftest import invitation_secret, settings_url


def _membership(publisher, user) -> Membership:
    return Membership.objects.select_related("user", "publisher").get(publisher=publisher, user=user)


def test_an_owner_invites_by_email_and_the_link_is_mailed_and_shown_once(
    owner_client, publisher, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        page = owner_client.post(settings_url(publisher), {"who": "new@example.com", "role": "member"})

    secret = invitation_secret(page)
    assert page["Cache-Control"] == "no-store"
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["new@example.com"]
    assert f"/invitations/{secret}/" in mailoutbox[0].body
    assert secret not in str(PublisherInvitation.objects.values().get())  # only its hash is kept
    again = owner_client.get(settings_url(publisher)).content.decode()
    assert secret not in again and "new@example.com" in again  # pending, link not shown again


def test_a_signed_in_user_accepts_an_invitation_once(client, owner_client, publisher, user_factory):
    secret = invitation_secret(owner_client.post(settings_url(publisher), {"who": "joiner@example.com", "role": "member"}))
    joiner = user_factory("joiner")
    client.force_login(joiner)

    accepted = client.post(reverse("catalog:invitation", args=[secret]))
    reused = client.post(reverse("catalog:invitation", args=[secret]))

    assert accepted.status_code == 302 and _membership(publisher, joiner).role == "member"
    assert reused.status_code == 403 and "already used" in reused.content.decode()


def test_an_invitation_cannot_be_used_by_two_accounts(publisher, owner, user_factory):
    created = membership_invite(publisher=publisher, email="x@example.com", role="member", invited_by=owner)
    invitation_accept(secret=created.secret, user=user_factory("first"))

    with pytest.raises(ValidationError, match="already used"):
        invitation_accept(secret=created.secret, user=user_factory("second"))
    assert not publisher.members.filter(username="second").exists()


def test_an_owner_adds_an_existing_user_by_username(owner_client, publisher, user_factory):
    user = user_factory("existing")
    owner_client.post(settings_url(publisher), {"who": "existing", "role": "owner"})
    assert _membership(publisher, user).role == "owner"

    unknown = owner_client.post(settings_url(publisher), {"who": "ghost", "role": "member"})
    assert "No account is named “ghost”" in unknown.content.decode()


def test_an_owner_changes_a_role_and_removes_a_member(owner_client, publisher, member):
    membership = _membership(publisher, member)
    owner_client.post(reverse("catalog:membership_role", args=[publisher.slug, membership.pk]), {"role": "owner"})
    assert _membership(publisher, member).role == "owner"

    confirm = owner_client.get(reverse("catalog:membership_remove", args=[publisher.slug, membership.pk]))
    assert "Remove acme-member?" in confirm.content.decode()
    assert publisher.members.filter(pk=member.pk).exists()  # asking is not removing
    owner_client.post(reverse("catalog:membership_remove", args=[publisher.slug, membership.pk]))
    assert not publisher.members.filter(pk=member.pk).exists()


def test_removing_a_member_revokes_the_tokens_they_made_for_that_publisher_only(
    publisher, other_publisher, owner, member, client
):
    theirs = api_token_create(publisher=publisher, created_by=member, name="ci", permission="publish")
    owners_token = api_token_create(publisher=publisher, created_by=owner, name="owner's")
    Membership.objects.create(publisher=other_publisher, user=member)
    elsewhere = api_token_create(publisher=other_publisher, created_by=member, name="elsewhere")

    revoked = membership_remove(membership=_membership(publisher, member), removed_by=owner)

    assert revoked == 1
    assert ApiToken.objects.get(pk=theirs.token.pk).revoked_at is not None
    assert ApiToken.objects.get(pk=owners_token.token.pk).revoked_at is None
    assert ApiToken.objects.get(pk=elsewhere.token.pk).revoked_at is None
    response = client.get("/api/v1/templates/", headers={"Authorization": f"Bearer {theirs.secret}"})
    assert response.status_code == 401


def test_the_last_owner_can_be_neither_removed_nor_demoted(owner_client, publisher, owner, member):
    membership = _membership(publisher, owner)

    demote = owner_client.post(reverse("catalog:membership_role", args=[publisher.slug, membership.pk]), {"role": "member"}, follow=True)
    remove = owner_client.post(reverse("catalog:membership_remove", args=[publisher.slug, membership.pk]), follow=True)

    assert "acme-owner is the last owner of Acme AI: make another member an owner first." in demote.content.decode()
    assert "last owner" in remove.content.decode()
    assert _membership(publisher, owner).role == "owner"


def test_with_two_owners_one_may_step_down(publisher, owner, member):
    membership_change_role(membership=_membership(publisher, member), role="owner", changed_by=owner)
    membership_change_role(membership=_membership(publisher, owner), role="member", changed_by=owner)
    assert _membership(publisher, owner).role == "member"
    with pytest.raises(ValidationError, match="last owner"):
        membership_remove(membership=_membership(publisher, member), removed_by=member)


@pytest.mark.parametrize(
    ("method", "name", "data"),
    [
        ("get", "settings", None),
        ("post", "settings", {"who": "x@example.com", "role": "owner"}),
        ("post", "role", {"role": "owner"}),
        ("post", "remove", None),
    ],
)
def test_a_member_who_is_not_an_owner_cannot_manage_members(client, publisher, owner, member, method, name, data):
    client.force_login(member)
    target = _membership(publisher, owner)
    url = {
        "settings": settings_url(publisher),
        "role": reverse("catalog:membership_role", args=[publisher.slug, _membership(publisher, member).pk]),
        "remove": reverse("catalog:membership_remove", args=[publisher.slug, target.pk]),
    }[name]

    response = getattr(client, method)(url, data or {})

    assert response.status_code == 403
    assert _membership(publisher, owner).role == "owner" and _membership(publisher, member).role == "member"
    assert not PublisherInvitation.objects.exists()


def test_services_refuse_non_owners_too(publisher, member):
    with pytest.raises(PermissionDenied):
        membership_invite(publisher=publisher, email="x@example.com", role="owner", invited_by=member)


def test_anonymous_visitors_are_sent_to_sign_in(client, publisher):
    response = client.get(settings_url(publisher))
    assert response.status_code == 302 and response["Location"].startswith(reverse("catalog:login"))


def test_an_owner_cannot_reach_another_publishers_members_or_invitations(owner_client, publisher, other_publisher):
    theirs = other_publisher.memberships.get()
    invitation = membership_invite(
        publisher=other_publisher, email="y@example.com", role="member", invited_by=other_publisher.members.get()
    ).invitation

    # Our slug in the URL, their rows' ids: 404, nothing changes.
    role = owner_client.post(reverse("catalog:membership_role", args=[publisher.slug, theirs.pk]), {"role": "member"})
    remove = owner_client.post(reverse("catalog:membership_remove", args=[publisher.slug, theirs.pk]))
    cancel = owner_client.post(reverse("catalog:invitation_cancel", args=[publisher.slug, invitation.pk]))
    # Their slug: 403.
    direct = owner_client.post(reverse("catalog:membership_remove", args=[other_publisher.slug, theirs.pk]))

    assert (role.status_code, remove.status_code, cancel.status_code, direct.status_code) == (404, 404, 404, 403)
    assert Membership.objects.get(pk=theirs.pk).role == "owner"
    assert PublisherInvitation.objects.filter(pk=invitation.pk).exists()


def test_an_owner_cancels_a_pending_invitation_and_its_link_dies(owner_client, client, publisher, user_factory):
    secret = invitation_secret(owner_client.post(settings_url(publisher), {"who": "z@example.com", "role": "member"}))
    owner_client.post(reverse("catalog:invitation_cancel", args=[publisher.slug, PublisherInvitation.objects.get().pk]))

    client.force_login(user_factory("latecomer"))
    response = client.post(reverse("catalog:invitation", args=[secret]))

    assert response.status_code == 403 and "not valid" in response.content.decode()
    assert not publisher.members.filter(username="latecomer").exists()


def test_member_management_without_a_csrf_token_is_refused(publisher, owner, member):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    membership = _membership(publisher, member)

    removal = client.post(reverse("catalog:membership_remove", args=[publisher.slug, membership.pk]))
    invite = client.post(settings_url(publisher), {"who": "x@example.com", "role": "owner"})

    assert removal.status_code == invite.status_code == 403
    assert publisher.members.filter(pk=member.pk).exists() and not PublisherInvitation.objects.exists()
