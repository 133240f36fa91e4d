from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from hub_site.env import env_choice
from templates_catalog.memberships import membership_invite
from templates_catalog.models import Membership, PublisherInvitation

SIGNUP = reverse("catalog:signup")
User = get_user_model()


def _form(username="newcomer", **extra):
    return {"username": username, "email": f"{username}@example.com", "password1": "a-long-pass-phrase-42", "password2": "a-long-pass-phrase-42", **extra}


@pytest.fixture
def invite(publisher, owner):
    def make(email="newcomer@example.com", role=Membership.Role.MEMBER, on=None):
        target = on or publisher
        return membership_invite(publisher=target, email=email, role=role, invited_by=target.members.get())

    return make


@pytest.mark.django_db
def test_it_signs_up_and_signs_in_when_sign_up_is_open(client, settings):
    settings.SIGNUP_MODE = "open"
    response = client.post(SIGNUP, _form())

    assert response.status_code == 302 and response["Location"] == reverse("catalog:publisher_list")
    user = User.objects.get(username="newcomer")
    assert user.email == "newcomer@example.com" and user.check_password("a-long-pass-phrase-42")
    assert client.get(reverse("catalog:publisher_list")).status_code == 200  # signed in


@pytest.mark.django_db
def test_a_weak_password_or_a_taken_username_is_explained(client, user_factory):
    user_factory("taken")
    weak = client.post(SIGNUP, {**_form(), "password1": "password", "password2": "password"})
    taken = client.post(SIGNUP, _form("taken"))

    assert "This password is too common" in weak.content.decode()
    assert "A user with that username already exists" in taken.content.decode()
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_closed_sign_up_says_so_and_creates_nobody(client, settings):
    settings.SIGNUP_MODE = "closed"
    page = client.get(SIGNUP)
    post = client.post(SIGNUP, _form())

    assert page.status_code == post.status_code == 403
    assert "Sign-ups are closed on this hub" in post.content.decode()
    assert not User.objects.filter(username="newcomer").exists()
    assert 'href="/accounts/signup/"' not in client.get(reverse("catalog:home")).content.decode()


@pytest.mark.django_db
def test_invite_mode_refuses_a_sign_up_without_an_invitation(client, settings):
    settings.SIGNUP_MODE = "invite"
    response = client.post(SIGNUP, _form())

    assert response.status_code == 403
    assert "needs an invitation link" in response.content.decode()
    assert not User.objects.filter(username="newcomer").exists()


def test_invite_mode_signs_up_with_a_valid_invitation_and_joins_the_publisher(client, settings, publisher, invite):
    settings.SIGNUP_MODE = "invite"
    created = invite(role=Membership.Role.OWNER)

    page = client.get(f"{SIGNUP}?invitation={created.secret}")
    response = client.post(SIGNUP, _form(invitation=created.secret))

    assert page.status_code == 200 and "Acme AI" in page.content.decode()
    assert response.status_code == 302 and response["Location"] == reverse("catalog:publisher_page", args=["acme"])
    user = User.objects.get(username="newcomer")
    assert Membership.objects.get(user=user, publisher=publisher).role == "owner"
    invitation = PublisherInvitation.objects.get()
    assert invitation.accepted_by == user and invitation.accepted_at is not None


def test_an_expired_invitation_is_refused_with_its_date(client, settings, invite):
    settings.SIGNUP_MODE = "invite"
    created = invite()
    PublisherInvitation.objects.update(expires_at=timezone.now() - timedelta(minutes=1))

    response = client.post(SIGNUP, _form(invitation=created.secret))

    assert response.status_code == 403 and "This invitation expired on" in response.content.decode()
    assert not User.objects.filter(username="newcomer").exists()


def test_an_invitation_works_once_even_for_sign_up(client, settings, invite):
    settings.SIGNUP_MODE = "invite"
    created = invite()
    assert client.post(SIGNUP, _form(invitation=created.secret)).status_code == 302
    client.logout()

    reused = client.post(SIGNUP, _form("second", invitation=created.secret))

    assert reused.status_code == 403 and "already used" in reused.content.decode()
    assert not User.objects.filter(username="second").exists()


@pytest.mark.django_db
def test_a_made_up_invitation_is_refused(client, settings):
    settings.SIGNUP_MODE = "invite"
    response = client.post(SIGNUP, _form(invitation="not-a-real-secret"))
    assert response.status_code == 403 and "not valid" in response.content.decode()
    assert not User.objects.exists()


@pytest.mark.django_db
def test_sign_up_without_a_csrf_token_is_refused():
    response = Client(enforce_csrf_checks=True).post(SIGNUP, _form())
    assert response.status_code == 403
    assert not User.objects.exists()


def test_password_reset_emails_a_link_that_sets_a_new_password(client, user_factory, mailoutbox):
    user = user_factory("forgetful", email="forgetful@example.com")

    response = client.post(reverse("catalog:password_reset"), {"email": "forgetful@example.com"}, follow=True)

    assert "Check your email" in response.content.decode()
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["forgetful@example.com"]
    link = next(line for line in mailoutbox[0].body.splitlines() if "/accounts/reset/" in line).strip()
    path = link.removeprefix("http://testserver")
    form_page = client.get(path, follow=True)
    assert "Choose a new password" in form_page.content.decode()
    done = client.post(form_page.redirect_chain[-1][0], {"new_password1": "another-long-phrase-7", "new_password2": "another-long-phrase-7"})
    assert done.status_code == 302 and done["Location"] == reverse("catalog:password_reset_complete")
    user.refresh_from_db()
    assert user.check_password("another-long-phrase-7")


@pytest.mark.django_db
def test_password_reset_for_an_unknown_address_sends_nothing_and_reveals_nothing(client, mailoutbox):
    response = client.post(reverse("catalog:password_reset"), {"email": "nobody@example.com"})
    assert response.status_code == 302 and response["Location"] == reverse("catalog:password_reset_done")
    assert mailoutbox == []


def test_signup_mode_must_be_one_of_the_three(monkeypatch):
    monkeypatch.setenv("SIGNUP_MODE", "sometimes")
    with pytest.raises(ImproperlyConfigured, match="SIGNUP_MODE='sometimes' is not allowed: write one of open, invite, closed"):
        env_choice("SIGNUP_MODE", "open", ("open", "invite", "closed"))
    monkeypatch.setenv("SIGNUP_MODE", " Invite ")
    assert env_choice("SIGNUP_MODE", "open", ("open", "invite", "closed")) == "invite"
