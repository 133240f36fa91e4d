"""The "Try it" panel: the form a manifest's `serve.try` declares, sent through the gateway's
path to the deployment (a real HTTP server stands in for its endpoint), and what comes back
made safe to show: a hostile answer's script, links and fake images never reach the page."""

import asyncio
import base64
import json
import re
import sys
import uuid
from datetime import date
from pathlib import Path

import pytest
from django.urls import reverse

from deployments.models import Deployment
from deployments.services import deployment_create, deployment_stop
from templates_catalog.readme import readme_to_html
from tests.gateway.conftest import read_body, served

from .conftest import drive

State = Deployment.State
STOCK_AGENT = Path(__file__).resolve().parents[2] / "fixtures" / "templates" / "stock-research-agent"
# The gateway's event loop runs in a thread of its own, but its database reads are
# thread-sensitive: they run in the test's thread, inside its transaction.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("recorder")]
HX = {"HTTP_HX_REQUEST": "true"}
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
HTML_AS_DATA = "data:text/html;base64," + base64.b64encode(b"<script>alert(1)</script>").decode()
HOSTILE_MARKDOWN = f"""# Report

<script>alert('script')</script>
[click](javascript:alert('link')) <a href="javascript:alert('a')">raw link</a> <a href="{HTML_AS_DATA}">data link</a>
<img src="x" onerror="alert('onerror')"> ![page]({HTML_AS_DATA}) <img src="{HTML_AS_DATA}">
<iframe src="https://evil.example"></iframe> <style>body {{display: none}}</style>

![chart](data:image/png;base64,{base64.b64encode(PNG).decode()})
"""


class HostileEndpoint:
    """An endpoint whose answers try what a publisher's template could: each path one trick."""

    def __init__(self):
        self.seen = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        self.seen.append({"path": scope["path"], "query": scope["query_string"].decode(), "body": body.decode(),
                          "headers": {name.decode(): value.decode() for name, value in scope["headers"]}})
        status, content_type, answer = self.answer(scope["path"], body)
        if scope["path"] == "/slow":
            await asyncio.sleep(5)
        if scope["path"] == "/huge":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            for _ in range(64):  # 64 KiB a piece, no length: it streams
                await send({"type": "http.response.body", "body": b" " * 65536, "more_body": True})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": answer})

    def answer(self, path: str, body: bytes) -> tuple[int, bytes, bytes]:
        as_json = b"application/json"
        return {
            "/echo": (200, as_json, json.dumps({"got": json.loads(body or b"null")}).encode()),
            "/markdown": (200, as_json, json.dumps({"report": HOSTILE_MARKDOWN}).encode()),
            "/json": (200, as_json, json.dumps({"x": "</code></pre><script>alert('json')</script>"}).encode()),
            "/text": (200, b"text/plain", b"<b>bold?</b> <script>alert('text')</script>"),
            "/fake-image": (200, as_json, json.dumps({"image": HTML_AS_DATA}).encode()),
            "/png": (200, b"image/png", PNG),
            "/html-as-image": (200, b"text/html", b"<script>alert('img')</script>"),
            "/broken": (500, as_json, json.dumps({"error": {"message": "the model <b>fell over</b>"}}).encode()),
            "/refuses": (422, as_json, json.dumps({"detail": "`ticker` must be a stock symbol"}).encode()),
        }.get(path, (404, as_json, b'{"error": {"message": "no such route"}}'))


@pytest.fixture(scope="module")
def hostile():
    endpoint = HostileEndpoint()
    with served(endpoint) as url:
        endpoint.url = url
        yield endpoint


@pytest.fixture
def dana(user_factory, client):
    user = user_factory("dana")
    client.force_login(user)
    return user


@pytest.fixture
def deploy_tried(publish, node_factory, dana, hostile):
    """deploy_tried(try_spec, **manifest fields): a running deployment of a template with that
    `serve.try`, whose endpoint is the hostile one."""
    node_factory()

    def make(try_spec: dict, **overrides) -> Deployment:
        version = publish(name="tried", version=f"1.0.{uuid.uuid4().int % 10**6}",
                          serve={"handler": "handler:Model", "try": try_spec}, **overrides)
        deployment = drive(deployment_create(owner=dana, version=version, inputs={}, idempotency_key=str(uuid.uuid4())).deployment)
        assert deployment.state == State.RUNNING, deployment.reason
        Deployment.objects.filter(pk=deployment.pk).update(endpoint=hostile.url)
        return Deployment.objects.get(pk=deployment.pk)

    return make


def try_it(client, deployment, data=None, **extra):
    return client.post(reverse("deployments:try", args=[deployment.handle]), data or {}, **HX, **extra)


def answer_of(response) -> str:
    assert response.status_code == 200, response.content[:500]
    page = response.content.decode()
    return page[page.index('id="try-answer"'):]


def test_the_page_renders_the_form_the_manifest_declares(client, deploy_tried):
    deployment = deploy_tried({
        "path": "/echo",
        "inputs": [
            {"name": "ticker", "label": "Ticker", "default": "MSFT", "help": "A stock symbol."},
            {"name": "notes", "label": "Notes", "type": "text"},
            {"name": "top_k", "label": "Top k", "type": "integer", "default": 4},
            {"name": "size", "label": "Size", "type": "choice", "choices": ["small", "large"], "default": "large"},
        ],
    })

    page = client.get(reverse("deployments:detail", args=[deployment.handle])).content.decode()

    form = page[page.index('id="try"'):page.index('id="try-answer"')]
    assert f'hx-post="{reverse("deployments:try", args=[deployment.handle])}"' in form
    assert 'name="csrfmiddlewaretoken"' in form
    assert re.search(r'<input type="text" name="try-ticker" value="MSFT"[^>]*>', form)
    assert re.search(r'<textarea name="try-notes"', form)
    assert re.search(r'<input type="number" name="try-top_k" value="4"', form)
    assert re.search(r'<option value="large" selected>large</option>', form)
    assert "A stock symbol." in form


def test_a_template_without_try_shows_no_panel_and_refuses_the_post(client, publish, node_factory, dana):
    node_factory()
    version = publish(name="plain")
    deployment = deployment_create(owner=dana, version=version, inputs={}, idempotency_key=str(uuid.uuid4())).deployment

    page = client.get(reverse("deployments:detail", args=[deployment.handle])).content.decode()

    assert 'id="try"' not in page
    assert try_it(client, deployment).status_code == 404


def test_the_page_takes_the_same_queries_with_a_try_form(client, deploy_tried, publish, dana, django_assert_num_queries):
    tried = deploy_tried({"path": "/echo", "inputs": [{"name": "q", "label": "Q"}]})
    plain = drive(deployment_create(owner=dana, version=publish(name="plain"), inputs={}, idempotency_key=str(uuid.uuid4())).deployment)

    # session, user, deployment (+version, template, node, build), tokens, events, usage
    with django_assert_num_queries(5):
        assert client.get(reverse("deployments:detail", args=[tried.handle])).status_code == 200
    with django_assert_num_queries(5):
        assert client.get(reverse("deployments:detail", args=[plain.handle])).status_code == 200


def test_it_posts_the_fields_as_json_through_the_gateway_and_counts_the_call(client, deploy_tried, hostile, recorder):
    deployment = deploy_tried({
        "path": "/echo",
        "inputs": [{"name": "ticker", "label": "Ticker"}, {"name": "top_k", "label": "Top k", "type": "integer"},
                   {"name": "fast", "label": "Fast", "type": "boolean"}, {"name": "blank", "label": "Left blank"}],
        "answer": {"show": "json", "field": "got"},
    })

    answer = answer_of(try_it(client, deployment, {"try-ticker": "MSFT", "try-top_k": "3", "try-fast": "on", "try-blank": ""}))

    seen = hostile.seen[-1]
    assert seen["path"] == "/echo" and json.loads(seen["body"]) == {"ticker": "MSFT", "top_k": 3, "fast": True}
    assert seen["headers"]["content-type"] == "application/json"
    assert "authorization" not in seen["headers"] and "cookie" not in seen["headers"]
    assert "&quot;ticker&quot;: &quot;MSFT&quot;" in answer and "&quot;top_k&quot;: 3" in answer
    recorder.flush()
    deployment.refresh_from_db()
    assert (deployment.requests, deployment.errors) == (1, 0) and deployment.last_request_at is not None


def test_a_get_form_sends_its_fields_as_the_query_string(client, deploy_tried, hostile):
    deployment = deploy_tried({"path": "/echo", "method": "GET", "inputs": [{"name": "q", "label": "Q"}]})

    try_it(client, deployment, {"try-q": "a b&c=d"})

    assert hostile.seen[-1]["query"] == "q=a+b%26c%3Dd" and hostile.seen[-1]["body"] == ""


def test_hostile_markdown_is_sanitised_as_readmes_are(client, deploy_tried):
    deployment = deploy_tried({"path": "/markdown", "answer": {"show": "markdown", "field": "report"}})

    answer = answer_of(try_it(client, deployment))

    assert "<h1>Report</h1>" in answer
    # What markdown-it declines to make a link stays as inert text; no tag or attribute carries it.
    assert "<script" not in answer and "<iframe" not in answer and "<style" not in answer and "onerror" not in answer
    assert not re.search(r"""(?:href|src)=["']?(?:javascript|data:text)""", answer, re.IGNORECASE)
    assert answer.count("<a ") == 2 and "<a rel=\"noopener noreferrer nofollow\">raw link</a>" in answer
    # A chart (an image type, base64) is kept: the report is shown with it.
    assert f'<img src="data:image/png;base64,{base64.b64encode(PNG).decode()}" alt="chart">' in answer


def test_json_and_text_answers_are_escaped(client, deploy_tried):
    as_json = deploy_tried({"path": "/json", "answer": {"show": "json"}})
    as_text = deploy_tried({"path": "/text", "answer": {"show": "text"}})

    json_answer, text_answer = answer_of(try_it(client, as_json)), answer_of(try_it(client, as_text))

    assert "<script" not in json_answer and "&lt;/code&gt;&lt;/pre&gt;&lt;script&gt;" in json_answer
    assert "<script" not in text_answer and "&lt;b&gt;bold?&lt;/b&gt;" in text_answer


def test_an_image_is_only_ever_a_data_url_of_an_image_type(client, deploy_tried):
    png = deploy_tried({"path": "/png", "answer": {"show": "image"}})
    html_body = deploy_tried({"path": "/html-as-image", "answer": {"show": "image"}})
    html_field = deploy_tried({"path": "/fake-image", "answer": {"show": "image", "field": "image"}})

    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in answer_of(try_it(client, png))
    refused_body, refused_field = answer_of(try_it(client, html_body)), answer_of(try_it(client, html_field))
    for refused in (refused_body, refused_field):
        assert "<img" not in refused and "data:text/html" not in refused and "<script" not in refused
    assert "its Content-Type is text/html, not one of image/png" in refused_body
    assert "`image` is not a base64 `data:` URL of a PNG, JPEG, GIF, WebP or SVG image" in refused_field


@pytest.mark.parametrize(("path", "message"), [
    ("/broken", "The call failed with status 500: the model &lt;b&gt;fell over&lt;/b&gt;"),
    ("/refuses", "The call failed with status 422: `ticker` must be a stock symbol"),
    ("/nowhere", "The call failed with status 404: no such route"),
])
def test_an_endpoint_error_is_a_message_with_its_status(client, deploy_tried, path, message):
    deployment = deploy_tried({"path": path})

    assert message in answer_of(try_it(client, deployment))


def test_a_missing_field_says_which(client, deploy_tried):
    deployment = deploy_tried({"path": "/json", "answer": {"show": "text", "field": "choices.0.text"}})

    assert "its answer cannot be shown: it has no `choices.0.text` (no `choices` there)" in answer_of(try_it(client, deployment))


def test_an_answer_past_the_cap_is_refused_not_shown(client, settings, deploy_tried):
    settings.TRY_IT_MAX_ANSWER_BYTES = 100_000
    deployment = deploy_tried({"path": "/huge"})

    assert "The answer is larger than 100000 bytes" in answer_of(try_it(client, deployment))


def test_a_slow_endpoint_times_out_with_a_message(client, settings, deploy_tried):
    settings.TRY_IT_TIMEOUT_SECONDS = 1
    deployment = deploy_tried({"path": "/slow"})

    assert "did not answer within 1 s" in answer_of(try_it(client, deployment))


def test_a_stopped_deployment_says_so(client, deploy_tried):
    deployment = deploy_tried({"path": "/echo"})
    deployment_stop(deployment=deployment)
    drive(deployment, until=(State.STOPPED,))

    answer = answer_of(try_it(client, deployment))

    assert "The call failed with status 503" in answer and "the deployment is stopped" in answer


def test_a_bad_field_is_shown_beside_it_and_nothing_is_sent(client, deploy_tried, hostile):
    deployment = deploy_tried({"path": "/echo", "inputs": [{"name": "top_k", "label": "Top k", "type": "integer"}]})
    calls = len(hostile.seen)

    response = try_it(client, deployment, {"try-top_k": "many"})

    assert response.status_code == 200  # htmx swaps in 2xx answers only
    assert "Enter a whole number." in response.content.decode() and len(hostile.seen) == calls


def test_without_javascript_the_whole_page_comes_back_with_the_answer(client, deploy_tried):
    deployment = deploy_tried({"path": "/text", "answer": {"show": "text"}})

    response = client.post(reverse("deployments:try", args=[deployment.handle]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Process log" in page and "&lt;b&gt;bold?&lt;/b&gt;" in page
    assert "data:" in response["Content-Security-Policy"].split("img-src")[1].split(";")[0]


def test_only_the_owner_may_try_it(client, deploy_tried, user_factory, hostile):
    deployment = deploy_tried({"path": "/echo"})
    calls = len(hostile.seen)
    client.force_login(user_factory("mallory"))

    assert try_it(client, deployment).status_code == 404
    assert client.get(reverse("deployments:try", args=[deployment.handle])).status_code in (404, 405)
    assert len(hostile.seen) == calls


def test_it_refuses_a_post_without_csrf(deploy_tried, dana, hostile):
    from django.test import Client

    deployment = deploy_tried({"path": "/echo"})
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(dana)
    calls = len(hostile.seen)

    assert try_it(strict, deployment).status_code == 403 and len(hostile.seen) == calls


def test_the_stock_agents_own_chart_survives_the_sanitiser(monkeypatch):
    # The report embeds its chart as an SVG data URL (report.py): the Try it panel must keep it.
    monkeypatch.syspath_prepend(str(STOCK_AGENT))
    try:
        from analysis import PricePoint
        from chart import price_chart_svg

        points = [PricePoint(date(2000 + index // 12, index % 12 + 1, 1), 10.0 + index) for index in range(24)]
        svg = price_chart_svg("Demo (DEMO), monthly prices", points, {})
    finally:
        for name in ("analysis", "chart"):
            sys.modules.pop(name, None)
    url = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()

    html = readme_to_html(f"## Price\n\n![DEMO monthly prices]({url})\n", data_images=True)

    assert f'<img src="{url}" alt="DEMO monthly prices">' in html
    assert "<img" not in readme_to_html(f"![chart]({url})")  # a README still shows no data: image
