"""Node pools: a swarm or a Kubernetes cluster, read whole into Node rows.

Adding a pool again refreshes it: each node of the swarm (by its swarm node id) or each GPU
pool of the cluster (by its engine URL) keeps its row, with the inventory, price and address
read afresh; a swarm node that is gone from the swarm is marked lost, never deleted (its
deployments' history points at it). The operator's choices (drained or not) are kept.
"""

import os
import re
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import parse_qs, urlencode, urlsplit

from django.db import IntegrityError, transaction
from django.utils import timezone

from runners.base import Inventory, RunnerError
from runners.kubernetes import KubernetesRunner
from runners.swarm import HUB_NODE_LABEL, swarm_nodes

from .models import Node, NodePool
from .nodes import NAME_PATTERN, NodeRejected, apply_inventory

POOL_NAME_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")


@dataclass(frozen=True)
class PoolMember:
    """One node row of a pool as its engine reports it; `key` identifies it across refreshes
    (a swarm node's id, a cluster's GPU product); an empty `address` keeps the row's."""

    key: str
    name: str
    engine_url: str
    address: str
    price_per_hour: Decimal
    inventory: Inventory
    labels: dict[str, str]


@dataclass(frozen=True)
class PoolRefresh:
    pool: NodePool
    added: list[Node]
    updated: list[Node]
    lost: list[Node]


def node_pool_add(*, name: str, swarm_manager: str = "", kubeconfig: str = "", context: str = "",
                  namespace: str = "aihub", address: str = "") -> PoolRefresh:
    """Register (or refresh) the swarm whose manager answers at `swarm_manager`, or the
    cluster of `kubeconfig`: one Node row per swarm node, or per GPU product of the cluster.
    `address`: where the hub reaches a cluster's node ports (a swarm node's is its own)."""
    if not POOL_NAME_PATTERN.match(name):
        raise NodeRejected(f"{name!r} is not a pool name: use up to 32 lowercase letters, digits and hyphens, e.g. gpu-swarm")
    if bool(swarm_manager) == bool(kubeconfig):
        raise NodeRejected("name the pool's engine: --swarm MANAGER_URL or --kubeconfig PATH, one of them")
    try:
        if swarm_manager:
            kind, engine_url, members = NodePool.Kind.SWARM, swarm_manager, _swarm_members(name, swarm_manager)
        else:
            engine_url = _kubeconfig_url(kubeconfig, context=context, namespace=namespace)
            kind, members = NodePool.Kind.KUBERNETES, _cluster_members(name, engine_url, address)
    except RunnerError as exc:
        raise NodeRejected(str(exc)) from None
    return _refresh(name, kind, engine_url, members)


def _swarm_members(pool: str, manager: str) -> list[PoolMember]:
    return [
        PoolMember(key=node.id, name=_node_name(pool, node.hostname, node.id[:6]), engine_url=manager,
                   address=node.address, price_per_hour=node.price_per_hour, inventory=node.inventory,
                   labels={HUB_NODE_LABEL: node.id})
        for node in swarm_nodes(manager)
    ]


def _cluster_members(pool: str, engine_url: str, address: str) -> list[PoolMember]:
    pools = KubernetesRunner(base_url=engine_url).pools()
    if not pools:
        raise RunnerError("the cluster has no schedulable node: nothing to register")
    members = []
    for gpu_pool in pools:
        url = f"{engine_url}&{urlencode({'gpu_product': gpu_pool.gpu_product})}" if gpu_pool.gpu_product else engine_url
        members.append(PoolMember(
            key=gpu_pool.gpu_product, name=_node_name(pool, gpu_pool.gpu_product), engine_url=url, address=address,
            price_per_hour=gpu_pool.price_per_hour, inventory=gpu_pool.inventory, labels={},
        ))
    return members


def _kubeconfig_url(path: str, *, context: str, namespace: str) -> str:
    if not os.path.isfile(path):
        raise RunnerError(f"--kubeconfig {path}: no such file; give the path of the cluster's kubeconfig")
    path = os.path.abspath(path)
    query = {"namespace": namespace, **({"context": context} if context else {})}
    return f"kubeconfig://{path}?{urlencode(query)}"


def _node_name(pool: str, *parts: str) -> str:
    """`pool-part-…` as a node name: lowercase, hyphens for anything else, at most 64 characters."""
    words = [re.sub(r"[^a-z0-9]+", "-", part.lower()).strip("-") for part in parts if part]
    name = "-".join([pool, *filter(None, words)])
    if len(name) > 64:  # keep the tail: it is what tells the nodes apart (a swarm node's id)
        name = f"{name[:57].rstrip('-')}-{name[-6:].lstrip('-')}"
    return name


def _refresh(name: str, kind: str, engine_url: str, members: list[PoolMember]) -> PoolRefresh:
    try:
        return _refresh_once(name, kind, engine_url, members)
    except IntegrityError:
        pass  # the same pool added by another run at the same time: refresh what it made
    try:
        return _refresh_once(name, kind, engine_url, members)
    except IntegrityError:
        taken = ", ".join(member.name for member in members)
        raise NodeRejected(f"a node outside the pool {name!r} already has one of the names {taken}; "
                           "choose another pool name") from None


def _refresh_once(name: str, kind: str, engine_url: str, members: list[PoolMember]) -> PoolRefresh:
    added, updated = [], []
    with transaction.atomic():
        # Locked: a refresh reads the pool's rows and writes them back; two at once would both add.
        pool, _ = NodePool.objects.select_for_update().get_or_create(
            name=name, defaults={"kind": kind, "engine_url": engine_url})
        if pool.kind != kind:
            raise NodeRejected(f"the pool {name!r} is a {pool.get_kind_display()}; choose another name for this one")
        pool.engine_url, pool.refreshed_at = engine_url, timezone.now()
        pool.save()
        existing = {_key_of(node): node for node in pool.nodes.all()}
        for member in members:
            node = existing.pop(member.key, None)
            (updated if node is not None else added).append(_save_member(pool, node, member))
        lost = [_mark_gone(node, pool) for node in existing.values()]
    return PoolRefresh(pool=pool, added=added, updated=updated, lost=lost)


def _key_of(node: Node) -> str:
    """What identifies a pool's node across refreshes: its swarm node id, or its GPU product."""
    if node.runner == NodePool.Kind.SWARM:
        return node.labels.get(HUB_NODE_LABEL, "")
    return parse_qs(urlsplit(node.engine_url).query).get("gpu_product", [""])[-1]


def _save_member(pool: NodePool, node: Node | None, member: PoolMember) -> Node:
    if not NAME_PATTERN.match(member.name):
        raise NodeRejected(f"{member.name!r} is not a node name; choose a shorter pool name")
    if node is None:
        node = Node(name=member.name, runner=pool.kind, pool=pool)
    # A cluster refreshed without --address keeps the one it was added with.
    node.engine_url, node.address = member.engine_url, member.address or node.address
    node.price_per_hour = member.price_per_hour
    node.labels = {**node.labels, **member.labels}
    node.lost_reason = ""  # the reconciler says otherwise if it does not answer
    apply_inventory(node, member.inventory)
    node.save()
    return node


def _mark_gone(node: Node, pool: NodePool) -> Node:
    where = "swarm" if pool.kind == NodePool.Kind.SWARM else "cluster"
    node.lost_reason = f"node {node.name} left the {where} (`manage.py node_pool_add {pool.name}` no longer found it)"
    node.save(update_fields=["lost_reason"])
    return node
