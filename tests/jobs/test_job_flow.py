"""A job runs to completion on the process runner: its uploaded file read-only, its outputs
stored by digest, its metrics read, its failures explained; the path attacks refused."""

import hashlib
import io
import os
import signal
import time

import pytest
from django.core.files.storage import storages

from deployments.jobs import UploadedInput, artifact_storage_path, job_create, jobs_reconcile
from deployments.models import Job
from deployments.services import DeploymentRejected

from .conftest import drive_job

State = Job.State
DATASET = b"text,label\nsunny day,weather\nbake bread,cooking\n"


def start(version, user, *, mode="ok", data=DATASET) -> Job:
    return job_create(owner=user, version=version, inputs={"mode": mode},
                      files=[UploadedInput(name="dataset", file=io.BytesIO(data), filename="../../train.csv")])


def test_it_runs_to_completion_and_stores_each_output_by_digest(process_node, job_template, user_factory, job_settings):
    job = start(job_template(), user_factory())
    assert job.state == State.QUEUED
    assert job.inputs["dataset"] == {"sha256": hashlib.sha256(DATASET).hexdigest(), "size": len(DATASET), "filename": "train.csv"}
    assert storages["artifacts"].open(artifact_storage_path(job.inputs["dataset"]["sha256"])).read() == DATASET

    done = drive_job(job)
    assert done.state == State.SUCCEEDED, done.reason
    artifacts = {artifact.name: artifact for artifact in done.artifacts.all()}
    weights = DATASET.decode().upper().encode()
    assert artifacts["weights"].sha256 == hashlib.sha256(weights).hexdigest() and artifacts["weights"].size == len(weights)
    assert storages["artifacts"].open(artifacts["weights"].storage_path).read() == weights
    assert done.metrics == {"accuracy": 0.875, "examples": 3}
    assert "done" in done.log_tail
    # The process runner hands the job a copy (read-only to anyone but root): whatever the job
    # did to it, the stored input still has the bytes its digest names.
    assert storages["artifacts"].open(artifact_storage_path(job.inputs["dataset"]["sha256"])).read() == DATASET
    assert [event.to_state for event in done.events.all()] == ["queued", "building", "running", "succeeded"]
    # The run's folder (its inputs and outputs) is gone from the node once stored.
    assert not (job_settings.VAR_DIR / "runs" / done.handle).exists()


def test_a_non_zero_exit_fails_with_the_last_log_lines(process_node, job_template, user_factory):
    done = drive_job(start(job_template(), user_factory(), mode="fail"))
    assert done.state == State.FAILED
    assert "exit code 3" in done.reason and "the dataset has no label column" in done.reason
    assert not done.artifacts.exists()


@pytest.mark.parametrize(("mode", "why"), [
    ("symlink", "model/weights.bin is a symbolic link"),
    ("linked-folder", "model/weights.bin is a symbolic link or under one"),
    ("huge", "larger than the limit of 1000000 bytes"),
])
def test_an_output_that_is_a_link_or_too_large_is_refused(process_node, job_template, user_factory, mode, why):
    done = drive_job(start(job_template(), user_factory(), mode=mode))
    assert done.state == State.FAILED
    assert "its outputs could not be taken" in done.reason and why in done.reason
    assert not done.artifacts.exists()


def test_a_required_file_missing_or_too_large_is_a_field_error(process_node, job_template, user_factory, job_settings):
    version, user = job_template(), user_factory()
    with pytest.raises(DeploymentRejected) as missing:
        job_create(owner=user, version=version, inputs={})
    assert missing.value.errors == [("inputs.dataset", "is required: Dataset")]
    job_settings.JOB_INPUT_MAX_BYTES = 10
    with pytest.raises(DeploymentRejected) as large:
        start(version, user)
    assert large.value.errors == [("inputs.dataset", "is larger than the limit of 10 bytes")]
    assert not Job.objects.exists()


def test_a_job_whose_worker_died_is_finished_by_the_reconciler(process_node, job_template, user_factory):
    # The progress task stops at `running`, as when its worker is killed; the run goes on.
    running = drive_job(start(job_template(), user_factory()), until=(State.RUNNING,))
    assert running.state == State.RUNNING
    time.sleep(1.5)
    assert jobs_reconcile() == [running.handle]
    running.refresh_from_db()
    assert running.state == State.SUCCEEDED and running.artifacts.count() == 2


def test_a_run_killed_mid_job_is_failed_by_the_reconciler_not_left_running(process_node, job_template, user_factory,
                                                                          job_settings):
    running = drive_job(start(job_template(), user_factory(), mode="sleep"), until=(State.RUNNING,))
    assert running.state == State.RUNNING
    time.sleep(0.5)
    pid = int((job_settings.VAR_DIR / "runs" / running.handle / "pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert jobs_reconcile() == [running.handle]
    running.refresh_from_db()
    assert running.state == State.FAILED and "killed by SIGKILL" in running.reason


def test_a_run_that_vanished_from_its_node_fails(process_node, job_template, user_factory, job_settings):
    import shutil

    running = drive_job(start(job_template(), user_factory(), mode="sleep"), until=(State.RUNNING,))
    from hub_site.backends import runner_for

    runner_for(process_node).stop(running.handle)
    shutil.rmtree(job_settings.VAR_DIR / "runs" / running.handle, ignore_errors=True)
    jobs_reconcile()
    running.refresh_from_db()
    assert running.state == State.FAILED and "vanished from node local" in running.reason


def test_the_deployments_reconciler_leaves_a_running_job_alone(process_node, job_template, user_factory):
    from deployments.reconcile import deployments_reconcile

    running = drive_job(start(job_template(), user_factory(), mode="sleep"), until=(State.RUNNING,))
    assert running.state == State.RUNNING
    report = deployments_reconcile()
    assert running.handle not in report.removed
    from hub_site.backends import runner_for

    assert runner_for(process_node).status(running.handle).alive
    runner_for(process_node).remove_job(running.handle)


def test_an_empty_file_is_a_field_error(process_node, job_template, user_factory):
    with pytest.raises(DeploymentRejected) as empty:
        start(job_template(), user_factory(), data=b"")
    assert empty.value.errors == [("inputs.dataset", "the file is empty")]


def test_a_running_job_holds_its_nodes_room_until_it_ends(process_node, job_template, user_factory, django_assert_num_queries):
    from decimal import Decimal

    from deployments.selectors import node_usage, schedulable_capacities
    from hub_site.backends import runner_for
    from runners.base import Resources
    from runners.scheduler import NoNodeFits, place

    whole_node = {"gpus": 0, "cpu": float(process_node.cpus), "memory_gb": 1}
    job = drive_job(start(job_template(resources=whole_node), user_factory(), mode="sleep"), until=(State.RUNNING,))
    assert job.state == State.RUNNING and job.node == process_node
    assert (job.cpu, job.memory_gb) == (Decimal(str(whole_node["cpu"])), Decimal(1))

    with django_assert_num_queries(1):
        used = node_usage()
    assert used[process_node.pk].cpu == process_node.cpus and used[process_node.pk].deployments == 0
    # The deploy flow and the next job see no room left on the only node.
    with pytest.raises(NoNodeFits):
        place(Resources(cpu=1, memory_gb=1), schedulable_capacities())

    runner_for(process_node).remove_job(job.handle)
    jobs_reconcile()
    assert Job.objects.get(pk=job.pk).state == State.FAILED
    assert place(Resources(cpu=1, memory_gb=1), schedulable_capacities()).node == process_node.name
