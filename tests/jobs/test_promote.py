"""Publish as a new version: who may, from which jobs, and two promotes at once make one version."""

import io
import threading

import pytest
from django.db import connections

from deployments.jobs import UploadedInput, job_create
from deployments.models import Job
from deployments.promote import job_promote
from deployments.services import DeploymentConflict, DeploymentNotFound, DeploymentRejected
from templates_catalog.models import TemplateVersion
from templates_catalog.services import publisher_create

from .conftest import drive_job

SERVE = {"handler": "handler:Model"}


def succeeded_job(job_template, user, **overrides) -> Job:
    version = job_template(**overrides)
    job = job_create(owner=user, version=version, inputs={},
                     files=[UploadedInput(name="dataset", file=io.BytesIO(b"a,b\n1,2\n"), filename="d.csv")])
    job = drive_job(job)
    assert job.state == Job.State.SUCCEEDED, job.reason
    return job


@pytest.fixture
def trainer(user_factory):
    user = user_factory("trainer")
    return user, publisher_create(slug="trainer-lab", name="Trainer's lab", owner=user)


def test_it_publishes_the_outputs_with_the_serving_code_and_records_provenance(process_node, job_template, trainer):
    user, lab = trainer
    job = succeeded_job(job_template, user, serve=SERVE)
    result = job_promote(job=job, user=user, publisher=lab, name="tiny-tuned", version="1.0.0")
    version = result.version
    assert result.created and version.template.publisher == lab and version.template.visibility == "private"
    assert dict(version.files)["model/weights.bin"] == job.artifacts.get(name="weights").size
    assert version.provenance["job"] == job.handle
    assert version.provenance["outputs"]["weights"]["sha256"] == job.artifacts.get(name="weights").sha256
    assert version.provenance["inputs"]["dataset"]["filename"] == "d.csv"
    assert version.provenance["metrics"] == {"accuracy": 0.875, "examples": 2}
    # Again: the same version, not a second one.
    again = job_promote(job=job, user=user, publisher=lab, name="tiny-tuned", version="1.0.0")
    assert not again.created and again.version == version


def test_only_the_jobs_owner_who_is_a_member_of_the_publisher_may_promote(process_node, job_template, trainer,
                                                                          user_factory, other_publisher):
    user, lab = trainer
    job = succeeded_job(job_template, user, serve=SERVE)
    with pytest.raises(DeploymentNotFound):
        job_promote(job=job, user=user_factory("stranger"), publisher=lab, name="tiny-tuned", version="1.0.0")
    with pytest.raises(DeploymentRejected) as refused:
        job_promote(job=job, user=user, publisher=other_publisher, name="tiny-tuned", version="1.0.0")
    assert refused.value.errors == [("publisher", "you are not a member of this publisher")]
    assert not TemplateVersion.objects.filter(template__name="tiny-tuned").exists()


def test_a_job_without_serving_code_or_not_succeeded_cannot_be_promoted(process_node, job_template, trainer):
    user, lab = trainer
    plain = succeeded_job(job_template, user)
    with pytest.raises(DeploymentRejected, match="has no `serve` section"):
        job_promote(job=plain, user=user, publisher=lab, name="tiny-tuned", version="1.0.0")
    failed = drive_job(job_create(owner=user, version=job_template(name="tiny-job-2", serve=SERVE), inputs={"mode": "fail"},
                                  files=[UploadedInput(name="dataset", file=io.BytesIO(b"x"), filename="d.csv")]))
    with pytest.raises(DeploymentConflict, match="only a succeeded job"):
        job_promote(job=failed, user=user, publisher=lab, name="tiny-tuned", version="1.0.0")


def test_a_bad_name_or_a_taken_version_is_a_field_error(process_node, job_template, trainer, publisher):
    user, lab = trainer
    job = succeeded_job(job_template, user, serve=SERVE)
    with pytest.raises(DeploymentRejected) as bad:
        job_promote(job=job, user=user, publisher=lab, name="Not A Name", version="1.0.0")
    assert bad.value.errors[0][0] == "name"
    # A name another publisher owns (the job's own template) is refused, not overwritten.
    with pytest.raises(DeploymentRejected) as taken:
        job_promote(job=job, user=user, publisher=lab, name="tiny-job", version="9.0.0")
    assert taken.value.errors[0][0] == "name" and "belongs to another publisher" in taken.value.errors[0][1]


def test_an_output_declared_at_hub_yaml_cannot_replace_the_manifest(process_node, job_template, trainer):
    user, lab = trainer
    job = succeeded_job(job_template, user, serve=SERVE)
    job.artifacts.filter(name="metrics").update(path="hub.yaml")
    with pytest.raises(DeploymentRejected, match="would replace hub.yaml"):
        job_promote(job=job, user=user, publisher=lab, name="tiny-tuned", version="1.0.0")


@pytest.mark.django_db(transaction=True)
def test_two_promotes_released_at_once_make_one_version(process_node, job_template, trainer, sent):
    user, lab = trainer
    job = succeeded_job(job_template, user, serve=SERVE)
    barrier = threading.Barrier(2)
    results, errors = [], []

    def promote() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(job_promote(job=Job.objects.get(pk=job.pk), user=user, publisher=lab, name="tiny-tuned",
                                       version="1.0.0"))
        except Exception as exc:  # recorded: the assertion below says which
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=promote) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sorted(result.created for result in results) == [False, True]
    assert results[0].version.pk == results[1].version.pk
    assert TemplateVersion.objects.filter(template__name="tiny-tuned").count() == 1
