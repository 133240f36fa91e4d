"""Two uploads released at the same instant: every round must end with the answers a
publisher expects, one version row, and a stored blob whose bytes hash to the row's digest.

The same test runs on whichever database is configured: SQLite locally, PostgreSQL in CI."""

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connections
from django.test import Client

from templates_catalog.models import TemplateVersion

from ..factories import bundle_bytes
from .conftest import upload_url

ROUNDS = 50


@dataclass(frozen=True)
class Race:
    """Round number → (template name, version, first bundle, second bundle), and the answers expected."""

    bundles: Callable[[Path, int], tuple[str, str, bytes, bytes]]
    expected: list[int]


def _same_bytes(tmp_path: Path, round_: int) -> tuple[str, str, bytes, bytes]:
    raw = bundle_bytes(tmp_path, name="race", version=f"1.{round_ + 1}.0")
    return "race", f"1.{round_ + 1}.0", raw, raw


def _other_bytes(tmp_path: Path, round_: int) -> tuple[str, str, bytes, bytes]:
    version = f"1.{round_ + 1}.0"
    one = bundle_bytes(tmp_path / "one", name="race", version=version, readme="# One\n")
    two = bundle_bytes(tmp_path / "two", name="race", version=version, readme="# Two\n")
    return "race", version, one, two


def _new_name_same_bytes(tmp_path: Path, round_: int) -> tuple[str, str, bytes, bytes]:
    raw = bundle_bytes(tmp_path, name=f"race-new-{round_}", version="1.0.0")
    return f"race-new-{round_}", "1.0.0", raw, raw


def _new_name_other_bytes(tmp_path: Path, round_: int) -> tuple[str, str, bytes, bytes]:
    name = f"race-other-{round_}"
    one = bundle_bytes(tmp_path / "one", name=name, version="1.0.0", readme="# One\n")
    two = bundle_bytes(tmp_path / "two", name=name, version="1.0.0", readme="# Two\n")
    return name, "1.0.0", one, two


RACES = {
    "same bytes": Race(_same_bytes, [200, 201]),
    "other bytes": Race(_other_bytes, [201, 409]),
    "first version of a new name, same bytes": Race(_new_name_same_bytes, [200, 201]),
    "first version of a new name, other bytes": Race(_new_name_other_bytes, [201, 409]),
}


def race_uploads(name: str, bundles: list[bytes], token: str) -> list[int]:
    """POST every bundle from its own thread, all released by one barrier; the statuses, sorted."""
    barrier = threading.Barrier(len(bundles))
    statuses: list[int] = []

    def upload(raw: bytes) -> None:
        try:
            client = Client(raise_request_exception=False)
            barrier.wait(timeout=30)
            response = client.post(
                upload_url(name), data=raw, content_type="application/gzip", headers={"Authorization": f"Bearer {token}"}
            )
            statuses.append(response.status_code)
        finally:
            connections.close_all()  # this thread's connection; the database must not keep it open

    threads = [threading.Thread(target=upload, args=(raw,)) for raw in bundles]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(statuses)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", RACES)
def test_simultaneous_uploads_get_the_expected_answers_and_keep_their_bundle(kind, publish, owner_token, tmp_path, artifact_root):
    race = RACES[kind]
    publish(name="race", version="1.0.0")
    failures = []
    for round_ in range(ROUNDS):
        cache.clear()  # upload throttle counters: this test uploads more than a publisher may
        name, version, first, second = race.bundles(tmp_path / f"round-{round_}", round_)

        statuses = race_uploads(name, [first, second], owner_token)

        rows = list(TemplateVersion.objects.filter(template__name=name, version=version))
        stored = (artifact_root / rows[0].bundle_path) if len(rows) == 1 else None
        intact = stored is not None and stored.is_file() and hashlib.sha256(stored.read_bytes()).hexdigest() == rows[0].bundle_sha256
        if statuses != race.expected or len(rows) != 1 or not intact:
            failures.append(f"round {round_}: answers {statuses}, {len(rows)} rows, blob intact: {intact}")
    assert failures == []
