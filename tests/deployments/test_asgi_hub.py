"""The hub served as `make run` serves it: uvicorn running hub_site.asgi in its own process.
Pages and static files (WhiteNoise) go through Django; /d/ through the gateway."""

import uuid

import httpx
import pytest

from deployments.endpoint_tokens import endpoint_token_create
from deployments.models import Deployment
from deployments.services import deployment_create
from tests.gateway.conftest import hub_server

from .conftest import drive

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hub(tmp_path):
    with hub_server(tmp_path / "hub.log") as url:
        yield url


def test_it_serves_pages_and_static_files_through_django(hub):
    css = httpx.get(f"{hub}/static/catalog/site.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    script = httpx.get(f"{hub}/static/catalog/code-copy.js")
    assert script.status_code == 200 and b"data-copy" in script.content
    page = httpx.get(f"{hub}/accounts/login/")
    assert page.status_code == 200 and "csrfmiddlewaretoken" in page.text
    # Django's middleware still runs for pages: its security headers are there.
    assert page.headers["x-frame-options"] == "DENY" and "content-security-policy" in page.headers
    assert "server" not in page.headers


def test_it_sends_d_paths_to_the_gateway(hub, upstream, user_factory, version, node_factory):
    node_factory()
    owner = user_factory("owner")
    deployment = deployment_create(owner=owner, version=version, inputs={}, idempotency_key=str(uuid.uuid4())).deployment
    assert drive(deployment).state == Deployment.State.RUNNING
    Deployment.objects.filter(pk=deployment.pk).update(endpoint=upstream.url)
    secret = endpoint_token_create(deployment=deployment, created_by=owner, name="app").secret

    refused = httpx.get(f"{hub}/d/{deployment.handle}/v1/models")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == 'Bearer realm="hub"'
    answer = httpx.get(f"{hub}/d/{deployment.handle}/v1/models?x=1", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200
    assert (upstream.seen[-1]["path"], upstream.seen[-1]["query"]) == ("/v1/models", "x=1")


def test_the_gateway_closes_its_upstream_connections_when_the_server_stops():
    import asyncio

    from deployments.gateway import DeploymentGateway

    gateway = DeploymentGateway.from_settings()

    async def start_and_stop() -> list[str]:
        assert not gateway.core.pool.closed  # the pool is open while the server runs
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
        sent = []

        async def receive():
            return next(messages)

        async def send(message):
            sent.append(message["type"])

        await gateway({"type": "lifespan"}, receive, send)
        return sent

    assert asyncio.run(start_and_stop()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert gateway.core.pool.closed and gateway.core.pool.idle_connections() == 0
