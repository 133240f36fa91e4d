"""Deployments on a real two-node Docker Swarm (two extra Docker Engines on this machine,
see tests/swarm.py), with images that reach the nodes only through a real registry, by
digest. Node A has 1 GPU at a low price, node B 2 at a higher one."""

import json
import urllib.request
from datetime import timedelta

import docker
import pytest
from django.utils import timezone

from deployments.models import Deployment
from deployments.nodes import node_add
from deployments.services import deployment_create
from deployments.sleeping import deployment_sleep
from deployments.wake import deployment_wake
from runners.base import LABEL_DEPLOYMENT, RunPhase
from runners.docker import APP_USER, PIDS_LIMIT, container_name
from runners.swarm import GPU_RESOURCE, HUB_NODE_LABEL, SwarmRunner

from ..swarm import registry_serving, two_node_swarm
from .conftest import drive_for_real

State = Deployment.State
PRICES = {"a": "0.50", "b": "1.20"}


@pytest.fixture(scope="session")
def swarm():
    with two_node_swarm(PRICES) as made:
        yield made


@pytest.fixture(scope="session")
def session_registry(tmp_path_factory):
    with registry_serving(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture
def swarm_nodes(db, swarm):
    runner = SwarmRunner(base_url=swarm.manager_url, node_id=swarm.node_ids["a"])
    listed = {node.id: node for node in runner.nodes()}
    return {
        name: node_add(name=f"swarm-{name}", runner="swarm", engine_url=swarm.manager_url, address="127.0.0.1",
                       price_per_hour=listed[node_id].price_per_hour, labels={HUB_NODE_LABEL: node_id})
        for name, node_id in swarm.node_ids.items()
    }


def test_the_swarm_reports_its_nodes_with_gpus_and_prices(swarm):
    nodes = {node.id: node for node in SwarmRunner(base_url=swarm.manager_url, node_id=swarm.node_ids["a"]).nodes()}

    a, b = nodes[swarm.node_ids["a"]], nodes[swarm.node_ids["b"]]
    assert [len(a.inventory.gpus), len(b.inventory.gpus)] == [1, 2]
    assert {gpu.model for gpu in a.inventory.gpus + b.inventory.gpus} == {"FAKE-GPU"}
    assert [str(a.price_per_hour), str(b.price_per_hour)] == ["0.50", "1.20"]
    assert a.ready and b.ready and a.active and b.active


def test_one_gpu_deployments_fill_the_cheapest_node_first_then_sleep_and_wake(
    swarm, swarm_nodes, session_registry, build_settings, echo_template, docker_client, user_factory,
):
    build_settings.BUILD_REGISTRY = session_registry
    build_settings.DEPLOY_READY_TIMEOUT_SECONDS = 120
    version = echo_template(name="swarm-echo", resources={"gpus": 1, "gpu_memory_gb": 8, "cpu": 0.5, "memory_gb": 0.5})
    owner = user_factory("swarm-user")

    first = drive_for_real(deployment_create(owner=owner, version=version, inputs={}).deployment)
    second = drive_for_real(deployment_create(owner=owner, version=version, inputs={}).deployment)
    third = drive_for_real(deployment_create(owner=owner, version=version, inputs={}).deployment)
    fourth = drive_for_real(deployment_create(owner=owner, version=version, inputs={}).deployment)

    assert (first.state, first.node.name) == (State.RUNNING, "swarm-a"), first.events.values_list("message", flat=True)
    assert (second.state, second.node.name) == (State.RUNNING, "swarm-b"), second.events.values_list("message", flat=True)
    assert (third.state, third.node.name) == (State.RUNNING, "swarm-b")
    assert fourth.state == State.FAILED and "no node has a free GPU" in fourth.reason
    assert _predict(first.endpoint, "on a") == {"echo": "on a", "greeting": "hello"}
    assert _predict(second.endpoint, "on b") == {"echo": "on b", "greeting": "hello"}
    _assert_service_is_pinned_hardened_and_by_digest(swarm, second, session_registry)

    manager = docker.DockerClient(base_url=swarm.manager_url)
    assert deployment_sleep(deployment_id=second.pk, now=timezone.now() + timedelta(days=1))
    runner = SwarmRunner(base_url=swarm.manager_url, node_id=swarm.node_ids["b"])
    assert runner.status(second.handle).phase == RunPhase.STOPPED
    assert _running_tasks(manager, second) == []

    assert deployment_wake(deployment_id=second.pk)
    woken = drive_for_real(second)
    assert (woken.state, woken.node.name) == (State.RUNNING, "swarm-b")
    assert _predict(woken.endpoint, "again") == {"echo": "again", "greeting": "hello"}
    assert len(_running_tasks(manager, second)) == 1


def _assert_service_is_pinned_hardened_and_by_digest(swarm, deployment: Deployment, registry: str) -> None:
    manager = docker.DockerClient(base_url=swarm.manager_url)
    spec = manager.services.get(container_name(deployment.handle)).attrs["Spec"]
    task = spec["TaskTemplate"]
    container = task["ContainerSpec"]
    assert container["Image"] == deployment.build.image_reference
    assert container["Image"].startswith(f"{registry}/aihub/swarm-echo@sha256:")
    assert (container["User"], container["ReadOnly"], container["CapabilityDrop"]) == (APP_USER, True, ["ALL"])
    assert container["Mounts"] == [{"Target": "/tmp", "Type": "tmpfs", "TmpfsOptions": {"SizeBytes": 256 * 1024**2}}]
    assert task["Placement"]["Constraints"] == [f"node.id=={swarm.node_ids['b']}"]
    assert task["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": GPU_RESOURCE, "Value": 1}}
    ]
    assert task["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 512 * 1024**2, "Pids": PIDS_LIMIT}
    assert task["RestartPolicy"]["Condition"] == "none"
    assert spec["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
    assert spec["Labels"][LABEL_DEPLOYMENT] == deployment.handle
    # Node B got the image from the registry, by digest, and runs it with no-new-privileges.
    node_b = docker.DockerClient(base_url=swarm.engine_urls["b"])
    [running] = node_b.containers.list(filters={"label": f"{LABEL_DEPLOYMENT}={deployment.handle}"})
    assert deployment.build.image_reference in running.image.attrs["RepoDigests"]
    # The engine's --no-new-privileges (swarm's API 1.41 has no per-service switch), seen by the kernel.
    assert running.exec_run(["grep", "NoNewPrivs", "/proc/1/status"]).output.split() == [b"NoNewPrivs:", b"1"]


def _running_tasks(manager, deployment: Deployment) -> list[dict]:
    service = manager.services.get(container_name(deployment.handle))
    return [task for task in service.tasks() if task["Status"]["State"] == "running"]


def _predict(endpoint: str, item: str):
    request = urllib.request.Request(f"{endpoint}/predict", data=json.dumps(item).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)
