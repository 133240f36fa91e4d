import pytest
from django.urls import reverse

from templates_catalog.models import Build, Membership
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


def test_it_does_not_repeat_the_title_when_the_readme_starts_with_it(client, publish):
    publish(name="minilm", title="MiniLM embeddings", readme="#  minilm EMBEDDINGS \n\nIntro.\n\n# MiniLM embeddings\n")

    body = client.get(page("minilm")).content.decode()
    readme = body[body.index('class="readme"') :]

    assert readme.count("MiniLM embeddings") == 1  # the later heading stays; only the repeated title goes
    assert "minilm EMBEDDINGS" not in readme
    assert "<h1>MiniLM embeddings</h1>" in body  # the page's own title


def test_a_readme_heading_that_differs_from_the_title_stays(client, publish):
    publish(name="minilm", title="MiniLM embeddings", readme="# MiniLM embeddings, quick start\n\nIntro.\n")

    body = client.get(page("minilm")).content.decode()

    assert "<h1>MiniLM embeddings, quick start</h1>" in body


def test_wide_tables_scroll_in_their_own_box_and_code_is_reachable_by_keyboard(client, publish):
    publish(name="minilm", readme="| a | b |\n| - | - |\n| 1 | 2 |\n\n```sh\nmake run\n```\n")

    body = client.get(page("minilm")).content.decode()

    assert '<div class="table-scroll" tabindex="0"><table>' in body
    assert '<pre tabindex="0"><code class="language-sh">make run' in body


def test_on_a_phone_the_sidebar_comes_before_the_readme(client, publish):
    publish(name="minilm", readme="Long README.")

    body = client.get(page("minilm")).content.decode()

    # Document order is what a one-column layout (and a screen reader) follows.
    assert body.index("<h1>") < body.index("<h2>Resources</h2>") < body.index("<h2>Versions</h2>") < body.index("Long README.")


def test_each_version_shows_its_latest_build_status(client, publish):
    first = publish(name="minilm", version="1.0.0")
    second = publish(name="minilm", version="1.1.0")
    publish(name="minilm", version="1.2.0")
    Build.objects.create(version=first, backend="venv", base_image="b", status="failed", error="no wheel")
    Build.objects.create(version=second, backend="venv", base_image="b", status="failed", error="timeout")
    Build.objects.create(version=second, backend="venv", base_image="b", status="succeeded", image_reference="img")

    body = client.get(page("minilm")).content.decode()
    items = {v: body[body.index(f">{v}</a>") :][:600] for v in ("1.0.0", "1.1.0", "1.2.0")}

    assert "build failed" in items["1.0.0"]
    assert "build succeeded" in items["1.1.0"] and "build failed" not in items["1.1.0"].split("</li>")[0]
    assert "not built" in items["1.2.0"]


def _template_page_with_versions(publish, count: int) -> None:
    for minor in range(count):
        version = publish(name="minilm", version=f"1.{minor}.0")
        Build.objects.create(version=version, backend="venv", base_image="b", status="failed", error="x")


@pytest.mark.parametrize("count", [1, 6])
def test_the_number_of_queries_does_not_grow_with_the_versions(client, publish, django_assert_num_queries, count):
    _template_page_with_versions(publish, count)
    # template, tags, requires, required by, versions with their build status
    with django_assert_num_queries(5):
        response = client.get(page("minilm"))
    assert response.content.decode().count("build failed") == count
