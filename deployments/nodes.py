"""Node services: register, probe, drain."""

import logging
import re
from decimal import Decimal

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
) -> Node:
    """Register a node whose inventory is probed through its runner, never typed in."""
    if not NAME_PATTERN.match(name):
        raise NodeRejected(f"{name!r} is not a node name: use lowercase letters, digits and hyphens, e.g. gpu-a100-1")
    if price_per_hour < 0:
        raise NodeRejected("the price per hour cannot be negative")
    _check_runner_choice(runner)
    node = Node(name=name, runner=runner, engine_url=engine_url, address=address, price_per_hour=price_per_hour,
                labels=labels or {}, cpus=Decimal(1), memory_gb=Decimal(1))
    _apply_inventory(node, node_probe(node=node))
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
        return node_add(name=LOCAL_NODE, runner=runner)
    except NodeRejected:
        # Registered meanwhile by another worker: that row is the one.
        existing = Node.objects.filter(name=LOCAL_NODE).first()
        if existing is None:
            raise
        return existing


def node_drain(*, name: str) -> list[Deployment]:
    """Take a node out of scheduling and move what runs there: each deployment goes back
    to scheduling (placed elsewhere and started by the flow) and its run here is stopped."""
    node = Node.objects.filter(name=name).first()
    if node is None:
        raise NodeRejected(f"no node named {name!r}; `manage.py node_list` shows them")
    Node.objects.filter(pk=node.pk).update(schedulable=False)
    moved = []
    active = (Deployment.State.STARTING, Deployment.State.RUNNING)
    for deployment in Deployment.objects.filter(node=node, state__in=active).order_by("pk"):
        try:
            moved.append(deployment_transition(
                deployment_id=deployment.pk, to=Deployment.State.SCHEDULING, expect=active, node=None, endpoint="",
                message=f"moving off node {name}, which is being drained",
            ))
        except TransitionRefused:
            continue
        _stop_quietly(node, deployment.handle)
    return moved


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
        raise NodeRejected(f"unknown runner {runner!r}: use process, docker, or the dotted path of a runner class") from None


def _apply_inventory(node: Node, inventory: Inventory) -> None:
    node.cpus = Decimal(str(round(inventory.cpus, 2)))
    node.memory_gb = Decimal(str(round(inventory.memory_gb, 1)))
    node.gpus = [gpu.memory_gb for gpu in inventory.gpus]
    node.gpu_model = inventory.gpus[0].model if inventory.gpus else ""
