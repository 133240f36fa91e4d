"""Every page carries a Content-Security-Policy that allows only the hub's own files, and
no page needs an exception to it: no inline script, no style attribute."""

import re

import pytest

from templates_catalog.models import ApiToken
from templates_catalog.services import api_token_create

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"""\sstyle\s*=\s*["']""", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"""\son[a-z]+\s*=\s*["']""", re.IGNORECASE)


def _directives(header: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


@pytest.fixture
def signed_in(client, publisher, publish):
    publish(name="demo-embedder", readme="# Demo\n\n<script>alert(1)</script><p style='color:red' onclick='x()'>hi</p>")
    api_token_create(publisher=publisher, created_by=publisher.members.get(), name="ci", permission=ApiToken.Permission.PUBLISH)
    client.force_login(publisher.members.get())
    return client


PAGES = [
    "/",
    "/templates/",
    "/templates/?q=demo",
    "/templates/demo-embedder/",
    "/templates/demo-embedder/versions/1.0.0/",
    "/account/tokens/",
]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_has_a_strict_policy_and_needs_no_exception(signed_in, path):
    response = signed_in.get(path)

    assert response.status_code == 200
    policy = _directives(response["Content-Security-Policy"])
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"] and policy["object-src"] == ["'none'"]
    page = response.content.decode()
    assert INLINE_SCRIPT.findall(page) == []
    assert STYLE_ATTRIBUTE.findall(page) == []
    assert EVENT_HANDLER.findall(page) == []


def test_the_login_page_and_the_api_have_the_other_security_headers(client, db):
    for response in (client.get("/accounts/login/"), client.get("/api/v1/templates/")):
        assert "script-src 'self'" in response["Content-Security-Policy"]
        assert response["Permissions-Policy"].startswith("camera=(), microphone=()")
        assert response["Cross-Origin-Opener-Policy"] == "same-origin"
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"


def test_htmx_is_told_not_to_inject_its_indicator_style(client, db):
    # htmx adds a <style> element unless configured not to, which the policy would block.
    page = client.get("/").content.decode()
    assert """<meta name="htmx-config" content='{"includeIndicatorStyles": false}'>""" in page


def test_swagger_ui_loads_its_script_as_a_file_and_only_it_allows_inline_styles(client, db):
    response = client.get("/api/docs/")
    page = response.content.decode()

    policy = _directives(response["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]
    assert "'unsafe-inline'" in policy["style-src"]
    assert INLINE_SCRIPT.findall(page) == []
    script = re.search(r'<script src="(/api/docs/\?[^"]*script[^"]*)"', page)
    assert script, page
    init = client.get(script.group(1).replace("&amp;", "&"))
    assert init.status_code == 200 and "SwaggerUIBundle" in init.content.decode()
