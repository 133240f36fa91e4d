"""Publish as a new version: a succeeded job's outputs, added to its template's bundle, become
a new immutable version of a serving template (e.g. the fine-tuned classifier: the serving
code plus the checkpoint). It goes through the catalog's own publish service; the catalog
never imports this app, so the job's provenance is handed over as plain data."""

import io
import tempfile
from pathlib import Path

import yaml
from django.contrib.auth.models import AbstractBaseUser

from runners.base import OutputRefused, check_output_path
from templates_catalog.access import may_publish
from templates_catalog.bundles import MANIFEST_NAME, BundleInvalid, bundle_extract, bundle_pack
from templates_catalog.manifest import Kind
from templates_catalog.models import Publisher, Template
from templates_catalog.services import PublishRejected, PublishResult, bundle_limits, template_version_publish
from templates_catalog.specs import manifest_of
from templates_catalog.stored_bundles import bundle_copy_verified

from .jobs import artifact_copy_verified
from .models import Job
from .services import DeploymentConflict, DeploymentNotFound, DeploymentRejected

# The catalog's field names in a publish error, and the promote form's.
_FORM_FIELDS = {"hub.yaml name": "name", "hub.yaml version": "version"}


def job_promote(*, job: Job, user: AbstractBaseUser, publisher: Publisher, name: str, version: str) -> PublishResult:
    """Publish `job`'s outputs with its template's serving code as `name` `version` of
    `publisher` (a private template). Promoting the same job to the same name and version
    again, or twice at once, gives the one version both times."""
    if job.owner_id != user.pk:
        raise DeploymentNotFound(f"no job {job.handle} of yours")
    if job.state != Job.State.SUCCEEDED:
        raise DeploymentConflict(f"{job.handle} is {job.state}: only a succeeded job's outputs can be published")
    source = manifest_of(job.version)
    if source.serve is None:
        raise DeploymentRejected(f"{source.name} has no `serve` section: its outputs have no server to be published with")
    if not may_publish(user, publisher):
        raise DeploymentRejected("you cannot publish there", [("publisher", "you are not a member of this publisher")])
    artifacts = list(job.artifacts.all())
    if len(artifacts) != len(source.job.outputs):
        raise _deleted_meanwhile(job)
    with tempfile.TemporaryDirectory(prefix="promote-") as scratch:
        bundle = _bundle(job, artifacts, Path(scratch), name=name, version=version)
        try:
            return template_version_publish(
                publisher=publisher, bundle=io.BytesIO(bundle), published_by=user, expected_name=name,
                visibility=Template.Visibility.PRIVATE, provenance=_provenance(job, artifacts),
            )
        except PublishRejected as exc:
            errors = [(_FORM_FIELDS.get(error.field, error.field), error.message) for error in exc.errors]
            raise (DeploymentConflict if exc.status == 409 else DeploymentRejected)(str(exc), errors) from None


def _bundle(job: Job, artifacts: list, folder: Path, *, name: str, version: str) -> bytes:
    """The job's template bundle, each output at its declared path, and a manifest that serves."""
    tree = folder / "tree"
    try:
        bundle_extract(bundle_copy_verified(version=job.version, target=folder / "source.tar.gz"), tree, bundle_limits())
    except BundleInvalid as exc:
        raise DeploymentRejected(f"the template's stored bundle cannot be read back: {exc}") from None
    for artifact in artifacts:
        try:
            target = tree.joinpath(*check_output_path(artifact.path))
        except OutputRefused as exc:
            raise DeploymentRejected(str(exc)) from None
        if target == tree / MANIFEST_NAME:
            raise DeploymentRejected(f"output {artifact.name} would replace hub.yaml: it cannot be published")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            artifact_copy_verified(sha256=artifact.sha256, target=target)
        except FileNotFoundError:
            raise _deleted_meanwhile(job) from None
    manifest = manifest_of(job.version).model_dump(mode="json", by_alias=True, exclude_none=True)
    manifest.update(name=name, version=version, kind=Kind.SERVICE.value)
    manifest.pop("job", None)
    # The job's inputs (the training data, its settings) were used up making the outputs.
    manifest.pop("inputs", None)
    (tree / MANIFEST_NAME).write_text(yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True))
    return bundle_pack(tree)


def _deleted_meanwhile(job: Job) -> DeploymentConflict:
    # A succeeded job has every declared output stored until it is deleted (job_deletion.py).
    return DeploymentConflict(f"{job.handle} was deleted while it was being published: its outputs are gone")


def _provenance(job: Job, artifacts: list) -> dict:
    source = job.version
    return {
        "job": job.handle,
        "source": {"template": source.template.name, "version": source.version, "bundle_sha256": source.bundle_sha256},
        "inputs": job.inputs,
        "outputs": {artifact.name: {"path": artifact.path, "sha256": artifact.sha256, "size": artifact.size}
                    for artifact in artifacts},
        "metrics": job.metrics,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
