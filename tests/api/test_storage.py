"""Bundles are stored by digest, and a failed publish leaves neither a row nor a blob."""

import io
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from templates_catalog import services
from templates_catalog.models import TemplateVersion
from templates_catalog.services import template_version_publish

from ..factories import bundle_bytes
from ..netutil import free_port, wait_for_port
from .conftest import catalog_state


def test_a_failure_after_the_blob_write_leaves_nothing(publisher, tmp_path, artifact_root, monkeypatch):
    def fail_after_the_blob_is_written(candidate, **kwargs):
        assert any(artifact_root.rglob("*.tar.gz")), "the blob should be written before the rows"
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "_create_version_rows", fail_after_the_blob_is_written)
    before = catalog_state(artifact_root)

    with pytest.raises(RuntimeError, match="database went away"):
        template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_bytes(tmp_path)))

    assert catalog_state(artifact_root) == before


def test_a_failure_inside_the_transaction_rolls_back_the_rows_too(publisher, tmp_path, artifact_root, monkeypatch):
    def fail_late(*, template):
        raise RuntimeError("disk full")

    monkeypatch.setattr(services, "template_refresh_latest", fail_late)

    with pytest.raises(RuntimeError, match="disk full"):
        template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_bytes(tmp_path)))

    assert catalog_state(artifact_root) == ([], [], [])


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


def test_a_failed_publish_leaves_no_object_in_the_bucket(publisher, tmp_path, s3_artifacts, monkeypatch):
    s3, bucket = s3_artifacts
    written = []

    def fail_after_the_blob_is_written(candidate, **kwargs):
        written.extend(_keys(s3, bucket))
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "_create_version_rows", fail_after_the_blob_is_written)
    with pytest.raises(RuntimeError):
        template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_bytes(tmp_path)))

    assert written, "the object should have reached the bucket before the failure"
    assert _keys(s3, bucket) == []
    assert not TemplateVersion.objects.exists()
    assert Path(tmp_path).exists()
