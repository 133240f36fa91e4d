"""Catalog cards are rendered once per content and then read from the cache
(templates_catalog.cards): anything a card shows that changes is a new card, never a stale one."""

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from templates_catalog.models import Build, Publisher, Template

LIST = reverse("catalog:template_list")
CARD = "catalog/_card.html"


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


def _cards_rendered(response) -> int:
    return [template.name for template in response.templates].count(CARD)


def test_a_card_is_rendered_once_then_read_from_the_cache(client, publish):
    for index in range(3):
        publish(name=f"model-{index}", title=f"Model {index}", tags=["nlp"])
    first = client.get(LIST)
    again = client.get(LIST)

    assert _cards_rendered(first) == 3
    assert _cards_rendered(again) == 0
    assert again.content == first.content
    # The home page and the publisher page show the same cards, from the same cache.
    assert _cards_rendered(client.get(reverse("catalog:home"))) == 0
    assert _cards_rendered(client.get(reverse("catalog:publisher_page", args=[Publisher.objects.get().slug]))) == 0


def test_what_a_card_shows_changing_renders_it_again(client, publish):
    publish(name="model", title="Old title", tags=["nlp"])
    assert "Old title" in client.get(LIST).content.decode()

    publish(name="model", version="1.1.0", title="New title", tags=["nlp", "speech"])
    body = client.get(LIST).content.decode()
    assert "New title" in body and "Old title" not in body and "v1.1.0" in body and "?tag=speech" in body

    Publisher.objects.update(name="Renamed Labs")
    assert "Renamed Labs" in client.get(LIST).content.decode()

    latest = Template.objects.get(name="model").latest_version
    Build.objects.create(version=latest, backend="docker", base_image="b", status="succeeded", image_reference="aihub/x:1",
                         finished_at=timezone.now(), verified=True, ready_seconds=2.5)
    assert "verified · ready in 2.5 s" in client.get(LIST).content.decode()


def test_a_hostile_title_stays_escaped_in_a_cached_card(client, publish):
    publish(name="hostile", title="<script>alert(1)</script>", summary="<img src=x onerror=alert(2)>")
    for response in (client.get(LIST), client.get(LIST)):
        body = response.content.decode()
        assert "<script>alert(1)" not in body and "<img src=x" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_a_private_card_is_shown_only_to_who_may_see_it(client, publish, other_publisher):
    # The cache holds cards by content, not by viewer: which cards a page shows is still
    # decided by the query, per user.
    publish(name="secret", title="Secret model", visibility="private", owner=other_publisher)
    client.force_login(other_publisher.members.get())
    assert "Secret model" in client.get(LIST).content.decode()
    client.logout()
    assert "Secret model" not in client.get(LIST).content.decode()


def test_a_cache_that_does_not_answer_renders_the_cards_instead_of_failing_the_page(client, publish, monkeypatch):
    from django.core.cache.backends.redis import RedisCache

    publish(name="model", title="Still shown")
    # A Redis cache on a port where nothing listens: every cache call raises.
    monkeypatch.setattr("templates_catalog.cards.cache", RedisCache("redis://127.0.0.1:9/0", {}))
    response = client.get(LIST)
    assert response.status_code == 200 and "Still shown" in response.content.decode()
