import shutil
from io import StringIO

import pytest
import yaml
from django.conf import settings
from django.core.management import CommandError, call_command

from templates_catalog.models import ApiToken, TemplateVersion
from templates_catalog.services import api_token_create

FIXTURE = settings.BASE_DIR / "fixtures" / "templates" / "vector-store"


@pytest.fixture
def token(publisher) -> str:
    return api_token_create(
        publisher=publisher, created_by=publisher.members.get(), name="cli", permission=ApiToken.Permission.PUBLISH
    ).secret


@pytest.mark.django_db(transaction=True)
def test_it_packs_a_folder_and_uploads_it(live_server, token, tmp_path):
    folder = shutil.copytree(FIXTURE, tmp_path / "vector-store")
    out = StringIO()

    call_command("publish", str(folder), url=live_server.url, token=token, stdout=out)
    call_command("publish", str(folder), url=live_server.url, token=token, stdout=out)

    version = TemplateVersion.objects.get()
    assert out.getvalue().splitlines() == [
        f"vector-store 1.0.0 published  sha256:{version.bundle_sha256}",
        f"vector-store 1.0.0 already published, unchanged  sha256:{version.bundle_sha256}",
    ]


@pytest.mark.django_db(transaction=True)
def test_it_prints_the_hubs_errors_verbatim(live_server, token, tmp_path, publish):
    folder = shutil.copytree(FIXTURE, tmp_path / "vector-store")
    call_command("publish", str(folder), url=live_server.url, token=token, stdout=StringIO())
    (folder / "README.md").write_text("# changed without a version bump\n")

    with pytest.raises(CommandError) as refused:
        call_command("publish", str(folder), url=live_server.url, token=token, stdout=StringIO())

    assert "the hub refused vector-store (409)" in str(refused.value)
    assert "already published with other contents" in str(refused.value)


def test_it_reports_manifest_errors_before_uploading(tmp_path, token):
    folder = shutil.copytree(FIXTURE, tmp_path / "vector-store")
    manifest = yaml.safe_load((folder / "hub.yaml").read_text())
    manifest["version"] = "one"
    (folder / "hub.yaml").write_text(yaml.safe_dump(manifest))

    with pytest.raises(CommandError, match="hub.yaml version: 'one' is not valid"):
        call_command("publish", str(folder), url="http://127.0.0.1:9", token=token)


def test_it_needs_a_token(tmp_path, monkeypatch, db):
    monkeypatch.delenv("HUB_TOKEN", raising=False)
    with pytest.raises(CommandError, match="publish token"):
        call_command("publish", str(FIXTURE), url="http://127.0.0.1:9")
