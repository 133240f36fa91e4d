"""Pools and nodes in the admin: capacity, use and price, in a number of queries that does not
grow with the fleet."""

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from deployments.models import Node, NodePool
from deployments.services import deployment_create, deployment_stop

from . import fakes
from .conftest import drive


def _fleet(node_factory, count: int, pool: NodePool) -> None:
    for index in range(count):
        node_factory(f"{pool.name}-{index}", price=f"{index + 1}.50", gpus=fakes.gpus(2, 40))
    Node.objects.filter(name__startswith=f"{pool.name}-").update(pool=pool)


def _queries(client, url: str) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured), response.content.decode()


def test_nodes_and_pools_show_capacity_use_and_price_in_queries_that_do_not_grow(
    admin_client, node_factory, user_factory, version,
):
    lab = NodePool.objects.create(name="lab", kind=NodePool.Kind.SWARM, engine_url="tcp://manager:2376")
    _fleet(node_factory, 2, lab)
    owner = user_factory("dana")
    running = [drive(deployment_create(owner=owner, version=version, inputs={}).deployment) for _ in range(3)]
    assert {deployment.node.name for deployment in running} == {"lab-0"}  # the cheapest: 3 × 2 CPUs, 3 × 4 GB
    stopped = deployment_stop(deployment=running[2])
    drive(stopped)  # a stopped deployment holds nothing
    nodes_url, pools_url = reverse("admin:deployments_node_changelist"), reverse("admin:deployments_nodepool_changelist")

    few_nodes, nodes_page = _queries(admin_client, nodes_url)
    few_pools, pools_page = _queries(admin_client, pools_url)

    assert '<td class="field-cpus_use">4 / 8</td>' in nodes_page
    assert '<td class="field-memory_use">8 / 32</td>' in nodes_page
    assert '<td class="field-gpus_use">0 / 2</td>' in nodes_page
    assert '<td class="field-deployment_count">2</td>' in nodes_page
    assert '<td class="field-cpus">4 / 16</td>' in pools_page and '<td class="field-gpus">0 / 4</td>' in pools_page
    assert '<td class="field-price">1.5 to 2.5</td>' in pools_page
    assert '<td class="field-node_count">2</td>' in pools_page

    _fleet(node_factory, 4, NodePool.objects.create(name="big", kind=NodePool.Kind.KUBERNETES, engine_url="kubeconfig:///k"))
    more = [drive(deployment_create(owner=owner, version=version, inputs={}).deployment) for _ in range(4)]
    assert len({deployment.node_id for deployment in more}) > 1

    assert _queries(admin_client, nodes_url)[0] == few_nodes
    assert _queries(admin_client, pools_url)[0] == few_pools


def test_a_lost_node_shows_why(admin_client, node_factory):
    node_factory("gone")
    Node.objects.filter(name="gone").update(lost_reason="node gone left the swarm (the manager reports it down)")

    page = admin_client.get(reverse("admin:deployments_node_changelist")).content.decode()

    assert "node gone left the swarm (the manager reports it down)" in page
