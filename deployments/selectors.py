"""Reads of nodes and deployments, scoped to who asks."""

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, Q, QuerySet, Sum

from runners.scheduler import NodeCapacity
from templates_catalog.access import may_manage_deployment

from .models import Deployment, DeploymentEvent, Node


@dataclass(frozen=True)
class NodeUsage:
    cpu: Decimal = Decimal(0)
    memory_gb: Decimal = Decimal(0)
    gpus: int = 0
    deployments: int = 0


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


def node_usage() -> dict[int, NodeUsage]:
    """What the deployments holding capacity use on each node: one aggregate query."""
    rows = (
        Deployment.objects.filter(node__isnull=False, state__in=Deployment.HOLDING)
        .values("node_id")
        .annotate(cpu=Sum("cpu"), memory_gb=Sum("memory_gb"), gpus=Sum("gpus"), deployments=Count("pk"))
    )
    return {
        row["node_id"]: NodeUsage(cpu=row["cpu"], memory_gb=row["memory_gb"], gpus=row["gpus"], deployments=row["deployments"])
        for row in rows
    }


def node_capacities(nodes: list[Node], *, totals: bool = False) -> list[NodeCapacity]:
    """Each node's free capacity (or, with `totals`, all of it: what could ever fit).
    GPUs are whole; the used ones are counted off the largest, the cautious guess."""
    usage = {} if totals else node_usage()
    capacities = []
    for node in nodes:
        used = usage.get(node.pk, NodeUsage())
        gpus = sorted(float(memory) for memory in node.gpus)
        free_gpus = gpus[: max(len(gpus) - used.gpus, 0)]
        capacities.append(
            NodeCapacity(
                name=node.name,
                price_per_hour=node.price_per_hour,
                cpus_free=float(node.cpus - used.cpu),
                memory_free_gb=float(node.memory_gb - used.memory_gb),
                gpus_free=tuple(free_gpus),
                gpu_model=node.gpu_model,
                cpus_total=float(node.cpus),
                memory_total_gb=float(node.memory_gb),
            )
        )
    return capacities


def schedulable_nodes() -> QuerySet[Node]:
    return Node.objects.filter(Q(schedulable=True)).order_by("pk")
