"""An app's graph of deployments: the plan shown before Deploy, the parts opened (or reused)
by it, the wiring each part launches with, and the live graph its page draws.

Each `DeploymentEdge` says a dependant calls a requirement through the hub's gateway; an
edge not yet released holds its requirement up (`services.graph_release` counts them).
"""

from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone

from hub_site.serve import is_loopback
from runners.base import Resources
from runners.docker import HOST_ALIAS
from runners.scheduler import NodeCapacity, NoNodeFits, place
from templates_catalog.manifest import Manifest
from templates_catalog.models import TemplateVersion
from templates_catalog.resolution import Graph
from templates_catalog.specs import manifest_of, resources_of

from .models import Deployment, DeploymentEdge, Node
from .nodes import node_register_local
from .selectors import schedulable_capacities
from .transitions import deployment_open

State = Deployment.State
# A deployment of the same version in one of these states is reused by a later graph
# instead of starting another copy: already up, asleep (a request wakes it), or on its way.
REUSABLE = (State.PENDING, State.BUILDING, State.SCHEDULING, State.STARTING, State.RUNNING, State.SLEEPING)
# A requirement in one of these states answers (a sleeping one is woken by the first call).
UP = (State.RUNNING, State.SLEEPING)
GONE = (State.STOPPING, State.STOPPED, State.FAILED)


@dataclass(frozen=True)
class PlannedPart:
    template: str
    version: str
    # The handle of the running deployment it reuses; empty when it deploys a new one.
    reuses: str = ""
    node: str = ""
    price_per_hour: Decimal | None = None
    problem: str = ""


@dataclass(frozen=True)
class Plan:
    parts: tuple[PlannedPart, ...]

    @property
    def total_per_hour(self) -> Decimal:
        return sum((part.price_per_hour or Decimal(0) for part in self.parts), Decimal(0))

    @property
    def problem(self) -> str:
        return next((f"{part.template}: {part.problem}" for part in self.parts if part.problem), "")


def default_inputs(manifest: Manifest) -> dict:
    """The inputs a part is deployed with: its defaults (a graph has no form for its parts)."""
    return {item.name: item.default for item in manifest.inputs if item.default is not None}


def resource_fields(manifest: Manifest) -> dict:
    """The manifest's resources as a deployment row holds them."""
    resources = manifest.resources
    return dict(gpus=resources.gpus, gpu_memory_gb=resources.gpu_memory_gb, cpu=resources.cpu, memory_gb=resources.memory_gb)


def graph_versions(graph: Graph) -> dict[str, TemplateVersion]:
    """Each part's version row, by template name: one query."""
    rows = TemplateVersion.objects.filter(pk__in=[part.version_id for part in graph.parts]).select_related("template")
    return {version.template.name: version for version in rows}


def reusable_parts(*, owner: AbstractBaseUser, graph: Graph, versions: dict[str, TemplateVersion]) -> dict[str, Deployment]:
    """The owner's deployments that can serve as parts of `graph` (same version, default
    inputs, up or coming up), by template name, the oldest first: one query."""
    wanted = {versions[part.template].pk: part.template for part in graph.requirements}
    found: dict[str, Deployment] = {}
    candidates = (
        Deployment.objects.filter(owner_id=owner.pk, version_id__in=wanted, deleted_at__isnull=True, state__in=REUSABLE)
        .select_related("node").order_by("created_at", "pk")
    )
    for deployment in candidates:
        name = wanted[deployment.version_id]
        if name not in found and deployment.inputs == default_inputs(manifest_of(versions[name])):
            found[name] = deployment
    return found


def graph_plan(*, owner: AbstractBaseUser, graph: Graph, nodes: list[NodeCapacity] | None = None) -> Plan:
    """Where each part would go and what it would cost an hour if deployed now (or, given
    `nodes`, on those capacities). Parts are placed in deploy order against one snapshot
    of free capacity, each taking its share, so two parts never count on the same room;
    reused parts cost nothing more."""
    versions = graph_versions(graph)
    reused = reusable_parts(owner=owner, graph=graph, versions=versions)
    capacities = list(nodes) if nodes is not None else _capacities()
    planned = []
    for part in graph.parts:
        if part.template in reused:
            running = reused[part.template]
            planned.append(PlannedPart(template=part.template, version=part.version, reuses=running.handle,
                                       node=running.node.name if running.node else ""))
            continue
        resources = resources_of(manifest_of(versions[part.template]))
        try:
            placement = place(resources, capacities)
        except NoNodeFits as exc:
            planned.append(PlannedPart(template=part.template, version=part.version, problem=str(exc)))
            continue
        capacities = [_taken(node, resources) if node.name == placement.node else node for node in capacities]
        planned.append(PlannedPart(template=part.template, version=part.version, node=placement.node,
                                   price_per_hour=placement.price_per_hour))
    return Plan(parts=tuple(planned))


def _capacities() -> list[NodeCapacity]:
    if not Node.objects.exists():
        node_register_local()
    return schedulable_capacities()


def _taken(node: NodeCapacity, resources: Resources) -> NodeCapacity:
    # Whole GPUs, the smallest that fit, as a real placement would leave the larger ones free.
    gpus = sorted(node.gpus_free)
    for _ in range(resources.gpus):
        fitting = next((size for size in gpus if size >= resources.gpu_memory_gb), None)
        if fitting is not None:
            gpus.remove(fitting)
    return NodeCapacity(
        name=node.name, price_per_hour=node.price_per_hour, cpus_free=node.cpus_free - resources.cpu,
        memory_free_gb=node.memory_free_gb - resources.memory_gb, gpus_free=tuple(gpus), gpu_model=node.gpu_model,
        cpus_total=node.cpus_total, memory_total_gb=node.memory_total_gb,
    )


def graph_lock(*, owner_id: int) -> None:
    """Until the transaction ends, the owner's other graph changes wait: opens, stops,
    deletes and failures (services). Taken first, before any deployment row: two deploys
    released together (two tabs, a retrying script) would each find no part to reuse and
    each start their own copies; and a failure climbs up a graph locking each dependant
    while a stop or delete goes down it locking each requirement, so two of them at once
    in one graph (two parts failing together, a part failing while its app is stopped)
    would each hold a row the other waits for. Parts are never shared between owners, so
    one lock per owner covers every graph a change can reach.

    The lock is the owner's user row, FOR NO KEY UPDATE: every owner has one (no row to
    create, so no race creating it), and besides graph changes only what updates that row
    waits on it (a login's last_login, a password change: rare and short). A plain FOR
    UPDATE would also hold up every other transaction writing a row that refers to the
    owner (its foreign key check takes FOR KEY SHARE): their single deployments, tokens,
    memberships.

    On SQLite this locks nothing: a transaction begins IMMEDIATE (hub_site/settings.py),
    which already lets one writer in at a time."""
    list(get_user_model().objects.select_for_update(no_key=True).filter(pk=owner_id).values_list("pk", flat=True))


def graph_parts_open(*, root: Deployment, graph: Graph, idle_timeout_seconds: int) -> list[Deployment]:
    """Inside the root's creating transaction: reuse or open each part, and an edge for
    every requirement of the root and of each part opened now (a reused part has its own).
    Returns the parts opened now. The owner's graph changes take turns (graph_lock),
    so nothing slow belongs in that transaction."""
    owner = root.owner
    graph_lock(owner_id=owner.pk)
    versions = graph_versions(graph)
    reused = reusable_parts(owner=owner, graph=graph, versions=versions)
    by_template: dict[str, Deployment] = {graph.root: root, **reused}
    opened = []
    for part in graph.requirements:
        if part.template in by_template:
            continue
        manifest = manifest_of(versions[part.template])
        by_template[part.template] = deployment_open(
            owner=owner, version=versions[part.template], inputs=default_inputs(manifest), graph_part=True,
            idle_timeout_seconds=idle_timeout_seconds, lock=_sub_lock(graph, part.template), **resource_fields(manifest),
        )
        opened.append(by_template[part.template])
    fresh = {graph.root} | {deployment.version.template.name for deployment in opened}
    DeploymentEdge.objects.bulk_create([
        DeploymentEdge(dependant=by_template[edge.dependant], requirement=by_template[edge.requirement], alias=edge.alias)
        for edge in graph.edges if edge.dependant in fresh
    ])
    return opened


def _sub_lock(graph: Graph, template: str) -> dict:
    """A part's own lock: the graph below it."""
    below, todo = set(), [template]
    while todo:
        name = todo.pop()
        below.add(name)
        todo += [edge.requirement for edge in graph.requirements_of(name) if edge.requirement not in below]
    lock = graph.as_lock()
    return {"root": template, "parts": [part for part in lock["parts"] if part["template"] in below]}


def requirements_waiting(deployment: Deployment) -> tuple[bool, str]:
    """(still waiting, failure reason) of a dependant about to build: it waits until every
    requirement is up; one that failed or was stopped fails it, with that part's reason."""
    edges = list(live_edges().filter(dependant_id=deployment.pk).select_related("requirement__version__template"))
    for edge in edges:
        requirement = edge.requirement
        if requirement.state in GONE or requirement.deleted_at is not None:
            return False, requirement_failed(edge, requirement.reason or f"it is {requirement.state}")
    return any(edge.requirement.state not in UP for edge in edges), ""


def requirement_failed(edge: DeploymentEdge, why: str) -> str:
    """A dependant's failure reason when the requirement of `edge` failed for `why`: the
    part named by its alias, template, version and handle."""
    requirement = edge.requirement
    what = f"{edge.alias} ({requirement.version.template.name} {requirement.version.version}, {requirement.handle})"
    return f"its requirement {what} failed: {why}"


def live_edges() -> QuerySet[DeploymentEdge]:
    return DeploymentEdge.objects.filter(released_at__isnull=True)


def graph_environment(deployment: Deployment) -> dict[str, str]:
    """`<ALIAS>_URL` (the requirement through the hub's gateway) and `<ALIAS>_TOKEN` (an
    endpoint token minted for this launch; the previous launch's one is revoked) for each
    requirement of `deployment`."""
    # Imported here: both depend on services, which depends on this module.
    from .endpoint_tokens import endpoint_token_mint_for_edge
    from .gateway import PREFIX

    environment = {}
    for edge in live_edges().filter(dependant_id=deployment.pk).select_related("requirement", "token"):
        secret = endpoint_token_mint_for_edge(edge=edge, dependant=deployment)
        prefix = edge.alias.upper()
        environment[f"{prefix}_URL"] = f"{internal_gateway_url(deployment.node)}{PREFIX}{edge.requirement.handle}"
        environment[f"{prefix}_TOKEN"] = secret
    return environment


def internal_gateway_url(node: Node | None) -> str:
    """GATEWAY_INTERNAL_URL as what runs on `node` reaches it. A loopback URL means "this
    machine": right for local processes, but a container on this machine's Docker Engine
    reaches this machine as host.docker.internal (where `manage.py serve` also listens)."""
    url = settings.GATEWAY_INTERNAL_URL
    parts = urlsplit(url)
    if node is None or node.runner != Node.RunnerKind.DOCKER or not _on_this_machine(node) or not is_loopback(parts.hostname or ""):
        return url
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{HOST_ALIAS}{port}"))


def _on_this_machine(node: Node) -> bool:
    return not node.engine_url or node.engine_url.startswith("unix://")


@dataclass(frozen=True)
class GraphNode:
    alias: str
    deployment: Deployment
    children: tuple["GraphNode", ...]


def graph_of(deployment: Deployment) -> tuple[GraphNode, ...]:
    """The requirements of `deployment` as a tree with each part's current state: one
    query per level of the graph. Released edges are drawn too: a stopped or failed app
    still shows the graph it ran with, and which part failed. (A deployment's edges are
    made once, when it is opened, and released all together, so they are all live or
    all released.)"""
    edges_by_dependant: dict[int, list[DeploymentEdge]] = {}
    level = [deployment.pk]
    seen = set(level)
    while level:
        edges = list(
            DeploymentEdge.objects.filter(dependant_id__in=level)
            .select_related("requirement__version__template", "requirement__node").order_by("alias")
        )
        for edge in edges:
            edges_by_dependant.setdefault(edge.dependant_id, []).append(edge)
        level = [edge.requirement_id for edge in edges if edge.requirement_id not in seen]
        seen.update(level)
    return _tree(deployment.pk, edges_by_dependant, frozenset())


def _tree(dependant_id: int, edges: dict[int, list[DeploymentEdge]], above: frozenset[int]) -> tuple[GraphNode, ...]:
    return tuple(
        GraphNode(alias=edge.alias, deployment=edge.requirement,
                  children=_tree(edge.requirement_id, edges, above | {dependant_id}))
        for edge in edges.get(dependant_id, []) if edge.requirement_id not in above
    )


def edges_release(edges: QuerySet[DeploymentEdge]) -> None:
    """Mark edges released and revoke the tokens they were launched with."""
    from .models import EndpointToken

    now = timezone.now()
    token_ids = [token_id for token_id in edges.values_list("token_id", flat=True) if token_id]
    EndpointToken.objects.filter(pk__in=token_ids, revoked_at__isnull=True).update(revoked_at=now)
    edges.update(released_at=now)
