"""Node services: register, probe, drain."""

import logging
import re
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string

from builders.backends import docker_engine_answers
from hub_site.backends import runner_for
from runners.base import Inventory, RunnerError

from .models import Deployment, Node
from .transitions import TransitionRefused, deployment_transition

logger = logging.getLogger(__name__)
LOCAL_NODE = "local"
NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


class NodeRejected(Exception):
    """The node cannot be added or changed; the message says what to fix."""


def node_add(
    *,
    name: str,
    runner: str,
    engine_url: str = "",
    address: str = "127.0.0.1",
    price_per_hour: Decimal = Decimal(0),
    labels: dict[str, str] | None = None,
    cpu_share: int = 1,
) -> Node:
    """Register a node whose inventory is probed through its runner, never typed in.
    `cpu_share`: how many CPU reservations each of its cores takes (1 on a GPU node)."""
    if not NAME_PATTERN.match(name):
        raise NodeRejected(f"{name!r} is not a node name: use lowercase letters, digits and hyphens, e.g. gpu-a100-1")
    if price_per_hour < 0:
        raise NodeRejected("the price per hour cannot be negative")
    _check_runner_choice(runner)
    node = Node(name=name, runner=runner, engine_url=engine_url, address=address, price_per_hour=price_per_hour,
                labels=labels or {}, cpus=Decimal(1), memory_gb=Decimal(1))
    apply_inventory(node, node_probe(node=node))
    node.cpus *= cpu_share
    try:
        with transaction.atomic():
            node.save()
    except IntegrityError:
        raise NodeRejected(f"a node named {name!r} is already registered; choose another name") from None
    return node


def node_probe(*, node: Node) -> Inventory:
    try:
        return runner_for(node).inventory()
    except RunnerError as exc:
        where = node.engine_url or "this machine"
        raise NodeRejected(f"the {node.runner} runner at {where} does not answer: {exc}") from None


def node_register_local() -> Node:
    """This machine, registered once: Docker when an engine answers, else local processes.
    Called lazily, so a fresh hub deploys without a manual step."""
    existing = Node.objects.filter(name=LOCAL_NODE).first()
    if existing is not None:
        return existing
    runner = Node.RunnerKind.DOCKER if docker_engine_answers() else Node.RunnerKind.PROCESS
    try:
        return node_add(name=LOCAL_NODE, runner=runner, cpu_share=settings.LOCAL_NODE_CPU_SHARE)
    except NodeRejected:
        # Registered meanwhile by another worker: that row is the one.
        existing = Node.objects.filter(name=LOCAL_NODE).first()
        if existing is None:
            raise
        return existing


def node_drain(*, name: str, enqueue: bool = True) -> list[Deployment]:
    """Take a node out of scheduling and plan moving what runs there. The moves happen
    one at a time (`node_drain_step`, a task unless `enqueue` is False): a drain never takes
    more than one of the node's deployments down at once. Returns them in the order they move."""
    node = _node_named(name)
    Node.objects.filter(pk=node.pk).update(schedulable=False)
    plan = list(_still_on(node))
    if enqueue and plan:
        transaction.on_commit(lambda: send_drain_step(name))
    return plan


def node_drain_step(*, name: str, waiting_for: int | None = None) -> int | None:
    """One step of a drain. While the deployment moved last (`waiting_for`) is still on its
    way (scheduling, starting elsewhere), wait; once it runs elsewhere, move the next one:
    stop it here and send it back to scheduling. Returns the deployment to wait for, or None
    when the drain is over: the node is empty, made schedulable again, or a move failed
    (the others keep running here rather than fail the same way)."""
    node = _node_named(name)
    if node.schedulable:
        logger.info("drain of %s ended: the node takes deployments again", name)
        return None
    if waiting_for is not None:
        moved = Deployment.objects.filter(pk=waiting_for).first()
        if moved is not None and moved.state in MOVING:
            return waiting_for
        if moved is not None and moved.state == Deployment.State.FAILED:
            logger.warning("drain of %s stopped: %s failed to move (%s); %d deployment(s) still run there",
                           name, moved.handle, moved.reason, _still_on(node).count())
            return None
    for deployment in _still_on(node):
        if _move_off(node, deployment):
            return deployment.pk
    return None


MOVING = (Deployment.State.PENDING, Deployment.State.BUILDING, Deployment.State.SCHEDULING, Deployment.State.STARTING)
ON_A_NODE = (Deployment.State.STARTING, Deployment.State.RUNNING)


def _still_on(node: Node):
    return Deployment.objects.filter(node=node, state__in=ON_A_NODE, deleted_at__isnull=True).order_by("pk")


def _move_off(node: Node, deployment: Deployment) -> bool:
    try:
        deployment_transition(
            deployment_id=deployment.pk, to=Deployment.State.SCHEDULING, expect=ON_A_NODE, node=None, endpoint="",
            message=f"moving off node {node.name}, which is being drained",
        )
    except TransitionRefused:
        return False  # stopped or moved meanwhile: nothing to do for it
    _stop_quietly(node, deployment.handle)
    return True


def _node_named(name: str) -> Node:
    node = Node.objects.filter(name=name).first()
    if node is None:
        raise NodeRejected(f"no node named {name!r}; `manage.py node_list` shows them")
    return node


def send_drain_step(name: str, *, waiting_for: int | None = None, countdown: float = 0) -> None:
    from .tasks import node_drain_step as node_drain_step_task

    node_drain_step_task.apply_async((name, waiting_for), countdown=countdown)


def _stop_quietly(node: Node, handle: str) -> None:
    try:
        runner_for(node).stop(handle)
    except RunnerError as exc:
        # The reconciler removes it once the node answers again: it no longer belongs there.
        logger.warning("could not stop %s on drained node %s: %s", handle, node.name, exc)


def _check_runner_choice(runner: str) -> None:
    if runner in Node.RunnerKind.values:
        return
    try:
        import_string(runner)
    except ImportError:
        raise NodeRejected(f"unknown runner {runner!r}: use process, docker, kubernetes, swarm, or the dotted path of a runner class") from None


def apply_inventory(node: Node, inventory: Inventory) -> None:
    node.cpus = Decimal(str(round(inventory.cpus, 2)))
    node.memory_gb = Decimal(str(round(inventory.memory_gb, 1)))
    node.gpus = [gpu.memory_gb for gpu in inventory.gpus]
    node.gpu_model = inventory.gpus[0].model if inventory.gpus else ""
