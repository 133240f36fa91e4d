"""The job's pages as a user meets them: the deploy page of a job template runs it with an
upload, the job's page shows its outputs and metrics, and publishes them as a version."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from deployments.models import Job
from templates_catalog.services import publisher_create

from .conftest import drive_job

SERVE = {"handler": "handler:Model"}


@pytest.fixture
def trainer(user_factory, client):
    user = user_factory("trainer")
    publisher_create(slug="trainer-lab", name="Trainer's lab", owner=user)
    client.force_login(user)
    return user


def run_from_the_form(client, version, **fields):
    page = client.get(f"/templates/{version.template.name}/deploy/")
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.content.decode()
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page.content.decode())[1]
    return client.post(f"/templates/{version.template.name}/deploy/", {"idempotency_key": key, **fields})


def test_the_deploy_page_of_a_job_runs_it_with_the_uploaded_file(process_node, job_template, trainer, client):
    version = job_template(serve=SERVE)
    answer = run_from_the_form(client, version, dataset=SimpleUploadedFile("d.csv", b"a,b\n1,2\n"), mode="ok")
    assert answer.status_code == 303
    job = Job.objects.get(owner=trainer)
    assert answer["Location"] == f"/jobs/{job.handle}/"
    assert job.inputs["dataset"]["filename"] == "d.csv" and job.inputs["mode"] == "ok"

    live = client.get(f"/jobs/{job.handle}/")
    assert live.status_code == 200 and f'/jobs/{job.handle}/live/' in live.content.decode()  # polled while in flight

    drive_job(job)
    page = client.get(f"/jobs/{job.handle}/")
    html = page.content.decode()
    assert 'data-state="succeeded"' in html and '<dd class="metric-accuracy">0.875</dd>' in html
    weights = job.artifacts.get(name="weights")
    assert f"sha256:{weights.sha256}" in html and "model/weights.bin" in html
    assert "Publish as a new version" in html and "hx-get" not in html  # finished: no more polling


def test_a_missing_file_is_shown_beside_its_field(process_node, job_template, trainer, client):
    answer = run_from_the_form(client, job_template(), mode="ok")
    assert answer.status_code == 400
    assert "This field is required." in answer.content.decode()
    assert not Job.objects.exists()


def test_the_job_page_takes_a_fixed_number_of_queries(process_node, job_template, trainer, client,
                                                      django_assert_max_num_queries):
    job = drive_job(Job.objects.get(pk=run_job(client, job_template(serve=SERVE)).pk))
    with django_assert_max_num_queries(12):
        assert client.get(f"/jobs/{job.handle}/").status_code == 200


def run_job(client, version) -> Job:
    run_from_the_form(client, version, dataset=SimpleUploadedFile("d.csv", b"a,b\n"), mode="ok")
    return Job.objects.latest("pk")


def test_another_users_job_is_not_found(process_node, job_template, trainer, client, user_factory):
    job = run_job(client, job_template())
    client.force_login(user_factory("someone-else"))
    assert client.get(f"/jobs/{job.handle}/").status_code == 404
    assert client.post(f"/jobs/{job.handle}/promote/", {"name": "x", "version": "1.0.0"}).status_code == 404


def test_publishing_from_the_page_opens_the_new_versions_page_with_its_provenance(process_node, job_template, trainer,
                                                                                  client):
    job = drive_job(run_job(client, job_template(serve=SERVE)))
    lab = trainer.memberships.get().publisher
    answer = client.post(f"/jobs/{job.handle}/promote/", {"publisher": lab.pk, "name": "tiny-tuned", "version": "1.0.0"})
    assert answer.status_code == 303 and answer["Location"] == "/templates/tiny-tuned/versions/1.0.0/"
    html = client.get(answer["Location"]).content.decode()
    assert "Made by a job" in html and job.handle in html and '<dd class="metric-accuracy">0.875</dd>' in html

    again = client.post(f"/jobs/{job.handle}/promote/", {"publisher": lab.pk, "name": "Bad Name", "version": "1.0.0"})
    assert again.status_code == 400 and "Enter a valid “slug”" in again.content.decode()


def test_my_jobs_lists_mine_only_in_a_fixed_number_of_queries(process_node, job_template, trainer, client, user_factory,
                                                             django_assert_num_queries):
    version = job_template()
    mine = [run_job(client, version) for _ in range(3)]
    Job.objects.create(owner=user_factory("someone-else"), version=version)
    with django_assert_num_queries(3):  # session, user, jobs with their templates and nodes
        html = client.get("/jobs/").content.decode()
    assert all(job.handle in html for job in mine) and html.count("/jobs/j-") == 3
