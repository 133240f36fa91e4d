import hashlib
import re

import pytest
from django.urls import reverse

from templates_catalog.models import ApiToken

TOKENS = reverse("catalog:token_list")


@pytest.fixture
def owner_client(client, publisher):
    client.force_login(publisher.members.get())
    return client


def test_a_new_token_is_shown_once_and_stored_hashed(owner_client, publisher):
    response = owner_client.post(
        TOKENS,
        {"publisher": publisher.pk, "name": "CI", "permission": "publish", "template_names": "a-model, b-model", "expires_in_days": 30},
        follow=True,
    )

    secret = re.search(r'id="new-token">(hub_[^<]+)<', response.content.decode()).group(1)
    token = ApiToken.objects.get()
    assert token.token_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(ApiToken.objects.values().get())
    assert token.template_names == ["a-model", "b-model"] and token.can_publish and token.expires_at
    assert response["Cache-Control"] == "no-store"
    assert secret not in owner_client.get(TOKENS).content.decode()  # never again


def test_the_token_works_and_stops_working_once_revoked(owner_client, client, publisher, publish):
    publish(name="secret-model", visibility="private")
    page = owner_client.post(TOKENS, {"publisher": publisher.pk, "name": "read", "permission": "read"}, follow=True)
    secret = re.search(r'id="new-token">(hub_[^<]+)<', page.content.decode()).group(1)
    headers = {"Authorization": f"Bearer {secret}"}
    assert owner_client.get("/api/v1/templates/secret-model/", headers=headers).status_code == 200

    owner_client.post(reverse("catalog:token_revoke", args=[ApiToken.objects.get().pk]))

    assert owner_client.get("/api/v1/templates/secret-model/", headers=headers).status_code == 401
    assert "revoked" in owner_client.get(TOKENS).content.decode()


def test_bad_scopes_are_explained(owner_client, publisher):
    response = owner_client.post(TOKENS, {"publisher": publisher.pk, "name": "x", "permission": "read", "template_names": "Bad Name"})
    assert "Not template names: Bad Name" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_nobody_can_mint_or_revoke_tokens_for_a_publisher_they_are_not_in(client, publisher, other_publisher):
    client.force_login(other_publisher.members.get())
    created = client.post(TOKENS, {"publisher": publisher.pk, "name": "x", "permission": "publish"})
    assert "Select a valid choice" in created.content.decode()
    assert not ApiToken.objects.exists()

    from templates_catalog.services import api_token_create

    theirs = api_token_create(publisher=publisher, created_by=publisher.members.get(), name="t").token
    assert client.post(reverse("catalog:token_revoke", args=[theirs.pk])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_the_tokens_page_needs_a_sign_in(client, db):
    response = client.get(TOKENS)
    assert response.status_code == 302 and response["Location"].startswith(reverse("catalog:login"))


def test_the_page_says_whose_tokens_these_are_and_which_stopped_working(owner_client, publisher, user_factory):
    from templates_catalog.models import Membership
    from templates_catalog.services import api_token_create

    owner = publisher.members.get()
    leaver = user_factory("leaver")
    membership = Membership.objects.create(publisher=publisher, user=leaver)
    api_token_create(publisher=publisher, created_by=owner, name="mine")
    api_token_create(publisher=publisher, created_by=leaver, name="theirs")
    membership.delete()

    page = owner_client.get(TOKENS).content.decode()

    assert "<h2>Tokens of Acme AI</h2>" in page
    mine, theirs = (re.search(rf"<tr>\s*<td>{name}<br>.*?</tr>", page, re.S).group(0) for name in ("mine", "theirs"))
    assert "acme-owner (you)" in mine and ">active<" in mine
    assert "leaver" in theirs and "(you)" not in theirs
    assert "stopped: its creator is no longer a member" in theirs


def test_tokens_are_grouped_under_each_publisher_of_the_member(client, publisher, other_publisher):
    from templates_catalog.models import Membership
    from templates_catalog.services import api_token_create

    owner = publisher.members.get()
    Membership.objects.create(publisher=other_publisher, user=owner)
    api_token_create(publisher=publisher, created_by=owner, name="acme-token")
    api_token_create(publisher=other_publisher, created_by=owner, name="globex-token")
    client.force_login(owner)

    page = client.get(TOKENS).content.decode()

    acme, globex = page.index("<h2>Tokens of Acme AI</h2>"), page.index("<h2>Tokens of Globex</h2>")
    assert acme < page.index("acme-token") < globex < page.index("globex-token")


def test_creating_a_token_redirects_so_a_reload_mints_no_other(owner_client, publisher):
    response = owner_client.post(TOKENS, {"publisher": publisher.pk, "name": "CI", "permission": "publish"})

    assert response.status_code == 303 and response["Location"] == TOKENS
    shown = owner_client.get(TOKENS)
    secret = re.search(r'id="new-token">(hub_[^<]+)<', shown.content.decode()).group(1)
    assert shown["Cache-Control"] == "no-store"
    reloaded = owner_client.get(TOKENS)
    assert ApiToken.objects.count() == 1
    assert secret not in reloaded.content.decode()


def test_the_new_secret_has_a_copy_button_and_a_ready_publish_line(owner_client, publisher, settings):
    settings.HUB_PUBLIC_URL = "https://hub.example.internal/"
    page = owner_client.post(TOKENS, {"publisher": publisher.pk, "name": "CI", "permission": "publish"}, follow=True).content.decode()

    secret = re.search(r'id="new-token">(hub_[^<]+)<', page).group(1)
    assert 'data-copy="new-token"' in page and 'data-copy="publish-line"' in page
    assert f"HUB_TOKEN={secret} .venv/bin/python manage.py publish FOLDER --url https://hub.example.internal</code>" in page
    assert "catalog/code-copy.js" in page


def test_a_read_token_gets_no_publish_line(owner_client, publisher):
    page = owner_client.post(TOKENS, {"publisher": publisher.pk, "name": "r", "permission": "read"}, follow=True).content.decode()
    assert 'id="new-token"' in page and "manage.py publish" not in page


def test_revoking_asks_for_confirmation_first(owner_client, publisher):
    from templates_catalog.services import api_token_create

    token = api_token_create(publisher=publisher, created_by=publisher.members.get(), name="ci").token
    url = reverse("catalog:token_revoke", args=[token.pk])
    assert f'href="{url}"' in owner_client.get(TOKENS).content.decode()

    asked = owner_client.get(url)

    assert asked.status_code == 200 and 'id="confirm-revoke"' in asked.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is None  # looking at the question revokes nothing
    assert owner_client.post(url).status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_nobody_sees_the_confirmation_for_a_token_not_theirs(client, publisher, other_publisher):
    from templates_catalog.services import api_token_create

    token = api_token_create(publisher=publisher, created_by=publisher.members.get(), name="ci").token
    client.force_login(other_publisher.members.get())
    assert client.get(reverse("catalog:token_revoke", args=[token.pk])).status_code == 404
