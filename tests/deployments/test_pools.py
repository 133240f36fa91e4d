"""`manage.py node_pool_add` for a Kubernetes cluster, against kmock's API emulator over
real HTTP (the swarm's side runs on the real swarm, in test_swarm_flow.py)."""

import socket
import threading
from decimal import Decimal

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db import connection

from deployments.models import Node, NodePool
from runners.kubernetes import GPU_PRODUCT_LABEL

from ..runners.test_kubernetes import KubernetesApi

A100, L4 = "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4"


@pytest.fixture
def api():
    server = KubernetesApi()
    yield server
    server.close()


def kubeconfig_for(tmp_path, server_url: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gpu",
        "clusters": [{"name": "lab", "cluster": {"server": server_url}}],
        "users": [{"name": "hub", "user": {"token": "not-checked-by-the-mock"}}],
        "contexts": [{"name": "gpu", "context": {"cluster": "lab", "user": "hub"}}],
    }))
    return str(path)


def node(name: str, *, product: str = "", price: str = "", gpus: str = "0", cpu: str = "16", memory: str = "64Gi",
         unschedulable: bool = False) -> dict:
    labels = {**({GPU_PRODUCT_LABEL: product, "nvidia.com/gpu.memory": "81920"} if product else {}),
              **({"price_per_hour": price} if price else {})}
    return {"metadata": {"name": name, "labels": labels}, "spec": {"unschedulable": unschedulable},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "nvidia.com/gpu": gpus}}}


def add(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("node_pool_add", *args, stdout=out)
    return out.getvalue()


def test_a_cluster_becomes_one_node_per_gpu_product_with_its_allocatable_resources(db, api, tmp_path):
    api.emulator["get /api/v1/nodes"] << {"items": [
        node("a100-1", product=A100, price="2.40", gpus="2", cpu="15900m", memory="62Gi"),
        node("a100-2", product=A100, price="2.40", gpus="1"),
        node("a100-3", product=A100, price="2.40", gpus="4", unschedulable=True),  # cordoned: not counted
        node("l4-1", product=L4, price="0.70", gpus="1", cpu="8", memory="32Gi"),
        node("cpu-1"),  # no GPU: no pool of the hub's
    ]}

    out = add("lab", "--kubeconfig", kubeconfig_for(tmp_path, api.url), "--namespace", "gpu-team", "--address", "10.0.0.7")

    pool = NodePool.objects.get(name="lab")
    a100, l4 = Node.objects.filter(pool=pool).order_by("name")
    assert (a100.name, a100.runner, a100.address, a100.price_per_hour) == ("lab-nvidia-a100-sxm4-80gb", "kubernetes", "10.0.0.7", Decimal("2.40"))
    assert (a100.cpus, a100.memory_gb, a100.gpus, a100.gpu_model) == (Decimal("31.9"), Decimal("126.0"), [80.0] * 3, A100)
    assert a100.engine_url == f"kubeconfig://{tmp_path}/kubeconfig?namespace=gpu-team&gpu_product={A100}"
    assert (l4.cpus, l4.gpus, l4.price_per_hour) == (Decimal("8"), [80.0], Decimal("0.70"))
    assert "added lab-nvidia-a100-sxm4-80gb: 31.9 CPUs, 126.0 GB, 3 × NVIDIA-A100-SXM4-80GB, 2.40/hour at 10.0.0.7" in out


def test_running_it_again_refreshes_the_rows_and_keeps_the_operators_drain(db, api, tmp_path):
    config = kubeconfig_for(tmp_path, api.url)
    cluster = {"items": [node("a100-1", product=A100, price="2.40", gpus="2")]}
    api.emulator["get /api/v1/nodes"] << (lambda request: cluster)
    add("lab", "--kubeconfig", config, "--address", "10.0.0.7")
    Node.objects.filter(pool__name="lab").update(schedulable=False)
    cluster["items"] = [node("a100-1", product=A100, price="2.10", gpus="2"), node("a100-2", product=A100, price="2.10", gpus="2")]

    out = add("lab", "--kubeconfig", config, "--namespace", "gpu-team")  # another namespace: the same pool rows

    [refreshed] = Node.objects.all()
    assert (refreshed.gpus, refreshed.price_per_hour, refreshed.schedulable) == ([80.0] * 4, Decimal("2.10"), False)
    assert refreshed.address == "10.0.0.7"  # given the first time only: kept
    assert "namespace=gpu-team" in refreshed.engine_url
    assert NodePool.objects.count() == 1 and out.startswith("refreshed lab-nvidia-a100-sxm4-80gb")


def test_nodes_of_one_product_must_agree_on_the_price(db, api, tmp_path):
    api.emulator["get /api/v1/nodes"] << {"items": [node("a", product=A100, price="2.40", gpus="1"),
                                                     node("b", product=A100, price="3.00", gpus="1")]}

    with pytest.raises(CommandError, match=f"the nodes with {GPU_PRODUCT_LABEL}={A100} carry different price_per_hour "
                                           r"labels \(2.40, 3.00\)"):
        add("lab", "--kubeconfig", kubeconfig_for(tmp_path, api.url))
    assert not NodePool.objects.exists() and not Node.objects.exists()


@pytest.mark.parametrize("content, message", [
    ("clusters: [", "the Kubernetes configuration kubeconfig://.* cannot be used"),
    ("apiVersion: v1\nkind: Config\n", "the Kubernetes configuration kubeconfig://.* cannot be used"),
])
def test_a_bad_kubeconfig_is_refused_with_the_reason(db, tmp_path, content, message):
    path = tmp_path / "kubeconfig"
    path.write_text(content)

    with pytest.raises(CommandError, match=message):
        add("lab", "--kubeconfig", str(path))
    assert not NodePool.objects.exists()


def test_a_missing_kubeconfig_and_an_unreachable_cluster_are_refused(db, tmp_path):
    with pytest.raises(CommandError, match="--kubeconfig /nonexistent/kubeconfig: no such file"):
        add("lab", "--kubeconfig", "/nonexistent/kubeconfig")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(CommandError, match="reading the cluster's nodes: the Kubernetes API does not answer"):
        add("lab", "--kubeconfig", kubeconfig_for(tmp_path, f"http://127.0.0.1:{port}"))


def test_a_bad_pool_name_is_refused(db):
    with pytest.raises(CommandError, match="'Lab_1' is not a pool name"):
        add("Lab_1", "--swarm", "unix:///nonexistent.sock")


@pytest.mark.django_db(transaction=True)
def test_two_runs_at_once_make_one_pool_and_one_row_per_gpu_product(api, tmp_path):
    from deployments.pools import node_pool_add

    api.emulator["get /api/v1/nodes"] << {"items": [node("a100-1", product=A100, price="2.40", gpus="2"),
                                                     node("l4-1", product=L4, price="0.70", gpus="1")]}
    config = kubeconfig_for(tmp_path, api.url)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def add_the_pool():
        try:
            barrier.wait(timeout=10)
            results.append(node_pool_add(name="lab", kubeconfig=config))
        except Exception as exc:  # reported below: the test must see every failure
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=add_the_pool) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert NodePool.objects.count() == 1 and Node.objects.count() == 2
    assert sorted(len(result.added) for result in results) == [0, 2]
