"""Reads of nodes and deployments, scoped to who asks."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, FloatField, IntegerField, Q, QuerySet, Sum, Value
from django.db.models.functions import Cast
from django.utils import timezone

from runners.scheduler import NodeCapacity
from templates_catalog.access import may_manage_deployment

from .models import Deployment, DeploymentEvent, EndpointToken, Job, Node


@dataclass(frozen=True)
class NodeUsage:
    cpu: Decimal = Decimal(0)
    memory_gb: Decimal = Decimal(0)
    gpus: int = 0
    deployments: int = 0


@dataclass(frozen=True)
class Usage:
    requests: int
    errors: int
    bytes_in: int
    bytes_out: int
    awake_seconds: float
    cost: Decimal


COST_PLACES = Decimal("0.000001")


def cost_of(seconds: float, price_per_hour: Decimal | None) -> Decimal:
    """What `seconds` awake cost at `price_per_hour`, to the millionth."""
    return (Decimal(str(seconds)) * (price_per_hour or Decimal(0)) / 3600).quantize(COST_PLACES)


def deployment_usage(deployment: Deployment, *, now: datetime | None = None) -> Usage:
    """Its counters, and its awake time and cost so far: the closed intervals plus the open one."""
    awake_seconds, cost = deployment.awake_seconds, deployment.awake_cost
    if deployment.awake_since is not None:
        open_seconds = max(((now or timezone.now()) - deployment.awake_since).total_seconds(), 0.0)
        awake_seconds += open_seconds
        cost += cost_of(open_seconds, deployment.price_per_hour)
    return Usage(
        requests=deployment.requests, errors=deployment.errors, bytes_in=deployment.bytes_in,
        bytes_out=deployment.bytes_out, awake_seconds=awake_seconds, cost=cost,
    )


def deployments_of(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Deployment]:
    """The user's deployments, newest first, with what a list shows in one query."""
    if not user.is_authenticated:
        return Deployment.objects.none()
    return (
        Deployment.objects.filter(owner_id=user.pk, deleted_at__isnull=True)
        .select_related("version__template", "node", "build")
        .order_by("-created_at", "-pk")
    )


def deployment_of(user: AbstractBaseUser | AnonymousUser, handle: str) -> Deployment | None:
    """One deployment by handle, or None when it is not the user's (callers answer 404)."""
    deployment = deployments_of(user).filter(handle=handle).first()
    if deployment is None or not may_manage_deployment(user, deployment.owner_id):
        return None
    return deployment


def deployment_events(deployment: Deployment) -> QuerySet[DeploymentEvent]:
    return DeploymentEvent.objects.filter(deployment=deployment).order_by("at", "pk")


def node_usage(node_ids: list[int] | None = None) -> dict[int, NodeUsage]:
    """What the deployments holding capacity and the running jobs use on each node (or only
    on `node_ids`): one query (the two aggregates as one UNION ALL)."""
    holding = Deployment.objects.filter(node__isnull=False, state__in=Deployment.HOLDING)
    running_jobs = Job.objects.filter(node__isnull=False, state=Job.State.RUNNING)
    if node_ids is not None:
        holding, running_jobs = holding.filter(node_id__in=node_ids), running_jobs.filter(node_id__in=node_ids)
    used = dict(cpu=Sum("cpu"), memory_gb=Sum("memory_gb"), gpus=Sum("gpus"))
    rows = (
        holding.order_by().values("node_id").annotate(**used, deployments=Count("pk"))
        .union(running_jobs.order_by().values("node_id").annotate(**used, deployments=Value(0, IntegerField())), all=True)
    )
    usage: dict[int, NodeUsage] = {}
    for row in rows:
        before = usage.get(row["node_id"], NodeUsage())
        usage[row["node_id"]] = NodeUsage(
            cpu=before.cpu + row["cpu"], memory_gb=before.memory_gb + row["memory_gb"], gpus=before.gpus + row["gpus"],
            deployments=before.deployments + row["deployments"],
        )
    return usage


def schedulable_capacities() -> list[NodeCapacity]:
    """The free capacity of every schedulable node in two queries, read as plain rows with
    the numbers cast to floats by the database: the scheduler reads every node for each
    placement, and a thousand model instances (or Decimals) cost more than placing."""
    rows = Node.objects.filter(schedulable=True, lost_reason="").order_by("pk").values_list(
        "pk", "name", "price_per_hour", Cast("cpus", FloatField()), Cast("memory_gb", FloatField()), "gpus", "gpu_model",
    )
    usage = node_usage()
    return [_capacity(name, price, cpus, memory, gpus, model, usage.get(pk)) for pk, name, price, cpus, memory, gpus, model in rows]


def node_capacities(nodes: list[Node], *, totals: bool = False) -> list[NodeCapacity]:
    """Each node's free capacity (or, with `totals`, all of it: what could ever fit)."""
    usage = {} if totals else node_usage([node.pk for node in nodes] if len(nodes) == 1 else None)
    return [
        _capacity(node.name, node.price_per_hour, float(node.cpus), float(node.memory_gb), node.gpus, node.gpu_model,
                  usage.get(node.pk))
        for node in nodes
    ]


def _capacity(name: str, price: Decimal, cpus: float, memory_gb: float, gpus: list, gpu_model: str,
              used: NodeUsage | None) -> NodeCapacity:
    # GPUs are whole; the used ones are counted off the largest, the cautious guess.
    used = used or NodeUsage()
    sizes = sorted(float(memory) for memory in gpus)
    return NodeCapacity(
        name=name,
        price_per_hour=price,
        cpus_free=cpus - float(used.cpu),
        memory_free_gb=memory_gb - float(used.memory_gb),
        gpus_free=tuple(sizes[: max(len(sizes) - used.gpus, 0)]),
        gpu_model=gpu_model,
        cpus_total=cpus,
        memory_total_gb=memory_gb,
    )


def schedulable_nodes() -> QuerySet[Node]:
    return Node.objects.filter(Q(schedulable=True), lost_reason="").order_by("pk")


def endpoint_tokens_of(deployment: Deployment) -> QuerySet[EndpointToken]:
    """A deployment's endpoint tokens, newest first, revoked ones included (for the record)."""
    return EndpointToken.objects.filter(deployment_id=deployment.pk).order_by("-created_at", "-pk")


def endpoint_token_of(deployment: Deployment, token_id: int) -> EndpointToken | None:
    token = endpoint_tokens_of(deployment).filter(pk=token_id).first()
    if token is not None:
        token.deployment = deployment
    return token
