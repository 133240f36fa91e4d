import re

import pytest
from django.urls import reverse

from templates_catalog.memberships import membership_add
from templates_catalog.models import Membership


@pytest.fixture
def owner(publisher):
    return publisher.members.get()


@pytest.fixture
def member(publisher, owner, user_factory):
    user = user_factory("acme-member", email="member@example.com")
    membership_add(publisher=publisher, user=user, role=Membership.Role.MEMBER, added_by=owner)
    return user


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def settings_url(publisher) -> str:
    return reverse("catalog:publisher_settings", args=[publisher.slug])


def invitation_secret(page) -> str:
    """The one-time link shown to the owner after inviting someone."""
    return re.search(r'id="invitation-link">[^<]*/invitations/([^/<]+)/<', page.content.decode()).group(1)
