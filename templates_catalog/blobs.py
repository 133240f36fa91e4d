"""Reading a stored bundle back. A version is identified by the sha256 of its bundle and
promises never to change under anyone, so every read that builds or deploys from the
stored bytes hashes them again and refuses them when they no longer match."""

import hashlib
import hmac
from pathlib import Path

from django.core.files.storage import storages

from .models import TemplateVersion

CHUNK_BYTES = 1 << 20


class BundleAltered(Exception):
    """The stored bundle's bytes no longer hash to the version's digest."""


def bundle_copy_verified(*, version: TemplateVersion, target: Path) -> Path:
    """Copy the stored bundle of `version` to `target`, hashing while copying; refuse it
    (and remove the copy) when the digest no longer matches."""
    digest = hashlib.sha256()
    try:
        with storages["artifacts"].open(version.bundle_path, "rb") as source, open(target, "wb") as copy:
            while chunk := source.read(CHUNK_BYTES):
                digest.update(chunk)
                copy.write(chunk)
    except FileNotFoundError:
        target.unlink(missing_ok=True)
        raise BundleAltered(
            f"the stored bundle of {version} is missing from the hub's storage: restore it from backup or publish a new version"
        ) from None
    if not hmac.compare_digest(digest.hexdigest(), version.bundle_sha256):
        target.unlink(missing_ok=True)
        raise BundleAltered(
            f"the stored bundle of {version} no longer matches its digest sha256:{version.bundle_sha256}; "
            "the hub's storage was altered: restore it from backup or publish a new version"
        )
    return target
