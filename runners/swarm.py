"""The Swarm runner: one node of a Docker Swarm, through the manager's services API.

A deployment is one service: one replica pinned to the hub's chosen node by a placement
constraint (the hub chooses the cheapest node that fits; the swarm enforces the rest),
reservations and limits from the deployment's resources, GPUs as the named generic
resource the node's engine advertises (`dockerd --node-generic-resource NVIDIA-GPU=GPU-…`),
the Docker runner's hardening, and its port published in host mode on that node (the
ingress routing mesh needs overlay networking the hub does not rely on). Sleeping is
`replicas 0`, waking `replicas 1`. Images come by digest from the hub's registry: each
node pulls what it lacks. A node the manager reports down, gone or drained is lost
(`NodeLost`): the hub places its deployments on other nodes, each as a service of its own
there (services are named after the deployment and the node).

Swarm's API (1.41 on Docker 20.10) has no per-service no-new-privileges: the nodes' engines
run with `dockerd --no-new-privileges`, which makes it the default for every container.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from decimal import Decimal

import docker
from docker.errors import NotFound
from docker.types import EndpointSpec, Mount, Resources, RestartPolicy, ServiceMode

from .base import (
    LABEL_DEPLOYMENT,
    LABEL_HUB,
    Gpu,
    Inventory,
    LaunchSpec,
    NodeLost,
    RunnerError,
    RunPhase,
    RunState,
    label_number,
)
from .docker import APP_USER, PIDS_LIMIT, STOP_TIMEOUT, container_environment, container_name, engine_errors

GPU_RESOURCE = "NVIDIA-GPU"  # the generic resource name NVIDIA documents for Swarm
LABEL_SWARM_NODE = "io.aihub.swarm-node"
HUB_NODE_LABEL = "swarm_node_id"  # the hub's Node row names its swarm node in its labels
# Node labels the operator sets (`docker node update --label-add price_per_hour=1.20 NODE`).
NODE_LABEL_PRICE = "price_per_hour"
NODE_LABEL_GPU_MODEL = "gpu_model"
NODE_LABEL_GPU_MEMORY = "gpu_memory_gb"
TMPFS_BYTES = 256 * 1024**2
_STARTING_TASK_STATES = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
_ALIVE_TASK_STATES = _STARTING_TASK_STATES | {"running"}
STOP_SLACK_SECONDS = 10


@dataclass(frozen=True)
class SwarmNode:
    """One node of the swarm as the manager reports it, with the operator's labels."""

    id: str
    hostname: str
    address: str
    ready: bool  # the node answers the manager
    active: bool  # its availability is "active" (not paused or drained)
    inventory: Inventory
    price_per_hour: Decimal
    labels: dict[str, str]


def service_name(deployment: str, node_id: str) -> str:
    """One service per deployment and node: a deployment placed again on another node gets a
    service of its own there, and the one left on its old node (which the manager keeps while
    that node is down) is an orphan the reconciler removes once the node answers."""
    return f"{container_name(deployment)}-{node_id}"


def service_options(spec: LaunchSpec, *, node_id: str, hub_id: str) -> dict:
    """The keyword arguments of `client.services.create` for `spec` on the node `node_id`."""
    if spec.kind != "service":
        raise RunnerError(f"{spec.deployment} is a job: the swarm runner runs services; run jobs on a docker node")
    if spec.volume is not None:
        raise RunnerError(f"{spec.deployment} declares storage: the swarm runner has no volumes yet; "
                          "place it on a docker node")
    memory_bytes = int(spec.resources.memory_gb * 1024**3)
    nano_cpus = int(spec.resources.cpu * 1e9)
    resources = Resources(
        cpu_limit=nano_cpus, mem_limit=memory_bytes, cpu_reservation=nano_cpus, mem_reservation=memory_bytes,
        generic_resources={GPU_RESOURCE: spec.resources.gpus} if spec.resources.gpus > 0 else None,
    )
    resources["Limits"]["Pids"] = PIDS_LIMIT
    labels = {**spec.labels, LABEL_DEPLOYMENT: spec.deployment, LABEL_HUB: hub_id, LABEL_SWARM_NODE: node_id}
    return {
        "name": service_name(spec.deployment, node_id),
        "image": spec.image,
        "user": APP_USER,
        "cap_drop": ["ALL"],
        "read_only": True,
        "mounts": [Mount(target="/tmp", source=None, type="tmpfs", tmpfs_size=TMPFS_BYTES)],
        "env": container_environment(spec),
        "resources": resources,
        "constraints": [f"node.id=={node_id}"],
        "mode": ServiceMode("replicated", replicas=1),
        "endpoint_spec": EndpointSpec(ports=[{"TargetPort": spec.port, "Protocol": "tcp", "PublishMode": "host"}]),
        # The hub's reconciler restarts what died, and counts it; the swarm must not hide a crash loop.
        "restart_policy": RestartPolicy(condition="none"),
        "stop_grace_period": STOP_TIMEOUT * 10**9,
        "labels": labels,
        "container_labels": labels,
    }


class SwarmRunner:
    """The node `node_id` of the swarm whose manager answers at `base_url`; `address` is
    where the hub reaches that node's published ports."""

    name = "swarm"

    def __init__(self, base_url: str | None = None, address: str = "127.0.0.1", hub_id: str = "aihub",
                 node_id: str = "", timeout: int = 60):
        if not node_id:
            raise RunnerError("a swarm node needs its node id (`docker node ls` on the manager shows it)")
        self.base_url = base_url
        self.address = address
        self.hub_id = hub_id
        self.node_id = node_id
        self.timeout = timeout

    @functools.cached_property
    def client(self) -> docker.DockerClient:
        return _manager_client(self.base_url, self.timeout)

    def launch(self, spec: LaunchSpec) -> RunState:
        options = service_options(spec, node_id=self.node_id, hub_id=self.hub_id)
        with engine_errors(f"launching {spec.deployment} on the swarm"):
            self._check_node_is_in_the_swarm()
            service = self._service(spec.deployment)
            if service is not None and _image_of(service) == spec.image:
                service.scale(1)
            else:
                if service is not None:
                    service.remove()
                self.client.services.create(**options)
        return self.status(spec.deployment)

    def status(self, deployment: str) -> RunState:
        with engine_errors(f"reading the state of {deployment} on the swarm"):
            service = self._service(deployment)
            if service is None:
                return RunState(deployment=deployment, phase=RunPhase.MISSING)
            return self._state_of(deployment, service)

    def logs(self, deployment: str, *, tail: int = 200) -> str:
        with engine_errors(f"reading the logs of {deployment} on the swarm"):
            service = self._service(deployment)
            if service is None:
                return ""
            return b"".join(service.logs(stdout=True, stderr=True, tail=tail)).decode(errors="replace")

    def stop(self, deployment: str) -> None:
        with engine_errors(f"stopping {deployment} on the swarm"):
            service = self._service(deployment)
            if service is not None:
                service.scale(0)
                self._wait_until_no_task_runs(service, deployment)

    def remove(self, deployment: str) -> None:
        with engine_errors(f"removing {deployment} from the swarm"):
            service = self._service(deployment)
            if service is not None:
                service.remove()

    def list(self) -> list[RunState]:
        with engine_errors("listing this hub's services on the swarm"):
            self._check_node_is_in_the_swarm()
            services = self.client.services.list(
                filters={"label": [f"{LABEL_HUB}={self.hub_id}", f"{LABEL_SWARM_NODE}={self.node_id}"]}
            )
            return [self._state_of(service.attrs["Spec"]["Labels"][LABEL_DEPLOYMENT], service) for service in services]

    def inventory(self) -> Inventory:
        for node in self.nodes():
            if node.id == self.node_id:
                return node.inventory
        raise RunnerError(f"the swarm has no node {self.node_id}: it left the swarm or was never part of it")

    def nodes(self) -> list[SwarmNode]:
        """Every node of the swarm, from the manager."""
        with engine_errors("listing the swarm's nodes"):
            return [swarm_node_of(node.attrs) for node in self.client.nodes.list()]

    def _check_node_is_in_the_swarm(self) -> None:
        """NodeLost when the manager reports this node gone, down or drained by the swarm's
        operator: the swarm no longer runs its tasks, so the hub places them elsewhere."""
        try:
            attrs = self.client.nodes.get(self.node_id).attrs
        except NotFound:
            raise NodeLost(f"left the swarm (the manager has no node {self.node_id})") from None
        state, availability = attrs["Status"]["State"], attrs["Spec"].get("Availability")
        if state != "ready":
            why = attrs["Status"].get("Message") or state
            raise NodeLost(f"left the swarm (the manager reports it {state}: {why})")
        if availability == "drain":
            raise NodeLost("was drained in the swarm (`docker node update --availability drain`)")

    def _wait_until_no_task_runs(self, service, deployment: str) -> None:
        """Scaling is asynchronous; the hub records `sleeping` only once nothing runs."""
        deadline = time.monotonic() + STOP_TIMEOUT + STOP_SLACK_SECONDS
        while any(task["Status"]["State"] in _ALIVE_TASK_STATES for task in service.tasks()):
            if time.monotonic() > deadline:
                raise RunnerError(f"{deployment} still runs {STOP_TIMEOUT + STOP_SLACK_SECONDS} s after it was scaled to 0")
            time.sleep(0.2)

    def _service(self, deployment: str):
        try:
            return self.client.services.get(service_name(deployment, self.node_id))
        except NotFound:
            return None

    def _state_of(self, deployment: str, service) -> RunState:
        if service.attrs["Spec"]["Mode"].get("Replicated", {}).get("Replicas") == 0:
            return RunState(deployment=deployment, phase=RunPhase.STOPPED, detail="scaled to 0 replicas")
        # A task in `shutdown` was stopped on purpose (scaled to 0 for a sleep): right after
        # `replicas 1` it is still the newest one for a moment, and is not the new run's state.
        tasks = sorted((task for task in service.tasks() if task["Status"]["State"] != "shutdown"),
                       key=lambda task: _moment(task["CreatedAt"]), reverse=True)
        if not tasks:
            return RunState(deployment=deployment, phase=RunPhase.STARTING, detail="waiting for the swarm to schedule it")
        status = tasks[0]["Status"]
        if status["State"] == "running":
            return RunState(deployment=deployment, phase=RunPhase.RUNNING, endpoint=self._endpoint(status))
        if status["State"] in _STARTING_TASK_STATES:
            return RunState(deployment=deployment, phase=RunPhase.STARTING, detail=status.get("Err", ""))
        exit_code = status.get("ContainerStatus", {}).get("ExitCode")
        reason = status.get("Err") or status.get("Message") or status["State"]
        return RunState(deployment=deployment, phase=RunPhase.EXITED, exit_code=exit_code,
                        detail=f"its task is {status['State']}: {reason}")

    def _endpoint(self, status: dict) -> str | None:
        for port in status.get("PortStatus", {}).get("Ports") or ():
            if port.get("PublishedPort"):
                return f"http://{self.address}:{port['PublishedPort']}"
        return None


def swarm_nodes(base_url: str, *, timeout: int = 30) -> list[SwarmNode]:
    """Every node of the swarm whose manager's engine answers at `base_url`; RunnerError when
    that engine is in no swarm or is a worker (only managers list nodes)."""
    client = _manager_client(base_url, timeout)
    with engine_errors(f"asking the engine at {base_url} for its swarm"):
        swarm = client.info().get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active":
            raise RunnerError(f"the engine at {base_url} is not part of a swarm: give the address of a swarm "
                              "manager (`docker swarm init` makes one)")
        if not swarm.get("ControlAvailable"):
            raise RunnerError(f"the engine at {base_url} is a swarm worker, not a manager: give the address of a "
                              "manager (`docker node ls` on a manager lists them, MANAGER STATUS Leader or Reachable)")
        return [swarm_node_of(node.attrs) for node in client.nodes.list()]


def _manager_client(base_url: str | None, timeout: int) -> docker.DockerClient:
    with engine_errors("connecting to the swarm manager"):
        if base_url:
            return docker.DockerClient(base_url=base_url, timeout=timeout)
        return docker.from_env(timeout=timeout)


def swarm_node_of(attrs: dict) -> SwarmNode:
    """A node of `client.nodes.list()` as the hub reads it: GPUs are its NVIDIA-GPU generic
    resources, their model and memory and the node's price are labels the operator set."""
    description, labels = attrs["Description"], attrs["Spec"].get("Labels") or {}
    resources = description["Resources"]
    gpu = Gpu(model=labels.get(NODE_LABEL_GPU_MODEL, ""), memory_gb=float(_number(labels, NODE_LABEL_GPU_MEMORY, attrs["ID"])))
    inventory = Inventory(
        cpus=resources["NanoCPUs"] / 1e9, memory_gb=round(resources["MemoryBytes"] / 1024**3, 1),
        gpus=(gpu,) * _gpu_count(resources.get("GenericResources") or ()),
    )
    return SwarmNode(
        id=attrs["ID"], hostname=description.get("Hostname", ""), address=attrs["Status"].get("Addr", ""),
        ready=attrs["Status"]["State"] == "ready", active=attrs["Spec"].get("Availability") == "active",
        inventory=inventory, price_per_hour=_number(labels, NODE_LABEL_PRICE, attrs["ID"]), labels=labels,
    )


def _gpu_count(generic_resources) -> int:
    count = 0
    for resource in generic_resources:
        if resource.get("NamedResourceSpec", {}).get("Kind") == GPU_RESOURCE:
            count += 1
        elif resource.get("DiscreteResourceSpec", {}).get("Kind") == GPU_RESOURCE:
            count += int(resource["DiscreteResourceSpec"]["Value"])
    return count


def _number(labels: dict[str, str], name: str, node_id: str) -> Decimal:
    text = labels.get(name, "0")
    value = label_number(text)
    if value is None:
        raise RunnerError(f"the swarm node {node_id} has the label {name}={text!r}: set a number of 0 or more, "
                          f"e.g. `docker node update --label-add {name}=1.5 {node_id}`")
    return value


def _image_of(service) -> str:
    return service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]


def _moment(timestamp: str) -> tuple[str, int]:
    """The engine's RFC 3339 time ("2026-11-29T21:34:41.0405535Z") as a sortable key: Go drops
    the fraction's trailing zeros, so the strings themselves do not sort."""
    seconds, _, fraction = timestamp.rstrip("Z").partition(".")
    return seconds, int(fraction.ljust(9, "0")[:9] or 0)
