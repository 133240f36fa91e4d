"""The stored bundles as a whole: the sweeper of blobs no version needs, and the check that
every version's blob is there with the bytes its digest names."""

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.storage import Storage, storages
from django.utils import timezone

from .blobs import INCOMING_PREFIX, blob_list, blob_move
from .models import BundleProblem, TemplateVersion

BUNDLE_PREFIX = "bundles/sha256"
# Where the sweeper parks a blob while it looks again for a version that uses it.
PARKED_PREFIX = "bundles/sweeping"
BLOB_NAME = re.compile(r"^[0-9a-f]{64}\.tar\.gz$")
# A parked blob older than this belongs to a sweep that died between parking and deciding.
ABANDONED_PARK_SECONDS = 600
HASH_CHUNK = 1024 * 1024


def bundle_storage_path(sha256: str) -> str:
    return f"{BUNDLE_PREFIX}/{sha256[:2]}/{sha256}.tar.gz"


def blobs_sweep_unreferenced(*, grace: timedelta | None = None) -> list[str]:
    """Delete stored bundles that no version references and that are older than the grace
    period (`BLOB_SWEEP_GRACE_SECONDS`); the paths deleted.

    A young blob may belong to an upload still on its way to committing its row, so the
    grace period keeps it. An old one may be reused by such an upload at any moment, so
    each is first parked away from its path, and deleted only if no version references it
    once it can no longer be found there; a publish re-puts its blob after committing.
    """
    storage = storages["artifacts"]
    cutoff = timezone.now() - (grace if grace is not None else timedelta(seconds=settings.BLOB_SWEEP_GRACE_SECONDS))
    _settle_abandoned_parks(storage)
    referenced = set(TemplateVersion.objects.values_list("bundle_path", flat=True))
    removed = []
    for stored in blob_list(storage=storage, prefix=BUNDLE_PREFIX):
        name = stored.path.rsplit("/", 1)[-1]
        if stored.modified >= cutoff or stored.path in referenced:
            continue
        if name.startswith(INCOMING_PREFIX):  # a local write that died half-way
            storage.delete(stored.path)
            removed.append(stored.path)
        elif BLOB_NAME.match(name) and _sweep_one(storage, stored.path):
            removed.append(stored.path)
    return removed


def _sweep_one(storage: Storage, path: str) -> bool:
    parked = f"{PARKED_PREFIX}/{int(time.time())}-{path.rsplit('/', 1)[-1]}"
    if not blob_move(storage=storage, source=path, target=parked):
        return False
    if TemplateVersion.objects.filter(bundle_path=path).exists():
        blob_move(storage=storage, source=parked, target=path)
        return False
    storage.delete(parked)
    return True


def _settle_abandoned_parks(storage: Storage) -> None:
    for stored in blob_list(storage=storage, prefix=PARKED_PREFIX):
        parked_at, _, name = stored.path.rsplit("/", 1)[-1].partition("-")
        if not parked_at.isdigit() or int(parked_at) > time.time() - ABANDONED_PARK_SECONDS:
            continue
        path = bundle_storage_path(name.removesuffix(".tar.gz"))
        if BLOB_NAME.match(name) and TemplateVersion.objects.filter(bundle_path=path).exists():
            blob_move(storage=storage, source=stored.path, target=path)
        else:
            storage.delete(stored.path)


@dataclass(frozen=True)
class BrokenBundle:
    version: TemplateVersion
    kind: str

    @property
    def reason(self) -> str:
        return BundleProblem.Kind(self.kind).label


def bundles_check() -> list[BrokenBundle]:
    """Hash every version's stored bundle; record what is broken (and forget what was
    broken and is whole again) so that pages can show it without hashing anything."""
    storage = storages["artifacts"]
    broken = []
    for version in TemplateVersion.objects.select_related("template").order_by("template__name", "pk").iterator():
        kind = _problem_of(storage, version)
        if kind is None:
            BundleProblem.objects.filter(version=version).delete()
        else:
            bundle_problem_record(version=version, kind=kind)
            broken.append(BrokenBundle(version=version, kind=kind))
    return broken


def _problem_of(storage: Storage, version: TemplateVersion) -> str | None:
    digest = hashlib.sha256()
    try:
        with storage.open(version.bundle_path, "rb") as stored:
            while chunk := stored.read(HASH_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return BundleProblem.Kind.MISSING
    if not hmac.compare_digest(digest.hexdigest(), version.bundle_sha256):
        return BundleProblem.Kind.MISMATCH
    return None


def bundle_problem_record(*, version: TemplateVersion, kind: str) -> BundleProblem:
    problem, _ = BundleProblem.objects.update_or_create(
        version=version, defaults={"kind": kind, "detected_at": timezone.now()}
    )
    return problem


def bundle_problem_forget(*, version: TemplateVersion) -> None:
    BundleProblem.objects.filter(version=version).delete()


# Reading a stored bundle back: a version promises never to change under anyone, so every
# read that builds or deploys from the stored bytes hashes them again.
class BundleAltered(Exception):
    """The stored bundle's bytes no longer hash to the version's digest."""


def bundle_copy_verified(*, version: TemplateVersion, target: Path) -> Path:
    """Copy the stored bundle of `version` to `target`, hashing while copying; refuse it
    (and remove the copy) when the digest no longer matches."""
    digest = hashlib.sha256()
    try:
        with storages["artifacts"].open(version.bundle_path, "rb") as source, open(target, "wb") as copy:
            while chunk := source.read(HASH_CHUNK):
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
