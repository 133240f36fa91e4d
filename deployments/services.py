"""Every write to a deployment goes through one of these functions (state itself only
through `transitions.deployment_transition`)."""

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from runners.scheduler import NoNodeFits, place
from templates_catalog.access import may_deploy
from templates_catalog.manifest import Kind
from templates_catalog.models import TemplateVersion
from templates_catalog.specs import manifest_of, resources_of

from .models import MAX_IDLE_TIMEOUT_SECONDS, Deployment, Node
from .nodes import node_register_local
from .selectors import node_capacities, schedulable_nodes
from .specs import InputsInvalid, inputs_validate
from .transitions import deployment_open, deployment_transition, send_progress

State = Deployment.State


class DeploymentRejected(Exception):
    """The request cannot be done; `errors` are (field, message) pairs a person can act on."""

    status = 400

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None):
        self.errors = errors or [("", message)]
        super().__init__(message)


class DeploymentNotFound(DeploymentRejected):
    status = 404


class DeploymentConflict(DeploymentRejected):
    status = 409


@dataclass(frozen=True)
class DeployResult:
    deployment: Deployment
    created: bool


IDLE_TIMEOUT_HINT = (
    f"use 0 (never sleep) or a whole number of seconds from 1 to {MAX_IDLE_TIMEOUT_SECONDS} (30 days), e.g. 900"
)


def deployment_create(
    *, owner: AbstractBaseUser, version: TemplateVersion, inputs: dict, idempotency_key: str | None = None,
    idle_timeout_seconds: int | None = None,
) -> DeployResult:
    """Deploy `version` for `owner`. The same idempotency key again returns the first
    deployment; a request no node could ever fit is created `failed`, with the reason.
    `idle_timeout_seconds`: sleep after that long without a request (0: never; None: the
    hub's default)."""
    if not may_deploy(owner, version):
        raise DeploymentNotFound(f"no template version {version.template.name}@{version.version} that you may deploy")
    idle_timeout = _idle_timeout(idle_timeout_seconds)
    manifest = manifest_of(version)
    try:
        values = inputs_validate(manifest, inputs)
    except InputsInvalid as exc:
        raise DeploymentRejected("the inputs are not valid", exc.errors) from None
    if idempotency_key:
        earlier = Deployment.objects.filter(owner=owner, idempotency_key=idempotency_key).first()
        if earlier is not None:
            return DeployResult(_same_request(earlier, version, values), created=False)
    _refuse_yanked(version)
    if manifest.kind is Kind.JOB:
        raise DeploymentRejected(f"{manifest.name} is a job; jobs cannot be deployed as services yet")
    resources = resources_of(manifest)
    fields = dict(
        owner=owner, version=version, inputs=values, idempotency_key=idempotency_key or None,
        gpus=resources.gpus, gpu_memory_gb=manifest.resources.gpu_memory_gb,
        cpu=manifest.resources.cpu, memory_gb=manifest.resources.memory_gb, idle_timeout_seconds=idle_timeout,
    )
    never = _why_it_can_never_fit(resources)
    try:
        with transaction.atomic():
            deployment = deployment_open(**fields)
            if never:
                deployment = deployment_transition(deployment_id=deployment.pk, to=State.FAILED, message=never)
    except IntegrityError:
        if not idempotency_key:
            raise
        # The same key submitted twice at once: the other request's row won.
        earlier = Deployment.objects.get(owner=owner, idempotency_key=idempotency_key)
        return DeployResult(_same_request(earlier, version, values), created=False)
    return DeployResult(deployment, created=True)


def _idle_timeout(requested: int | None) -> int:
    if requested is None:
        return settings.DEPLOY_IDLE_TIMEOUT_SECONDS
    if isinstance(requested, bool) or not isinstance(requested, int) or not 0 <= requested <= MAX_IDLE_TIMEOUT_SECONDS:
        raise DeploymentRejected("the idle timeout is not valid", [("idle_timeout_seconds", IDLE_TIMEOUT_HINT)])
    return requested


def _refuse_yanked(version: TemplateVersion) -> None:
    if not version.yanked:
        return
    latest = version.template.latest_version
    instead = f"; deploy {latest.version} instead" if latest and not latest.yanked and latest.pk != version.pk else ""
    why = f" ({version.yanked_reason})" if version.yanked_reason else ""
    raise DeploymentConflict(f"{version.template.name} {version.version} is yanked{why} and cannot be deployed{instead}")


def _same_request(earlier: Deployment, version: TemplateVersion, values: dict) -> Deployment:
    if earlier.version_id != version.pk or earlier.inputs != values:
        raise DeploymentConflict(
            f"this idempotency key was already used for {earlier.handle}, a different request; use a new key",
            [("idempotency_key", "already used for a different deployment request")],
        )
    return earlier


def _why_it_can_never_fit(resources) -> str:
    nodes = list(schedulable_nodes())
    if not nodes and not Node.objects.exists():
        nodes = [node_register_local()]
    try:
        place(resources, node_capacities(nodes, totals=True))
    except NoNodeFits as exc:
        return f"this deployment can never start: {exc}"
    return ""


def deployment_stop(*, deployment: Deployment) -> Deployment:
    """Stop it and free its node's capacity; its volume is kept. Stopping twice is fine."""
    current = Deployment.objects.get(pk=deployment.pk)
    if current.state in (State.STOPPING, State.STOPPED):
        return current
    return deployment_transition(deployment_id=deployment.pk, to=State.STOPPING, message="stop requested")


def deployment_restart(*, deployment: Deployment) -> Deployment:
    """Run a stopped or failed deployment again: same handle, a new run."""
    current = Deployment.objects.select_related("version__template__latest_version").get(pk=deployment.pk)
    if current.state not in (State.STOPPED, State.FAILED):
        raise DeploymentConflict(f"{current.handle} is {current.state}; only a stopped or failed deployment restarts")
    if current.deleted_at is not None:
        raise DeploymentNotFound(f"{current.handle} was deleted")
    _refuse_yanked(current.version)
    return deployment_transition(
        deployment_id=current.pk, to=State.PENDING, expect=(State.STOPPED, State.FAILED), restarts=0,
        message="restart requested",
    )


def deployment_delete(*, deployment: Deployment) -> Deployment:
    """Stop it and remove everything it had, its volume included. The row and its event
    log stay (marked deleted) for the record."""
    with transaction.atomic():
        current = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if current.deleted_at is None:
            Deployment.objects.filter(pk=current.pk).update(deleted_at=timezone.now())
        if current.state in (State.STOPPED, State.STOPPING):
            # Already stopped (or on its way): the flow removes what is left.
            deployment_id = current.pk
            transaction.on_commit(lambda: send_progress(deployment_id))
            return Deployment.objects.get(pk=current.pk)
        return deployment_transition(deployment_id=current.pk, to=State.STOPPING, message="delete requested")
