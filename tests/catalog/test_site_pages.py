"""Pages every visitor can meet: the 404 and 500 pages, the footer, the favicon, the copy buttons."""

import pytest
from django.contrib.staticfiles import finders
from django.test import RequestFactory
from django.urls import reverse
from django.views.defaults import server_error

SEARCH_BOX = 'action="/templates/" method="get"'


def test_an_unknown_address_gets_the_404_page_in_the_sites_layout(client, db, settings):
    settings.DEBUG = False

    response = client.get("/no/such/page/")

    body = response.content.decode()
    assert response.status_code == 404
    assert "Page not found" in body
    assert 'class="site-header"' in body and SEARCH_BOX in body
    assert 'name="q"' in body[body.index('class="error-page"') :]


def test_a_private_template_is_a_404_page_too(client, publish, settings):
    settings.DEBUG = False
    publish(visibility="private")

    response = client.get(reverse("catalog:template_page", args=["demo-embedder"]))

    assert response.status_code == 404 and "Page not found" in response.content.decode()


def test_a_failing_view_gets_the_500_page_in_the_sites_layout(client, db, settings):
    settings.DEBUG = False
    settings.ROOT_URLCONF = "tests.catalog.error_urls"
    client.raise_request_exception = False

    response = client.get("/broken/")

    body = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in body
    assert 'class="site-header"' in body and SEARCH_BOX in body


def test_the_500_page_needs_neither_a_request_context_nor_the_database():
    # No `db` fixture: any query here would fail the test.
    response = server_error(RequestFactory().get("/"))

    assert response.status_code == 500
    assert "Something went wrong on our side" in response.content.decode()


def test_the_footer_links_the_api_docs_and_the_page_has_a_favicon(client, db):
    body = client.get(reverse("catalog:home")).content.decode()

    footer = body[body.index('class="site-footer"') :]
    assert f'href="{reverse("api:docs")}"' in footer
    assert '<link rel="icon" href="/static/catalog/favicon.svg" type="image/svg+xml">' in body
    assert client.get(reverse("api:docs")).status_code == 200


def test_favicon_ico_answers_with_the_svg(client, db):
    response = client.get("/favicon.ico")

    assert response.status_code == 301 and response["Location"] == "/static/catalog/favicon.svg"
    assert finders.find("catalog/favicon.svg")


@pytest.mark.parametrize("asset", ["catalog/favicon.svg", "catalog/code-copy.js"])
def test_the_assets_the_layout_links_exist(client, db, asset):
    body = client.get(reverse("catalog:home")).content.decode()
    assert f"/static/{asset}" in body
    assert finders.find(asset)


def test_copy_buttons_are_real_buttons_from_a_file_not_an_inline_script(client, db):
    body = client.get(reverse("catalog:home")).content.decode()
    script = open(finders.find("catalog/code-copy.js")).read()

    # Every <script> has a src: a Content-Security-Policy without 'unsafe-inline' allows them.
    assert body.count("<script") == body.count("<script src=")
    assert 'createElement("button")' in script and 'button.type = "button"' in script
    assert "navigator.clipboard" in script and 'execCommand("copy")' in script  # with a fallback
