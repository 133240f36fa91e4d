"""POST/GET /api/v1/jobs/…: a personal deploy token starts a job with an upload and reads it."""

import json

from django.core.files.uploadedfile import SimpleUploadedFile

from deployments.models import Job
from templates_catalog.services import api_token_create_personal

from .conftest import drive_job

URL = "/api/v1/jobs/"


def test_a_deploy_token_starts_a_job_with_a_file_and_reads_its_outputs(process_node, job_template, user_factory, client):
    version = job_template()
    dana = user_factory("dana")
    auth = {"Authorization": f"Bearer {api_token_create_personal(user=dana, name='ci').secret}"}
    answer = client.post(URL, {"template": version.template.name, "inputs": json.dumps({"mode": "ok"}),
                               "dataset": SimpleUploadedFile("d.csv", b"a,b\n1,2\n"), "idempotency_key": "run-1"},
                         headers=auth)
    assert answer.status_code == 201, answer.content
    handle = answer.json()["id"]
    assert answer.json()["state"] == "queued" and answer.json()["inputs"]["dataset"]["filename"] == "d.csv"

    drive_job(Job.objects.get(handle=handle))
    body = client.get(f"{URL}{handle}/", headers=auth).json()
    assert body["state"] == "succeeded" and body["metrics"]["accuracy"] == 0.875
    assert {output["name"] for output in body["outputs"]} == {"weights", "metrics"}

    again = client.post(URL, {"template": version.template.name, "inputs": json.dumps({"mode": "ok"}),
                              "dataset": SimpleUploadedFile("d.csv", b"a,b\n1,2\n"), "idempotency_key": "run-1"},
                        headers=auth)
    assert again.status_code == 200 and again.json()["id"] == handle


def test_a_missing_file_is_400_naming_the_field_and_others_jobs_are_404(process_node, job_template, user_factory, client):
    version = job_template()
    auth = {"Authorization": f"Bearer {api_token_create_personal(user=user_factory('dana'), name='ci').secret}"}
    answer = client.post(URL, {"template": version.template.name, "inputs": json.dumps({"mode": "ok"})}, headers=auth)
    assert answer.status_code == 400
    assert answer.json()["errors"] == [{"field": "inputs.dataset", "message": "is required: Dataset"}]
    assert client.post(URL, {"template": version.template.name, "inputs": "[1]"}, headers=auth).status_code == 400

    other = user_factory("eve")
    job = Job.objects.create(owner=other, version=version)
    assert client.get(f"{URL}{job.handle}/", headers=auth).status_code == 404
    assert client.get(f"{URL}{job.handle}/").status_code == 401


def test_the_list_holds_only_your_jobs_newest_first_in_a_fixed_number_of_queries(
        process_node, job_template, user_factory, client, django_assert_num_queries):
    version = job_template()
    dana, eve = user_factory("dana"), user_factory("eve")
    auth = {"Authorization": f"Bearer {api_token_create_personal(user=dana, name='ci').secret}"}

    def start(owner) -> str:
        token = api_token_create_personal(user=owner, name=f"run-{owner.pk}-{Job.objects.count()}").secret
        answer = client.post(URL, {"template": version.template.name, "inputs": json.dumps({"mode": "ok"}),
                                   "dataset": SimpleUploadedFile("d.csv", b"a,b\n1,2\n")},
                             headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 201, answer.content
        return answer.json()["id"]

    first = start(dana)
    drive_job(Job.objects.get(handle=first))
    start(eve)
    second = start(dana)

    def listed() -> dict:
        answer = client.get(URL, headers=auth)
        assert answer.status_code == 200, answer.content
        return answer.json()

    body = listed()
    assert [job["id"] for job in body["results"]] == [second, first] and body["count"] == 2
    assert {output["name"] for output in body["results"][1]["outputs"]} == {"weights", "metrics"}
    for _ in range(3):
        start(dana)
    with django_assert_num_queries(5):  # token, count, page, its artifacts, last-used stamp
        assert listed()["count"] == 5
