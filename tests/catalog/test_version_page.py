"""The version page: README, CHANGELOG, manifest, files with sizes; publishers yank from it."""

import io

import pytest
from django.urls import reverse

from templates_catalog.models import TemplateVersion
from templates_catalog.services import template_version_publish

from ..factories import bundle_bytes


def page(name: str, version: str) -> str:
    return reverse("catalog:version_page", args=[name, version])


def yank_url(name: str, version: str) -> str:
    return reverse("catalog:version_yank", args=[name, version])


@pytest.fixture
def with_changelog(tmp_path, publisher):
    raw = bundle_bytes(
        tmp_path,
        readme="# Demo embedder\n\nReads **fast**.\n",
        files={"handler.py": "class Model:\n    pass\n", "CHANGELOG.md": "## 1.0.0\n\n- First <script>x</script> release\n"},
    )
    return template_version_publish(publisher=publisher, bundle=io.BytesIO(raw)).version


def test_publishing_records_the_files_with_their_sizes_and_the_changelog(with_changelog):
    files = dict(with_changelog.files)
    assert files["handler.py"] == len("class Model:\n    pass\n")
    assert set(files) == {"hub.yaml", "README.md", "handler.py", "CHANGELOG.md"}
    assert "<h2>1.0.0</h2>" in with_changelog.changelog_html
    assert "<script>" not in with_changelog.changelog_html  # sanitised like the README


def test_it_shows_the_readme_changelog_manifest_and_files(client, with_changelog):
    body = client.get(page("demo-embedder", "1.0.0")).content.decode()

    assert "<strong>fast</strong>" in body
    changelog = body[body.index('id="changelog-heading"') :]
    assert "<h2>1.0.0</h2>" in changelog and "First" in changelog
    manifest = body[body.index('id="manifest-heading"') :]
    assert "name: demo-embedder" in manifest and "handler: handler:Model" in manifest
    files = body[body.index('id="files-heading"') : body.index('id="manifest-heading"')]
    assert "<code>handler.py</code>" in files and 'title="22 bytes"' in files
    assert "Not built yet." in body  # the build status


def test_each_version_shows_its_own_readme(client, publish):
    publish(version="1.0.0", readme="Old words.")
    publish(version="1.1.0", readme="New words.")

    old = client.get(page("demo-embedder", "1.0.0")).content.decode()

    assert "Old words." in old and "New words." not in old
    assert 'id="changelog-heading"' not in old  # no CHANGELOG.md in that bundle


def test_a_version_without_a_recorded_file_list_says_so(client, publish):
    version = publish()
    TemplateVersion.objects.filter(pk=version.pk).update(files=[])

    body = client.get(page("demo-embedder", "1.0.0")).content.decode()

    assert "File list not recorded" in body


@pytest.fixture
def member_client(client, publish):
    version = publish()
    client.force_login(version.template.publisher.members.get())
    return client


def test_members_see_the_yank_form_and_others_do_not(member_client, client, other_publisher):
    assert "Yank this version" in member_client.get(page("demo-embedder", "1.0.0")).content.decode()
    member_client.logout()
    assert "Yank this version" not in client.get(page("demo-embedder", "1.0.0")).content.decode()
    client.force_login(other_publisher.members.get())
    assert "Yank this version" not in client.get(page("demo-embedder", "1.0.0")).content.decode()


def test_a_member_yanks_with_a_reason_and_sees_it(member_client):
    response = member_client.post(yank_url("demo-embedder", "1.0.0"), {"reason": "wrong tokenizer", "confirm": "on"}, follow=True)

    version = TemplateVersion.objects.get()
    assert version.yanked and version.yanked_reason == "wrong tokenizer"
    body = response.content.decode()
    assert "Yanked: wrong tokenizer" in body
    assert "Yank this version" not in body  # once is enough
    template_page = member_client.get(reverse("catalog:template_page", args=["demo-embedder"])).content.decode()
    assert "Yanked: wrong tokenizer" in template_page


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"reason": "", "confirm": "on"}, "This field is required."),
        ({"reason": "   ", "confirm": "on"}, "This field is required."),
        ({"reason": "first line\nsecond line", "confirm": "on"}, "Write the reason as one line"),
        ({"reason": "x" * 301, "confirm": "on"}, "at most 300 characters"),
        ({"reason": "wrong tokenizer"}, "Tick the box to confirm the yank."),
    ],
)
def test_a_yank_needs_a_one_line_reason_and_a_confirmation(member_client, data, message):
    response = member_client.post(yank_url("demo-embedder", "1.0.0"), data)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not TemplateVersion.objects.get().yanked


def test_outsiders_cannot_yank(client, publish, other_publisher):
    publish()
    anonymous = client.post(yank_url("demo-embedder", "1.0.0"), {"reason": "mine now", "confirm": "on"})
    client.force_login(other_publisher.members.get())
    outsider = client.post(yank_url("demo-embedder", "1.0.0"), {"reason": "mine now", "confirm": "on"})

    assert anonymous.status_code == 302 and outsider.status_code == 403
    assert not TemplateVersion.objects.get().yanked


def test_yanking_a_private_template_of_another_publisher_is_404(client, publish, other_publisher):
    publish(visibility="private")
    client.force_login(other_publisher.members.get())

    response = client.post(yank_url("demo-embedder", "1.0.0"), {"reason": "x", "confirm": "on"})

    assert response.status_code == 404
    assert not TemplateVersion.objects.get().yanked


def test_yank_only_accepts_post(member_client):
    assert member_client.get(yank_url("demo-embedder", "1.0.0")).status_code == 405
