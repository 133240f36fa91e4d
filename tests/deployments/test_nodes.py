"""Node commands: add (inventory probed), list, drain (deployments moved); the beat task."""

import io

import pytest
from django.core.management import CommandError, call_command

from deployments import nodes
from deployments.flow import deployment_advance
from deployments.management.commands import node_drain as drain_command
from deployments.models import Deployment, Node
from deployments.nodes import node_drain, node_drain_step
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
    (["ok", "--runner", "nomad"], "unknown runner"),
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


def test_node_drain_moves_running_deployments_elsewhere(node_factory, user_factory, version, monkeypatch):
    old = node_factory("old", price="0.10")
    node_factory("new", price="5.00")
    deployment = drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment)
    assert deployment.node == old
    # While the command waits, the flow's workers place and start what it moved.
    monkeypatch.setattr(drain_command.time, "sleep", lambda seconds: drive(deployment))
    out = io.StringIO()

    call_command("node_drain", "old", "--wait", stdout=out)

    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.RUNNING and deployment.node.name == "new"
    assert "moving off node old" in deployment.events.filter(to_state="scheduling").last().message
    assert fakes.ENGINES["fake://old"].runs[deployment.handle].phase == "stopped"
    assert not Node.objects.get(name="old").schedulable
    assert out.getvalue().splitlines() == [
        f"old takes no new deployments; 1 to move, one at a time: {deployment.handle}",
        f"moving {deployment.handle}",
        f"{deployment.handle} is running on new",
        "drain of old over: 0 deployment(s) still run there",
    ]


def test_node_drain_without_wait_only_plans_and_hands_the_moves_to_a_task(
    node_factory, user_factory, version, django_capture_on_commit_callbacks, monkeypatch
):
    node_factory("old", price="0.10")
    node_factory("new", price="5.00")
    deployment = drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment)
    sent = []
    monkeypatch.setattr(nodes, "send_drain_step", lambda name, **kwargs: sent.append(name))

    with django_capture_on_commit_callbacks(execute=True):
        call_command("node_drain", "old", stdout=io.StringIO())

    assert sent == ["old"]
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.RUNNING and deployment.node.name == "old"  # not moved by the command


def _drain_watching_in_flight(name: str, deployments: list[Deployment]) -> tuple[list[int], int]:
    """Drain step by step, as the task would, while the flow advances every deployment one
    step between drain steps. Returns the moves in order and the most in flight at once."""
    moves, most_in_flight, waiting = [], 0, None
    for _ in range(500):
        waiting = node_drain_step(name=name, waiting_for=waiting)
        if waiting is None:
            break
        if waiting not in moves:
            moves.append(waiting)
        for deployment in deployments:
            deployment_advance(deployment_id=deployment.pk)
        states = list(Deployment.objects.filter(pk__in=[d.pk for d in deployments]).values_list("state", flat=True))
        most_in_flight = max(most_in_flight, sum(state != Deployment.State.RUNNING for state in states))
    return moves, most_in_flight


def test_a_drain_moves_one_deployment_at_a_time(node_factory, user_factory, version):
    node_factory("old", price="0.10")
    node_factory("new", price="5.00")
    deployments = [drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment) for _ in range(3)]
    assert {deployment.node.name for deployment in deployments} == {"old"}

    plan = node_drain(name="old", enqueue=False)
    moves, most_in_flight = _drain_watching_in_flight("old", deployments)

    assert [deployment.pk for deployment in plan] == moves == [deployment.pk for deployment in deployments]
    assert most_in_flight == 1  # never two of the node's deployments down at once
    assert set(Deployment.objects.values_list("state", "node__name")) == {("running", "new")}
    assert {run.phase for run in fakes.ENGINES["fake://old"].runs.values()} == {"stopped"}


def test_a_move_that_fails_stops_the_drain_and_the_rest_keep_running(node_factory, user_factory, version):
    node_factory("old", price="0.10")
    node_factory("small", price="5.00", cpus=2, memory_gb=8)  # room for one of them only
    deployments = [drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment) for _ in range(3)]

    node_drain(name="old", enqueue=False)
    moves, most_in_flight = _drain_watching_in_flight("old", deployments)

    first, second, third = (Deployment.objects.get(pk=deployment.pk) for deployment in deployments)
    assert moves == [first.pk, second.pk] and most_in_flight == 1
    assert (first.state, first.node.name) == ("running", "small")
    assert second.state == "failed" and "needs 2 CPUs" in second.reason
    assert (third.state, third.node.name) == ("running", "old")


def test_a_drain_ends_when_the_node_takes_deployments_again(node_factory, user_factory, version):
    node_factory("old", price="0.10")
    node_factory("new", price="5.00")
    deployments = [drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment) for _ in range(2)]
    node_drain(name="old", enqueue=False)
    Node.objects.filter(name="old").update(schedulable=True)

    assert node_drain_step(name="old") is None
    assert set(Deployment.objects.filter(pk__in=[d.pk for d in deployments]).values_list("node__name", flat=True)) == {"old"}


def test_node_drain_of_an_unknown_node_says_so(db):
    with pytest.raises(CommandError, match="no node named 'ghost'"):
        call_command("node_drain", "ghost")


def test_the_reconciler_is_in_the_beat_schedule_beside_the_build_reaper(settings):
    from hub_site.celery import app

    schedule = app.conf.beat_schedule
    assert schedule["reconcile-deployments"]["task"] == "deployments.deployments_reconcile"
    assert schedule["reconcile-deployments"]["schedule"] == float(settings.RECONCILE_INTERVAL_SECONDS)
    assert "reap-stale-builds" in schedule
