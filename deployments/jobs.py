"""Jobs: a `kind: job` template run to completion, with the deploy form's inputs.

queued → (build requested) building → (image ready, placed, launched) running →
succeeded (each declared output stored by digest) | failed (with its last log lines).
`job_transition` is the only writer of a job's state. `job_advance` moves a job one step
and is safe to run twice or at once (the Celery task, the reconciler): a job that is
running is only looked at, and finishing takes the job's row lock first.

Uploads and outputs are stored by digest, shared by every job that names the same bytes;
a row that names a digest is written while holding `artifact_lock` on it, as is the check
(`job_deletion`) that removes a file no row names any more.
"""

import contextlib
import hashlib
import hmac
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.files.storage import storages
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from builders.errors import BuildFailed
from hub_site.backends import runner_for
from runners.base import (
    CollectedOutput,
    JobInputFile,
    JobOutputSpec,
    JobSpec,
    RunnerError,
    RunPhase,
    RunState,
)
from runners.scheduler import NoNodeFits, place
from templates_catalog.access import may_deploy
from templates_catalog.blobs import blob_put
from templates_catalog.builds import build_request
from templates_catalog.bundles import BundleInvalid, BundleTooLarge, stream_to_file
from templates_catalog.manifest import Kind, Manifest
from templates_catalog.manifest.schema import InputType
from templates_catalog.models import Build, TemplateVersion
from templates_catalog.specs import manifest_of, resources_of

from .flow import exit_reason, stop_quietly
from .graphs import resource_fields
from .job_transitions import TransitionRefused, job_transition, progress_after_commit
from .models import Job, JobArtifact, JobEvent, Node
from .nodes import node_register_local
from .selectors import schedulable_capacities
from .services import DeploymentNotFound, DeploymentRejected, refuse_yanked
from .specs import InputsInvalid, env_text, inputs_validate

logger = logging.getLogger(__name__)
State = Job.State

ARTIFACT_PREFIX = "artifacts/sha256"
METRICS_FILE = "metrics.json"
METRICS_MAX_BYTES = 256 * 1024
LOG_TAIL_LINES = 200
POLL_SECONDS = 1.0
HASH_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class UploadedInput:
    """A file the user sent for a `file` input: its stream and the name it had."""

    name: str
    file: BinaryIO
    filename: str


# --- artifacts: uploads and outputs, stored by digest ------------------------------------

# The namespace of the PostgreSQL advisory locks that `artifact_lock` takes.
ARTIFACT_LOCK_SPACE = 0x4A4F4241  # "JOBA"


@dataclass(frozen=True)
class SpooledArtifact:
    """An upload's bytes in a local file, kept until the row that names them commits."""

    sha256: str
    size: int
    file: BinaryIO


def artifact_storage_path(sha256: str) -> str:
    return f"{ARTIFACT_PREFIX}/{sha256[:2]}/{sha256}"


def artifact_lock(sha256: str) -> None:
    """Hold `sha256` until the current transaction ends. A writer of a row that names a digest
    and the removal of an unnamed digest's file (`job_deletion`) take turns on it: the removal
    sees the writer's committed row, or the writer finds the file gone and stores it again."""
    if not connection.in_atomic_block:
        raise RuntimeError("artifact_lock is held until the transaction ends: call it inside transaction.atomic()")
    if connection.vendor == "postgresql":
        digest_key = int.from_bytes(bytes.fromhex(sha256[:8]), "big", signed=True)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ARTIFACT_LOCK_SPACE, digest_key])
    # SQLite: every transaction begins IMMEDIATE (hub_site/settings.py), holding the one write
    # lock of the whole database, so transactions already take turns.


def artifact_spool(*, file: BinaryIO, max_bytes: int, what: str, spools: contextlib.ExitStack) -> SpooledArtifact:
    """Stream `file` into a local file that `spools` removes, refusing it past `max_bytes`, and
    store it in the artifact storage under its sha256 (a no-op when it is there already)."""
    spooled = spools.enter_context(tempfile.TemporaryFile(prefix="artifact-"))
    try:
        sha256, size = stream_to_file(file, spooled, max_bytes=max_bytes)
    except BundleTooLarge:
        raise DeploymentRejected(f"{what} is too large", [(what, f"is larger than the limit of {max_bytes} bytes")]) from None
    except BundleInvalid:
        raise DeploymentRejected(f"{what} is empty", [(what, "the file is empty")]) from None
    artifact = SpooledArtifact(sha256=sha256, size=size, file=spooled)
    _artifact_put(artifact)
    return artifact


def artifacts_hold(artifacts: list[SpooledArtifact]) -> None:
    """In the transaction that records rows naming `artifacts`: lock each digest (sorted, so
    two holders never wait on each other) and store again any that a delete removed since."""
    for artifact in sorted(artifacts, key=lambda artifact: artifact.sha256):
        artifact_lock(artifact.sha256)
        _artifact_put(artifact)


def _artifact_put(artifact: SpooledArtifact) -> None:
    blob_put(storage=storages["artifacts"], path=artifact_storage_path(artifact.sha256), file=artifact.file,
             size=artifact.size)


def artifact_copy_verified(*, sha256: str, target: Path) -> Path:
    """Copy a stored artifact to a local file, refusing it when its bytes no longer match its digest."""
    digest = hashlib.sha256()
    with storages["artifacts"].open(artifact_storage_path(sha256), "rb") as source, open(target, "wb") as copy:
        while chunk := source.read(HASH_CHUNK):
            digest.update(chunk)
            copy.write(chunk)
    if not hmac.compare_digest(digest.hexdigest(), sha256):
        target.unlink(missing_ok=True)
        raise RunnerError(f"the stored artifact sha256:{sha256} was altered in the hub's storage")
    return target


# --- starting a job -----------------------------------------------------------------------

def job_create(
    *, owner: AbstractBaseUser, version: TemplateVersion, inputs: dict, files: list[UploadedInput] | tuple = (),
    idempotency_key: str | None = None,
) -> Job:
    """Run `version` (a `kind: job` template) for `owner` with `inputs` and the uploaded
    `files`. The same idempotency key again returns the first job."""
    if not may_deploy(owner, version):
        raise DeploymentNotFound(f"no template version {version.template.name}@{version.version} that you may run")
    manifest = manifest_of(version)
    if manifest.kind is not Kind.JOB:
        raise DeploymentRejected(f"{manifest.name} is a service: deploy it instead of running it as a job")
    if idempotency_key:
        earlier = Job.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
        if earlier is not None:
            return earlier
    refuse_yanked(version)
    with contextlib.ExitStack() as spools:
        values, uploads = _validated_inputs(manifest, inputs, files, spools)
        try:
            with transaction.atomic():
                artifacts_hold(uploads)
                job = Job.objects.create(owner=owner, version=version, inputs=values,
                                         idempotency_key=idempotency_key or None, **resource_fields(manifest))
                JobEvent.objects.create(job=job, to_state=job.state, message="job requested")
                progress_after_commit(job)
        except IntegrityError:
            if not idempotency_key:
                raise
            return Job.objects.get(owner=owner, idempotency_key=idempotency_key)
    return job


def _validated_inputs(
    manifest: Manifest, inputs: dict, files: list[UploadedInput] | tuple, spools: contextlib.ExitStack,
) -> tuple[dict, list[SpooledArtifact]]:
    """The plain inputs checked by type, and each file stored by digest (as {sha256, size,
    filename}); with the stored files' local copies, which `spools` keeps until it closes."""
    file_inputs = {item.name: item for item in manifest.inputs if item.type is InputType.FILE}
    plain = manifest.model_copy(update={"inputs": [item for item in manifest.inputs if item.name not in file_inputs]})
    errors: list[tuple[str, str]] = []
    try:
        values = inputs_validate(plain, {name: value for name, value in inputs.items() if name not in file_inputs})
    except InputsInvalid as exc:
        errors, values = exc.errors, {}
    given = {upload.name: upload for upload in files}
    errors += [(f"inputs.{name}", f"this template has no file input {name!r}") for name in given if name not in file_inputs]
    errors += [(f"inputs.{name}", "send the file as an upload, not as a value") for name in inputs if name in file_inputs]
    errors += [(f"inputs.{name}", f"is required: {item.label}") for name, item in file_inputs.items()
               if item.required and name not in given]
    if errors:
        raise DeploymentRejected("the inputs are not valid", errors)
    stored = []
    for name, upload in given.items():
        artifact = artifact_spool(file=upload.file, max_bytes=settings.JOB_INPUT_MAX_BYTES, what=f"inputs.{name}",
                                  spools=spools)
        values[name] = {"sha256": artifact.sha256, "size": artifact.size, "filename": Path(upload.filename or name).name[:200]}
        stored.append(artifact)
    return values, stored


# --- the flow -------------------------------------------------------------------------------

def job_advance(*, job_id: int) -> float | None:
    """One step; the seconds after which to look again, or None when nothing more is needed."""
    job = Job.objects.select_related("version__template", "build", "node").filter(pk=job_id).first()
    if job is None or job.state not in Job.IN_FLIGHT:
        return None
    step = {State.QUEUED: _request_build, State.BUILDING: _await_build_and_launch, State.RUNNING: _watch}[job.state]
    try:
        return step(job)
    except TransitionRefused as exc:
        logger.info("job step skipped: %s", exc)
        return None
    except Exception as exc:
        logger.exception("job %s: the %s step crashed", job.handle, job.state)
        _fail(job, f"the hub hit an internal error while {job.state} ({type(exc).__name__}: {exc}); "
                   "report it to the hub's operators")
        return None


def _request_build(job: Job) -> None:
    try:
        build = build_request(version=job.version, requested_by=job.owner)
    except BuildFailed as exc:
        return _fail(job, str(exc))
    job_transition(job_id=job.pk, to=State.BUILDING, expect=(State.QUEUED,), build=build,
                   message=f"build {build.pk} requested ({build.backend})")
    return None


def _await_build_and_launch(job: Job) -> float | None:
    build = Build.objects.get(pk=job.build_id)
    if build.status in Build.ACTIVE:
        if timezone.now() > build.created_at + timedelta(seconds=settings.BUILD_TIMEOUT_SECONDS):
            return _fail(job, f"the build did not finish within {settings.BUILD_TIMEOUT_SECONDS} seconds")
        return POLL_SECONDS
    if build.status == Build.Status.FAILED:
        return _fail(job, f"the build failed: {build.error}")
    with transaction.atomic():
        # Locked while deciding to launch, so a redelivered step never launches twice.
        job = Job.objects.select_for_update(of=("self",)).select_related("version__template", "build", "node").get(pk=job.pk)
        if job.state != State.BUILDING:
            return None
        node = job.node or _place(job)
        if node is None:
            return None
        runner = runner_for(node)
        if not hasattr(runner, "launch_job"):
            return _fail(job, f"node {node.name} runs services only (its {node.runner} runner cannot run jobs)")
        try:
            if runner.status(job.handle).phase == RunPhase.MISSING:
                with _input_files(job) as files:
                    runner.launch_job(_job_spec(job, files))
        except RunnerError as exc:
            return _fail(job, f"the job could not be launched on {node.name}: {exc}")
        job_transition(job_id=job.pk, to=State.RUNNING, expect=(State.BUILDING,), node=node,
                       message=f"launched on {node.name} from {build.image_reference}")
    return POLL_SECONDS


def _place(job: Job) -> Node | None:
    if not Node.objects.exists():
        node_register_local()
    try:
        placement = place(resources_of(manifest_of(job.version)), schedulable_capacities())
    except NoNodeFits as exc:
        _fail(job, str(exc))
        return None
    node = Node.objects.get(name=placement.node)
    Job.objects.filter(pk=job.pk).update(node=node)
    return node


@contextlib.contextmanager
def _input_files(job: Job) -> Iterator[tuple[JobInputFile, ...]]:
    """The job's uploaded files, fetched from the artifact storage (and checked) into a local folder."""
    stored = {name: value for name, value in job.inputs.items() if isinstance(value, dict)}
    with tempfile.TemporaryDirectory(prefix="job-inputs-") as folder:
        yield tuple(
            JobInputFile(name=name, source=str(artifact_copy_verified(sha256=value["sha256"], target=Path(folder) / name)))
            for name, value in stored.items()
        )


def _job_spec(job: Job, files: tuple[JobInputFile, ...]) -> JobSpec:
    manifest = manifest_of(job.version)
    environment = {f"INPUT_{name.upper()}": env_text(value) for name, value in job.inputs.items()
                   if not isinstance(value, dict)}
    environment["HUB_JOB"] = job.handle
    return JobSpec(
        job=job.handle, image=job.build.image_reference, command=tuple(manifest.job.command),
        resources=resources_of(manifest), environment=environment, input_files=files,
        outputs=_outputs_of(manifest),
        labels={"io.aihub.template": manifest.name, "io.aihub.version": manifest.version, "io.aihub.kind": "job"},
    )


def _outputs_of(manifest: Manifest) -> tuple[JobOutputSpec, ...]:
    return tuple(JobOutputSpec(name=output.name, path=output.path) for output in manifest.job.outputs)


def _watch(job: Job) -> float | None:
    runner = runner_for(job.node)
    try:
        run = runner.status(job.handle)
    except RunnerError as exc:
        logger.warning("job %s: node %s did not answer (%s); looking again later", job.handle, job.node.name, exc)
        return POLL_SECONDS * 5
    if run.alive:
        if timezone.now() - job.started_at > timedelta(seconds=settings.JOB_TIMEOUT_SECONDS):
            reason = exit_reason(runner, run, f"ran longer than {settings.JOB_TIMEOUT_SECONDS} seconds and was stopped")
            stop_quietly(runner, job.handle)
            return _finish_failed(job, runner, reason)
        return POLL_SECONDS
    if run.phase == RunPhase.MISSING:
        return _finish_failed(job, runner, f"its run vanished from node {job.node.name} (the node restarted or its "
                                           "files were removed); run the job again")
    if run.exit_code != 0:
        return _finish_failed(job, runner, exit_reason(runner, run, "exited"))
    return _finish_succeeded(job, runner, run)


def _finish_succeeded(job: Job, runner, run: RunState) -> None:
    with transaction.atomic(), tempfile.TemporaryDirectory(prefix="job-outputs-") as folder:
        # Locked: the task and the reconciler may both find the run exited; one stores its outputs.
        job = Job.objects.select_for_update(of=("self",)).select_related("version").get(pk=job.pk)
        if job.state != State.RUNNING:
            return None
        tail = _log_tail(runner, job.handle)
        try:
            collected = runner.collect_outputs(job.handle, _outputs_of(manifest_of(job.version)), into=folder,
                                               max_bytes=settings.JOB_OUTPUT_MAX_BYTES)
        except RunnerError as exc:
            job_transition(job_id=job.pk, to=State.FAILED, message=f"its outputs could not be taken: {exc}", log_tail=tail)
            _remove_run(runner, job.handle)
            return None
        # Held until these rows commit: removing another job's file of the same digest waits for them.
        for sha256 in sorted({output.sha256 for output in collected}):
            artifact_lock(sha256)
        artifacts = [_stored_artifact(job, output) for output in collected]
        JobArtifact.objects.bulk_create(artifacts)
        metrics = _metrics_from(collected)
        summary = ", ".join(f"{artifact.name} sha256:{artifact.sha256[:12]}" for artifact in artifacts)
        job_transition(job_id=job.pk, to=State.SUCCEEDED, message=f"exited 0; stored {summary or 'no outputs'}",
                       metrics=metrics, log_tail=tail)
    _remove_run(runner, job.handle)
    return None


def _stored_artifact(job: Job, output: CollectedOutput) -> JobArtifact:
    path = artifact_storage_path(output.sha256)
    with open(output.file, "rb") as file:
        blob_put(storage=storages["artifacts"], path=path, file=file, size=output.size)
    return JobArtifact(job=job, name=output.name, path=output.path, sha256=output.sha256, size=output.size,
                       storage_path=path)


def _metrics_from(collected: list[CollectedOutput]) -> dict:
    """The job's own figures: the top-level object of the output named metrics.json, if any."""
    for output in collected:
        if Path(output.path).name == METRICS_FILE and output.size <= METRICS_MAX_BYTES:
            try:
                parsed = json.loads(Path(output.file).read_bytes())
            except (ValueError, UnicodeDecodeError):
                return {"problem": f"{output.path} is not valid JSON"}
            return parsed if isinstance(parsed, dict) else {"problem": f"{output.path} is not a JSON object"}
    return {}


def _finish_failed(job: Job, runner, reason: str) -> None:
    try:
        job_transition(job_id=job.pk, to=State.FAILED, expect=(State.RUNNING,), message=reason,
                       log_tail=_log_tail(runner, job.handle))
    except TransitionRefused as exc:
        logger.info("not failing %s: %s", job.handle, exc)
        return None
    _remove_run(runner, job.handle)
    return None


def _log_tail(runner, handle: str) -> str:
    try:
        return runner.logs(handle, tail=LOG_TAIL_LINES)
    except RunnerError:
        return ""


def _remove_run(runner, handle: str) -> None:
    try:
        runner.remove_job(handle)
    except RunnerError as exc:
        logger.warning("could not remove the finished job %s: %s", handle, exc)


def _fail(job: Job, reason: str) -> None:
    try:
        job_transition(job_id=job.pk, to=State.FAILED, expect=(job.state,), message=reason)
    except TransitionRefused as exc:
        logger.info("not failing %s: %s", job.handle, exc)
    return None


def jobs_reconcile() -> list[str]:
    """Advance every job still in flight: one whose progress task was lost with its worker
    is finished (or failed) here instead of staying `running` forever. The handles moved on."""
    moved = []
    for job_id, handle, state in Job.objects.filter(state__in=Job.IN_FLIGHT).values_list("pk", "handle", "state"):
        job_advance(job_id=job_id)
        if Job.objects.filter(pk=job_id).exclude(state__in=[state]).exists():
            moved.append(handle)
    return moved

