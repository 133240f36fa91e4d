import gzip
import io
import tarfile
from dataclasses import dataclass

import pytest
import yaml
from django.urls import reverse

from templates_catalog.models import ApiToken, Template, TemplateVersion
from templates_catalog.services import api_token_create

from ..factories import manifest_data


@pytest.fixture(autouse=True)
def fresh_throttles():
    from django.core.cache import cache

    cache.clear()  # throttle counters live in the cache; tests must not share them
    yield
    cache.clear()


def upload_url(name: str) -> str:
    return reverse("api:version_list", args=[name])


@dataclass
class Upload:
    client: object

    def __call__(self, name: str, raw: bytes, token: str | None = None, **query):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = upload_url(name) + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
        return self.client.post(url, data=raw, content_type="application/gzip", headers=headers)


@pytest.fixture
def upload(client) -> Upload:
    return Upload(client)


@pytest.fixture
def owner_token(publisher) -> str:
    return api_token_create(
        publisher=publisher, created_by=publisher.members.get(), name="ci", permission=ApiToken.Permission.PUBLISH
    ).secret


@pytest.fixture
def other_token(other_publisher) -> str:
    return api_token_create(
        publisher=other_publisher,
        created_by=other_publisher.members.get(),
        name="ci",
        permission=ApiToken.Permission.PUBLISH,
    ).secret


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A hand-made archive, for bundles no honest packer would produce."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return raw.getvalue()


def regular(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def manifest_member(**overrides) -> tuple[tarfile.TarInfo, bytes]:
    return regular("hub.yaml", yaml.safe_dump(manifest_data(**overrides)).encode())


def catalog_state(artifact_root) -> tuple:
    """Everything an upload could leave behind."""
    files = sorted(str(p.relative_to(artifact_root)) for p in artifact_root.rglob("*") if p.is_file()) if artifact_root.exists() else []
    return (
        sorted(Template.objects.values_list("name", "latest_version_id")),
        sorted(TemplateVersion.objects.values_list("template__name", "version", "bundle_sha256")),
        files,
    )
