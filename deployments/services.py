"""Every write to a deployment goes through one of these functions (state itself only
through `transitions.deployment_transition`)."""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from hub_site.backends import runner_for
from runners.base import RunnerError
from runners.scheduler import NoNodeFits, place
from templates_catalog.access import may_deploy
from templates_catalog.manifest import Kind
from templates_catalog.models import TemplateVersion
from templates_catalog.resolution import Graph, Part, ResolutionRefused, graph_resolve
from templates_catalog.specs import manifest_of, resources_of

from .graphs import (
    REUSABLE,
    Plan,
    edges_release,
    graph_lock,
    graph_parts_open,
    graph_plan,
    live_edges,
    requirement_failed,
    resource_fields,
)
from .models import MAX_IDLE_TIMEOUT_SECONDS, Deployment, DeploymentEdge, Node
from .nodes import node_register_local
from .selectors import node_capacities, schedulable_nodes
from .specs import InputsInvalid, inputs_validate
from .transitions import TransitionRefused, deployment_open, deployment_transition, send_progress

logger = logging.getLogger(__name__)
State = Deployment.State
# Up, asleep or on its way up: a dependant in one of these states fails when a part under it fails.
ACTIVE = REUSABLE


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
    refuse_yanked(version)
    if manifest.kind is Kind.JOB:
        raise DeploymentRejected(f"{manifest.name} is a job; jobs cannot be deployed as services yet")
    graph = _resolved(owner, version) if manifest.requires else None
    fields = dict(
        owner=owner, version=version, inputs=values, idempotency_key=idempotency_key or None,
        idle_timeout_seconds=idle_timeout, lock=graph.as_lock() if graph else {}, **resource_fields(manifest),
    )
    never = _why_it_can_never_fit(resources_of(manifest)) or (_why_a_part_can_never_fit(owner, graph) if graph else "")
    try:
        with transaction.atomic():
            deployment = deployment_open(**fields)
            if never:
                deployment = deployment_transition(deployment_id=deployment.pk, to=State.FAILED, message=never)
            elif graph:
                graph_parts_open(root=deployment, graph=graph, idle_timeout_seconds=idle_timeout)
    except IntegrityError:
        if not idempotency_key:
            raise
        # The same key submitted twice at once: the other request's row won.
        earlier = Deployment.objects.get(owner=owner, idempotency_key=idempotency_key)
        return DeployResult(_same_request(earlier, version, values), created=False)
    return DeployResult(deployment, created=True)


def deployment_plan(*, owner: AbstractBaseUser, version: TemplateVersion) -> Plan:
    """What deploying `version` now would do, deploying nothing: each part of its graph
    (itself alone when it requires nothing), the node it would go to or the deployment it
    would reuse, its price, and the total per hour. Raises DeploymentRejected as a deploy
    would for a version that cannot be deployed or a graph that cannot be resolved."""
    if not may_deploy(owner, version):
        raise DeploymentNotFound(f"no template version {version.template.name}@{version.version} that you may deploy")
    refuse_yanked(version)
    if manifest_of(version).requires:
        graph = _resolved(owner, version)
    else:
        name = version.template.name
        graph = Graph(root=name, parts=(Part(template=name, version=version.version, version_id=version.pk,
                                             digest=version.bundle_sha256),), edges=())
    return graph_plan(owner=owner, graph=graph)


def _resolved(owner: AbstractBaseUser, version: TemplateVersion) -> Graph:
    try:
        return graph_resolve(version, user=owner)
    except ResolutionRefused as exc:
        raise DeploymentRejected(f"its requirements cannot be resolved: {exc}", [("requires", str(exc))]) from None


def _why_a_part_can_never_fit(owner: AbstractBaseUser, graph: Graph) -> str:
    """Whether every part of the graph fits the nodes at all (not now: ever)."""
    nodes = list(schedulable_nodes())
    for part in graph_plan(owner=owner, graph=graph, nodes=node_capacities(nodes, totals=True)).parts:
        if part.problem:
            return f"this deployment can never start: its part {part.template} {part.version} {part.problem}"
    return ""


def _idle_timeout(requested: int | None) -> int:
    if requested is None:
        return settings.DEPLOY_IDLE_TIMEOUT_SECONDS
    if isinstance(requested, bool) or not isinstance(requested, int) or not 0 <= requested <= MAX_IDLE_TIMEOUT_SECONDS:
        raise DeploymentRejected("the idle timeout is not valid", [("idle_timeout_seconds", IDLE_TIMEOUT_HINT)])
    return requested


def refuse_yanked(version: TemplateVersion) -> None:
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


def deployment_stop(*, deployment: Deployment, message: str = "stop requested") -> Deployment:
    """Stop it and free its node's capacity; its volume is kept. Stopping twice is fine.
    The parts of its graph that nothing else uses stop with it."""
    with transaction.atomic():
        graph_lock(owner_id=deployment.owner_id)
        current = Deployment.objects.get(pk=deployment.pk)
        if current.state not in (State.STOPPING, State.STOPPED):
            current = deployment_transition(deployment_id=deployment.pk, to=State.STOPPING, message=message)
        graph_release(deployment=current)
    return current


def graph_release(*, deployment: Deployment, delete: bool = False) -> None:
    """`deployment` no longer needs its requirements: release its edges, and stop (or, with
    `delete`, delete) each graph part no edge holds any more, down the graph. A deployment
    its owner made directly is left as it is, and a failed part stays failed (its reason
    is the graph's story; its run, if any, is stopped by deployment_fail or the reconciler).

    Each requirement's row is locked before its edges are counted, in the order of their
    keys: two apps released at once that share a part see each other's release, so the
    last one stops it, and neither leaves it running nor stops it under the other."""
    mine = DeploymentEdge.objects.filter(dependant_id=deployment.pk)
    requirement_ids = sorted(set(mine.values_list("requirement_id", flat=True)))
    if not requirement_ids:
        return
    with transaction.atomic():
        requirements = list(Deployment.objects.select_for_update().filter(pk__in=requirement_ids).order_by("pk"))
        edges_release(mine.filter(released_at__isnull=True))
        held = set(live_edges().filter(requirement_id__in=requirement_ids).values_list("requirement_id", flat=True))
        for requirement in requirements:
            if not requirement.graph_part or requirement.pk in held:
                continue
            if delete:
                deployment_delete(deployment=requirement, message=f"deleted with {deployment.handle}, the last that used it")
            elif requirement.state not in (State.STOPPING, State.STOPPED, State.FAILED):
                deployment_stop(deployment=requirement, message=f"stopped with {deployment.handle}, the last that used it")


def deployment_fail(*, deployment: Deployment, reason: str, expect: tuple[str, ...]) -> list[Deployment]:
    """Fail `deployment` with `reason`, and the graph above it: each active dependant
    still holding an edge to it fails too, its reason naming this part and carrying its
    reason, and so on up to the app. What each of them alone used is stopped
    (graph_release; a part its owner made directly never is), and the runs of the
    dependants that were up are stopped once this commits. Returns every deployment
    failed, this one first. TransitionRefused when it moved on from `expect` meanwhile.

    Called by workers (the flow, the reconciler): stopping a run talks to its node."""
    with transaction.atomic():
        # Before any row: the climb up the graph locks dependants after their requirements,
        # the reverse of a stop's way down; the owner's graph changes take turns instead.
        graph_lock(owner_id=deployment.owner_id)
        return _fail_up(deployment.pk, reason, expect)


def _fail_up(deployment_id: int, reason: str, expect: tuple[str, ...]) -> list[Deployment]:
    failed = [deployment_transition(deployment_id=deployment_id, to=State.FAILED, expect=expect, message=reason)]
    graph_release(deployment=failed[0])
    edges = (
        live_edges().filter(requirement_id=deployment_id, dependant__state__in=ACTIVE, dependant__deleted_at__isnull=True)
        .select_related("requirement__version__template", "dependant__node").order_by("dependant_id")
    )
    for edge in edges:
        dependant = edge.dependant
        try:
            # Failed meanwhile by another way up (a diamond): refused, and left as it is.
            failed += _fail_up(dependant.pk, requirement_failed(edge, reason), ACTIVE)
        except TransitionRefused:
            continue
        if dependant.state in Deployment.AWAKE:
            _run_stop_on_commit(dependant)
    return failed


def _run_stop_on_commit(deployment: Deployment) -> None:
    """A failed deployment holds nothing on its node: its run must not keep using it. Should
    the node not answer, the reconciler stops the run of a failed deployment when it does."""
    node, handle = deployment.node, deployment.handle

    def stop() -> None:
        try:
            runner_for(node).stop(handle)
        except RunnerError as exc:
            logger.warning("could not stop the run of failed %s: %s (the reconciler retries)", handle, exc)

    transaction.on_commit(stop)


def deployment_restart(*, deployment: Deployment) -> Deployment:
    """Run a stopped or failed deployment again: same handle, a new run."""
    current = Deployment.objects.select_related("version__template__latest_version").get(pk=deployment.pk)
    if current.state not in (State.STOPPED, State.FAILED):
        raise DeploymentConflict(f"{current.handle} is {current.state}; only a stopped or failed deployment restarts")
    if current.deleted_at is not None:
        raise DeploymentNotFound(f"{current.handle} was deleted")
    refuse_yanked(current.version)
    if current.lock and not live_edges().filter(dependant_id=current.pk).exists():
        raise DeploymentConflict(
            f"{current.handle}'s requirements were let go when it stopped; deploy {current.version.template.name} again "
            "to bring its whole graph up"
        )
    return deployment_transition(
        deployment_id=current.pk, to=State.PENDING, expect=(State.STOPPED, State.FAILED), restarts=0,
        message="restart requested",
    )


def deployment_delete(*, deployment: Deployment, message: str = "delete requested") -> Deployment:
    """Stop it and remove everything it had, its volume included. The row and its event
    log stay (marked deleted) for the record. The parts of its graph that nothing else
    uses are deleted with it."""
    with transaction.atomic():
        graph_lock(owner_id=deployment.owner_id)
        current = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if current.deleted_at is None:
            Deployment.objects.filter(pk=current.pk).update(deleted_at=timezone.now())
        if current.state in (State.STOPPED, State.STOPPING):
            # Already stopped (or on its way): the flow removes what is left.
            deployment_id = current.pk
            transaction.on_commit(lambda: send_progress(deployment_id))
            current = Deployment.objects.get(pk=current.pk)
        else:
            current = deployment_transition(deployment_id=current.pk, to=State.STOPPING, message=message)
        graph_release(deployment=current, delete=True)
    return current
