"""The path issue 11 names, in one test: the fine-tune job is built (a venv, from the test
wheelhouse) and runs for real on the process runner (MiniLM, torch), its checkpoint is
published as a new version, that version is built and deployed, and it classifies a sentence;
the version page shows where it came from."""

import hashlib
import io
import json
import time
import urllib.request

import pytest

from deployments import transitions
from deployments.flow import deployment_advance
from deployments.jobs import UploadedInput, job_create
from deployments.models import Deployment
from deployments.promote import job_promote
from deployments.services import deployment_create, deployment_delete
from templates_catalog.builds import build_run
from templates_catalog.bundles import bundle_pack
from templates_catalog.models import Build
from templates_catalog.services import publisher_create, template_version_publish
from tests.deployments.conftest import upstream_headers

from .conftest import ROOT, drive_job

pytestmark = pytest.mark.templates

FIXTURE = ROOT / "fixtures" / "templates" / "finetune-classifier"
DATASET = FIXTURE / "data" / "topics.csv"
UNSEEN = {"A cold front will bring heavy showers overnight.": "weather",
          "Fold the beaten egg whites into the batter.": "cooking"}


@pytest.fixture(autouse=True)
def deployment_tasks_recorded(monkeypatch):
    monkeypatch.setattr(transitions, "send_progress", lambda deployment_id, countdown=0: None)


def drive_deployment(deployment: Deployment, *, steps: int = 900) -> Deployment:
    for _ in range(steps):
        deployment.refresh_from_db()
        if deployment.state in (Deployment.State.RUNNING, Deployment.State.FAILED):
            return deployment
        if deployment.state == Deployment.State.BUILDING and deployment.build.status == Build.Status.QUEUED:
            build_run(build_id=deployment.build_id)
        if deployment_advance(deployment_id=deployment.pk):
            time.sleep(0.2)
    return deployment


def post_json(url: str, body: dict, headers: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


@pytest.fixture(autouse=True)
def wheelhouse(job_settings):
    # The test wheelhouse (torch, sentence-transformers, the MiniLM weights) that `make test`
    # fills and the other real venv builds use; the builds go to this test's own var/.
    job_settings.WHEELHOUSE_DIR = ROOT / "var" / "test-wheelhouse"
    job_settings.DEPLOY_READY_TIMEOUT_SECONDS = 300


def test_fine_tune_then_publish_then_deploy_then_predict(process_node, publisher, user_factory, client):
    source = template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(FIXTURE))).version
    user = user_factory("trainer")
    own = publisher_create(slug="trainer-lab", name="Trainer's lab", owner=user)

    with DATASET.open("rb") as upload:
        job = job_create(owner=user, version=source, inputs={"epochs": 30},
                         files=[UploadedInput(name="dataset", file=upload, filename="topics.csv")])
    job = drive_job(job, steps=3000, pause=0.2, build_for_real=True)
    assert job.state == job.State.SUCCEEDED, job.reason
    assert job.metrics["accuracy"] >= 0.9 and job.metrics["holdout_examples"] == 56
    checkpoint = job.artifacts.get(name="checkpoint")
    assert checkpoint.sha256 == job.metrics["checkpoint_sha256"]

    version = job_promote(job=job, user=user, publisher=own, name="topic-classifier", version="1.0.0").version
    assert version.manifest["kind"] == "service" and version.manifest.get("job") is None and not version.manifest["inputs"]
    assert version.provenance["job"] == job.handle
    assert version.provenance["inputs"]["dataset"]["sha256"] == hashlib.sha256(DATASET.read_bytes()).hexdigest()
    assert version.provenance["outputs"]["checkpoint"]["sha256"] == checkpoint.sha256
    assert ["model/classifier.pt", checkpoint.size] in version.files

    deployment = deployment_create(owner=user, version=version, inputs={}).deployment
    try:
        running = drive_deployment(deployment)
        assert running.state == Deployment.State.RUNNING, running.reason
        model = urllib.request.Request(running.endpoint + "/v1/model", headers=upstream_headers(running))
        with urllib.request.urlopen(model, timeout=30) as answer:
            assert json.loads(answer.read())["sha256"] == checkpoint.sha256
        answer = post_json(running.endpoint + "/v1/classify", {"input": list(UNSEEN)}, upstream_headers(running))
        assert [item["label"] for item in answer["data"]] == list(UNSEEN.values())
    finally:
        deployment_delete(deployment=deployment)
        deployment_advance(deployment_id=deployment.pk)

    client.force_login(user)
    page = client.get("/templates/topic-classifier/versions/1.0.0/")
    assert page.status_code == 200
    html = page.content.decode()
    assert job.handle in html and f"sha256:{checkpoint.sha256}" in html
    assert f'<dd class="metric-accuracy">{job.metrics["accuracy"]}</dd>' in html
