"""A graph deployed for real on the process runner: venv builds, two real processes, and
the app calling its requirement through the hub's real gateway (uvicorn) with the token
made for that edge; then the requirement sleeps and the app's next call wakes it."""

import asyncio
import json
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import timezone

from deployments.flow import deployment_advance
from deployments.gateway import DeploymentGateway
from deployments.models import Deployment, DeploymentEdge
from deployments.nodes import node_add
from deployments.services import deployment_create, deployment_delete
from deployments.sleeping import deployment_sleep
from runners.gateway import Gateway
from tests.gateway.conftest import served

from .conftest import WakeWorker, drive_for_real, upstream_headers

State = Deployment.State
pytestmark = pytest.mark.django_db(transaction=True)

# Calls what it requires, through the gateway, as the fixtures do.
RELAY = """\
import json
import os
import urllib.request
from datetime import timedelta


class Echo:
    def setup(self):
        self.url = os.environ["UPSTREAM_URL"] + "/predict"
        self.token = os.environ["UPSTREAM_TOKEN"]

    def predict(self, batch):
        answers = []
        for item in batch:
            request = urllib.request.Request(self.url, data=json.dumps(item).encode(), headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
            with urllib.request.urlopen(request, timeout=60) as answer:
                answers.append({"relayed": json.loads(answer.read())})
        return answers
"""


@pytest.fixture
def hub(process_settings):
    """The hub's gateway for real; `forwarded` lists the deployment ids it forwarded to."""
    forwarded = []
    gateway = DeploymentGateway(core=Gateway(connect_timeout=2, read_timeout=60),
                                on_finish=lambda deployment_id, result: forwarded.append(deployment_id))
    with served(gateway) as url:
        process_settings.GATEWAY_INTERNAL_URL = url
        yield forwarded
    # The wake's pollers query in asgiref's one sync thread: its connection must not outlive the test.
    asyncio.run(sync_to_async(connections.close_all)())


def predict(deployment: Deployment, item: str) -> dict:
    request = urllib.request.Request(deployment.endpoint + "/predict", data=json.dumps(item).encode(),
                                     headers={"Content-Type": "application/json", **upstream_headers(deployment)})
    with urllib.request.urlopen(request, timeout=90) as answer:
        return json.loads(answer.read())


def test_an_app_calls_its_requirement_through_the_gateway_and_wakes_it(hub, process_settings, echo_template, user_factory):
    node_add(name="local", runner="process")
    echo_template(name="echo", tier="atomic")
    relay = echo_template(name="relay", tier="workflow", handler=RELAY,
                          requires=[{"template": "echo", "version": "*", "alias": "upstream"}])
    app = deployment_create(owner=user_factory(), version=relay, inputs={}).deployment
    echo = DeploymentEdge.objects.get(dependant=app).requirement
    try:
        assert deployment_advance(deployment_id=app.pk) and Deployment.objects.get(pk=app.pk).state == State.PENDING
        assert drive_for_real(echo).state == State.RUNNING
        app = drive_for_real(app)
        assert app.state == State.RUNNING, app.reason

        assert predict(app, "hi")["relayed"]["echo"] == "hi"
        assert hub == [echo.pk]  # it went through the gateway
        # The only way it could: the requirement's own port refuses anyone else.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(Deployment.objects.get(pk=echo.pk).endpoint + "/", timeout=10)
        assert refused.value.code == 403

        idle = timezone.now() + timedelta(seconds=echo.idle_timeout_seconds + 1)
        assert deployment_sleep(deployment_id=echo.pk, now=idle)
        assert Deployment.objects.get(pk=echo.pk).state == State.SLEEPING
        worker = WakeWorker(echo, drive_with=drive_for_real)
        assert predict(app, "again")["relayed"]["echo"] == "again"
        assert worker.join().state == State.RUNNING
        assert hub == [echo.pk, echo.pk]
    finally:
        deployment_delete(deployment=app)
        for deployment in (app, echo):
            drive_for_real(deployment, steps=20)
    assert Deployment.objects.get(pk=echo.pk).deleted_at is not None  # only this app used it
    assert not any((process_settings.VAR_DIR / "runs" / d.handle).exists() for d in (app, echo))
