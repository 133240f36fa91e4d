"""The Swarm runner: one node of a Docker Swarm, through the manager's services API.

A deployment is one service: one replica pinned to the hub's chosen node by a placement
constraint (the hub chooses the cheapest node that fits; the swarm enforces the rest),
reservations and limits from the deployment's resources, GPUs as the named generic
resource the node's engine advertises (`dockerd --node-generic-resource NVIDIA-GPU=GPU-…`),
the Docker runner's hardening, and its port published in host mode on that node (the
ingress routing mesh needs overlay networking the hub does not rely on). Sleeping is
`replicas 0`, waking `replicas 1`. Images come by digest from the hub's registry: each
node pulls what it lacks.

Swarm's API (1.41 on Docker 20.10) has no per-service no-new-privileges: the nodes' engines
run with `dockerd --no-new-privileges`, which makes it the default for every container.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import docker
from docker.errors import NotFound
from docker.types import EndpointSpec, Mount, Resources, RestartPolicy, ServiceMode

from .base import (
    LABEL_DEPLOYMENT,
    LABEL_HUB,
    Gpu,
    Inventory,
    LaunchSpec,
    RunnerError,
    RunPhase,
    RunState,
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
        "name": container_name(spec.deployment),
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
        with engine_errors("connecting to the swarm manager"):
            if self.base_url:
                return docker.DockerClient(base_url=self.base_url, timeout=self.timeout)
            return docker.from_env(timeout=self.timeout)

    def launch(self, spec: LaunchSpec) -> RunState:
        options = service_options(spec, node_id=self.node_id, hub_id=self.hub_id)
        with engine_errors(f"launching {spec.deployment} on the swarm"):
            service = self._service(spec.deployment)
            if service is not None and _image_of(service) == spec.image and _placed_on(service) == self.node_id:
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

    def _wait_until_no_task_runs(self, service, deployment: str) -> None:
        """Scaling is asynchronous; the hub records `sleeping` only once nothing runs."""
        deadline = time.monotonic() + STOP_TIMEOUT + STOP_SLACK_SECONDS
        while any(task["Status"]["State"] in _ALIVE_TASK_STATES for task in service.tasks()):
            if time.monotonic() > deadline:
                raise RunnerError(f"{deployment} still runs {STOP_TIMEOUT + STOP_SLACK_SECONDS} s after it was scaled to 0")
            time.sleep(0.2)

    def _service(self, deployment: str):
        try:
            return self.client.services.get(container_name(deployment))
        except NotFound:
            return None

    def _state_of(self, deployment: str, service) -> RunState:
        if service.attrs["Spec"]["Mode"].get("Replicated", {}).get("Replicas") == 0:
            return RunState(deployment=deployment, phase=RunPhase.STOPPED, detail="scaled to 0 replicas")
        tasks = sorted(service.tasks(), key=lambda task: task["CreatedAt"], reverse=True)
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
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value < 0:
        raise RunnerError(f"the swarm node {node_id} has the label {name}={text!r}: set a number of 0 or more, "
                          f"e.g. `docker node update --label-add {name}=1.5 {node_id}`")
    return value


def _image_of(service) -> str:
    return service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]


def _placed_on(service) -> str:
    constraints = service.attrs["Spec"]["TaskTemplate"].get("Placement", {}).get("Constraints") or []
    return next((item.removeprefix("node.id==") for item in constraints if item.startswith("node.id==")), "")
