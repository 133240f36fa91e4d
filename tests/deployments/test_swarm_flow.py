"""Deployments on a real two-node Docker Swarm (two extra Docker Engines on this machine,
see tests/swarm.py), with images that reach the nodes only through a real registry, by
digest. Node A has 1 GPU at a low price, node B 2 at a higher one. The one test runs the
issue's whole story on one build: place, sleep and wake, drain A, lose B."""

import json
import urllib.request
from datetime import timedelta
from decimal import Decimal

import docker
import pytest
from django.core.management import CommandError
from django.utils import timezone

from deployments.models import Deployment, Node
from deployments.nodes import node_add, node_drain, node_drain_step
from deployments.reconcile import deployments_reconcile
from deployments.services import deployment_create, deployment_stop
from deployments.sleeping import deployment_sleep
from deployments.wake import deployment_wake
from hub_site.backends import runner_for
from runners.base import LABEL_DEPLOYMENT, RunPhase
from runners.docker import APP_USER, PIDS_LIMIT
from runners.swarm import GPU_RESOURCE, HUB_NODE_LABEL, SwarmRunner, service_name

from ..swarm import registry_serving, two_node_swarm
from .conftest import drive_for_real, upstream_headers
from .test_pools import add

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


def test_the_swarm_reports_its_nodes_with_gpus_and_prices(db, swarm):
    # `db`, though it reads no row: pytest-django runs tests without it last, after node B was stopped.
    nodes = {node.id: node for node in SwarmRunner(base_url=swarm.manager_url, node_id=swarm.node_ids["a"]).nodes()}

    a, b = nodes[swarm.node_ids["a"]], nodes[swarm.node_ids["b"]]
    assert [len(a.inventory.gpus), len(b.inventory.gpus)] == [1, 2]
    assert {gpu.model for gpu in a.inventory.gpus + b.inventory.gpus} == {"FAKE-GPU"}
    assert [str(a.price_per_hour), str(b.price_per_hour)] == ["0.50", "1.20"]
    assert a.ready and b.ready and a.active and b.active


def test_node_pool_add_reads_the_swarm_into_nodes_and_a_second_run_refreshes_them(db, swarm):
    out = add("lab", "--swarm", swarm.manager_url)
    Node.objects.filter(pool__name="lab").update(price_per_hour=9)  # stale: the refresh reads the labels again

    again = add("lab", "--swarm", swarm.manager_url)

    nodes = {node.labels[HUB_NODE_LABEL]: node for node in Node.objects.filter(pool__name="lab")}
    assert Node.objects.count() == 2 and set(nodes) == set(swarm.node_ids.values())
    a, b = nodes[swarm.node_ids["a"]], nodes[swarm.node_ids["b"]]
    assert (a.runner, a.engine_url, a.address, a.price_per_hour, a.gpus, a.gpu_model) == (
        "swarm", swarm.manager_url, "127.0.0.1", Decimal("0.50"), [16.0], "FAKE-GPU")
    assert (b.address, b.price_per_hour, b.gpus) == ("127.0.0.1", Decimal("1.20"), [16.0, 16.0])  # as the manager saw it
    assert a.name.startswith("lab-") and a.name.endswith(swarm.node_ids["a"][:6])
    assert out.count("added lab-") == 2 and again.count("refreshed lab-") == 2
    assert runner_for(b).inventory().gpus == runner_for(a).inventory().gpus * 2  # the rows drive real runners


def test_node_pool_add_refuses_a_worker_an_engine_in_no_swarm_and_an_engine_that_does_not_answer(db, swarm, docker_client):
    with pytest.raises(CommandError, match="is a swarm worker, not a manager: give the address of a manager"):
        add("lab", "--swarm", swarm.engine_urls["b"])
    with pytest.raises(CommandError, match="is not part of a swarm"):
        add("lab", "--swarm", "unix:///var/run/docker.sock")  # the machine's own engine
    with pytest.raises(CommandError, match="the Docker Engine does not answer"):
        add("lab", "--swarm", "unix:///nonexistent/docker.sock")
    assert not Node.objects.exists()


def test_one_gpu_deployments_fill_the_cheapest_node_first_sleep_wake_and_move_off_nodes_that_go(
    swarm, swarm_nodes, session_registry, build_settings, echo_template, docker_client, user_factory,
):
    # One test, one build: moving deployments needs them running, and CI time is tight.
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
    assert (third.state, third.node.name) == (State.RUNNING, "swarm-b"), third.reason
    assert fourth.state == State.FAILED and "no node has a free GPU" in fourth.reason
    assert _predict(first, "on a") == {"echo": "on a", "greeting": "hello"}
    assert _predict(second, "on b") == {"echo": "on b", "greeting": "hello"}
    _assert_service_is_pinned_hardened_and_by_digest(swarm, second, session_registry)

    manager = docker.DockerClient(base_url=swarm.manager_url)
    assert deployment_sleep(deployment_id=second.pk, now=timezone.now() + timedelta(days=1))
    runner = SwarmRunner(base_url=swarm.manager_url, node_id=swarm.node_ids["b"])
    assert runner.status(second.handle).phase == RunPhase.STOPPED
    assert _running_tasks(manager, second) == []

    assert deployment_wake(deployment_id=second.pk)
    woken = drive_for_real(second)
    assert (woken.state, woken.node.name) == (State.RUNNING, "swarm-b"), woken.events.values_list("message", flat=True)
    assert _predict(woken, "again") == {"echo": "again", "greeting": "hello"}
    assert len(_running_tasks(manager, second)) == 1

    _drain_a_and_see_its_deployment_answer_on_b(swarm, first, third, session_registry)
    _stop_b_and_see_the_reconciler_move_what_fits_onto_a(swarm, first, second)


def _drain_a_and_see_its_deployment_answer_on_b(swarm, first: Deployment, third: Deployment, registry: str) -> None:
    deployment_stop(deployment=third)
    assert drive_for_real(third).state == State.STOPPED  # B has a free GPU again

    assert node_drain(name="swarm-a", enqueue=False) == [first]
    assert node_drain_step(name="swarm-a") == first.pk
    moved = drive_for_real(first)
    assert node_drain_step(name="swarm-a", waiting_for=first.pk) is None

    assert (moved.state, moved.node.name) == (State.RUNNING, "swarm-b"), moved.events.values_list("message", flat=True)
    assert _predict(moved, "moved") == {"echo": "moved", "greeting": "hello"}
    manager = docker.DockerClient(base_url=swarm.manager_url)
    spec = manager.services.get(service_name(first.handle, swarm.node_ids["b"])).attrs["Spec"]
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == [f"node.id=={swarm.node_ids['b']}"]
    # Node B has only what it pulled from the registry, by digest: no image there has a tag.
    node_b = docker.DockerClient(base_url=swarm.engine_urls["b"])
    [running] = node_b.containers.list(filters={"label": f"{LABEL_DEPLOYMENT}={first.handle}"})
    assert first.build.image_reference in running.image.attrs["RepoDigests"]
    images = node_b.images.list()
    assert images and all(image.tags == [] for image in images)
    assert all(digest.startswith(f"{registry}/") for image in images for digest in image.attrs["RepoDigests"])


def _stop_b_and_see_the_reconciler_move_what_fits_onto_a(swarm, first: Deployment, second: Deployment) -> None:
    Node.objects.filter(name="swarm-a").update(schedulable=True)  # the operator takes A back after its upkeep
    swarm.heartbeat_shorten()
    swarm.engine_stop("b")
    assert swarm.wait_until_down("b")["Status"]["State"] == "down"

    report = deployments_reconcile()

    assert report.unreachable == ["swarm-b"] and sorted(report.placed_again) == sorted([first.handle, second.handle])
    why = Node.objects.get(name="swarm-b").lost_reason
    assert why.startswith("node swarm-b left the swarm (the manager reports it down"), why
    # Placed again in this order, the first takes A's one GPU and the second finds none.
    on_a, nowhere = drive_for_real(first), drive_for_real(second)
    assert (on_a.state, on_a.node.name) == (State.RUNNING, "swarm-a"), on_a.events.values_list("message", flat=True)
    assert _predict(on_a, "back on a") == {"echo": "back on a", "greeting": "hello"}
    assert nowhere.state == State.FAILED
    assert nowhere.reason == f"{why}; no other node fits it: no node has a free GPU"
    assert f"{why}: placing it on another node" in nowhere.events.values_list("message", flat=True)
    assert deployments_reconcile().placed_again == []  # nothing is moved twice, nor restarted


def _assert_service_is_pinned_hardened_and_by_digest(swarm, deployment: Deployment, registry: str) -> None:
    manager = docker.DockerClient(base_url=swarm.manager_url)
    spec = manager.services.get(service_name(deployment.handle, swarm.node_ids["b"])).attrs["Spec"]
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
    service = manager.services.get(service_name(deployment.handle, deployment.node.labels[HUB_NODE_LABEL]))
    return [task for task in service.tasks() if task["Status"]["State"] == "running"]


def _predict(deployment: Deployment, item: str):
    request = urllib.request.Request(f"{deployment.endpoint}/predict", data=json.dumps(item).encode(),
                                     headers={"Content-Type": "application/json", **upstream_headers(deployment)})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)
