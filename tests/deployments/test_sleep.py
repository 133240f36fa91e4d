"""Sleep when idle and wake again, with the in-memory runner and the real database: the
idle look (a fake clock), the run stopped before `sleeping`, capacity freed, the reconciler
leaving a sleeping deployment asleep, stop and delete of a sleeping one, the wake's node,
and awake time and cost kept exact across sleep, wake and stop."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from deployments.models import Deployment
from deployments.reconcile import deployments_reconcile
from deployments.selectors import deployment_usage, node_usage
from deployments.services import DeploymentRejected, deployment_create, deployment_delete, deployment_stop
from deployments.sleeping import deployment_sleep, deployments_sleep_idle
from deployments.wake import deployment_wake
from runners.base import RunPhase

from . import fakes
from .conftest import drive

State = Deployment.State


@pytest.fixture
def dana(user_factory):
    return user_factory("dana")


def _deploy(dana, version, *, idle_timeout_seconds=60) -> Deployment:
    deployment = deployment_create(owner=dana, version=version, inputs={}, idle_timeout_seconds=idle_timeout_seconds).deployment
    running = drive(deployment)
    assert running.state == State.RUNNING, running.reason
    return running


@pytest.fixture
def running(dana, version, node_factory):
    node = node_factory("node-a", price="1.25")
    return _deploy(dana, version), fakes.ENGINES[node.engine_url]


def _later(deployment: Deployment, seconds: float):
    return deployment.running_since + timedelta(seconds=seconds)


def test_it_sleeps_only_once_idle_past_its_timeout_and_its_run_is_stopped_first(running):
    deployment, engine = running

    assert deployments_sleep_idle(now=_later(deployment, 59)) == []
    slept = deployments_sleep_idle(now=_later(deployment, 61))

    deployment.refresh_from_db()
    assert slept == [deployment.handle] and deployment.state == State.SLEEPING
    assert engine.runs[deployment.handle].phase == RunPhase.STOPPED
    assert deployment.endpoint == "" and deployment.sleep_started_at is None
    assert deployment.events.last().message.startswith("went to sleep after 61 s idle")
    # A sleeping deployment holds nothing on its node.
    assert node_usage() == {}


def test_a_recent_request_keeps_it_awake(running):
    deployment, engine = running
    Deployment.objects.filter(pk=deployment.pk).update(last_request_at=_later(deployment, 50))

    assert deployments_sleep_idle(now=_later(deployment, 100)) == []
    assert deployments_sleep_idle(now=_later(deployment, 111)) == [deployment.handle]


def test_an_idle_timeout_of_zero_never_sleeps(dana, version, node_factory):
    node_factory()
    deployment = _deploy(dana, version, idle_timeout_seconds=0)

    assert deployments_sleep_idle(now=_later(deployment, 10 * 365 * 86400)) == []
    assert Deployment.objects.get(pk=deployment.pk).state == State.RUNNING


def test_the_default_idle_timeout_comes_from_the_setting(dana, version, node_factory, settings):
    node_factory()
    settings.DEPLOY_IDLE_TIMEOUT_SECONDS = 321

    deployment = deployment_create(owner=dana, version=version, inputs={}).deployment

    assert deployment.idle_timeout_seconds == 321


@pytest.mark.parametrize("value", [-1, 30 * 86400 + 1, 2.5, "60", True])
def test_an_idle_timeout_out_of_range_is_refused_naming_the_field(dana, version, node_factory, value):
    node_factory()
    with pytest.raises(DeploymentRejected) as refused:
        deployment_create(owner=dana, version=version, inputs={}, idle_timeout_seconds=value)
    assert refused.value.errors[0][0] == "idle_timeout_seconds" and "30 days" in refused.value.errors[0][1]
    assert not Deployment.objects.exists()


def test_a_stop_that_fails_leaves_it_running_and_unmarked(running):
    deployment, engine = running
    engine.answers = False

    assert deployment_sleep(deployment_id=deployment.pk, now=_later(deployment, 120)) is False

    deployment.refresh_from_db()
    assert deployment.state == State.RUNNING and deployment.sleep_started_at is None


def test_the_reconciler_neither_revives_a_sleeping_deployment_nor_leaves_its_run_alive(running):
    deployment, engine = running
    deployments_sleep_idle(now=_later(deployment, 61))

    report = deployments_reconcile()
    assert report.restarted == [] and engine.launches == [deployment.handle]

    engine.runs[deployment.handle].phase = RunPhase.RUNNING  # a run left behind, somehow
    report = deployments_reconcile()

    assert report.stopped == [deployment.handle] and engine.runs[deployment.handle].phase == RunPhase.STOPPED
    assert Deployment.objects.get(pk=deployment.pk).state == State.SLEEPING


def test_the_reconciler_leaves_alone_a_run_being_stopped_to_sleep(running):
    deployment, engine = running
    # The sleep's worker has stopped the run but not yet recorded `sleeping`.
    Deployment.objects.filter(pk=deployment.pk).update(sleep_started_at=timezone.now())
    fakes.FakeRunner(base_url=deployment.node.engine_url).stop(deployment.handle)

    report = deployments_reconcile()

    assert report.restarted == [] and engine.launches == [deployment.handle]


def test_a_sleeping_deployment_stops_and_keeps_its_volume(running):
    deployment, engine = running
    deployments_sleep_idle(now=_later(deployment, 61))

    deployment_stop(deployment=deployment)
    stopped = drive(deployment, until=(State.STOPPED,))

    assert stopped.state == State.STOPPED and "its volume is kept" in stopped.events.last().message
    assert deployment.handle not in engine.removed


def test_a_sleeping_deployment_is_deleted_with_its_volume(running):
    deployment, engine = running
    deployments_sleep_idle(now=_later(deployment, 61))

    deployment_delete(deployment=deployment)
    drive(deployment, until=(State.STOPPED,))

    assert engine.removed == [deployment.handle] and deployment.handle not in engine.runs


def test_a_wake_goes_back_to_its_own_node_even_when_another_is_cheaper(dana, version, node_factory):
    node_factory("node-a", price="2.00")
    deployment = _deploy(dana, version)
    deployments_sleep_idle(now=_later(deployment, 61))
    node_factory("node-b", price="0.50")

    assert deployment_wake(deployment_id=deployment.pk) is True
    assert deployment_wake(deployment_id=deployment.pk) is False  # already woken
    awake = drive(deployment)

    assert awake.state == State.RUNNING and awake.node.name == "node-a"
    messages = list(awake.events.order_by("pk").values_list("message", flat=True))
    assert messages[-3:] == ["woken by a request", "back on its own node, on node-a at 2.0000/hour", f"ready at {awake.endpoint}"]
    assert awake.wake_started_at is None and awake.last_wake_seconds is not None and awake.last_wake_seconds >= 0


def test_a_wake_goes_to_another_node_when_its_own_is_full_now(dana, version, node_factory):
    node_factory("node-a", price="2.00", cpus=2, memory_gb=8)  # room for one embedder (2 CPUs, 4 GB)
    sleeper = _deploy(dana, version)
    deployments_sleep_idle(now=_later(sleeper, 61))
    taker = _deploy(dana, version)  # the room the sleeper left
    node_factory("node-b", price="3.00")

    deployment_wake(deployment_id=sleeper.pk)
    awake = drive(sleeper)

    assert awake.state == State.RUNNING and awake.node.name == "node-b" and awake.price_per_hour == Decimal("3.00")
    assert Deployment.objects.get(pk=taker.pk).node.name == "node-a"


class Clock:
    def __init__(self):
        self.now = timezone.now()

    def __call__(self):
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_awake_time_and_cost_are_exact_across_sleep_wake_and_stop(dana, version, node_factory, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(timezone, "now", clock)
    node_factory("node-a", price="1.25")
    deployment = _deploy(dana, version)

    clock.advance(100)
    assert deployments_sleep_idle(now=clock()) == [deployment.handle]
    clock.advance(1000)  # asleep: free
    deployment_wake(deployment_id=deployment.pk)
    clock.advance(7)  # scheduling: its run is not up yet
    awake = drive(deployment)
    clock.advance(50)
    deployment.refresh_from_db()
    usage_running = deployment_usage(deployment, now=clock())
    deployment_stop(deployment=deployment)
    stopped = drive(deployment, until=(State.STOPPED,))
    clock.advance(500)

    assert awake.last_wake_seconds == 7
    assert usage_running.awake_seconds == 150 and usage_running.cost == Decimal("0.052083")
    usage = deployment_usage(stopped, now=clock())
    # 100 s and 50 s at 1.25 an hour: 0.034722 + 0.017361.
    assert usage.awake_seconds == 150 and usage.cost == Decimal("0.052083")


def test_the_page_and_the_api_show_sleeping_waking_the_last_wake_and_usage(client, dana, version, node_factory):
    from templates_catalog.services import api_token_create_personal

    node_factory("node-a", price="1.25")
    deployment = _deploy(dana, version)
    Deployment.objects.filter(pk=deployment.pk).update(
        requests=12, errors=2, bytes_in=2048, bytes_out=4096, last_wake_seconds=3.5
    )
    deployments_sleep_idle(now=_later(deployment, 61))
    client.force_login(dana)

    page = client.get(reverse("deployments:detail", args=[deployment.handle])).content.decode()
    assert 'data-state="sleeping"' in page and "the next request wakes it" in page
    assert "took 3.5 s" in page and 'class="usage-requests">12<' in page and 'class="usage-errors">2<' in page

    deployment_wake(deployment_id=deployment.pk)
    page = client.get(reverse("deployments:detail", args=[deployment.handle])).content.decode()
    assert 'data-waking="true"' in page

    secret = api_token_create_personal(user=dana, name="script").secret
    body = client.get(f"/api/v1/deployments/{deployment.handle}/", headers={"Authorization": f"Bearer {secret}"}).json()
    assert body["state"] == "scheduling" and body["waking"] is True and body["last_wake_seconds"] == 3.5
    assert body["idle_timeout_seconds"] == 60
    usage = body["usage"]
    assert (usage["requests"], usage["errors"], usage["bytes_in"], usage["bytes_out"]) == (12, 2, 2048, 4096)
    assert usage["awake_seconds"] > 0 and Decimal(usage["cost"]) >= 0


def test_the_api_and_the_form_take_an_idle_timeout_and_refuse_a_bad_one(client, dana, version, node_factory):
    from templates_catalog.services import api_token_create_personal

    node_factory()
    auth = {"Authorization": f"Bearer {api_token_create_personal(user=dana, name='script').secret}"}

    made = client.post("/api/v1/deployments/", {"template": "embedder", "idle_timeout_seconds": 2},
                       content_type="application/json", headers=auth)
    refused = client.post("/api/v1/deployments/", {"template": "embedder", "idle_timeout_seconds": -5},
                          content_type="application/json", headers=auth)

    assert made.status_code == 201 and made.json()["idle_timeout_seconds"] == 2
    assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "idle_timeout_seconds"
    assert "30 days" in refused.json()["errors"][0]["message"]

    client.force_login(dana)
    url = reverse("deployments:deploy", args=["embedder"])
    form = client.get(url).content.decode()
    assert 'name="idle-timeout-seconds"' in form
    bad = client.post(url, {"idempotency_key": "7d7b3f1e-2a8c-4c55-9e0e-1f1f1f1f1f1f", "idle-timeout-seconds": "99999999"})
    assert bad.status_code == 400 and "30 days" in bad.content.decode()
    good = client.post(url, {"idempotency_key": "8d7b3f1e-2a8c-4c55-9e0e-1f1f1f1f1f1f", "idle-timeout-seconds": "0"})
    assert good.status_code == 303
    assert Deployment.objects.get(idempotency_key="8d7b3f1e-2a8c-4c55-9e0e-1f1f1f1f1f1f").idle_timeout_seconds == 0


def test_a_sleeping_deployment_cannot_be_restarted_only_woken_or_stopped(running):
    from deployments.services import DeploymentConflict, deployment_restart
    from deployments.transitions import ALLOWED, TransitionRefused, deployment_transition

    deployment, _ = running
    deployments_sleep_idle(now=_later(deployment, 61))

    assert ALLOWED[State.SLEEPING] == {State.SCHEDULING, State.STOPPING, State.FAILED}
    with pytest.raises(DeploymentConflict, match="is sleeping; only a stopped or failed deployment restarts"):
        deployment_restart(deployment=deployment)
    with pytest.raises(TransitionRefused, match="cannot go from sleeping to running"):
        deployment_transition(deployment_id=deployment.pk, to=State.RUNNING, message="no")


def test_the_app_schedules_the_idle_look_and_its_task_puts_idle_ones_to_sleep(dana, version, node_factory, settings):
    from deployments import tasks
    from hub_site.celery import app

    node_factory()
    deployment = _deploy(dana, version, idle_timeout_seconds=1)
    Deployment.objects.filter(pk=deployment.pk).update(running_since=timezone.now() - timedelta(seconds=5))

    entry = app.conf.beat_schedule["sleep-idle-deployments"]
    assert entry["task"] == "deployments.deployments_sleep_idle"
    assert entry["schedule"] == settings.SLEEP_CHECK_INTERVAL_SECONDS
    assert tasks.deployments_sleep_idle() == [deployment.handle]
    assert Deployment.objects.get(pk=deployment.pk).state == State.SLEEPING
