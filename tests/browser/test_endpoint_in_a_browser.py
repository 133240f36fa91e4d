"""The gateway's done-when in a real browser: a user deploys MiniLM on the Docker Engine,
creates an endpoint token on the deployment's page, copies the curl line the page offers
(with the Copy button, read back from the clipboard), runs it in a shell, and gets the
embedding. The hub is served as `make run` serves it (uvicorn, hub_site.asgi): /d/ is
dispatched there, so Django's live server (WSGI) could not answer the curl line.

The first run on an engine builds MiniLM's image (minutes); later runs find it by its
cache key and take seconds."""

import io
import json
import re
import subprocess
from decimal import Decimal

import pytest

from deployments.models import Node
from templates_catalog.bundles import bundle_pack
from templates_catalog.services import template_version_publish
from tests.builds.conftest import BASE_IMAGE, docker_client  # noqa: F401  (a fixture)
from tests.gateway.conftest import hub_server

from .conftest import ROOT
from .test_deploy_in_a_browser import MINILM, PASSWORD, _states_until_running

RUNNING_WITHIN_MS = 20 * 60 * 1000


@pytest.fixture
def docker_flow_settings(docker_client, artifact_root, tmp_path):  # noqa: F811
    """What the hub process and its worker share: the Docker build backend, the wheelhouse,
    where bundles are stored."""
    return {
        "BUILD_BACKEND": "docker",
        "BUILD_BASE_IMAGE": BASE_IMAGE,
        "BUILD_REGISTRY": "",
        "WHEELHOUSE_DIR": str(ROOT / "var" / "test-wheelhouse"),
        "ARTIFACT_ROOT": str(artifact_root),
        "HUB_VAR_DIR": str(tmp_path / "var"),
        "DEPLOY_READY_TIMEOUT_SECONDS": "600",
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture
def minilm_hub(docker_flow_settings, publisher, django_user_model, real_password_hashing):
    """MiniLM published, a Docker node with a price, and a new user; written before the
    browser starts, while no Playwright event loop runs in this thread."""
    template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(MINILM)))
    Node.objects.create(name="docker-box", runner="docker", cpus=Decimal(4), memory_gb=Decimal(8), price_per_hour=Decimal("0.40"))
    django_user_model.objects.create_user(username="newcomer", password=PASSWORD)


@pytest.fixture
def asgi_live_server(docker_flow_settings, tmp_path):
    """The hub under uvicorn on the test's database, in a process of its own."""
    with hub_server(tmp_path / "hub.log", **docker_flow_settings) as url:
        yield url


@pytest.fixture
def worker_settings(docker_flow_settings):
    return docker_flow_settings


@pytest.fixture
def started_handles(docker_client):  # noqa: F811
    """Handles the test deployed; their containers are removed after the browser, the worker
    and the hub are gone (no database call while Playwright's event loop runs)."""
    from runners.docker import container_name

    handles: list[str] = []
    yield handles
    for handle in handles:
        for container in docker_client.containers.list(all=True, filters={"name": container_name(handle)}):
            container.remove(force=True)


@pytest.mark.django_db(transaction=True)
def test_a_user_copies_the_curl_line_from_the_page_and_gets_an_embedding(
    started_handles, minilm_hub, asgi_live_server, worker, browser
):
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=asgi_live_server)
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(f"{asgi_live_server}/accounts/login/?next=/templates/minilm-embeddings/deploy/")
        page.locator("#id_username").fill("newcomer")
        page.locator("#id_password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r"/templates/minilm-embeddings/deploy/$"))
        page.get_by_role("button", name="Deploy").click()
        page.wait_for_url(re.compile(r"/deployments/d-[a-z2-7]+/$"))
        handle = page.url.rstrip("/").rsplit("/", 1)[-1]
        started_handles.append(handle)
        _states_until_running(page, worker)

        page.get_by_label("Name").fill("my laptop")
        page.get_by_role("button", name="Create endpoint token").click()
        secret = page.locator("#new-token").inner_text()
        assert secret.startswith("hubep_")
        page.locator('button[data-copy="example-curl"]').click()
        page.wait_for_selector('button[data-copy="example-curl"]:text("Copied")')
        curl = page.evaluate("navigator.clipboard.readText()")

        assert curl == page.locator("#example-curl").inner_text().strip()
        assert curl.startswith(f'curl -s "{asgi_live_server}/d/{handle}/v1/embeddings"') and secret in curl
        done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        vectors = [item["embedding"] for item in answer["data"]]
        assert len(vectors) == 1 and len(vectors[0]) == 384
        assert all(isinstance(value, float) for value in vectors[0])
        # Reloaded, the page no longer shows the secret: the line now names a variable.
        page.reload()
        assert secret not in page.content()
        assert "$HUB_ENDPOINT_TOKEN" in page.locator("#example-curl").inner_text()
    finally:
        context.close()
