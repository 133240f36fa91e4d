"""Deploying MiniLM as a new user would, in a real browser (Debian's Chromium driven by
Playwright), through the real flow: a Celery worker process builds the template into a venv
(the wheels from the wheelhouse), the process runner starts it, and the page follows the
states live until the endpoint answers with 384 floats.

The first run on a machine builds MiniLM's venv (torch, sentence-transformers: a few
minutes); later runs find it by its cache key under the hub's var/venvs and take seconds."""

import io
import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection

from deployments.models import Deployment, Node
from templates_catalog import builds
from templates_catalog.bundles import bundle_pack
from templates_catalog.services import template_version_publish
from tests.deployments.conftest import upstream_headers

ROOT = Path(__file__).resolve().parents[2]
MINILM = ROOT / "fixtures" / "templates" / "minilm-embeddings"
PASSWORD = "a-new-users-password"
# Building MiniLM's venv the first time (torch) on a busy 2-core machine, then loading the model.
RUNNING_WITHIN_MS = 20 * 60 * 1000




@pytest.fixture
def flow_settings(settings, artifact_root):
    """The live server and the worker agree on the build backend, the wheelhouse and where
    bundles are stored: the worker reads the bundle the test published."""
    settings.BUILD_BACKEND = "venv"
    settings.WHEELHOUSE_DIR = ROOT / "var" / "test-wheelhouse"
    builds.build_backend.cache_clear()
    yield {
        "BUILD_BACKEND": "venv",
        "WHEELHOUSE_DIR": str(settings.WHEELHOUSE_DIR),
        "ARTIFACT_ROOT": str(artifact_root),
        "HUB_VAR_DIR": str(settings.VAR_DIR),
        "DEPLOY_READY_TIMEOUT_SECONDS": "600",
    }
    builds.build_backend.cache_clear()


@pytest.fixture
def hub(flow_settings, publisher, django_user_model):
    """MiniLM published, a node with a price, and a new user. Written before `browser`
    starts, while no Playwright event loop runs in this thread."""
    version = template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(MINILM))).version
    Node.objects.create(name="cpu-box", runner="process", cpus=Decimal(4), memory_gb=Decimal(8), price_per_hour=Decimal("0.40"))
    django_user_model.objects.create_user(username="newcomer", password=PASSWORD)
    return version


@pytest.fixture
def worker_settings(flow_settings):
    return flow_settings


@pytest.mark.django_db(transaction=True)
def test_a_new_user_deploys_minilm_and_calls_its_endpoint(live_server, hub, worker, flow_settings, browser):
    page = browser.new_page()
    page.set_default_timeout(30_000)
    handle = None
    try:
        page.goto(f"{live_server.url}/templates/")
        page.get_by_role("link", name="MiniLM sentence embeddings").click()
        page.wait_for_url(re.compile(r"/templates/minilm-embeddings/$"))
        press_deploy_and_sign_in(page, "minilm-embeddings")

        assert page.locator(".placement-node").inner_text() == "Node cpu-box"
        assert page.locator(".placement-price").inner_text() == "0.40 per hour"
        assert page.get_by_label("Normalise vectors to unit length").is_checked()
        page.get_by_role("button", name="Deploy").click()

        page.wait_for_url(re.compile(r"/deployments/d-[a-z2-7]+/$"))
        handle = page.url.rstrip("/").rsplit("/", 1)[-1]
        page.evaluate("window.loadedOnce = true")  # survives only if the page is never reloaded
        seen = _states_until_running(page, worker)

        assert seen[-1] == "running" and {"building", "starting"} & set(seen), seen
        assert page.evaluate("window.loadedOnce") is True  # htmx updated the page in place
        assert "starting → running" in page.locator("table.events").inner_text()
        # The log keeps polling while running; a reader's focus and place in it survive.
        page.locator("#deployment-log").focus()
        page.evaluate("document.getElementById('deployment-log').scrollTop = 0")
        page.wait_for_timeout(4500)  # two log polls
        assert page.evaluate("document.activeElement.id") == "deployment-log"
        assert page.evaluate("document.getElementById('deployment-log').scrollTop") == 0

        # The page sends its user to the hub's gateway (tests/browser/test_endpoint_in_a_browser.py
        # calls it with a token); the run itself answers on the port the hub reaches it at.
        assert page.locator(".deployment-state .endpoint").inner_text() == f"{live_server.url}/d/{handle}/…"
        vectors = _embed(handle, flow_settings, ["a new user deploys MiniLM", "and calls it"])
        assert len(vectors) == 2 and all(len(vector) == 384 for vector in vectors)
        assert all(isinstance(value, float) for value in vectors[0])

        # The Try it form (the fixture's `serve.try`): a sentence in, its vector shown, through the
        # hub's gateway with no token in the page; htmx swaps the answer in without a reload.
        page.get_by_label("Sentence").fill("a new user tries MiniLM")
        page.get_by_role("button", name="Send").click()
        shown = page.locator("#try-answer pre.try-text")
        shown.wait_for(timeout=120_000)
        tried = json.loads(shown.inner_text())
        (direct,) = _embed(handle, flow_settings, ["a new user tries MiniLM"])
        assert len(tried) == 384 and tried == pytest.approx(direct, abs=1e-6)
        assert page.evaluate("window.loadedOnce") is True
    finally:
        page.close()
        if handle:
            _remove_run(handle, flow_settings)


def press_deploy_and_sign_in(page, template: str) -> None:
    """On a template's page, as the new user who is not signed in yet: signing in brings
    them back to the deploy page."""
    page.get_by_role("link", name=re.compile(r"^Deploy \d+\.\d+\.\d+$")).click()
    page.wait_for_url(re.compile(r"/accounts/login/"))
    page.locator("#id_username").fill("newcomer")
    page.locator("#id_password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(rf"/templates/{template}/deploy/$"))


def _states_until_running(page, worker_log: Path) -> list[str]:
    """Every state the page showed, in order, until running (or a failure, with its reason)."""
    seen = [page.locator(".state-badge").get_attribute("data-state")]
    page.evaluate("""() => {
        window.statesSeen = [];
        document.body.addEventListener('htmx:afterSettle', () => {
            const badge = document.querySelector('.deployment-state .state-badge');
            if (badge) window.statesSeen.push(badge.dataset.state);
        });
    }""")
    try:
        # A selector, not wait_for_function: the page's CSP forbids the eval that one needs.
        settled = ", ".join(f'.deployment-state .state-badge[data-state="{state}"]' for state in ("running", "failed", "stopped"))
        page.wait_for_selector(settled, timeout=RUNNING_WITHIN_MS)
    finally:
        seen += [state for state in page.evaluate("window.statesSeen") if state != seen[-1]]
    if seen[-1] != "running":
        reason = page.locator(".deployment-state").inner_text()
        pytest.fail(f"the deployment ended {seen[-1]}: {reason}\nworker log:\n{worker_log.read_text()[-4000:]}")
    return [state for index, state in enumerate(seen) if index == 0 or state != seen[index - 1]]


def _embed(handle: str, flow_settings: dict, texts: list[str]) -> list[list[float]]:
    """`texts` embedded by the deployment's run itself, at its own port, with what the gateway adds."""
    endpoint = _runner(flow_settings).status(handle).endpoint
    headers = {"Content-Type": "application/json", **_upstream_headers_of(handle)}
    body = json.dumps({"input": texts, "model": "all-MiniLM-L6-v2"}).encode()
    request = urllib.request.Request(f"{endpoint}/v1/embeddings", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as answer:
        return [item["embedding"] for item in json.load(answer)["data"]]


def _upstream_headers_of(handle: str) -> dict[str, str]:
    # Playwright's event loop runs in this thread: the ORM answers only in another one.
    def read() -> dict[str, str]:
        try:
            return upstream_headers(Deployment.objects.get(handle=handle))
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(read).result()


def _runner(flow_settings: dict):
    from runners.process import ProcessRunner

    var = Path(flow_settings["HUB_VAR_DIR"])
    return ProcessRunner(run_root=var / "runs", venv_root=var / "venvs")


def _remove_run(handle: str, flow_settings: dict) -> None:
    _runner(flow_settings).remove(handle)
