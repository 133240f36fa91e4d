"""Who may upload, yank and read a private template: every kind of caller, every action."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import RequestFactory
from django.utils import timezone

from templates_catalog.api.authentication import BearerTokenAuthentication
from templates_catalog.models import ApiToken, Membership
from templates_catalog.services import api_token_create, api_token_revoke

from ..factories import bundle_bytes

OWNER, OTHER, READ_ONLY, SCOPED_ELSEWHERE, REVOKED, EXPIRED, REMOVED_MEMBER, DEACTIVATED, ANONYMOUS = (
    "owner", "other publisher", "read-only", "scoped elsewhere", "revoked", "expired",
    "removed member", "deactivated creator", "anonymous",
)

# caller: (upload a new version, yank a version, read a private template)
MATRIX = {
    OWNER: (201, 200, 200),
    OTHER: (403, 403, 404),
    READ_ONLY: (403, 403, 200),
    SCOPED_ELSEWHERE: (403, 403, 404),
    REVOKED: (401, 401, 401),
    EXPIRED: (401, 401, 401),
    REMOVED_MEMBER: (401, 401, 401),
    DEACTIVATED: (401, 401, 401),
    ANONYMOUS: (401, 401, 404),
}


def _token(publisher, **options) -> ApiToken:
    return api_token_create(publisher=publisher, created_by=publisher.members.get(), name="t", **options)


def _member_token(publisher, user, **options):
    """A publish token made by `user` while a member of `publisher`."""
    membership = Membership.objects.create(publisher=publisher, user=user)
    created = api_token_create(publisher=publisher, created_by=user, name="member's", permission=ApiToken.Permission.PUBLISH, **options)
    return created, membership


@pytest.fixture
def callers(publisher, other_publisher, user_factory) -> dict[str, str | None]:
    publish = ApiToken.Permission.PUBLISH
    revoked = _token(publisher, permission=publish)
    api_token_revoke(token=revoked.token, revoked_by=publisher.members.get())
    expired = _token(publisher, permission=publish, expires_at=timezone.now() + timedelta(seconds=1))
    ApiToken.objects.filter(pk=expired.token.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    secrets = {
        OWNER: _token(publisher, permission=publish).secret,
        OTHER: _token(other_publisher, permission=publish).secret,
        READ_ONLY: _token(publisher).secret,
        SCOPED_ELSEWHERE: _token(publisher, permission=publish, template_names=["something-else"]).secret,
        REVOKED: revoked.secret,
        EXPIRED: expired.secret,
        ANONYMOUS: None,
    }
    # Made last: from here on the publisher has more than one member.
    removed, membership = _member_token(publisher, user_factory("leaver"))
    membership.delete()
    deactivated, _ = _member_token(publisher, user_factory("sleeper"))
    get_user_model().objects.filter(username="sleeper").update(is_active=False)
    return {**secrets, REMOVED_MEMBER: removed.secret, DEACTIVATED: deactivated.secret}


@pytest.fixture
def templates(publish):
    publish(name="public-model", version="1.0.0")
    publish(name="secret-model", visibility="private")


def _headers(secret: str | None) -> dict:
    return {"Authorization": f"Bearer {secret}"} if secret else {}


@pytest.mark.parametrize("caller", list(MATRIX))
def test_upload(client, callers, templates, tmp_path, caller):
    response = client.post(
        "/api/v1/templates/public-model/versions/",
        data=bundle_bytes(tmp_path, name="public-model", version="1.1.0"),
        content_type="application/gzip",
        headers=_headers(callers[caller]),
    )
    assert response.status_code == MATRIX[caller][0], response.content


@pytest.mark.parametrize("caller", list(MATRIX))
def test_yank(client, callers, templates, caller):
    response = client.post(
        "/api/v1/templates/public-model/versions/1.0.0/yank/",
        data={"reason": "test"},
        content_type="application/json",
        headers=_headers(callers[caller]),
    )
    assert response.status_code == MATRIX[caller][1], response.content


@pytest.mark.parametrize("caller", list(MATRIX))
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/templates/secret-model/",
        "/api/v1/templates/secret-model/versions/",
        "/api/v1/templates/secret-model/versions/1.0.0/",
        "/api/v1/templates/secret-model/versions/1.0.0/bundle/",
    ],
)
def test_read_private(client, callers, templates, caller, path):
    response = client.get(path, headers=_headers(callers[caller]))
    assert response.status_code == MATRIX[caller][2], response.content


@pytest.mark.parametrize("caller", list(MATRIX))
def test_private_templates_are_listed_only_for_those_who_may_read_them(client, callers, templates, caller):
    names = [t["name"] for t in client.get("/api/v1/templates/", headers=_headers(callers[caller])).json().get("results", [])]
    visible = MATRIX[caller][2] == 200
    assert ("secret-model" in names) is visible
    if MATRIX[caller][2] != 401:
        assert "public-model" in names


def test_failures_say_what_is_wrong(client, callers, templates):
    revoked = client.get("/api/v1/templates/", headers=_headers(callers[REVOKED]))
    unknown = client.get("/api/v1/templates/", headers=_headers("hub_not-a-real-token"))
    anonymous = client.post("/api/v1/templates/public-model/versions/", data=b"x", content_type="application/gzip")

    assert "was revoked; create a new one" in revoked.json()["detail"]
    assert "Unknown token" in unknown.json()["detail"]
    assert revoked["WWW-Authenticate"] == 'Bearer realm="api"'
    assert "Authorization: Bearer" in anonymous.json()["detail"]


def test_a_token_stops_working_when_its_creator_leaves_the_publisher(client, publisher, user_factory, templates, tmp_path):
    created, membership = _member_token(publisher, user_factory("leaver"))
    headers = _headers(created.secret)
    assert client.get("/api/v1/templates/secret-model/", headers=headers).status_code == 200

    membership.delete()

    upload = client.post(
        "/api/v1/templates/public-model/versions/",
        data=bundle_bytes(tmp_path, name="public-model", version="1.2.0"),
        content_type="application/gzip",
        headers=headers,
    )
    assert upload.status_code == 401
    assert upload.json()["detail"] == (
        f"Token {created.token.prefix}… stopped working: leaver, who created it, is no longer a member of Acme AI; "
        "a member creates a new one."
    )
    assert client.get("/api/v1/templates/secret-model/", headers=headers).status_code == 401
    # Back in the publisher, the same token works again: nothing was revoked, only checked.
    Membership.objects.create(publisher=publisher, user=created.token.created_by)
    assert client.get("/api/v1/templates/secret-model/", headers=headers).status_code == 200


def test_a_creator_who_is_a_member_of_another_publisher_only_is_refused(client, publisher, other_publisher, templates):
    # Membership must be of the token's own publisher, not of any publisher.
    created = _token(publisher, permission=ApiToken.Permission.PUBLISH)
    creator = created.token.created_by
    Membership.objects.create(publisher=other_publisher, user=creator)
    Membership.objects.filter(publisher=publisher, user=creator).delete()

    assert client.get("/api/v1/templates/secret-model/", headers=_headers(created.secret)).status_code == 401


def test_checking_a_token_and_its_creator_takes_one_query_and_the_last_used_stamp(publisher, django_assert_num_queries):
    created = _token(publisher)
    request = RequestFactory().get("/api/v1/templates/", headers=_headers(created.secret))

    with django_assert_num_queries(2):
        user, token = BearerTokenAuthentication().authenticate(request)

    assert user == publisher.members.get() and token.pk == created.token.pk


def test_a_member_signed_in_to_the_site_may_upload_with_a_csrf_token(publisher, tmp_path, templates):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(publisher.members.get())
    raw = bundle_bytes(tmp_path, name="public-model", version="1.2.0")

    without = browser.post("/api/v1/templates/public-model/versions/", data=raw, content_type="application/gzip")
    browser.get("/")  # sets the CSRF cookie
    with_token = browser.post(
        "/api/v1/templates/public-model/versions/",
        data=raw,
        content_type="application/gzip",
        headers={"X-CSRFToken": browser.cookies["csrftoken"].value},
    )

    assert without.status_code == 403 and "CSRF" in without.json()["detail"]
    assert with_token.status_code == 201, with_token.content
