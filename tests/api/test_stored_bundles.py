"""What the hub guarantees about stored bundles: writes by digest are idempotent, the sweeper
removes only old blobs nobody references, and storage_check finds (and pages show) the rest."""

import hashlib
import io
import os
import threading
import time
from pathlib import Path

import pytest
from django.core.files.storage import storages
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.urls import reverse

from templates_catalog import services, stored_bundles
from templates_catalog.blobs import INCOMING_PREFIX, blob_put
from templates_catalog.models import BundleProblem, TemplateVersion
from templates_catalog.services import template_version_publish
from templates_catalog.stored_bundles import PARKED_PREFIX, blobs_sweep_unreferenced, bundle_storage_path, bundles_check

from ..factories import bundle_bytes

TWO_DAYS = 2 * 24 * 3600


def age(path: Path, seconds: int) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def orphan(artifact_root: Path, raw: bytes, *, seconds_old: int) -> Path:
    """A blob that no version references, as a failed upload leaves it."""
    path = bundle_storage_path(hashlib.sha256(raw).hexdigest())
    blob_put(storage=storages["artifacts"], path=path, file=io.BytesIO(raw), size=len(raw))
    age(artifact_root / path, seconds_old)
    return artifact_root / path


def stored_files(artifact_root: Path) -> list[str]:
    return sorted(str(p.relative_to(artifact_root)) for p in artifact_root.rglob("*") if p.is_file())


# Writes by digest


def test_writing_a_stored_digest_again_writes_nothing(db, artifact_root):
    raw = b"the same bytes"
    path = bundle_storage_path(hashlib.sha256(raw).hexdigest())
    first = blob_put(storage=storages["artifacts"], path=path, file=io.BytesIO(raw), size=len(raw))
    inode = (artifact_root / path).stat().st_ino

    again = blob_put(storage=storages["artifacts"], path=path, file=io.BytesIO(raw), size=len(raw))

    assert (first, again) == (True, False)
    assert (artifact_root / path).stat().st_ino == inode
    assert stored_files(artifact_root) == [path]


def test_a_short_copy_under_the_digest_is_replaced_whole(db, artifact_root):
    raw = b"the whole bundle"
    path = bundle_storage_path(hashlib.sha256(raw).hexdigest())
    (artifact_root / path).parent.mkdir(parents=True)
    (artifact_root / path).write_bytes(raw[:5])  # as a crash mid-write could once leave it

    assert blob_put(storage=storages["artifacts"], path=path, file=io.BytesIO(raw), size=len(raw)) is True
    assert (artifact_root / path).read_bytes() == raw
    assert stored_files(artifact_root) == [path]


# The sweeper


def test_the_sweeper_removes_old_unreferenced_blobs_and_keeps_the_rest(publish, tmp_path, artifact_root):
    referenced = publish(name="kept", version="1.0.0")
    age(artifact_root / referenced.bundle_path, TWO_DAYS)
    old = orphan(artifact_root, b"left by a failed upload", seconds_old=TWO_DAYS)
    young = orphan(artifact_root, b"an upload on its way", seconds_old=60)

    removed = blobs_sweep_unreferenced()

    assert removed == [str(old.relative_to(artifact_root))]
    assert not old.exists()
    assert young.exists()
    assert (artifact_root / referenced.bundle_path).exists()
    assert stored_files(artifact_root) == sorted([referenced.bundle_path, str(young.relative_to(artifact_root))])


def test_the_grace_period_comes_from_the_setting(db, artifact_root, settings):
    blob = orphan(artifact_root, b"an hour old", seconds_old=3600)

    settings.BLOB_SWEEP_GRACE_SECONDS = 2 * 3600
    kept = blobs_sweep_unreferenced()
    settings.BLOB_SWEEP_GRACE_SECONDS = 1800
    removed = blobs_sweep_unreferenced()

    assert (kept, removed) == ([], [str(blob.relative_to(artifact_root))])


def test_the_sweeper_removes_writes_that_died_half_way_only_when_old(db, artifact_root):
    folder = artifact_root / "bundles/sha256/ab"
    folder.mkdir(parents=True)
    dead = folder / f"{INCOMING_PREFIX}dead.part"
    alive = folder / f"{INCOMING_PREFIX}alive.part"
    dead.write_bytes(b"half")
    alive.write_bytes(b"half")
    age(dead, TWO_DAYS)

    blobs_sweep_unreferenced()

    assert not dead.exists() and alive.exists()


@pytest.mark.parametrize("when", ["before the blob is parked", "after the blob is parked"])
def test_a_publish_that_reuses_an_old_blob_while_it_is_swept_keeps_it(when, publisher, tmp_path, artifact_root, monkeypatch):
    # The sweeper has found the blob unreferenced; then, before it deletes it, a publish of
    # the same bytes commits its row (and checks its blob). The blob must survive either way.
    raw = bundle_bytes(tmp_path)
    blob = orphan(artifact_root, raw, seconds_old=TWO_DAYS)
    real_move = stored_bundles.blob_move
    published = []

    def publish_beside_the_sweep(**kwargs):
        if not published and when == "before the blob is parked":
            published.append(template_version_publish(publisher=publisher, bundle=io.BytesIO(raw)).version)
        moved = real_move(**kwargs)
        if not published:
            published.append(template_version_publish(publisher=publisher, bundle=io.BytesIO(raw)).version)
        return moved

    monkeypatch.setattr(stored_bundles, "blob_move", publish_beside_the_sweep)

    assert blobs_sweep_unreferenced() == []
    assert blob.read_bytes() == raw
    assert published[0].bundle_path == str(blob.relative_to(artifact_root))
    assert stored_files(artifact_root) == [published[0].bundle_path]


@pytest.mark.django_db(transaction=True)
def test_a_blob_swept_while_its_row_is_uncommitted_is_stored_again(publisher, tmp_path, artifact_root, monkeypatch):
    # The sweeper runs on its own connection while the publish's row is not yet visible to
    # it, so it deletes the (old, reused) blob; the publish must notice once it has committed.
    raw = bundle_bytes(tmp_path)
    blob = orphan(artifact_root, raw, seconds_old=TWO_DAYS)
    real_create_version_rows = services._create_version_rows
    swept = []

    def sweep_then_create(candidate, **kwargs):
        thread = threading.Thread(target=lambda: (swept.extend(blobs_sweep_unreferenced()), connections.close_all()))
        thread.start()
        thread.join(timeout=30)
        return real_create_version_rows(candidate, **kwargs)

    monkeypatch.setattr(services, "_create_version_rows", sweep_then_create)

    version = template_version_publish(publisher=publisher, bundle=io.BytesIO(raw)).version

    assert swept == [version.bundle_path]
    assert blob.read_bytes() == raw


def test_a_sweep_that_died_after_parking_is_settled_by_the_next(publish, artifact_root):
    version = publish()
    unreferenced = b"nobody's"
    parked_long_ago = int(time.time()) - 3600
    folder = artifact_root / PARKED_PREFIX
    folder.mkdir(parents=True)
    (artifact_root / version.bundle_path).rename(folder / f"{parked_long_ago}-{version.bundle_sha256}.tar.gz")
    (folder / f"{parked_long_ago}-{hashlib.sha256(unreferenced).hexdigest()}.tar.gz").write_bytes(unreferenced)
    deciding = folder / f"{int(time.time())}-{'0' * 64}.tar.gz"  # parked by a sweep running now
    deciding.write_bytes(b"a sweep still deciding")

    blobs_sweep_unreferenced()

    assert hashlib.sha256((artifact_root / version.bundle_path).read_bytes()).hexdigest() == version.bundle_sha256
    assert list(folder.iterdir()) == [deciding]


# storage_check, the version page, downloads


def run_storage_check() -> tuple[str, str | None]:
    out = io.StringIO()
    try:
        call_command("storage_check", stdout=out)
    except CommandError as exc:
        return out.getvalue(), str(exc)
    return out.getvalue(), None


def test_storage_check_says_ok_when_every_bundle_is_whole(publish):
    publish(name="one")
    publish(name="two")

    out, error = run_storage_check()

    assert error is None
    assert out.strip() == "OK: all 2 stored bundles are present and match their digests"


def test_storage_check_lists_missing_and_tampered_bundles_and_fails(publish, artifact_root):
    whole = publish(name="whole")
    missing = publish(name="missing")
    tampered = publish(name="tampered")
    (artifact_root / missing.bundle_path).unlink()
    stored = artifact_root / tampered.bundle_path
    stored.write_bytes(stored.read_bytes()[:-1] + b"!")  # same size, other bytes

    out, error = run_storage_check()

    assert error == "2 version(s) have a broken stored bundle"
    assert out.splitlines() == [
        f"BROKEN missing 1.0.0: the stored bundle is missing ({missing.bundle_path})",
        f"BROKEN tampered 1.0.0: the stored bundle does not match its digest ({tampered.bundle_path})",
    ]
    assert dict(BundleProblem.objects.values_list("version__template__name", "kind")) == {
        "missing": "missing",
        "tampered": "mismatch",
    }
    assert not BundleProblem.objects.filter(version=whole).exists()


def test_storage_check_forgets_a_problem_once_the_bundle_is_whole_again(publish, artifact_root):
    version = publish()
    stored = artifact_root / version.bundle_path
    raw = stored.read_bytes()
    stored.unlink()
    assert bundles_check()[0].kind == "missing"

    stored.write_bytes(raw)  # restored from a backup

    assert bundles_check() == []
    assert not BundleProblem.objects.exists()


def version_page(client, version) -> str:
    response = client.get(reverse("catalog:version_page", args=[version.template.name, version.version]))
    assert response.status_code == 200
    return response.content.decode()


def test_the_version_page_shows_a_broken_bundle(client, publish, artifact_root):
    version = publish()
    healthy_page = version_page(client, version)
    (artifact_root / version.bundle_path).unlink()
    run_storage_check()

    assert "Broken:" not in healthy_page
    assert "Broken: the stored bundle is missing" in version_page(client, version)


def test_a_download_of_a_missing_bundle_says_so_and_marks_it_broken(client, publish, artifact_root):
    version = publish()
    (artifact_root / version.bundle_path).unlink()

    response = client.get(reverse("api:version_bundle", args=[version.template.name, version.version]))

    assert response.status_code == 503
    assert "cannot be downloaded: the stored bundle is missing" in response.json()["detail"]
    assert BundleProblem.objects.get(version=version).kind == "missing"


def test_a_tampered_bundle_is_never_served(client, publish, artifact_root):
    version = publish()
    stored = artifact_root / version.bundle_path
    stored.write_bytes(stored.read_bytes()[:-1] + b"!")
    run_storage_check()

    response = client.get(reverse("api:version_bundle", args=[version.template.name, version.version]))

    assert response.status_code == 503
    assert "does not match its digest" in response.json()["detail"]


@pytest.mark.parametrize("damage", ["delete", "tamper"])
def test_uploading_the_same_bytes_again_repairs_a_broken_bundle(damage, upload, owner_token, client, tmp_path, artifact_root):
    raw = bundle_bytes(tmp_path)
    assert upload("demo-embedder", raw, owner_token).status_code == 201
    version = TemplateVersion.objects.get()
    stored = artifact_root / version.bundle_path
    if damage == "delete":
        stored.unlink()
    else:
        stored.write_bytes(raw[:-1] + b"!")
    run_storage_check()

    again = upload("demo-embedder", raw, owner_token)
    download = client.get(reverse("api:version_bundle", args=["demo-embedder", "1.0.0"]))

    assert again.status_code == 200
    assert b"".join(download.streaming_content) == raw
    assert "Broken:" not in version_page(client, version)
    assert run_storage_check()[1] is None


# The embedded database


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's settings")
def test_sqlite_takes_concurrent_writers(db):
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        journal_mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA busy_timeout")
        busy_timeout_ms = cursor.fetchone()[0]

    assert journal_mode == "wal"
    assert busy_timeout_ms >= 5000
    assert connection.transaction_mode == "IMMEDIATE"
