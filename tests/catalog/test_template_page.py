import pytest
from django.urls import reverse

from templates_catalog.models import Membership
from templates_catalog.services import template_version_yank


def page(name: str) -> str:
    return reverse("catalog:template_page", args=[name])


def test_it_shows_the_template_its_versions_and_resources(client, publish):
    publish(name="minilm", version="1.0.0", readme="# MiniLM\n\nFast **embeddings**.", resources={"cpu": 2, "memory_gb": 3})
    latest = publish(name="minilm", version="1.1.0", readme="# MiniLM 1.1\n\nEven faster.")
    publish(name="minilm", version="2.0.0-rc.1")

    body = client.get(page("minilm")).content.decode()

    assert "<h1>MiniLM 1.1</h1>" in body  # the latest release's README, rendered
    assert f"sha256:{latest.bundle_sha256}" in body
    versions = body[body.index("<h2>Versions</h2>") :]
    assert versions.index("2.0.0-rc.1") < versions.index("1.1.0") < versions.index("1.0.0")  # newest first
    assert "Memory</dt><dd>1 GB" in body  # 1.1.0's resources, not 1.0.0's


def test_it_links_what_it_requires_and_what_requires_it(client, publish):
    publish(name="embedder", title="The embedder")
    publish(name="store", title="The store")
    publish(
        name="rag",
        tier="workflow",
        title="The RAG",
        requires=[{"template": "embedder", "version": ">=1.0.0", "alias": "embeddings"}, {"template": "store", "alias": "store"}],
    )

    rag_page = client.get(page("rag")).content.decode()
    embedder_page = client.get(page("embedder")).content.decode()

    assert f'href="{page("embedder")}"' in rag_page and "EMBEDDINGS_URL" in rag_page
    assert f'href="{page("store")}"' in rag_page
    assert f'href="{page("rag")}"' in embedder_page


def test_a_yanked_version_is_marked_and_no_longer_latest(client, publish):
    publish(name="minilm", version="1.0.0")
    bad = publish(name="minilm", version="1.1.0")
    template_version_yank(version=bad, reason="wrong tokenizer")

    response = client.get(page("minilm"))

    assert response.context["latest"].version == "1.0.0"
    assert "yanked" in response.content.decode()


def test_it_renders_a_hostile_readme_harmless(client, publish):
    hostile = (
        "# Hello\n\n<script>alert('x')</script>\n\n"
        "[click me](javascript:alert(1)) <a href=\"JaVaScRiPt:alert(2)\">two</a>\n\n"
        "<img src=\"x.png\" onerror=\"alert(3)\"> <div onmouseover=\"alert(4)\">hover</div>\n\n"
        "<iframe src=\"https://evil.example\"></iframe><style>body{display:none}</style>\n\n"
        "[ok](https://example.com/docs)\n"
    )
    publish(name="hostile", readme=hostile)

    body = client.get(page("hostile")).content.decode()
    readme = body[body.index('class="readme"') :]

    assert "<script>alert" not in readme
    assert "href=\"javascript" not in readme.lower()  # markdown-it leaves it as plain text, nh3 drops the href
    assert "onerror" not in readme and "onmouseover" not in readme
    assert "<iframe" not in readme and "<style>" not in readme
    assert '<a href="https://example.com/docs" rel="noopener noreferrer nofollow">ok</a>' in readme


@pytest.fixture
def private_template(publish):
    return publish(name="secret-model", title="Secret model", summary="Only for Acme.", visibility="private")


def test_private_templates_are_invisible_to_anonymous_users(client, private_template):
    assert client.get(page("secret-model")).status_code == 404
    assert "Secret model" not in client.get(reverse("catalog:template_list")).content.decode()
    assert "Secret model" not in client.get(reverse("catalog:home")).content.decode()


def test_private_templates_are_invisible_to_other_publishers(client, private_template, other_publisher):
    client.force_login(other_publisher.members.get())
    assert client.get(page("secret-model")).status_code == 404
    assert "Secret model" not in client.get(reverse("catalog:template_list") + "?q=secret").content.decode()


def test_members_of_the_publisher_see_their_private_templates(client, private_template, user_factory):
    member = user_factory("acme-member")
    Membership.objects.create(publisher=private_template.template.publisher, user=member)
    client.force_login(member)

    assert client.get(page("secret-model")).status_code == 200
    assert "Secret model" in client.get(reverse("catalog:template_list") + "?q=secret").content.decode()


def test_an_unknown_template_is_404(client, db):
    assert client.get(page("nothing-here")).status_code == 404
