"""Sleep and wake for real on a Docker Engine: MiniLM with a 2-second idle timeout reaches
`sleeping` with its container gone; 20 requests at once through the gateway, with an
endpoint token, then wake it with exactly one new container and all get their embedding,
none a 503; the vector store's data written before a sleep is there after the wake.

The flow's steps run in a thread standing in for the Celery worker (as `drive_for_real`
does in the other Docker tests); the waits run on an event loop, as in the gateway."""

import asyncio
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from deployments.endpoint_tokens import endpoint_token_create
from deployments.flow import deployment_advance
from deployments.gateway import DeploymentGateway
from deployments.models import Deployment, DeploymentEvent
from deployments.nodes import node_add
from deployments.services import deployment_create, deployment_delete
from deployments.sleeping import deployments_sleep_idle
from deployments.wake import Awake, deployment_wait_awake
from runners.base import LABEL_DEPLOYMENT
from tests.builds.conftest import publish_folder
from tests.gateway.conftest import served

from .conftest import WakeWorker, drive_for_real
from .test_docker_flow import MINILM, STEPS_UNTIL_RUNNING, docker_settings, embed, minilm  # noqa: F401 (fixtures)
from .test_storage_flow import VECTOR_STORE, _add_vectors, _nearest, storage_settings  # noqa: F401 (a fixture)

State = Deployment.State
IDLE_SECONDS = 2


@pytest.fixture(autouse=True)
def close_the_pollers_connection():
    yield
    asyncio.run(sync_to_async(connections.close_all)())


def _containers(docker_client, deployment: Deployment) -> list:
    return docker_client.containers.list(filters={"label": f"{LABEL_DEPLOYMENT}={deployment.handle}"})


def _until_sleeping(deployment: Deployment, timeout: float = 30) -> Deployment:
    """What the beat task does every few seconds, until the deployment is idle long enough."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if deployments_sleep_idle() == [deployment.handle]:
            break
        time.sleep(0.5)
    deployment.refresh_from_db()
    return deployment


def _wake_with(count: int, deployment: Deployment, timeout: float = 300) -> list:
    worker = WakeWorker(deployment, drive_for_real, steps=STEPS_UNTIL_RUNNING, pause=0.1)

    async def requests():
        return await asyncio.gather(*(deployment_wait_awake(deployment_id=deployment.pk, timeout=timeout) for _ in range(count)))

    answers = asyncio.run(requests())
    worker.join()
    return answers


def _embed_through_gateway(count: int, deployment: Deployment, secret: str) -> list:
    """`count` embedding requests released together at the real ASGI gateway, while a worker
    thread runs the wake's flow; each answer's status and embedding lengths."""
    worker = WakeWorker(deployment, drive_for_real, steps=STEPS_UNTIL_RUNNING, pause=0.1)

    async def requests(url: str):
        async with httpx.AsyncClient(timeout=300) as client:
            asks = [
                client.post(f"{url}/d/{deployment.handle}/v1/embeddings", headers={"Authorization": f"Bearer {secret}"},
                            json={"input": [f"held request {number}"], "model": "all-MiniLM-L6-v2"})
                for number in range(count)
            ]
            return await asyncio.gather(*asks)

    with served(DeploymentGateway.from_settings()) as url:
        answers = asyncio.run(requests(url))
    worker.join()
    return [(answer.status_code, [len(item["embedding"]) for item in answer.json().get("data", [])]) for answer in answers]


def _delete(deployment: Deployment) -> None:
    deployment_delete(deployment=deployment)
    deployment_advance(deployment_id=deployment.pk)
    deployment_advance(deployment_id=deployment.pk)


def test_minilm_sleeps_when_idle_and_twenty_requests_wake_one_container(
    transactional_db, minilm, docker_client, user_factory,  # noqa: F811 (fixtures imported above)
):
    node_add(name="docker-local", runner="docker")
    deployment = deployment_create(owner=user_factory(), version=minilm, inputs={}, idle_timeout_seconds=IDLE_SECONDS).deployment
    try:
        running = drive_for_real(deployment, steps=STEPS_UNTIL_RUNNING, pause=0.5)
        assert running.state == State.RUNNING, running.reason
        assert len(_containers(docker_client, running)) == 1

        asleep = _until_sleeping(running)
        assert asleep.state == State.SLEEPING, asleep.state
        # `sleeping` is recorded only once the run is stopped: no container right after.
        assert _containers(docker_client, asleep) == []
        assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL_DEPLOYMENT}={asleep.handle}"})

        secret = endpoint_token_create(deployment=asleep, created_by=asleep.owner, name="held").secret
        started = time.monotonic()
        answers = _embed_through_gateway(20, asleep, secret)
        print(f"\nMiniLM woke in {time.monotonic() - started:.1f} s for 20 held requests")

        awake = Deployment.objects.get(pk=deployment.pk)
        assert awake.state == State.RUNNING, awake.reason
        assert answers == [(200, [384])] * 20
        assert DeploymentEvent.objects.filter(deployment=awake, message="woken by a request").count() == 1
        containers = _containers(docker_client, awake)
        assert len(containers) == 1 and containers[0].attrs["RestartCount"] == 0
        assert [len(vector) for vector in embed(awake, ["awake again"])] == [384]
        assert awake.last_wake_seconds is not None and awake.last_wake_seconds > 0
    finally:
        _delete(deployment)
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL_DEPLOYMENT}={deployment.handle}"})


def test_the_vector_stores_data_survives_a_sleep_on_docker(
    transactional_db, storage_settings, docker_client, publisher, user_factory,  # noqa: F811
):
    node_add(name="docker-local", runner="docker")
    version = publish_folder(VECTOR_STORE, publisher)
    deployment = deployment_create(owner=user_factory(), version=version, inputs={}, idle_timeout_seconds=IDLE_SECONDS).deployment
    try:
        running = drive_for_real(deployment)
        assert running.state == State.RUNNING, running.reason
        _add_vectors(running)
        before = _nearest(running)

        asleep = _until_sleeping(running)
        assert asleep.state == State.SLEEPING and _containers(docker_client, asleep) == []
        (answer,) = _wake_with(1, asleep, timeout=120)

        assert isinstance(answer, Awake), answer
        awake = Deployment.objects.get(pk=deployment.pk)
        assert awake.endpoint == answer.endpoint
        assert _nearest(awake) == before == [("north", {"kept": True}), ("east", {})]
    finally:
        _delete(deployment)
