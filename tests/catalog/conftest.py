import io
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.contrib.auth import get_user_model

from templates_catalog.bundles import bundle_pack
from templates_catalog.models import Publisher, TemplateVersion
from templates_catalog.services import publisher_create, template_version_publish


@pytest.fixture(autouse=True)
def artifact_root(tmp_path, settings):
    """Each test stores bundles in its own folder, so tests can assert what was written."""
    root = tmp_path / "artifacts"
    settings.STORAGES = {**settings.STORAGES, "artifacts": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": root},
    }}
    return root


def manifest_data(**overrides: Any) -> dict:
    data = {
        "schema": "hub/v1",
        "name": "demo-embedder",
        "version": "1.0.0",
        "tier": "atomic",
        "kind": "service",
        "title": "Demo embedder",
        "summary": "Turns sentences into vectors for the tests.",
        "tags": ["embeddings"],
        "license": "MIT",
        "serve": {"handler": "handler:Model"},
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def bundle_bytes(tmp_path: Path, readme: str = "# Demo\n", files: dict[str, str] | None = None, **overrides: Any) -> bytes:
    data = manifest_data(**overrides)
    folder = tmp_path / f"bundle-{data['name']}-{data['version']}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hub.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (folder / "README.md").write_text(readme)
    for name, content in (files or {"handler.py": "class Model:\n    pass\n"}).items():
        (folder / name).write_text(content)
    return bundle_pack(folder)


@pytest.fixture
def user_factory(db):
    count = 0

    def make(username: str | None = None, **extra: Any):
        nonlocal count
        count += 1
        return get_user_model().objects.create_user(username=username or f"user{count}", password="pw-for-tests-only", **extra)

    return make


@pytest.fixture
def publisher(user_factory) -> Publisher:
    return publisher_create(slug="acme", name="Acme AI", owner=user_factory("acme-owner"))


@pytest.fixture
def other_publisher(user_factory) -> Publisher:
    return publisher_create(slug="globex", name="Globex", owner=user_factory("globex-owner"))


@pytest.fixture
def publish(tmp_path, publisher):
    """publish(name=..., version=..., visibility=..., readme=..., publisher=..., **manifest fields)"""

    def make(*, readme: str = "# Demo\n", visibility: str = "public", owner: Publisher | None = None, **overrides: Any) -> TemplateVersion:
        raw = bundle_bytes(tmp_path, readme=readme, **overrides)
        result = template_version_publish(publisher=owner or publisher, bundle=io.BytesIO(raw), visibility=visibility)
        return result.version

    return make
