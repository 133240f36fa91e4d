"""The stored bundle is hashed again whenever a build reads it back, and refused when it
no longer matches the version's digest."""

import pytest

from templates_catalog import builds
from templates_catalog.builds import build_request, build_run
from templates_catalog.stored_bundles import BundleAltered, bundle_copy_verified


@pytest.fixture
def version(db, publish, settings, monkeypatch, tmp_path):
    settings.BUILD_BACKEND = "venv"
    settings.VAR_DIR = tmp_path / "var"  # should a refusal ever regress, its venv lands here
    monkeypatch.setattr(builds, "_enqueue", lambda build_id: None)
    return publish(name="kept-safe")


def test_an_intact_bundle_is_copied_byte_for_byte(version, artifact_root, tmp_path):
    copy = bundle_copy_verified(version=version, target=tmp_path / "copy.tar.gz")
    assert copy.read_bytes() == (artifact_root / version.bundle_path).read_bytes()


def test_a_tampered_bundle_fails_the_build_and_names_the_digest(version, artifact_root):
    stored = artifact_root / version.bundle_path
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the stored blob
    stored.write_bytes(bytes(data))

    build = build_run(build_id=build_request(version=version).pk)

    assert build.status == "failed"
    assert build.error == (
        f"the stored bundle of kept-safe@1.0.0 no longer matches its digest sha256:{version.bundle_sha256}; "
        "the hub's storage was altered: restore it from backup or publish a new version"
    )


def test_a_tampered_bundle_leaves_no_copy_behind(version, artifact_root, tmp_path):
    (artifact_root / version.bundle_path).write_bytes(b"not the bundle")
    target = tmp_path / "copy.tar.gz"

    with pytest.raises(BundleAltered):
        bundle_copy_verified(version=version, target=target)
    assert not target.exists()


def test_a_missing_bundle_is_refused_with_a_reason(version, artifact_root):
    (artifact_root / version.bundle_path).unlink()

    build = build_run(build_id=build_request(version=version).pk)

    assert build.status == "failed" and "is missing from the hub's storage" in build.error
