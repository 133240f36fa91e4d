"""Issue 11's done-when on the real Docker Engine, with one startup of the whole graph: a new
user opens the stock research agent in a browser, presses Deploy (the plan shows its five
parts), watches its graph turn green and reads the report the Try it form brings back. Then,
through plain HTTP with a personal deploy token: the agent answers through the gateway with
an endpoint token, its figures match the price data its image ships (recomputed here), a
second deploy of the app reuses the running parts, and deleting both apps leaves no container.

The hub runs under uvicorn on the Docker bridge's gateway address: the parts call each other
through it as `host.docker.internal`. The five images are built by a real Celery worker; the
suite's other Docker tests build the same fixture bundles, so the build cache usually hits
(the torch images take many minutes on a cold machine)."""

import contextlib
import csv
import io
import json
import re
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from deployments.models import Node
from runners.base import LABEL_DEPLOYMENT, LABEL_HUB
from runners.docker import bridge_gateway_address
from templates_catalog.bundles import bundle_pack
from templates_catalog.services import api_token_create_personal, template_version_publish
from tests.builds.conftest import docker_client  # noqa: F401  (a fixture)
from tests.gateway.conftest import hub_server
from tests.netutil import free_port

from .conftest import ROOT, celery_worker
from .test_deploy_in_a_browser import PASSWORD, press_deploy_and_sign_in
from .test_endpoint_in_a_browser import docker_flow_settings  # noqa: F401  (a fixture)

TEMPLATES = ROOT / "fixtures" / "templates"
# Requirements first: a version's `requires` resolve against what is published when it is deployed.
GRAPH = ("minilm-embeddings", "vector-store", "text-generator", "rag-pipeline", "stock-research-agent")
LOWER_PARTS = set(GRAPH) - {"stock-research-agent"}
# Five images (two of them torch) built in parallel on a busy 2-core machine, then started in order.
GRAPH_RUNNING_WITHIN_S = 25 * 60
# The first report indexes the documents (embeddings, vector store) and writes with the generator.
REPORT_WITHIN_S = 300
GONE_WITHIN_S = 180


@pytest.fixture
def bridge_address(docker_client):  # noqa: F811
    """The host as containers on the default bridge reach it (`host.docker.internal`): the
    bridge's gateway, which the engine leaves unnamed when it is its subnet's first address."""
    address = bridge_gateway_address(docker_client)
    assert address, "the Docker Engine has no default bridge"
    return address


@pytest.fixture
def graph_settings(docker_flow_settings, bridge_address):  # noqa: F811
    """What the hub and its worker share, and the port the hub will listen on: the parts call
    their requirements at GATEWAY_INTERNAL_URL/d/<handle>."""
    port = free_port()
    return port, {
        **docker_flow_settings,
        "GATEWAY_INTERNAL_URL": f"http://host.docker.internal:{port}",
        "ALLOWED_HOSTS": f"127.0.0.1,localhost,{bridge_address},host.docker.internal",
        "TRY_IT_TIMEOUT_SECONDS": str(REPORT_WITHIN_S),
    }


@pytest.fixture
def agent_hub(graph_settings, publisher, django_user_model, real_password_hashing):
    """The five templates published, a Docker node with room for two apps, a new user and a
    personal deploy token of theirs; written before the browser starts."""
    for name in GRAPH:
        template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(TEMPLATES / name)))
    Node.objects.create(name="docker-box", runner="docker", cpus=Decimal(16), memory_gb=Decimal(32), price_per_hour=Decimal("0.40"))
    user = django_user_model.objects.create_user(username="newcomer", password=PASSWORD)
    return api_token_create_personal(user=user, name="the test's HTTP calls").secret


@pytest.fixture
def graph_hub(graph_settings, bridge_address, tmp_path):
    port, settings = graph_settings
    with hub_server(tmp_path / "hub.log", host=bridge_address, port=port, **settings) as url:
        yield url


@pytest.fixture
def graph_worker(graph_settings, tmp_path):
    """A worker that builds the parts in parallel while others wait for their requirements."""
    log = tmp_path / "worker.log"
    with celery_worker(settings=graph_settings[1], log=log, name="stock-agent-test", options=("--concurrency=6",)):
        yield log


@pytest.fixture
def started_handles(docker_client):  # noqa: F811
    """Handles the test saw; whatever containers of theirs are left (after a failure) are
    removed once the hub and the worker are gone."""
    import docker

    handles: set[str] = set()
    yield handles
    for container in containers_of(docker_client, handles):
        with contextlib.suppress(docker.errors.NotFound):  # its own removal may be under way
            container.remove(force=True)


def containers_of(client, handles) -> list:
    """Every container (running or not) of the hub's that belongs to one of `handles`.
    Sparse: inspecting each would race with the hub removing it."""
    found = []
    for handle in handles:
        found += client.containers.list(all=True, sparse=True, filters={"label": [LABEL_HUB, f"{LABEL_DEPLOYMENT}={handle}"]})
    return found


@pytest.mark.django_db(transaction=True)
def test_a_new_user_deploys_the_stock_agent_graph_reads_a_report_redeploys_and_deletes(
    started_handles, agent_hub, graph_hub, graph_worker, browser, docker_client  # noqa: F811
):
    deploy_token = agent_hub
    first_app = _deploy_and_read_a_report_in_the_browser(browser, graph_hub, graph_worker, started_handles)
    api = Api(graph_hub, deploy_token, graph_worker)

    parts = {deployment["template"]: deployment for deployment in api.get("/api/v1/deployments/")["results"]}
    assert set(parts) == set(GRAPH) and parts["stock-research-agent"]["id"] == first_app
    assert all(part["state"] == "running" for part in parts.values()), parts
    started_handles.update(part["id"] for part in parts.values())
    lower = {name: parts[name]["id"] for name in LOWER_PARTS}
    lower_containers = {container.id for container in containers_of(docker_client, lower.values())}
    assert len(lower_containers) == 4  # one container a part

    # The agent through the gateway with an endpoint token; its figures against the data its image ships.
    report = api.call_agent(first_app, api.endpoint_token(first_app), "GOOG")
    prices = _monthly_prices(_shipped_stocks_csv(docker_client, first_app), "GOOG")
    assert report["figures"]["total_return"] == pytest.approx(prices[-1] / prices[0] - 1, rel=1e-9)
    assert report["figures"]["max_drawdown"]["depth"] == pytest.approx(_deepest_fall(prices), rel=1e-9)
    assert f"| Total return | {prices[-1] / prices[0] - 1:.1%} |" in report["markdown"]
    assert f"| Maximum drawdown | {_deepest_fall(prices):.1%} from " in report["markdown"]
    assert report["commentary"]["via"] == "rag-generator" and report["findings"], report["findings"]

    # A second deploy by the same user: its plan and its deployment reuse the four running parts.
    plan = api.post("/api/v1/deployments/", {"template": "stock-research-agent", "dry_run": True})
    assert {part["template"]: part["reuses"] for part in plan["parts"]} == {**lower, "stock-research-agent": ""}
    second_app = api.post("/api/v1/deployments/", {"template": "stock-research-agent"}, expect=201)["id"]
    started_handles.add(second_app)
    api.wait_for_state(second_app, "running", within=GRAPH_RUNNING_WITHIN_S)
    after = {deployment["id"]: deployment["template"] for deployment in api.get("/api/v1/deployments/")["results"]}
    assert after == {**{handle: name for name, handle in lower.items()}, first_app: "stock-research-agent",
                     second_app: "stock-research-agent"}
    assert {container.id for container in containers_of(docker_client, lower.values())} == lower_containers
    assert len(containers_of(docker_client, [second_app])) == 1
    assert api.call_agent(second_app, api.endpoint_token(second_app), "MSFT")["ticker"] == "MSFT"

    # Deleting the first app leaves what the second still uses; deleting the second removes the rest.
    api.delete(first_app)
    _wait_until_gone(docker_client, [first_app], graph_worker)
    assert {api.get(f"/api/v1/deployments/{handle}/")["state"] for handle in lower.values()} == {"running"}
    assert {container.id for container in containers_of(docker_client, lower.values())} == lower_containers
    api.delete(second_app)
    _wait_until_gone(docker_client, started_handles, graph_worker)
    assert api.get("/api/v1/deployments/")["results"] == []


def _deploy_and_read_a_report_in_the_browser(browser, hub: str, worker_log: Path, handles: set[str]) -> str:
    """As a new user would; returns the app's handle."""
    page = browser.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto(f"{hub}/templates/stock-research-agent/")
        press_deploy_and_sign_in(page, "stock-research-agent")

        planned = page.locator("tr.plan-part")
        assert sorted(planned.evaluate_all("rows => rows.map(row => row.dataset.template)")) == sorted(GRAPH)
        assert page.locator(".plan-total").inner_text() == "2.00"  # five parts at 0.40 per hour
        page.get_by_role("button", name="Deploy").click()
        page.wait_for_url(re.compile(r"/deployments/d-[a-z2-7]+/$"))
        app = page.url.rstrip("/").rsplit("/", 1)[-1]
        handles.add(app)

        _wait_for_a_green_graph(page, worker_log, handles)
        badges = page.locator(".graph-part .state-badge")
        assert badges.count() == 4 and set(badges.evaluate_all("bs => bs.map(b => b.dataset.state)")) == {"running"}

        page.get_by_label("Ticker").fill("AAPL")
        page.get_by_role("button", name="Send").click()
        page.locator("#try-answer .try-markdown, #try-answer .notice.error").first.wait_for(timeout=(REPORT_WITHIN_S + 30) * 1000)
        answer = page.locator("#try-answer")
        assert not answer.locator(".notice.error").count(), answer.inner_text()
        assert answer.locator("h1").inner_text() == "Apple Inc. (AAPL): research report"
        assert "Total return" in answer.locator("table").first.inner_text()
        chart = answer.locator("img").first.get_attribute("src")
        assert chart.startswith("data:image/svg+xml;base64,"), chart[:80]
        return app
    finally:
        page.close()


def _wait_for_a_green_graph(page, worker_log: Path, handles: set[str]) -> None:
    """Until the app runs (it starts after all it requires) or a part of its graph fails."""
    settled = ", ".join(f'.state-line .state-badge[data-state="{state}"]' for state in ("running", "failed", "stopped"))
    try:
        page.wait_for_selector(f"{settled}, .graph-part .state-badge[data-state=failed]", timeout=GRAPH_RUNNING_WITHIN_S * 1000)
    finally:
        handles.update(page.locator(".graph-part > code").all_inner_texts())
    state = page.locator(".state-line .state-badge").get_attribute("data-state")
    if state != "running":
        pytest.fail(f"the app is {state}: {page.locator('.deployment-state').inner_text()}\n"
                    f"worker log:\n{worker_log.read_text()[-4000:]}")


class Api:
    """The hub's HTTP API with a personal deploy token; failures name the worker log's tail."""

    def __init__(self, hub: str, token: str, worker_log: Path):
        self.hub, self.token, self.worker_log = hub, token, worker_log

    def get(self, path: str) -> dict:
        return self._send("GET", path, None, 200)

    def post(self, path: str, body: dict, expect: int = 200) -> dict:
        return self._send("POST", path, body, expect)

    def endpoint_token(self, handle: str) -> str:
        return self.post(f"/api/v1/deployments/{handle}/tokens/", {"name": "the test's calls"}, expect=201)["secret"]

    def delete(self, handle: str) -> dict:
        return self._send("DELETE", f"/api/v1/deployments/{handle}/", None, 202)

    def call_agent(self, handle: str, secret: str, ticker: str) -> dict:
        request = urllib.request.Request(f"{self.hub}/d/{handle}/v1/report", data=json.dumps({"ticker": ticker}).encode(), headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {secret}"})
        try:
            with urllib.request.urlopen(request, timeout=REPORT_WITHIN_S) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as exc:
            pytest.fail(f"the agent answered {exc.code}: {exc.read()[:2000]!r}\nworker log:\n{self._tail()}")

    def wait_for_state(self, handle: str, wanted: str, *, within: float) -> dict:
        deadline = time.monotonic() + within
        while True:
            deployment = self.get(f"/api/v1/deployments/{handle}/")
            if deployment["state"] == wanted:
                return deployment
            if deployment["state"] in ("failed", "stopped") or time.monotonic() > deadline:
                pytest.fail(f"{handle} is {deployment['state']} (wanted {wanted}): {deployment['reason']}\n"
                            f"worker log:\n{self._tail()}")
            time.sleep(2)

    def _send(self, method: str, path: str, body: dict | None, expect: int) -> dict:
        request = urllib.request.Request(f"{self.hub}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                assert answer.status == expect, (method, path, answer.status)
                return json.load(answer)
        except urllib.error.HTTPError as exc:
            pytest.fail(f"{method} {path} answered {exc.code}: {exc.read()[:2000]!r}\nworker log:\n{self._tail()}")

    def _tail(self) -> str:
        return self.worker_log.read_text(errors="replace")[-4000:]


def _wait_until_gone(client, handles, worker_log: Path) -> None:
    deadline = time.monotonic() + GONE_WITHIN_S
    while left := containers_of(client, handles):
        if time.monotonic() > deadline:
            pytest.fail(f"containers left {GONE_WITHIN_S} s after the delete: {[c.attrs['Names'] for c in left]}\n"
                        f"worker log:\n{worker_log.read_text(errors='replace')[-4000:]}")
        time.sleep(2)


def _shipped_stocks_csv(client, handle: str) -> str:
    """The price data as the agent's own image ships it (vega-datasets' stocks.csv), read
    out of its running container."""
    (container,) = containers_of(client, [handle])
    code = ("import pathlib, sys, vega_datasets; "
            "sys.stdout.write((pathlib.Path(vega_datasets.__file__).parent / '_data' / 'stocks.csv').read_text())")
    result = container.exec_run(["python", "-c", code])
    assert result.exit_code == 0, result.output[-2000:]
    return result.output.decode()


def _monthly_prices(stocks_csv: str, ticker: str) -> list[float]:
    rows = [row for row in csv.DictReader(io.StringIO(stocks_csv)) if row["symbol"] == ticker]
    rows.sort(key=lambda row: time.strptime(row["date"], "%b %d %Y"))
    return [float(row["price"]) for row in rows]


def _deepest_fall(prices: list[float]) -> float:
    """The largest fall from a running peak, as a (negative) fraction."""
    deepest, peak = 0.0, prices[0]
    for price in prices:
        peak = max(peak, price)
        deepest = min(deepest, price / peak - 1)
    return deepest
