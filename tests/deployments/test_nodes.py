"""Node commands: add (inventory probed), list, drain (deployments moved); the beat task."""

import io

import pytest
from django.core.management import CommandError, call_command

from deployments.models import Deployment, Node
from deployments.services import deployment_create

from . import fakes
from .conftest import FAKE_RUNNER, drive


def test_node_add_probes_the_inventory_and_keeps_the_operators_price(db):
    fakes.engine("fake://gpu-1", inventory=fakes.Inventory(cpus=32, memory_gb=256, gpus=fakes.gpus(2, 80)))
    out = io.StringIO()

    call_command("node_add", "gpu-1", "--runner", FAKE_RUNNER, "--engine-url", "fake://gpu-1", "--price", "2.50",
                 "--label", "zone=eu", stdout=out)

    node = Node.objects.get(name="gpu-1")
    assert (node.cpus, node.memory_gb, node.gpus, node.gpu_model) == (32, 256, [80, 80], "NVIDIA A100")
    assert node.price_per_hour == 2.5 and node.labels == {"zone": "eu"}
    assert "2 × NVIDIA A100" in out.getvalue()


def test_node_add_refuses_an_engine_that_does_not_answer(db):
    fakes.engine("fake://dead", answers=False)
    with pytest.raises(CommandError, match="does not answer: connection refused"):
        call_command("node_add", "dead", "--runner", FAKE_RUNNER, "--engine-url", "fake://dead")
    assert not Node.objects.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["Bad Name"], "is not a node name"),
    (["ok", "--runner", "kubernetes"], "unknown runner"),
    (["ok", "--price", "cheap"], "is not a number"),
    (["ok", "--price", "-1"], "cannot be negative"),
])
def test_node_add_explains_bad_arguments(db, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("node_add", *args)


def test_node_add_refuses_a_duplicate_name(node_factory):
    node_factory("taken")
    with pytest.raises(CommandError, match="already registered"):
        call_command("node_add", "taken", "--runner", FAKE_RUNNER, "--engine-url", "fake://taken")


def test_node_list_shows_capacity_use_and_price(node_factory, user_factory, version):
    node_factory("node-a", price="1.25", cpus=8, memory_gb=32)
    drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment)
    out = io.StringIO()

    call_command("node_list", stdout=out)

    line = next(line for line in out.getvalue().splitlines() if line.startswith("node-a"))
    assert "2/8" in line and "4/32" in line and "1.25" in line and "never" in line


def test_node_drain_moves_running_deployments_elsewhere(node_factory, user_factory, version):
    old = node_factory("old", price="0.10")
    node_factory("new", price="5.00")
    deployment = drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment)
    assert deployment.node == old

    call_command("node_drain", "old", stdout=io.StringIO())

    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.SCHEDULING and "drained" in deployment.events.last().message
    assert fakes.ENGINES["fake://old"].runs[deployment.handle].phase == "stopped"
    moved = drive(deployment)
    assert moved.state == Deployment.State.RUNNING and moved.node.name == "new"
    assert not Node.objects.get(name="old").schedulable


def test_node_drain_of_an_unknown_node_says_so(db):
    with pytest.raises(CommandError, match="no node named 'ghost'"):
        call_command("node_drain", "ghost")


def test_the_reconciler_is_in_the_beat_schedule_beside_the_build_reaper(settings):
    from hub_site.celery import app

    schedule = app.conf.beat_schedule
    assert schedule["reconcile-deployments"]["task"] == "deployments.deployments_reconcile"
    assert schedule["reconcile-deployments"]["schedule"] == float(settings.RECONCILE_INTERVAL_SECONDS)
    assert "reap-stale-builds" in schedule
