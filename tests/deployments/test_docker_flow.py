"""The real thing on a Docker Engine: MiniLM published from the fixtures, built into an
image, placed on a registered docker node, started hardened, answering /v1/embeddings;
then `docker kill`, and the reconciler brings it back; then delete leaves nothing behind.

The first run on an engine builds MiniLM's image (torch, from the shared test wheelhouse:
minutes on a 2-core machine). The image is named by its cache key, so every later build of
the same bundle on the same base image is a cache hit: the build happens once per engine,
not once per test or per session."""

import io
import json
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

from deployments.flow import deployment_advance
from deployments.models import Deployment
from deployments.nodes import node_add
from deployments.reconcile import deployments_reconcile
from deployments.services import deployment_create, deployment_delete
from runners.docker import APP_USER, PIDS_LIMIT, container_name
from templates_catalog.bundles import bundle_pack
from templates_catalog.services import template_version_publish

from .conftest import drive_for_real, upstream_headers

State = Deployment.State
ROOT = Path(__file__).resolve().parents[2]
MINILM = ROOT / "fixtures" / "templates" / "minilm-embeddings"
# Building MiniLM's image the first time on a busy 2-core machine, then loading the model.
STEPS_UNTIL_RUNNING = 2400


@pytest.fixture
def docker_settings(build_settings, docker_client):
    build_settings.DEPLOY_READY_TIMEOUT_SECONDS = 300
    build_settings.DEPLOY_MAX_RESTARTS = 2
    return build_settings


@pytest.fixture
def minilm(docker_settings, publisher):
    return template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(MINILM))).version



def embed(deployment: Deployment, texts: list[str]) -> list[list[float]]:
    """`texts` embedded by the deployment's run itself, at its own port."""
    body = json.dumps({"input": texts, "model": "all-MiniLM-L6-v2"}).encode()
    request = urllib.request.Request(f"{deployment.endpoint}/v1/embeddings", data=body,
                                     headers={"Content-Type": "application/json", **upstream_headers(deployment)})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return [item["embedding"] for item in json.load(answer)["data"]]


def assert_hardened(attrs: dict, deployment: Deployment) -> None:
    config, host = attrs["Config"], attrs["HostConfig"]
    assert config["User"] == APP_USER == "65532:65532"
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["ReadonlyRootfs"] is True
    assert set(host["Tmpfs"]) == {"/tmp"} and "noexec" in host["Tmpfs"]["/tmp"]
    assert host["Privileged"] is False
    assert host["NetworkMode"] not in ("host", "none") and host["NetworkMode"] in ("bridge", "default")
    # MiniLM's manifest: cpu 2, memory_gb 2.
    assert host["Memory"] == 2 * 1024**3 and host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 2 * 10**9
    assert host["PidsLimit"] == PIDS_LIMIT
    assert host["RestartPolicy"]["Name"] in ("no", "")
    bindings = [binding for port in attrs["NetworkSettings"]["Ports"].values() for binding in port or ()]
    assert bindings and all(binding["HostIp"] == "127.0.0.1" for binding in bindings), bindings
    labels = config["Labels"]
    assert labels["io.aihub.deployment"] == deployment.handle and labels["io.aihub.hub"] == settings.HUB_ID
    assert labels["io.aihub.template"] == "minilm-embeddings" and labels["io.aihub.version"] == deployment.version.version


def test_minilm_deploys_on_docker_hardened_answers_survives_a_kill_and_leaves_nothing(
    db, minilm, docker_client, user_factory
):
    node_add(name="docker-local", runner="docker")
    deployment = deployment_create(owner=user_factory(), version=minilm, inputs={}).deployment
    name = container_name(deployment.handle)
    try:
        started = time.monotonic()
        running = drive_for_real(deployment, steps=STEPS_UNTIL_RUNNING, pause=0.5)
        print(f"\nMiniLM on Docker: build and start took {time.monotonic() - started:.1f} s")
        assert running.state == State.RUNNING, running.reason
        vectors = embed(running, ["the hub deploys MiniLM on Docker", "and it answers"])
        assert [len(vector) for vector in vectors] == [384, 384]
        assert all(isinstance(value, float) for value in vectors[0])
        assert_hardened(docker_client.containers.get(name).attrs, running)

        docker_client.containers.get(name).kill()
        assert docker_client.containers.get(name).status == "exited"
        report = deployments_reconcile()
        assert report.restarted == [running.handle]
        again = drive_for_real(running, steps=STEPS_UNTIL_RUNNING, pause=0.5)
        assert again.state == State.RUNNING and again.restarts == 1, again.reason
        assert [len(vector) for vector in embed(again, ["back again"])] == [384]
        assert_hardened(docker_client.containers.get(name).attrs, again)
    finally:
        deployment_delete(deployment=deployment)
        deployment_advance(deployment_id=deployment.pk)
    assert not docker_client.containers.list(all=True, filters={"name": name})
    deployment.refresh_from_db()
    assert deployment.state == State.STOPPED and deployment.deleted_at is not None
