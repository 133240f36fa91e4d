"""Deleting a job removes its rows and the files it stored that no other job names: from the
service, its page and the API; never a job in flight, never another user's, never a file that
a remaining job (or one being created) still names, and never a version published from it."""

import io
import tarfile
import threading

import pytest
from django.core.files.storage import FileSystemStorage
from django.db import connection
from django.db.models.signals import post_delete
from django.test import Client

from deployments.job_deletion import job_delete
from deployments.jobs import UploadedInput, artifact_storage_path, job_create
from deployments.models import Job, JobArtifact, JobEvent
from deployments.promote import job_promote
from deployments.services import DeploymentConflict, DeploymentNotFound
from hub_site.backends import runner_for
from templates_catalog.models import TemplateVersion
from templates_catalog.services import api_token_create_personal, publisher_create
from templates_catalog.stored_bundles import bundle_copy_verified

from ..concurrency import at_once
from .conftest import drive_job

State = Job.State
DATASET = b"text,label\nsunny day,weather\nbake bread,cooking\n"
SERVE = {"handler": "handler:Model"}


def finished(version, user, *, data=DATASET, mode="ok") -> Job:
    job = drive_job(job_create(owner=user, version=version, inputs={"mode": mode},
                               files=[UploadedInput(name="dataset", file=io.BytesIO(data), filename="d.csv")]))
    assert job.state in (State.SUCCEEDED, State.FAILED), job.reason
    return job


def stored_paths(job: Job) -> set[str]:
    outputs = {artifact_storage_path(sha256) for sha256 in job.artifacts.values_list("sha256", flat=True)}
    return outputs | {artifact_storage_path(job.inputs["dataset"]["sha256"])}


def present(artifact_root, paths) -> set[str]:
    return {path for path in paths if (artifact_root / path).exists()}


def test_a_finished_job_goes_with_its_rows_and_its_stored_inputs_and_outputs(
        process_node, job_template, user_factory, artifact_root, django_capture_on_commit_callbacks):
    owner = user_factory()
    version = job_template()
    job = finished(version, owner)
    failed = finished(version, owner, data=b"other,data\n", mode="fail")
    paths, failed_paths = stored_paths(job), stored_paths(failed)
    assert job.state == State.SUCCEEDED and len(paths) == 3 and present(artifact_root, paths) == paths
    assert failed.state == State.FAILED and present(artifact_root, failed_paths) == failed_paths

    for each in (job, failed):
        with django_capture_on_commit_callbacks(execute=True):
            job_delete(job=each, by=owner)
    assert not Job.objects.exists() and not JobEvent.objects.exists() and not JobArtifact.objects.exists()
    assert present(artifact_root, paths | failed_paths) == set()


def test_a_digest_another_job_names_stays_until_that_job_goes_too(
        process_node, job_template, user_factory, artifact_root, django_capture_on_commit_callbacks):
    version = job_template()
    first, second = finished(version, user_factory()), finished(version, user_factory())
    # The same dataset gives the same outputs: all three files are shared.
    shared = stored_paths(first)
    assert stored_paths(second) == shared and len(shared) == 3
    weights = first.artifacts.get(name="weights")
    # A third job was given the first one's output as its upload (and failed, storing nothing):
    # an output's digest named only as an input.
    chained = finished(version, second.owner, data=(artifact_root / weights.storage_path).read_bytes(), mode="fail")
    assert chained.inputs["dataset"]["sha256"] == weights.sha256 and not chained.artifacts.exists()

    with django_capture_on_commit_callbacks(execute=True):
        job_delete(job=first, by=first.owner)
    assert present(artifact_root, shared) == shared
    with django_capture_on_commit_callbacks(execute=True):
        job_delete(job=second, by=second.owner)
    assert present(artifact_root, shared) == {weights.storage_path}
    with django_capture_on_commit_callbacks(execute=True):
        job_delete(job=chained, by=chained.owner)
    assert present(artifact_root, shared) == set()


def test_a_digest_that_only_appears_as_text_in_another_jobs_inputs_does_not_keep_the_file(
        process_node, job_template, user_factory, artifact_root, django_capture_on_commit_callbacks):
    version = job_template()
    job = finished(version, user_factory())
    dataset = job.inputs["dataset"]["sha256"]
    Job.objects.create(owner=user_factory(), version=version, inputs={"mode": dataset, "note": {"sha": dataset}})
    with django_capture_on_commit_callbacks(execute=True):
        job_delete(job=job, by=job.owner)
    assert not (artifact_root / artifact_storage_path(dataset)).exists()


def test_a_job_in_flight_is_refused_and_nothing_is_removed(process_node, job_template, user_factory, artifact_root,
                                                           django_capture_on_commit_callbacks):
    owner = user_factory()
    version = job_template()
    queued = job_create(owner=owner, version=version, inputs={},
                        files=[UploadedInput(name="dataset", file=io.BytesIO(DATASET), filename="d.csv")])
    running = drive_job(job_create(owner=owner, version=version, inputs={"mode": "sleep"},
                                   files=[UploadedInput(name="dataset", file=io.BytesIO(DATASET), filename="d.csv")]),
                        until=(State.RUNNING,))
    try:
        assert running.state == State.RUNNING
        for job in (queued, running):
            with django_capture_on_commit_callbacks(execute=True) as callbacks, pytest.raises(DeploymentConflict) as refused:
                job_delete(job=job, by=owner)
            assert f"{job.handle} is still {job.state}: it can be deleted once it has finished" in str(refused.value)
            assert callbacks == [] and Job.objects.filter(pk=job.pk, state=job.state).exists()
        assert present(artifact_root, stored_paths(running)) == stored_paths(running)
    finally:
        runner_for(process_node).remove_job(running.handle)


def test_another_users_job_is_not_theirs_to_delete(process_node, job_template, user_factory, artifact_root,
                                                   django_capture_on_commit_callbacks):
    job = finished(job_template(), user_factory("owner"))
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(DeploymentNotFound):
        job_delete(job=job, by=user_factory("stranger"))
    assert Job.objects.filter(pk=job.pk).exists()
    assert present(artifact_root, stored_paths(job)) == stored_paths(job)


# --- at the same moment --------------------------------------------------------------------

@pytest.fixture
def both_rows_deleted_before_either_commits():
    """On PostgreSQL, each delete waits, its row deleted but not committed, for the other's:
    the moment at which each still sees the other's job. (SQLite runs one write transaction
    at a time, so there the two deletes cannot overlap, and waiting would only deadlock.)"""
    if connection.vendor != "postgresql":
        yield
        return
    inside = threading.Barrier(2)

    def wait_for_the_other(sender, instance, **kwargs) -> None:
        inside.wait(timeout=10)

    post_delete.connect(wait_for_the_other, sender=Job, dispatch_uid="wait-for-the-other")
    try:
        yield
    finally:
        post_delete.disconnect(sender=Job, dispatch_uid="wait-for-the-other")


@pytest.mark.django_db(transaction=True)
def test_two_jobs_sharing_their_files_deleted_at_once_take_the_files_with_the_last_of_them(
        process_node, job_template, user_factory, artifact_root, sent, both_rows_deleted_before_either_commits):
    version = job_template()
    for _ in range(3):
        first, second = finished(version, user_factory()), finished(version, user_factory())
        paths = stored_paths(first)
        assert paths == stored_paths(second) and present(artifact_root, paths) == paths
        _, errors = at_once(lambda job=first: job_delete(job=job, by=job.owner),
                            lambda job=second: job_delete(job=job, by=job.owner))
        assert not errors, errors
        assert not Job.objects.exists() and not JobArtifact.objects.exists()
        # Had each delete looked while the other's was not committed, each would have kept the files for the other.
        assert present(artifact_root, paths) == set()


class DeleteSlipsIn(FileSystemStorage):
    """The artifact storage, in which another user's delete runs once, right after a create
    has found its upload already stored and before it records the job that names it."""

    hook = None

    def size(self, name):
        size = super().size(name)
        hook, DeleteSlipsIn.hook = DeleteSlipsIn.hook, None
        if hook is not None:
            hook(name)
        return size


@pytest.mark.django_db(transaction=True)
def test_a_job_created_while_a_job_with_its_upload_is_deleted_keeps_the_file(
        process_node, job_template, user_factory, artifact_root, settings, sent):
    version = job_template()
    old = finished(version, user_factory("leaving"))
    dataset_path = artifact_storage_path(old.inputs["dataset"]["sha256"])
    settings.STORAGES = {**settings.STORAGES, "artifacts": {
        "BACKEND": f"{__name__}.DeleteSlipsIn", "OPTIONS": {"location": artifact_root}}}
    removed = []

    def delete_now(name: str) -> None:
        assert name == dataset_path
        assert at_once(lambda: job_delete(job=old, by=old.owner))[1] == []
        removed.append(not (artifact_root / dataset_path).exists())

    DeleteSlipsIn.hook = delete_now
    new = job_create(owner=user_factory("arriving"), version=version, inputs={},
                     files=[UploadedInput(name="dataset", file=io.BytesIO(DATASET), filename="d.csv")])
    # The delete found no job naming the file and removed it; the create stored it again under the lock.
    assert removed == [True]
    assert (artifact_root / dataset_path).read_bytes() == DATASET
    assert drive_job(new).state == State.SUCCEEDED


# --- the page and the API ------------------------------------------------------------------

@pytest.fixture
def signed_in(user_factory, client):
    user = user_factory("trainer")
    client.force_login(user)
    return user


def test_the_page_offers_delete_only_once_finished_and_deletes_on_post(
        process_node, job_template, signed_in, client, artifact_root, django_capture_on_commit_callbacks):
    version = job_template()
    queued = job_create(owner=signed_in, version=version, inputs={},
                        files=[UploadedInput(name="dataset", file=io.BytesIO(b"queued,only\n"), filename="d.csv")])
    assert 'id="delete-job"' not in client.get(f"/jobs/{queued.handle}/").content.decode()
    refused = client.post(f"/jobs/{queued.handle}/delete/", follow=True)
    assert refused.redirect_chain == [(f"/jobs/{queued.handle}/", 303)]
    assert "it can be deleted once it has finished" in refused.content.decode()
    assert Job.objects.filter(pk=queued.pk).exists()

    job = finished(version, signed_in)
    paths = stored_paths(job)
    assert f'href="/jobs/{job.handle}/delete/"' in client.get(f"/jobs/{job.handle}/").content.decode()
    confirm = client.get(f"/jobs/{job.handle}/delete/")
    assert confirm.status_code == 200 and 'id="confirm-delete"' in confirm.content.decode()
    assert Job.objects.filter(pk=job.pk).exists()  # asking is not deleting

    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(f"/jobs/{job.handle}/delete/")
    assert answer.status_code == 303 and answer["Location"] == "/jobs/"
    assert f"Deleted job {job.handle}" in client.get("/jobs/").content.decode()
    assert not Job.objects.filter(pk=job.pk).exists()
    assert present(artifact_root, paths) == set()
    assert client.get(f"/jobs/{job.handle}/").status_code == 404


def test_the_page_needs_a_csrf_token_and_another_user_gets_404(process_node, job_template, signed_in, user_factory):
    job = finished(job_template(), signed_in)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(signed_in)
    assert strict.post(f"/jobs/{job.handle}/delete/").status_code == 403
    stranger = Client()
    stranger.force_login(user_factory("stranger"))
    assert stranger.get(f"/jobs/{job.handle}/delete/").status_code == 404
    assert stranger.post(f"/jobs/{job.handle}/delete/").status_code == 404
    assert Client().post(f"/jobs/{job.handle}/delete/").status_code == 302  # to the sign-in page
    assert Job.objects.filter(pk=job.pk).exists()


def test_the_api_deletes_a_finished_job_refuses_one_in_flight_and_hides_anothers(
        process_node, job_template, user_factory, client, artifact_root, django_capture_on_commit_callbacks):
    version = job_template()
    dana, eve = user_factory("dana"), user_factory("eve")
    auth = {"Authorization": f"Bearer {api_token_create_personal(user=dana, name='ci').secret}"}
    job = finished(version, dana)
    paths = stored_paths(job)
    others = finished(version, eve, data=b"eve's,data\n")
    queued = job_create(owner=dana, version=version, inputs={},
                        files=[UploadedInput(name="dataset", file=io.BytesIO(b"later\n"), filename="d.csv")])

    in_flight = client.delete(f"/api/v1/jobs/{queued.handle}/", headers=auth)
    assert in_flight.status_code == 409
    assert in_flight.json()["detail"].startswith(f"{queued.handle} is still queued: it can be deleted once it has finished")
    hidden = client.delete(f"/api/v1/jobs/{others.handle}/", headers=auth)
    missing = client.delete("/api/v1/jobs/j-nosuchjob2/", headers=auth)
    assert hidden.status_code == missing.status_code == 404 and hidden.json() == missing.json()
    assert client.delete(f"/api/v1/jobs/{job.handle}/").status_code == 401
    assert Job.objects.count() == 3

    with django_capture_on_commit_callbacks(execute=True):
        deleted = client.delete(f"/api/v1/jobs/{job.handle}/", headers=auth)
    assert deleted.status_code == 204 and deleted.content == b""
    assert present(artifact_root, paths) == set()
    assert present(artifact_root, stored_paths(others)) == stored_paths(others)
    assert client.get(f"/api/v1/jobs/{job.handle}/", headers=auth).status_code == 404
    assert client.delete(f"/api/v1/jobs/{job.handle}/", headers=auth).status_code == 404


def test_a_version_published_from_a_job_outlives_it(process_node, job_template, signed_in, client, artifact_root,
                                                    tmp_path, django_capture_on_commit_callbacks):
    lab = publisher_create(slug="trainer-lab", name="Trainer's lab", owner=signed_in)
    job = finished(job_template(serve=SERVE), signed_in)
    weights = job.artifacts.get(name="weights")
    weights_bytes = (artifact_root / weights.storage_path).read_bytes()
    version = job_promote(job=job, user=signed_in, publisher=lab, name="tiny-tuned", version="1.0.0").version

    with django_capture_on_commit_callbacks(execute=True):
        job_delete(job=job, by=signed_in)
    assert not (artifact_root / weights.storage_path).exists()

    page = client.get(f"/templates/{version.template.name}/versions/{version.version}/")
    html = page.content.decode()
    assert page.status_code == 200 and job.handle in html and f"sha256:{weights.sha256}" in html
    with tarfile.open(bundle_copy_verified(version=version, target=tmp_path / "bundle.tar.gz")) as bundle:
        assert bundle.extractfile("model/weights.bin").read() == weights_bytes
    download = client.get(f"/api/v1/templates/{version.template.name}/versions/{version.version}/bundle/")
    assert download.status_code == 200


def test_publishing_a_job_deleted_meanwhile_is_a_conflict_not_a_version_without_its_outputs(
        process_node, job_template, user_factory, artifact_root, django_capture_on_commit_callbacks):
    owner = user_factory("trainer")
    lab = publisher_create(slug="trainer-lab", name="Trainer's lab", owner=owner)
    version = job_template(serve=SERVE)
    # Deleted after the page found it: its output rows are gone by the time they are read.
    stale = finished(version, owner)
    with django_capture_on_commit_callbacks(execute=True):
        job_delete(job=Job.objects.get(pk=stale.pk), by=owner)
    # Deleted after its output rows were read: their files are gone by the time they are copied.
    listed = finished(version, owner, data=b"another,dataset\n")
    for artifact in listed.artifacts.all():
        (artifact_root / artifact.storage_path).unlink()
    for job in (stale, listed):
        with pytest.raises(DeploymentConflict, match=f"{job.handle} was deleted while it was being published"):
            job_promote(job=job, user=owner, publisher=lab, name="tiny-tuned", version="1.0.0")
    assert not TemplateVersion.objects.filter(template__name="tiny-tuned").exists()
