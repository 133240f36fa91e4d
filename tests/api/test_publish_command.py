import shutil
from io import StringIO

import pytest
import yaml
from django.conf import settings
from django.core.management import CommandError, call_command

from templates_catalog.management.commands import publish as publish_command
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
    page = f"{live_server.url}/templates/vector-store/versions/{version.version}/"
    assert out.getvalue().splitlines() == [
        f"vector-store {version.version} published  sha256:{version.bundle_sha256}",
        page,
        f"vector-store {version.version} already published, unchanged  sha256:{version.bundle_sha256}",
        page,
    ]


@pytest.mark.django_db(transaction=True)
def test_it_reads_the_hub_and_the_token_from_the_environment(live_server, token, tmp_path, monkeypatch, client):
    folder = shutil.copytree(FIXTURE, tmp_path / "vector-store")
    monkeypatch.setenv("HUB_URL", live_server.url + "/")
    monkeypatch.setenv("HUB_TOKEN", token)
    out = StringIO()

    call_command("publish", str(folder), stdout=out)

    page = out.getvalue().splitlines()[-1]
    assert page == f"{live_server.url}/templates/vector-store/versions/{TemplateVersion.objects.get().version}/"
    assert client.get(page.removeprefix(live_server.url)).status_code == 200  # the printed URL is the version's page


@pytest.mark.django_db(transaction=True)
def test_options_win_over_the_environment(live_server, token, tmp_path, monkeypatch):
    folder = shutil.copytree(FIXTURE, tmp_path / "vector-store")
    monkeypatch.setenv("HUB_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HUB_TOKEN", "hub_not-a-real-token")

    call_command("publish", str(folder), url=live_server.url, token=token, stdout=StringIO())

    assert TemplateVersion.objects.filter(template__name="vector-store").exists()


def test_without_hub_url_it_talks_to_the_local_hub(tmp_path, token, monkeypatch):
    monkeypatch.delenv("HUB_URL", raising=False)
    seen = []
    monkeypatch.setattr(publish_command, "_upload", lambda url, bundle, token: seen.append(url) or (400, {"detail": "stop"}))

    with pytest.raises(CommandError, match="stop"):
        call_command("publish", str(FIXTURE), token=token)

    assert seen == ["http://127.0.0.1:8000/api/v1/templates/vector-store/versions/?visibility=public"]


def test_no_option_hides_djangos_version_option():
    parser = publish_command.Command().create_parser("manage.py", "publish")
    own = {option for action in parser._actions for option in action.option_strings}
    version_action = next(action for action in parser._actions if "--version" in action.option_strings)

    assert own >= {"--url", "--token", "--visibility", "--version"}
    assert type(version_action).__name__ == "_VersionAction"  # still Django's: prints Django's version


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


@pytest.mark.parametrize("empty", [None, ""])
def test_it_needs_a_token(tmp_path, monkeypatch, db, empty):
    if empty is None:
        monkeypatch.delenv("HUB_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HUB_TOKEN", empty)  # as a copied .env.example leaves it
    with pytest.raises(CommandError, match="publish token"):
        call_command("publish", str(FIXTURE), url="http://127.0.0.1:9")
