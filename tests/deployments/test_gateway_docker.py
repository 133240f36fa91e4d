"""The done-when of the gateway, on a real Docker Engine: MiniLM deployed, called through
the hub as `make run` serves it (uvicorn, hub_site.asgi) at /d/<handle>/v1/embeddings; and
the container's own published port, the way around the gateway, locked."""

import io
import time

import httpx
import pytest

from deployments.endpoint_tokens import endpoint_token_create, endpoint_token_revoke
from deployments.flow import deployment_advance
from deployments.models import Deployment
from deployments.nodes import node_add
from deployments.services import deployment_create, deployment_delete
from templates_catalog.bundles import bundle_pack
from templates_catalog.services import template_version_publish
from tests.gateway.conftest import hub_server

from .conftest import drive_for_real, upstream_headers
from .test_docker_flow import MINILM, STEPS_UNTIL_RUNNING

State = Deployment.State
# The hub runs in a process of its own: it reads only committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


def test_minilm_answers_through_the_gateway_with_its_token_and_only_with_it(
    build_settings, docker_client, publisher, user_factory, tmp_path
):
    build_settings.DEPLOY_READY_TIMEOUT_SECONDS = 300
    minilm = template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(MINILM))).version
    node_add(name="docker-local", runner="docker")
    owner = user_factory("owner")
    deployment = deployment_create(owner=owner, version=minilm, inputs={}).deployment
    try:
        started = time.monotonic()
        running = drive_for_real(deployment, steps=STEPS_UNTIL_RUNNING, pause=0.5)
        print(f"\nMiniLM on Docker: build and start took {time.monotonic() - started:.1f} s")
        assert running.state == State.RUNNING, running.reason
        secret = endpoint_token_create(deployment=running, created_by=owner, name="e2e").secret
        revoked = endpoint_token_create(deployment=running, created_by=owner, name="old")
        endpoint_token_revoke(token=revoked.token, revoked_by=owner)
        body = {"input": ["the gateway opens the endpoint", "with its token"], "model": "all-MiniLM-L6-v2"}
        with hub_server(tmp_path / "hub.log") as hub:
            url = f"{hub}/d/{running.handle}/v1/embeddings"
            answer = httpx.post(url, json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=60)
            assert answer.status_code == 200, answer.text
            vectors = [item["embedding"] for item in answer.json()["data"]]
            assert [len(vector) for vector in vectors] == [384, 384]
            assert all(isinstance(value, float) for value in vectors[0])
            # The run's upstream token reaches the container, never the client.
            assert running.upstream_token not in answer.text + str(answer.headers)
            # A client's own X-Hub-Upstream-Token changes nothing: the gateway sends the deployment's.
            guessed = httpx.post(url, json=body, timeout=60,
                                 headers={"Authorization": f"Bearer {secret}", "X-Hub-Upstream-Token": "a-guess"})
            assert guessed.status_code == 200
            assert httpx.post(url, json=body, timeout=60).status_code == 401
            assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {revoked.secret}"}, timeout=60).status_code == 404
            # Over MiniLM's max_body_bytes (8 MiB): refused by the gateway, not the container.
            huge = httpx.post(url, content=b"x" * (8 * 1024 * 1024 + 1), timeout=60,
                              headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"})
            assert huge.status_code == 413 and "at most 8388608" in huge.json()["error"]["message"]
        _published_port_answers_only_the_gateway(running, body)
    finally:
        deployment_delete(deployment=deployment)
        deployment_advance(deployment_id=deployment.pk)


def _published_port_answers_only_the_gateway(running: Deployment, body: dict) -> None:
    """The container's port, published on the node's address: anyone on that network reaches
    it, and only the gateway's header opens it; the hub's ready poll still gets through."""
    direct = f"{running.endpoint}/v1/embeddings"
    bare = httpx.post(direct, json=body, timeout=60)
    assert bare.status_code == 403 and "gateway" in bare.json()["error"]["message"]
    assert httpx.post(direct, json=body, headers={"X-Hub-Upstream-Token": "a-guess"}, timeout=60).status_code == 403
    assert httpx.get(f"{running.endpoint}/metrics", timeout=60).status_code == 403
    assert httpx.get(f"{running.endpoint}/ready", timeout=60).status_code == 200
    opened = httpx.post(direct, json=body, headers=upstream_headers(running), timeout=60)
    assert opened.status_code == 200 and len(opened.json()["data"][0]["embedding"]) == 384
