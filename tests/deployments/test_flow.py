"""The deploy flow step by step, through a runner with the real interface: build,
schedule on the cheapest node that fits, launch, wait for ready, stop, restart, delete."""

import urllib.request
from datetime import timedelta

import pytest
from django.utils import timezone

from deployments import flow
from deployments.flow import BUILD_POLL_SECONDS, FIRST_POLL_SECONDS, deployment_advance
from deployments.models import Deployment, Node
from deployments.selectors import deployments_of, node_capacities
from deployments.services import (
    DeploymentConflict,
    deployment_create,
    deployment_delete,
    deployment_restart,
    deployment_stop,
)
from templates_catalog.models import Build

from . import fakes
from .conftest import drive, finish_build

State = Deployment.State


@pytest.fixture
def owner(user_factory):
    return user_factory("dana")


def _deploy(owner, version, **inputs) -> Deployment:
    return deployment_create(owner=owner, version=version, inputs=inputs).deployment


def test_a_deployment_goes_from_pending_to_running_and_answers(owner, version, node_factory):
    node_factory("pricey", price="3.00")
    node_factory("cheap", price="0.50")

    deployment = drive(_deploy(owner, version, normalize=False))

    assert deployment.state == State.RUNNING, deployment.reason
    assert deployment.node.name == "cheap" and deployment.price_per_hour == 0.5
    with urllib.request.urlopen(deployment.endpoint + "/ready", timeout=5) as answer:
        assert answer.status == 200
    assert list(deployment.events.values_list("to_state", flat=True)) == [
        "pending", "building", "scheduling", "starting", "running",
    ]
    spec = fakes.ENGINES["fake://cheap"].runs[deployment.handle].spec
    assert spec.image == deployment.build.image_reference and spec.resources.cpu == 2.0
    assert spec.environment == {"INPUT_NORMALIZE": "false", "HUB_DEPLOYMENT": deployment.handle,
                                "HUB_UPSTREAM_TOKEN": deployment.upstream_token}


def test_placement_counts_what_already_runs(owner, version, node_factory):
    node_factory("cheap", price="0.50", cpus=3, memory_gb=8)
    node_factory("pricey", price="3.00")

    first = drive(_deploy(owner, version))
    second = drive(_deploy(owner, version))

    assert (first.node.name, second.node.name) == ("cheap", "pricey")


def test_a_node_taken_meanwhile_is_checked_again_under_its_lock_and_passed_over(owner, version, node_factory, monkeypatch):
    node_factory("cheap", price="0.50", cpus=3, memory_gb=8)
    node_factory("pricey", price="3.00")
    first = drive(_deploy(owner, version))
    # A stale read: placement sees every node empty, as if `first` had not been placed yet.
    stale = lambda: node_capacities(list(Node.objects.order_by("pk")), totals=True)  # noqa: E731
    monkeypatch.setattr(flow, "schedulable_capacities", stale)

    second = drive(_deploy(owner, version))

    assert (first.node.name, second.node.name) == ("cheap", "pricey")
    assert Deployment.objects.filter(node__name="cheap", state=State.RUNNING).count() == 1


def test_when_capacity_runs_out_scheduling_fails_with_the_reason(owner, version, node_factory):
    node_factory("only", cpus=3, memory_gb=8)
    drive(_deploy(owner, version))

    second = drive(_deploy(owner, version))

    assert second.state == State.FAILED and "needs 2 CPUs; most free: 1 on only" in second.reason


def test_a_failed_build_fails_the_deployment_with_the_builds_reason(owner, version, node_factory):
    node_factory()
    deployment = _deploy(owner, version)
    deployment_advance(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.state == State.BUILDING
    # Still building: look again soon (a cache hit takes a blink), less often as the build goes on.
    assert deployment_advance(deployment_id=deployment.pk) == FIRST_POLL_SECONDS
    Build.objects.filter(pk=deployment.build_id).update(created_at=timezone.now() - timedelta(minutes=5))
    assert deployment_advance(deployment_id=deployment.pk) == BUILD_POLL_SECONDS

    finish_build(deployment, error="numpy==9.9 has no wheel for Python 3.11")
    deployment_advance(deployment_id=deployment.pk)

    deployment.refresh_from_db()
    assert deployment.state == State.FAILED
    assert deployment.reason == "the build failed: numpy==9.9 has no wheel for Python 3.11"


def test_a_run_that_exits_while_starting_fails_with_its_exit_code_and_last_lines(owner, version, node_factory):
    node_factory(exits_on_launch=3)

    deployment = drive(_deploy(owner, version))

    assert deployment.state == State.FAILED
    assert "exit code 3" in deployment.reason and "Traceback: model weights not found" in deployment.reason


def test_a_run_never_ready_fails_after_the_timeout_and_is_stopped(owner, version, node_factory, settings):
    settings.DEPLOY_READY_TIMEOUT_SECONDS = 1
    node = node_factory(ready=False)

    deployment = drive(_deploy(owner, version), steps=200)

    assert deployment.state == State.FAILED
    assert "was not ready at /ready within 1 seconds" in deployment.reason and "listening for" in deployment.reason
    assert fakes.ENGINES[node.engine_url].runs[deployment.handle].phase == "stopped"


def test_a_redelivered_start_step_launches_once(owner, version, node_factory):
    node = node_factory(ready=False)
    deployment = drive(_deploy(owner, version), until=(State.STARTING,))
    deployment_advance(deployment_id=deployment.pk)
    deployment_advance(deployment_id=deployment.pk)
    deployment_advance(deployment_id=deployment.pk)

    assert fakes.ENGINES[node.engine_url].launches == [deployment.handle]


def test_stop_keeps_the_row_and_frees_the_node_then_restart_runs_it_again(owner, version, node_factory):
    node = node_factory(cpus=3, memory_gb=8)
    deployment = drive(_deploy(owner, version))

    stopping = deployment_stop(deployment=deployment)
    assert stopping.state == State.STOPPING
    assert deployment_stop(deployment=deployment).state == State.STOPPING  # twice is fine
    deployment_advance(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.state == State.STOPPED and deployment.endpoint == ""
    assert fakes.ENGINES[node.engine_url].runs[deployment.handle].phase == "stopped"

    restarted = deployment_restart(deployment=deployment)
    assert restarted.state == State.PENDING and restarted.handle == deployment.handle
    running = drive(restarted)
    assert running.state == State.RUNNING and running.node == node  # its capacity was free again


def test_only_a_stopped_or_failed_deployment_restarts(owner, version, node_factory):
    node_factory()
    deployment = drive(_deploy(owner, version))
    with pytest.raises(DeploymentConflict, match="is running"):
        deployment_restart(deployment=deployment)


def test_delete_removes_the_run_and_hides_the_row_but_keeps_its_events(owner, version, node_factory):
    node = node_factory()
    deployment = drive(_deploy(owner, version))

    deployment_delete(deployment=deployment)
    deployment_advance(deployment_id=deployment.pk)

    deployment.refresh_from_db()
    assert deployment.state == State.STOPPED and deployment.deleted_at is not None
    assert deployment.handle in fakes.ENGINES[node.engine_url].removed
    assert deployment.handle not in fakes.ENGINES[node.engine_url].runs
    assert not deployments_of(owner).filter(pk=deployment.pk).exists()
    assert deployment.events.filter(message="delete requested").exists()


def test_deleting_a_stopped_deployment_removes_what_is_left(owner, version, node_factory):
    node = node_factory()
    deployment = drive(_deploy(owner, version))
    deployment_stop(deployment=deployment)
    deployment_advance(deployment_id=deployment.pk)

    deployment_delete(deployment=deployment)
    deployment_advance(deployment_id=deployment.pk)

    assert deployment.handle in fakes.ENGINES[node.engine_url].removed


def test_stopping_during_a_build_wins_over_the_flow(owner, version, node_factory):
    node_factory()
    deployment = _deploy(owner, version)
    deployment_advance(deployment_id=deployment.pk)  # → building
    deployment_stop(deployment=deployment)
    finish_build(Deployment.objects.get(pk=deployment.pk))

    assert deployment_advance(deployment_id=deployment.pk) is None  # the stopping step
    deployment.refresh_from_db()
    assert deployment.state == State.STOPPED


def test_an_unexpected_error_fails_the_deployment_instead_of_leaving_it_stuck(owner, version, node_factory, monkeypatch):
    from deployments import flow

    node_factory()
    deployment = _deploy(owner, version)
    monkeypatch.setattr(flow, "build_request", lambda **kw: 1 / 0)

    deployment_advance(deployment_id=deployment.pk)

    deployment.refresh_from_db()
    assert deployment.state == State.FAILED and "internal error while pending (ZeroDivisionError" in deployment.reason
