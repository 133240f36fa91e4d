"""Deleting a finished job: its rows, then each stored file (an upload, an output) that no
remaining job names any more.

The rows go first, in one transaction; each file is looked at only once that has committed,
under `artifact_lock` on its digest, in a transaction of its own. Of two jobs sharing a
digest deleted at once, the one that commits last finds no row naming it and removes the
file; a job being created (or finishing) with that digest either committed before the look,
and keeps the file, or finds it gone afterwards and stores it again.

A version published from the job (`promote.py`) holds its own copy of the outputs in its
bundle, in the catalog's bundle storage: deleting the job leaves it whole, and its
provenance keeps the job's handle and digests as text.
"""

import logging
import re

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import storages
from django.db import transaction

from templates_catalog.access import may_manage_deployment

from .jobs import artifact_lock, artifact_storage_path
from .models import Job, JobArtifact
from .services import DeploymentConflict, DeploymentNotFound

logger = logging.getLogger(__name__)

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def job_delete(*, job: Job, by: AbstractBaseUser) -> None:
    """Delete `job` (its events and output rows with it) for its owner `by`, and after that
    commits, the stored files no other job names. A job still in flight is refused."""
    if not may_manage_deployment(by, job.owner_id):
        raise DeploymentNotFound(f"no job {job.handle} of yours")
    with transaction.atomic():
        # Locked: the flow finishes a job under this lock, so its state cannot move under us.
        current = Job.objects.select_for_update().filter(pk=job.pk).first()
        if current is None:
            raise DeploymentNotFound(f"no job {job.handle} of yours")
        if current.state in Job.IN_FLIGHT:
            raise DeploymentConflict(
                f"{current.handle} is still {current.state}: it can be deleted once it has finished (a job is "
                f"stopped after {settings.JOB_TIMEOUT_SECONDS} seconds at most)"
            )
        digests = _digests_named_by(current)
        current.delete()
        for sha256 in sorted(digests):
            transaction.on_commit(lambda sha256=sha256: artifact_remove_unreferenced(sha256=sha256), robust=True)


def artifact_remove_unreferenced(*, sha256: str) -> bool:
    """Remove the stored file of `sha256` unless a job still names it; True when it was removed."""
    with transaction.atomic():
        artifact_lock(sha256)
        if _referenced(sha256):
            return False
        storages["artifacts"].delete(artifact_storage_path(sha256))
    logger.info("removed the stored artifact sha256:%s: no job names it any more", sha256)
    return True


def _digests_named_by(job: Job) -> set[str]:
    outputs = set(JobArtifact.objects.filter(job=job).values_list("sha256", flat=True))
    return outputs | _input_digests(job.inputs)


def _input_digests(inputs: dict) -> set[str]:
    # Only what has the shape of a digest becomes a storage path.
    return {value["sha256"] for value in inputs.values()
            if isinstance(value, dict) and isinstance(value.get("sha256"), str) and SHA256_HEX.fullmatch(value["sha256"])}


def _referenced(sha256: str) -> bool:
    if JobArtifact.objects.filter(sha256=sha256).exists():
        return True
    # The inputs are a JSON object keyed by each template's own names: the text search finds
    # every job whose inputs hold the digest anywhere, and the exact check keeps the file ones.
    candidates = Job.objects.filter(inputs__icontains=sha256).values_list("inputs", flat=True)
    return any(sha256 in _input_digests(inputs) for inputs in candidates)
