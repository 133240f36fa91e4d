"""The reconciler repairs drift between the rows and what the runners really run."""

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.flow import deployment_advance
from deployments.models import Deployment, Node
from deployments.reconcile import deployments_reconcile
from deployments.services import deployment_create, deployment_delete, deployment_stop
from deployments.sleeping import deployment_sleep
from deployments.wake import deployment_wake

from . import fakes
from .conftest import drive

State = Deployment.State


@pytest.fixture
def running(user_factory, version, node_factory):
    node = node_factory()
    deployment = drive(deployment_create(owner=user_factory("dana"), version=version, inputs={}).deployment)
    assert deployment.state == State.RUNNING, deployment.reason
    return deployment, fakes.ENGINES[node.engine_url]


def test_a_killed_run_is_restarted_and_becomes_running_again(running):
    deployment, engine = running
    engine.kill(deployment.handle, 137)

    report = deployments_reconcile()

    deployment.refresh_from_db()
    assert report.restarted == [deployment.handle]
    assert deployment.state == State.STARTING and deployment.restarts == 1
    assert deployment.events.last().message == "restarted after exit code 137"
    assert drive(deployment).state == State.RUNNING
    assert engine.launches == [deployment.handle, deployment.handle]


def test_a_run_that_keeps_dying_fails_with_its_exit_code_and_last_lines(running, settings):
    deployment, engine = running
    for _ in range(settings.DEPLOY_MAX_RESTARTS):
        engine.kill(deployment.handle, 137)
        deployments_reconcile()
        drive(deployment)
    engine.kill(deployment.handle, 139)

    report = deployments_reconcile()

    deployment.refresh_from_db()
    assert report.failed == [deployment.handle] and deployment.state == State.FAILED
    assert f"died again after {settings.DEPLOY_MAX_RESTARTS} restarts with exit code 139" in deployment.reason
    assert "killed with 139" in deployment.reason  # its last log lines


def test_a_vanished_run_is_restarted_too(running):
    deployment, engine = running
    engine.runs.pop(deployment.handle).server.shutdown()

    deployments_reconcile()

    deployment.refresh_from_db()
    assert deployment.state == State.STARTING and "its run was missing" in deployment.events.last().message


def test_an_orphan_is_removed_and_owned_runs_are_left_alone(running):
    deployment, engine = running
    engine.orphan("d-nobodysrun")

    report = deployments_reconcile()

    assert report.removed == ["d-nobodysrun"] and "d-nobodysrun" not in engine.runs
    assert engine.runs[deployment.handle].phase == "running"


def test_the_run_of_a_deleted_deployment_is_removed(running):
    deployment, engine = running
    deployment_delete(deployment=deployment)  # its stopping step never ran: the reconciler cleans up

    deployments_reconcile()

    assert deployment.handle not in engine.runs


def test_a_run_still_alive_for_a_stopped_deployment_is_stopped(running):
    deployment, engine = running
    deployment_stop(deployment=deployment)
    deployment_advance(deployment_id=deployment.pk)
    engine.runs[deployment.handle].phase = "running"  # the stop was lost

    report = deployments_reconcile()

    assert report.stopped == [deployment.handle] and engine.runs[deployment.handle].phase == "stopped"


def test_a_deployment_on_an_unreachable_node_is_placed_again_on_the_cheapest_other_node(running, node_factory):
    deployment, engine = running
    node_factory("node-c", price="3.00")
    node_factory("node-b", price="2.00")
    engine.answers = False

    report = deployments_reconcile()

    deployment.refresh_from_db()
    assert report.unreachable == ["node-a"] and report.placed_again == [deployment.handle] and report.failed == []
    assert (deployment.state, deployment.node, deployment.endpoint) == (State.SCHEDULING, None, "")
    why = "node node-a unreachable: connection refused"
    assert deployment.events.last().message == f"{why}: placing it on another node"
    assert Node.objects.get(name="node-a").lost_reason == why
    moved = drive(deployment)
    assert (moved.state, moved.node.name, moved.reason) == (State.RUNNING, "node-b", "")
    assert fakes.ENGINES["fake://node-b"].launches == [deployment.handle]
    assert Deployment.objects.filter(pk=deployment.pk).exists()


def test_a_node_that_left_its_swarm_fails_what_fits_nowhere_else_with_both_reasons(user_factory, publish, node_factory):
    gpu_node = node_factory("swarm-b", price="1.20", gpus=fakes.gpus(1, 16))
    node_factory("cpu-only", price="0.10")
    version = publish(name="llm", resources={"gpus": 1, "gpu_memory_gb": 8, "cpu": 1, "memory_gb": 1})
    deployment = drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment)
    assert (deployment.state, deployment.node.name) == (State.RUNNING, "swarm-b")
    fakes.ENGINES[gpu_node.engine_url].lost = "left the swarm (the manager reports it down: heartbeat failure)"

    deployments_reconcile()
    failed = drive(deployment)

    assert failed.state == State.FAILED and failed.node is None
    assert failed.reason == ("node swarm-b left the swarm (the manager reports it down: heartbeat failure); "
                             "no other node fits it: no node has a free GPU")
    assert list(failed.events.values_list("to_state", flat=True))[-2:] == [State.SCHEDULING, State.FAILED]


def test_a_deployment_being_placed_again_is_not_also_restarted(running, node_factory):
    deployment, engine = running
    other = fakes.ENGINES[node_factory("node-b", price="2.00").engine_url]
    engine.answers = False
    deployments_reconcile()

    again = deployments_reconcile()  # the flow has not placed it yet; the node is still lost

    deployment.refresh_from_db()
    assert again.restarted == again.placed_again == again.failed == []
    assert deployment.state == State.SCHEDULING and engine.launches == [deployment.handle] and other.launches == []
    assert deployment.events.filter(to_state=State.SCHEDULING).count() == 2  # placed first, then once again


def test_a_lost_node_takes_nothing_until_it_answers_then_its_stale_run_is_removed(running, node_factory, user_factory, version):
    deployment, engine = running
    node_factory("node-b", price="2.00")
    engine.answers = False
    deployments_reconcile()
    assert drive(deployment).node.name == "node-b"
    newcomer = drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment)
    assert newcomer.node.name == "node-b"  # node-a is cheaper, but lost

    engine.answers = True
    report = deployments_reconcile()

    assert report.removed == [deployment.handle] and deployment.handle not in engine.runs
    assert Node.objects.get(name="node-a").lost_reason == ""
    later = drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment)
    assert later.node.name == "node-a"


def test_a_sleeping_deployment_on_a_lost_node_sleeps_on_and_wakes_elsewhere(running, node_factory):
    deployment, engine = running
    node_factory("node-b", price="2.00")
    assert deployment_sleep(deployment_id=deployment.pk, now=timezone.now() + timedelta(days=1))
    engine.answers = False

    deployments_reconcile()

    deployment.refresh_from_db()
    assert deployment.state == State.SLEEPING
    assert deployment_wake(deployment_id=deployment.pk)
    assert drive(deployment).node.name == "node-b"


def test_nodes_that_answer_get_a_heartbeat(running, node_factory):
    silent = node_factory("silent", answers=False)

    deployments_reconcile()

    assert Node.objects.get(name="node-a").last_heartbeat is not None
    assert Node.objects.get(pk=silent.pk).last_heartbeat is None


def test_it_reads_every_deployment_in_one_query(running, django_assert_num_queries, user_factory, version):
    # 1 deployments, 1 jobs in flight, 1 nodes, 1 heartbeat per node: the same whatever the number of deployments.
    for _ in range(3):
        drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment)
    with django_assert_num_queries(4):
        deployments_reconcile()


def test_a_relaunched_run_that_dies_before_ready_uses_up_the_remaining_restarts(running, settings):
    deployment, engine = running
    engine.kill(deployment.handle, 137)
    engine.exits_on_launch = 1  # every relaunch crashes before it is ready

    deployments_reconcile()
    failed = drive(deployment)

    assert failed.state == State.FAILED and failed.restarts == settings.DEPLOY_MAX_RESTARTS == 2
    assert f"died again after {settings.DEPLOY_MAX_RESTARTS} restarts with exit code 1" in failed.reason
    assert "Traceback: model weights not found" in failed.reason  # its last log lines
    # The first launch, the reconciler's relaunch, and one more by the flow: no more than allowed.
    assert engine.launches == [deployment.handle] * 3
    messages = list(failed.events.values_list("from_state", "to_state", "message"))
    assert ("running", "starting", "restarted after exit code 137") in messages
    assert ("starting", "starting", "restarted after exit code 1 before it was ready") in messages


def test_a_relaunched_run_that_crashes_once_more_then_starts_ends_up_running(running):
    deployment, engine = running
    engine.kill(deployment.handle, 137)
    engine.exits_on_launch = 1
    deployments_reconcile()
    engine.exits_on_launch = None  # the next relaunch is healthy (a node briefly short of memory, say)

    recovered = drive(deployment)

    assert recovered.state == State.RUNNING and recovered.restarts == 2, recovered.reason
    assert len(engine.launches) == 3


def test_a_first_launch_that_exits_still_fails_at_once(user_factory, version, node_factory):
    engine = fakes.ENGINES[node_factory(exits_on_launch=3).engine_url]

    failed = drive(deployment_create(owner=user_factory(), version=version, inputs={}).deployment)

    assert failed.state == State.FAILED and failed.restarts == 0 and "exited while starting with exit code 3" in failed.reason
    assert len(engine.launches) == 1
