"""`storage` for real: deploy the vector-store fixture, add vectors, stop and restart the
deployment, and they are still there; delete it, and its volume is gone. Once through the
process runner (a venv build) and once on a Docker Engine (an image, a named volume)."""

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deployments.flow import deployment_advance
from deployments.models import Deployment
from deployments.nodes import node_add
from deployments.services import deployment_create, deployment_delete, deployment_restart, deployment_stop
from runners.docker import volume_name
from tests.builds.conftest import ROOT, docker_client, publish_folder  # noqa: F401 (docker_client: a fixture)

from .conftest import drive_for_real, upstream_headers

State = Deployment.State
VECTOR_STORE = ROOT / "fixtures" / "templates" / "vector-store"
POINTS = [
    {"id": "north", "vector": [0.0, 1.0, 0.0], "metadata": {"kept": True}},
    {"id": "east", "vector": [1.0, 0.0, 0.0]},
]


@pytest.fixture
def storage_settings(build_settings, tmp_path):
    from templates_catalog import builds

    build_settings.VAR_DIR = tmp_path / "var"
    build_settings.DEPLOY_READY_TIMEOUT_SECONDS = 120
    builds.build_backend.cache_clear()
    yield build_settings
    builds.build_backend.cache_clear()



def _call(deployment: Deployment, path: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(deployment.endpoint + path, data=data,
                                     headers={"Content-Type": "application/json", **upstream_headers(deployment)})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        # What answered, and why: a bare "HTTP Error 404" cannot tell a lost collection from another server.
        raise AssertionError(f"{request.get_method()} {request.full_url}: {error.code} {error.read()[:500]!r} "
                             f"{dict(error.headers)}") from None


def _add_vectors(deployment: Deployment) -> None:
    _call(deployment, "/collections", {"name": "docs", "dimension": 3})
    assert _call(deployment, "/collections/docs/upsert", {"points": POINTS})["count"] == 2


def _nearest(deployment: Deployment) -> list:
    answer = _call(deployment, "/collections/docs/query", {"vector": [0.1, 0.9, 0.0], "k": 2})
    return [(match["id"], match["metadata"]) for match in answer["matches"]]


def _stop_and_restart(deployment: Deployment) -> Deployment:
    deployment_stop(deployment=deployment)
    stopped = drive_for_real(deployment)
    assert stopped.state == State.STOPPED, stopped.reason
    assert "its volume is kept" in stopped.events.order_by("pk").last().message
    deployment_restart(deployment=stopped)
    again = drive_for_real(stopped)
    assert again.state == State.RUNNING, again.reason
    return again


def _deploy_and_check_persistence(deployment: Deployment) -> Deployment:
    running = drive_for_real(deployment)
    assert running.state == State.RUNNING, running.reason
    _add_vectors(running)
    before = _nearest(running)
    assert before == [("north", {"kept": True}), ("east", {})]

    again = _stop_and_restart(running)

    assert _call(again, "/collections/docs")["count"] == 2
    assert _nearest(again) == before
    return again


def _delete(deployment: Deployment) -> None:
    deployment_delete(deployment=deployment)
    deployment_advance(deployment_id=deployment.pk)
    deployment_advance(deployment_id=deployment.pk)  # a deleted, stopped deployment: its leftovers go


def test_vectors_survive_a_restart_on_the_process_runner_and_go_with_the_deployment(
    db, storage_settings, publisher, user_factory
):
    from templates_catalog import builds

    storage_settings.BUILD_BACKEND = "venv"
    builds.build_backend.cache_clear()
    node_add(name="local", runner="process")
    version = publish_folder(VECTOR_STORE, publisher)
    deployment = deployment_create(owner=user_factory(), version=version, inputs={}).deployment
    run_dir = Path(storage_settings.VAR_DIR) / "runs" / deployment.handle
    try:
        _deploy_and_check_persistence(deployment)
        assert (run_dir / "volume" / "docs").is_dir()  # the collection lives on the volume, not in the build
    finally:
        _delete(deployment)
    assert not run_dir.exists()


def test_vectors_survive_a_restart_on_a_docker_node_and_the_volume_goes_with_the_deployment(
    db, storage_settings, docker_client, publisher, user_factory,  # noqa: F811 (the fixture imported above)
):
    from docker.errors import NotFound

    node_add(name="docker-local", runner="docker")
    version = publish_folder(VECTOR_STORE, publisher)
    deployment = deployment_create(owner=user_factory(), version=version, inputs={}).deployment
    volume = volume_name(deployment.handle)
    try:
        again = _deploy_and_check_persistence(deployment)
        container = docker_client.containers.get(f"aihub-{again.handle}")
        mounts = {mount["Destination"]: mount.get("Name") for mount in container.attrs["Mounts"]}
        assert mounts == {"/data": volume}
        assert container.attrs["HostConfig"]["ReadonlyRootfs"] is True
    finally:
        _delete(deployment)
    with pytest.raises(NotFound):
        docker_client.volumes.get(volume)
    with pytest.raises(NotFound):
        docker_client.containers.get(f"aihub-{deployment.handle}")
