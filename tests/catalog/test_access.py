"""`access` decides who may publish and build; views and services only ask it."""

from django.contrib.auth.models import AnonymousUser

from templates_catalog.access import may_build, publish_refusal, publishers_of
from templates_catalog.models import ApiToken
from templates_catalog.services import api_token_create


def token(publisher, **fields) -> ApiToken:
    return api_token_create(publisher=publisher, created_by=publisher.members.get(), name="t", **fields).token


def test_a_member_may_publish_and_an_outsider_is_told_why_not(publisher, other_publisher):
    member, outsider = publisher.members.get(), other_publisher.members.get()
    assert publish_refusal(member, publisher, "echo") is None
    assert publish_refusal(outsider, publisher, "echo") == "You are not a member of the publisher of 'echo'."
    assert publish_refusal(AnonymousUser(), publisher, "echo") is not None


def test_a_token_is_refused_for_what_it_does_not_cover(publisher, other_publisher):
    user = publisher.members.get()
    read_only = token(publisher)
    scoped = token(publisher, permission="publish", template_names=["echo"])

    assert "read-only" in publish_refusal(user, publisher, "echo", read_only)
    assert "another publisher" in publish_refusal(user, other_publisher, "echo", scoped)
    assert "limited to echo; 'other' is not one of them" in publish_refusal(user, publisher, "other", scoped)
    assert publish_refusal(user, publisher, "echo", scoped) is None


def test_a_token_never_borrows_its_creators_membership(publisher):
    # The creator is a member, but a read-only token stays read-only.
    assert publish_refusal(publisher.members.get(), publisher, "echo", token(publisher)) is not None


def test_publishers_of_lists_only_the_users_own(publisher, other_publisher):
    assert list(publishers_of(publisher.members.get())) == [publisher]
    assert list(publishers_of(AnonymousUser())) == []


def test_only_members_may_build(publish, other_publisher):
    version = publish()
    assert may_build(version.template.publisher.members.get(), version)
    assert not may_build(other_publisher.members.get(), version)
    assert not may_build(AnonymousUser(), version)
