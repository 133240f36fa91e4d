import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from templates_catalog.models import Membership, Publisher

NEW = reverse("catalog:publisher_new")


def _page(publisher) -> str:
    return reverse("catalog:publisher_page", args=[publisher.slug])


def test_a_signed_in_user_creates_a_publisher_and_becomes_its_owner(client, user_factory):
    user = user_factory("founder")
    client.force_login(user)

    response = client.post(NEW, {"name": "Founders Inc", "slug": "founders"})

    publisher = Publisher.objects.get(slug="founders")
    assert response.status_code == 302 and response["Location"] == _page(publisher)
    assert Membership.objects.get(publisher=publisher, user=user).role == "owner"
    assert "Members and invitations" in client.get(_page(publisher)).content.decode()


@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("acme", "The slug “acme” is taken: choose another one."),
        ("new", "The slug “new” is taken"),
        ("Acme Corp", "is not a valid slug: use 1 to 64 lowercase letters"),
        ("-edge-", "is not a valid slug"),
    ],
)
def test_a_taken_or_malformed_slug_is_a_form_error(client, user_factory, publisher, slug, message):
    client.force_login(user_factory("founder"))

    response = client.post(NEW, {"name": "Another", "slug": slug})

    assert response.status_code == 200 and message in response.content.decode()
    assert Publisher.objects.count() == 1


def test_creating_a_publisher_needs_an_account_and_a_csrf_token(client, user_factory):
    assert client.get(NEW)["Location"].startswith(reverse("catalog:login"))
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user_factory("founder"))
    assert strict.post(NEW, {"name": "X", "slug": "x"}).status_code == 403
    assert not Publisher.objects.exists()


def test_the_publisher_page_lists_public_templates_and_private_ones_only_to_members(client, publisher, other_publisher, publish, user_factory):
    publish(name="open-model", title="Open model")
    publish(name="hidden-model", title="Hidden model", visibility="private")
    publish(name="globex-model", title="Globex model", owner=other_publisher)

    outsider = client.get(_page(publisher)).content.decode()
    client.force_login(user_factory("stranger"))
    signed_in_outsider = client.get(_page(publisher)).content.decode()
    client.force_login(publisher.members.get())
    member = client.get(_page(publisher)).content.decode()

    assert "Open model" in outsider and "Hidden model" not in outsider and "Globex model" not in outsider
    assert "Hidden model" not in signed_in_outsider
    assert "Open model" in member and "Hidden model" in member and "Globex model" not in member


def test_an_unknown_publisher_is_a_404(client, db):
    assert client.get(reverse("catalog:publisher_page", args=["nobody"])).status_code == 404


def test_publisher_names_on_cards_and_template_pages_link_to_the_publisher_page(client, publisher, publish):
    publish(name="open-model", title="Open model")
    link = f'href="{_page(publisher)}">Acme AI</a>'

    assert link in client.get(reverse("catalog:template_list")).content.decode()
    assert link in client.get(reverse("catalog:template_page", args=["open-model"])).content.decode()


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.parametrize("signed_in", [False, True])
def test_the_publisher_page_makes_a_fixed_number_of_queries(client, publisher, publish, signed_in, django_assert_num_queries):
    if signed_in:
        client.force_login(publisher.members.get())
    publish(name="model-0", tags=["a"])
    few = _queries(client, _page(publisher))
    for number in range(1, 6):
        publish(name=f"model-{number}", tags=["a", f"t{number}"], visibility="private" if number % 2 else "public")

    # Publisher, count, page ids, cards, tags, owner check; a session adds session and user.
    with django_assert_num_queries(8 if signed_in else 5):
        client.get(_page(publisher))
    assert _queries(client, _page(publisher)) == few
