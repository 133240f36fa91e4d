"""Fixtures every test package shares: users, publishers, publishing, artifact storage."""

import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from templates_catalog.models import Publisher, TemplateVersion
from templates_catalog.services import publisher_create, template_version_publish

from .factories import bundle_bytes


@pytest.fixture(scope="session", autouse=True)
def test_database_dropped_cleanly(django_db_setup, django_db_blocker):
    """Gateways served in a test's own process look deployments up on their loop's executor
    threads, each of which keeps a connection of its own that outlives the test; on
    PostgreSQL they would keep the test database from being dropped at the end."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.fixture(autouse=True)
def artifact_root(tmp_path, settings):
    """Each test stores bundles in its own folder, so tests can assert what was written."""
    root = tmp_path / "artifacts"
    settings.STORAGES = {**settings.STORAGES, "artifacts": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": root},
    }}
    return root


# What the hub's own hashers cost by design (PBKDF2, over a second a password on a busy CI
# machine) buys a test nothing: the suite makes hundreds of accounts. A test whose password
# is checked by another process (a hub under uvicorn) uses `real_password_hashing`. The
# hub's own hashers stay listed after it, so what another process hashed still checks here.
@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    from django.conf import global_settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", *global_settings.PASSWORD_HASHERS]


@pytest.fixture
def real_password_hashing(settings):
    """The hub's own password hashers, as a process started by the test has them."""
    from django.conf import global_settings

    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS


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


@pytest.fixture
def upstream():
    """A real HTTP server (uvicorn in a thread) that records what reaches it: the endpoint
    behind the gateway in its tests."""
    from .gateway.conftest import RecordingUpstream, served

    recorder = RecordingUpstream()
    with served(recorder) as url:
        recorder.url = url
        yield recorder
