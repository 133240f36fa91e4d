"""Bundles are stored by digest, and a failed publish leaves neither a row nor a blob."""

import hashlib
import io
import subprocess
import sys
import time
from datetime import timedelta
from unittest import mock

import boto3
import pytest
from django.core.files.storage import storages
from django.db import OperationalError

from templates_catalog import blobs, services
from templates_catalog.blobs import blob_put
from templates_catalog.models import TemplateVersion
from templates_catalog.services import template_version_publish
from templates_catalog.stored_bundles import blobs_sweep_unreferenced, bundle_storage_path

from ..factories import bundle_bytes
from ..netutil import free_port, wait_for_port
from .conftest import catalog_state


def test_a_failure_after_the_blob_write_leaves_no_row_and_the_blob_only_until_swept(
    publisher, tmp_path, artifact_root, monkeypatch
):
    def fail_after_the_blob_is_written(candidate, **kwargs):
        assert any(artifact_root.rglob("*.tar.gz")), "the blob should be written before the rows"
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "_create_version_rows", fail_after_the_blob_is_written)
    before = catalog_state(artifact_root)

    with pytest.raises(RuntimeError, match="database went away"):
        template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_bytes(tmp_path)))

    rows, versions, files = catalog_state(artifact_root)
    assert (rows, versions) == before[:2]
    assert len(files) == 1, "a failed upload never deletes a blob: a concurrent one may share it"
    assert blobs_sweep_unreferenced(grace=timedelta(0)) == files
    assert catalog_state(artifact_root) == before


def test_a_failure_inside_the_transaction_rolls_back_the_rows_too(publisher, tmp_path, artifact_root, monkeypatch):
    def fail_late(*, template):
        raise RuntimeError("disk full")

    monkeypatch.setattr(services, "template_refresh_latest", fail_late)

    with pytest.raises(RuntimeError, match="disk full"):
        template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_bytes(tmp_path)))

    rows, versions, files = catalog_state(artifact_root)
    assert (rows, versions) == ([], [])
    assert [name.rsplit("/", 1)[-1].removesuffix(".tar.gz") for name in files] == [
        hashlib.sha256(bundle_bytes(tmp_path)).hexdigest()
    ]


def test_a_failed_upload_keeps_the_blob_of_a_publish_not_yet_committed(publisher, tmp_path, artifact_root, monkeypatch):
    # The race of issue 8: the loser failed with something other than an IntegrityError while
    # the winner's row was still invisible to it, and deleted the blob the winner then committed.
    raw = bundle_bytes(tmp_path)
    real_create_version_rows = services._create_version_rows
    monkeypatch.setattr(
        services, "_create_version_rows", lambda *a, **k: (_ for _ in ()).throw(OperationalError("database is locked"))
    )
    with pytest.raises(OperationalError):
        template_version_publish(publisher=publisher, bundle=io.BytesIO(raw))

    monkeypatch.setattr(services, "_create_version_rows", real_create_version_rows)
    with mock.patch.object(blobs, "_replace_local", side_effect=AssertionError("the blob is there: no write")):
        version = template_version_publish(publisher=publisher, bundle=io.BytesIO(raw)).version

    assert (artifact_root / version.bundle_path).read_bytes() == raw


def test_a_blob_shared_with_an_existing_version_is_never_deleted(publisher, tmp_path, artifact_root, monkeypatch):
    raw = bundle_bytes(tmp_path)
    template_version_publish(publisher=publisher, bundle=io.BytesIO(raw))
    stored = catalog_state(artifact_root)[2]
    assert stored

    monkeypatch.setattr(services, "_existing_version", lambda *args: None)  # pretend it is new
    monkeypatch.setattr(services, "_create_version_rows", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        template_version_publish(publisher=publisher, bundle=io.BytesIO(raw))

    assert catalog_state(artifact_root)[2] == stored


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's standalone server: a real S3-compatible HTTP endpoint that boto3 talks to."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_for_port(port):
        server.kill()
        pytest.fail("moto server did not start")
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def s3_artifacts(s3_endpoint, settings, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "hub-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hub-test-secret")
    bucket = f"hub-artifacts-{time.monotonic_ns()}"
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": bucket, "endpoint_url": s3_endpoint, "region_name": "us-east-1", "file_overwrite": False},
        },
    }
    return client, bucket


def _keys(client, bucket) -> list[str]:
    return sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_bundles_go_to_the_s3_bucket_by_digest_and_come_back(publisher, tmp_path, s3_artifacts, client):
    s3, bucket = s3_artifacts
    raw = bundle_bytes(tmp_path)

    version = template_version_publish(publisher=publisher, bundle=io.BytesIO(raw)).version
    downloaded = b"".join(client.get("/api/v1/templates/demo-embedder/versions/1.0.0/bundle/").streaming_content)

    assert _keys(s3, bucket) == [f"bundles/sha256/{version.bundle_sha256[:2]}/{version.bundle_sha256}.tar.gz"]
    assert s3.get_object(Bucket=bucket, Key=version.bundle_path)["Body"].read() == raw
    assert downloaded == raw


def test_a_failed_publish_leaves_no_row_and_its_object_only_until_swept(publisher, tmp_path, s3_artifacts, monkeypatch):
    s3, bucket = s3_artifacts
    kept = template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_bytes(tmp_path, name="kept"))).version
    written = []

    def fail_after_the_blob_is_written(candidate, **kwargs):
        written.extend(_keys(s3, bucket))
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "_create_version_rows", fail_after_the_blob_is_written)
    with pytest.raises(RuntimeError):
        template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_bytes(tmp_path)))

    assert len(written) == 2, "the object should have reached the bucket before the failure"
    assert list(TemplateVersion.objects.all()) == [kept]
    assert blobs_sweep_unreferenced(grace=timedelta(hours=1)) == []
    assert len(_keys(s3, bucket)) == 2
    assert blobs_sweep_unreferenced(grace=timedelta(0)) == [key for key in written if key != kept.bundle_path]
    assert _keys(s3, bucket) == [kept.bundle_path]


def test_writing_a_stored_digest_again_to_s3_is_a_no_op(s3_artifacts):
    s3, bucket = s3_artifacts
    storage = storages["artifacts"]
    raw = b"bundle bytes"
    path = bundle_storage_path(hashlib.sha256(raw).hexdigest())

    first = blob_put(storage=storage, path=path, file=io.BytesIO(raw), size=len(raw))
    etag = s3.head_object(Bucket=bucket, Key=path)["ETag"]
    with mock.patch.object(storage, "save", side_effect=AssertionError("already stored: nothing to write")):
        again = blob_put(storage=storage, path=path, file=io.BytesIO(raw), size=len(raw))

    assert (first, again) == (True, False)
    assert _keys(s3, bucket) == [path]
    assert s3.head_object(Bucket=bucket, Key=path)["ETag"] == etag


def test_a_writer_that_loses_the_race_on_s3_drops_its_renamed_copy(s3_artifacts):
    # Another writer stores the digest between this one's check and its save: S3Storage
    # (file_overwrite=False) then saves under a new name, which must not survive.
    s3, bucket = s3_artifacts
    storage = storages["artifacts"]
    raw = b"bundle bytes"
    path = bundle_storage_path(hashlib.sha256(raw).hexdigest())
    blob_put(storage=storage, path=path, file=io.BytesIO(raw), size=len(raw))
    real_exists = storage.exists
    answers = [False]  # the first check misses the other writer's object; later ones see it

    with (
        mock.patch.object(storage, "size", side_effect=FileNotFoundError(path)),
        mock.patch.object(storage, "exists", side_effect=lambda name: answers.pop() if answers else real_exists(name)),
        mock.patch.object(storage, "delete", wraps=storage.delete) as delete,
    ):
        blob_put(storage=storage, path=path, file=io.BytesIO(raw), size=len(raw))

    [renamed] = [call.args[0] for call in delete.call_args_list]
    assert renamed != path and renamed.startswith(path.removesuffix(".tar.gz"))
    assert _keys(s3, bucket) == [path]
    assert s3.get_object(Bucket=bucket, Key=path)["Body"].read() == raw
