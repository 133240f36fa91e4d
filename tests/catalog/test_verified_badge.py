"""The start check on the pages: "verified · ready in N s" on the card and the template
page, and a failed build that says what to do instead of offering "Build again"."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from templates_catalog.models import Build

LIST = reverse("catalog:template_list")


def _build(version, **fields) -> Build:
    values = {"backend": "docker", "base_image": "base", "status": "succeeded", "image_reference": "aihub/x:1",
              "finished_at": timezone.now(), **fields}
    if values["status"] == "failed":
        values.update(image_reference="", error=values.get("error", "it broke"))
    return Build.objects.create(version=version, **values)


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_the_card_and_the_page_say_verified_with_the_time_to_ready(client, publish):
    version = publish(name="fast-model")
    _build(version, verified=True, ready_seconds=3.24)

    assert "verified · ready in 3.2 s" in client.get(LIST).content.decode()
    assert "verified · ready in 3.2 s" in client.get(reverse("catalog:template_page", args=["fast-model"])).content.decode()


def test_only_the_latest_version_counts(client, publish):
    old = publish(name="model", version="1.0.0")
    _build(old, verified=True, ready_seconds=2.0)
    publish(name="model", version="1.1.0")

    assert "verified" not in client.get(LIST).content.decode()


@pytest.mark.parametrize("fields", [{"verified": None}, {"status": "failed", "verified": False, "failure_kind": "template"}])
def test_unverified_builds_show_no_badge(client, publish, fields):
    _build(publish(name="model"), **fields)

    assert "ready in" not in client.get(LIST).content.decode()


def test_the_badge_adds_no_query_per_card(client, publish):
    for index in range(3):
        _build(publish(name=f"model-{index}"), verified=True, ready_seconds=1.5)
    few = _queries(client, LIST)
    for index in range(3, 15):
        _build(publish(name=f"model-{index}"), verified=True, ready_seconds=1.5)

    assert _queries(client, LIST) == few
    assert client.get(LIST).content.decode().count("verified · ready in 1.5 s") == 15


@pytest.fixture
def member_client(client, publisher):
    client.force_login(publisher.members.get())
    return client


def test_a_build_the_template_failed_says_what_to_do_and_offers_no_rebuild(member_client, publish):
    version = publish(name="broken")
    _build(version, status="failed", failure_kind="template", verified=False,
           error="the template did not become ready within 300 s: it exited with code 1 while starting; fix it and publish a new version, or yank this one")

    page = member_client.get(reverse("catalog:version_page", args=["broken", "1.0.0"])).content.decode()

    assert "publish a fixed version, and yank this one" in page
    assert "Build again" not in page


def test_a_build_the_hub_failed_can_be_built_again(member_client, publish):
    version = publish(name="unlucky")
    _build(version, status="failed", failure_kind="hub", error="the Docker Engine did not answer after 4 attempts")

    page = member_client.get(reverse("catalog:version_page", args=["unlucky", "1.0.0"])).content.decode()

    assert "Build again" in page and "The hub failed this build" in page


def test_the_version_page_shows_the_verification(member_client, publish):
    _build(publish(name="good"), verified=True, ready_seconds=0.84)

    page = member_client.get(reverse("catalog:version_page", args=["good", "1.0.0"])).content.decode()

    assert "verified · ready in 0.8 s" in page
