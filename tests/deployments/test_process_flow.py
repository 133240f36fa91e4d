"""The whole flow for real on a machine without Docker: a venv build of a tiny template,
the process runner, the ready path over HTTP (its port answers nothing else without the
gateway's header); then a kill, and the reconciler brings it back."""

import json
import os
import signal
import urllib.error
import urllib.request

import pytest

from deployments.flow import deployment_advance
from deployments.models import Deployment
from deployments.nodes import node_add
from deployments.reconcile import deployments_reconcile
from deployments.services import deployment_create, deployment_delete

from .conftest import drive_for_real, upstream_headers

State = Deployment.State


def test_a_venv_build_runs_through_the_process_runner_and_survives_a_kill(db, process_settings, echo_template, user_factory):
    node_add(name="local", runner="process")
    version = echo_template(name="echo-deploy")
    deployment = deployment_create(owner=user_factory(), version=version, inputs={}).deployment
    try:
        running = drive_for_real(deployment, steps=300)
        assert running.state == State.RUNNING, running.reason
        request = urllib.request.Request(running.endpoint + "/predict", data=b'"hi"',
                                         headers={"Content-Type": "application/json", **upstream_headers(running)})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read())["echo"] == "hi"
        bare = urllib.request.Request(running.endpoint + "/predict", data=b'"hi"', headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bare, timeout=10)
        assert refused.value.code == 403

        pid = int((process_settings.VAR_DIR / "runs" / running.handle / "pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        import time

        time.sleep(0.5)
        report = deployments_reconcile()
        assert report.restarted == [running.handle]
        again = drive_for_real(running, steps=300)
        assert again.state == State.RUNNING and again.restarts == 1, again.reason
        with urllib.request.urlopen(again.endpoint + "/ready", timeout=10) as answer:
            assert answer.status == 200
    finally:
        deployment_delete(deployment=deployment)
        deployment_advance(deployment_id=deployment.pk)
    assert not (process_settings.VAR_DIR / "runs" / deployment.handle).exists()
