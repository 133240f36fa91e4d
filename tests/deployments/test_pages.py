"""The deployments' pages: the deploy form, a deployment's live page and fragments, the
stop / restart / delete buttons and My deployments."""

import re
import uuid

import pytest
from django.urls import reverse

from deployments.models import Deployment
from deployments.services import deployment_create
from deployments.transitions import deployment_transition
from templates_catalog.models import Build
from templates_catalog.services import template_version_yank

from . import fakes
from .conftest import drive

State = Deployment.State
ALL_TYPES = [
    {"name": "title", "label": "Title", "type": "string", "required": True, "help": "Shown in the header."},
    {"name": "notes", "label": "Notes", "type": "text"},
    {"name": "workers", "label": "Workers", "type": "integer", "default": 2},
    {"name": "temperature", "label": "Temperature", "type": "number", "default": 0.5},
    {"name": "normalize", "label": "Normalise", "type": "boolean", "default": True},
    {"name": "size", "label": "Size", "type": "choice", "choices": ["small", "large"], "default": "small"},
]


@pytest.fixture
def dana(user_factory, client):
    user = user_factory("dana")
    client.force_login(user)
    return user


def deploy_url(name="embedder", version=None):
    if version:
        return reverse("deployments:deploy_version", args=[name, version])
    return reverse("deployments:deploy", args=[name])


def key_of(page: str) -> str:
    return re.search(r'name="idempotency_key" value="([^"]+)"', page).group(1)


def _deploy(owner, version, **inputs) -> Deployment:
    return deployment_create(owner=owner, version=version, inputs=inputs, idempotency_key=str(uuid.uuid4())).deployment


# --- the deploy page -----------------------------------------------------------------


def test_the_deploy_page_sends_anonymous_visitors_to_sign_in_and_back(client, version):
    response = client.get(deploy_url())

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('catalog:login')}?next={deploy_url()}"


def test_unknown_and_private_templates_are_404(client, dana, publish, other_publisher):
    publish(name="secret", owner=other_publisher, visibility="private")

    assert client.get(deploy_url("no-such")).status_code == 404
    assert client.get(deploy_url("secret")).status_code == 404
    assert client.post(deploy_url("secret"), {"idempotency_key": str(uuid.uuid4())}).status_code == 404
    assert not Deployment.objects.exists()


def test_each_input_gets_the_widget_of_its_type(client, dana, publish):
    publish(name="typed", inputs=ALL_TYPES)

    page = client.get(deploy_url("typed")).content.decode()

    assert re.search(r'<input type="text" name="title"[^>]*required', page)
    assert "Shown in the header." in page
    assert re.search(r'<textarea name="notes"', page)
    assert re.search(r'<input type="number" name="workers" value="2"', page)
    assert re.search(r'<input type="number" name="temperature" value="0.5" step="any"', page)
    assert re.search(r'<input type="checkbox" name="normalize"[^>]*checked', page)
    assert re.search(r'<select name="size"[^>]*>\s*<option value="small" selected>small</option>\s*<option value="large">large</option>', page)
    uuid.UUID(key_of(page))  # a fresh idempotency key in a hidden field


def test_the_page_shows_the_cheapest_node_that_fits_and_its_price(client, dana, version, node_factory):
    node_factory("pricey", price="3.00")
    node_factory("cheap", price="0.50")
    node_factory("cheapest-but-small", price="0.10", cpus=1, memory_gb=2)

    page = client.get(deploy_url()).content.decode()

    assert "Node <strong>cheap</strong>" in page and "<strong>0.50</strong> per hour" in page
    assert page.index("per hour") < page.index(">Deploy</button>")  # the price comes before the click
    assert "<dt>CPU cores</dt><dd>2</dd>" in page and "<dt>Memory</dt><dd>4 GB</dd>" in page


def test_when_no_node_fits_the_page_says_why_and_offers_no_button(client, dana, version, node_factory):
    node_factory("tiny", cpus=1, memory_gb=8)

    page = client.get(deploy_url()).content.decode()

    assert "No node can run this: needs 2 CPUs; most free: 1 on tiny" in page
    assert ">Deploy</button>" not in page


def test_a_yanked_version_says_so_and_offers_the_latest(client, dana, publish, version):
    newer = publish(name="embedder", version="1.1.0")
    template_version_yank(version=version, reason="wrong weights")

    page = client.get(deploy_url(version="1.0.0")).content.decode()
    posted = client.post(deploy_url(version="1.0.0"), {"idempotency_key": str(uuid.uuid4())})

    assert "is yanked: wrong weights" in page and ">Deploy</button>" not in page
    assert deploy_url(version=newer.version) in page
    assert posted.status_code == 200 and not Deployment.objects.exists()


# --- deploying -------------------------------------------------------------------------


def test_a_double_submit_makes_one_deployment(client, dana, version, node_factory):
    node_factory()
    key = key_of(client.get(deploy_url()).content.decode())

    first = client.post(deploy_url(), {"idempotency_key": key})
    second = client.post(deploy_url(), {"idempotency_key": key})

    deployment = Deployment.objects.get()
    assert first.status_code == second.status_code == 303
    assert first["Location"] == second["Location"] == reverse("deployments:detail", args=[deployment.handle])
    assert deployment.owner == dana and deployment.inputs == {"normalize": False}  # an unticked box is false


def test_a_bad_input_re_renders_the_form_with_its_error(client, dana, publish, node_factory):
    node_factory()
    publish(name="typed", inputs=ALL_TYPES)

    response = client.post(deploy_url("typed"), {"idempotency_key": str(uuid.uuid4()), "workers": "many", "size": "huge"})

    page = response.content.decode()
    assert response.status_code == 400 and not Deployment.objects.exists()
    assert "This field is required." in page  # title
    assert "Enter a whole number." in page
    assert "Select a valid choice. huge is not one of the available choices." in page
    assert 'value="many"' in page  # what was typed is kept


def test_a_form_without_its_key_is_refused(client, dana, version, node_factory):
    node_factory()

    response = client.post(deploy_url(), {"normalize": "on"})

    assert response.status_code == 400 and not Deployment.objects.exists()
    assert "this form has expired: reload the page" in response.content.decode()


def test_reusing_a_page_with_other_values_is_refused_with_a_fresh_key(client, dana, version, node_factory):
    node_factory()
    key = str(uuid.uuid4())
    client.post(deploy_url(), {"idempotency_key": key, "normalize": "on"})

    response = client.post(deploy_url(), {"idempotency_key": key})

    assert response.status_code == 409 and Deployment.objects.count() == 1
    page = response.content.decode()
    assert "already used to deploy with other values" in page and key_of(page) != key


# --- one deployment --------------------------------------------------------------------


def test_only_the_owner_sees_a_deployment(client, user_factory, version, node_factory):
    node_factory()
    deployment = _deploy(user_factory("owner"), version)
    client.force_login(user_factory("mallory"))

    for name in ("detail", "state", "logs", "delete"):
        assert client.get(reverse(f"deployments:{name}", args=[deployment.handle])).status_code == 404
    for name in ("stop", "restart", "delete"):
        assert client.post(reverse(f"deployments:{name}", args=[deployment.handle])).status_code == 404
    deployment.refresh_from_db()
    assert deployment.state == State.PENDING and deployment.deleted_at is None


def test_the_page_shows_what_was_deployed_and_polls_while_in_flight(client, dana, version, node_factory):
    node_factory()
    deployment = _deploy(dana, version)

    page = client.get(reverse("deployments:detail", args=[deployment.handle])).content.decode()

    assert f"sha256:{version.bundle_sha256}" in page
    assert reverse("catalog:version_page", args=["embedder", "1.0.0"]) in page
    assert 'data-state="pending"' in page and "deployment requested" in page
    assert re.search(r'id="deployment-state"[^>]*hx-trigger="every 1s"', page.replace("\n", " "))


def test_the_state_fragment_answers_204_until_something_changes(client, dana, version, node_factory):
    node_factory()
    deployment = _deploy(dana, version)
    url = reverse("deployments:state", args=[deployment.handle])
    first = client.get(url).content.decode()
    since = re.search(r"since=(\w+)", first).group(1)

    unchanged = client.get(url, {"since": since})
    deployment_transition(deployment_id=deployment.pk, to=State.BUILDING, message="build 1 requested")
    changed = client.get(url, {"since": since})

    assert unchanged.status_code == 204 and unchanged.content == b""
    assert changed.status_code == 200 and 'data-state="building"' in changed.content.decode()
    assert "pending → building" in changed.content.decode() and "<html" not in changed.content.decode()


def test_a_running_deployment_polls_its_state_slowly_and_follows_its_log(client, dana, version, node_factory):
    node_factory("node-a", price="1.25")
    deployment = drive(_deploy(dana, version))
    assert deployment.state == State.RUNNING, deployment.reason

    page = client.get(reverse("deployments:detail", args=[deployment.handle])).content.decode()

    # The hub's gateway address, never the container's own port, which has no token lock.
    assert f'<code class="endpoint">http://testserver/d/{deployment.handle}/…</code>' in page
    assert f'<code class="endpoint">{deployment.endpoint}' not in page
    assert "node-a" in page and "1.25 per hour" in page
    # Slowly: only sleeping, a wake or a stop would change it.
    assert re.search(r'id="deployment-state"[^>]*hx-trigger="every 5s"', page.replace("\n", " "))
    assert re.search(r'id="deployment-logs"[^>]*hx-trigger="every 2s"', page.replace("\n", " "))
    assert f"listening for {deployment.handle}" in page
    assert "building → scheduling" in page and "starting → running" in page


def test_the_log_fragment_answers_204_while_the_log_is_unchanged(client, dana, version, node_factory):
    node_factory()
    deployment = drive(_deploy(dana, version))
    url = reverse("deployments:logs", args=[deployment.handle])
    since = re.search(r"since=(\w+)", client.get(url).content.decode()).group(1)

    unchanged = client.get(url, {"since": since})
    fakes.ENGINES["fake://node-a"].runs[deployment.handle].logs.append("GET /v1/embeddings 200")
    changed = client.get(url, {"since": since})

    assert unchanged.status_code == 204
    assert changed.status_code == 200 and "GET /v1/embeddings 200" in changed.content.decode()


def test_an_unreachable_node_shows_a_message_not_an_error(client, dana, version, node_factory):
    node_factory()
    deployment = drive(_deploy(dana, version))
    fakes.ENGINES["fake://node-a"].answers = False

    page = client.get(reverse("deployments:detail", args=[deployment.handle]))
    fragment = client.get(reverse("deployments:logs", args=[deployment.handle]))

    assert page.status_code == fragment.status_code == 200
    assert "node node-a did not answer (connection refused)" in fragment.content.decode()


def test_a_failed_deployment_shows_its_reason(client, dana, version, node_factory):
    node_factory()
    deployment = _deploy(dana, version)
    deployment_transition(deployment_id=deployment.pk, to=State.FAILED, message="the build failed: no wheel for numpy")

    page = client.get(reverse("deployments:detail", args=[deployment.handle])).content.decode()

    assert 'data-state="failed"' in page and "the build failed: no wheel for numpy" in page
    assert ">Restart</button>" in page and "hx-trigger" not in page  # nothing moves any more


# --- the buttons -----------------------------------------------------------------------


def test_stop_then_restart_through_the_buttons(client, dana, version, node_factory):
    node_factory()
    deployment = drive(_deploy(dana, version))

    stopped = client.post(reverse("deployments:stop", args=[deployment.handle]))
    drive(deployment, until=(State.STOPPED,))
    restarted = client.post(reverse("deployments:restart", args=[deployment.handle]), {"next": reverse("deployments:list")})

    assert stopped.status_code == 303 and stopped["Location"] == reverse("deployments:detail", args=[deployment.handle])
    assert restarted.status_code == 303 and restarted["Location"] == reverse("deployments:list")
    deployment.refresh_from_db()
    assert deployment.state == State.PENDING
    assert list(deployment.events.values_list("message", flat=True))[-3:] == [
        "stop requested", "stopped; its volume is kept", "restart requested",
    ]


def test_restarting_a_running_deployment_explains_why_not(client, dana, version, node_factory):
    node_factory()
    deployment = drive(_deploy(dana, version))

    response = client.post(reverse("deployments:restart", args=[deployment.handle]), follow=True)

    assert "only a stopped or failed deployment restarts" in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.state == State.RUNNING


def test_the_buttons_need_post_and_a_foreign_next_is_ignored(client, dana, version, node_factory):
    node_factory()
    deployment = _deploy(dana, version)

    assert client.get(reverse("deployments:stop", args=[deployment.handle])).status_code == 405
    response = client.post(reverse("deployments:stop", args=[deployment.handle]), {"next": "https://evil.example/"})

    assert response["Location"] == reverse("deployments:detail", args=[deployment.handle])


def test_the_buttons_refuse_a_post_without_csrf(dana, version, node_factory):
    from django.test import Client

    node_factory()
    deployment = _deploy(dana, version)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(dana)

    assert strict.post(reverse("deployments:stop", args=[deployment.handle])).status_code == 403
    deployment.refresh_from_db()
    assert deployment.state == State.PENDING


def test_delete_asks_first_then_removes_it_from_the_list(client, dana, version, node_factory):
    node_factory()
    deployment = drive(_deploy(dana, version))

    confirm = client.get(reverse("deployments:delete", args=[deployment.handle]))
    assert Deployment.objects.get(pk=deployment.pk).deleted_at is None  # asking deletes nothing
    deleted = client.post(reverse("deployments:delete", args=[deployment.handle]))

    assert confirm.status_code == 200 and 'id="confirm-delete"' in confirm.content.decode()
    assert deleted.status_code == 303 and deleted["Location"] == reverse("deployments:list")
    deployment.refresh_from_db()
    assert deployment.deleted_at is not None and deployment.state == State.STOPPING
    listed = client.get(reverse("deployments:list")).content.decode()
    assert "You have no deployments yet." in listed and f"Deleted {deployment.handle}" in listed
    assert client.get(reverse("deployments:detail", args=[deployment.handle])).status_code == 404


# --- my deployments --------------------------------------------------------------------


def test_my_deployments_when_there_are_none_links_to_the_catalog(client, dana):
    page = client.get(reverse("deployments:list")).content.decode()

    assert "You have no deployments yet." in page and reverse("catalog:template_list") in page


def test_my_deployments_lists_only_mine_in_a_fixed_number_of_queries(
    client, dana, user_factory, publish, version, node_factory, django_assert_num_queries
):
    node_factory()
    other = publish(name="vector-db", title="Vector database")
    mine = [_deploy(dana, version)]
    theirs = _deploy(user_factory("erin"), version)

    with django_assert_num_queries(3):  # session, user, deployments
        client.get(reverse("deployments:list"))
    mine += [_deploy(dana, other) for _ in range(4)]
    deployment_transition(deployment_id=mine[0].pk, to=State.FAILED, message="broken")
    with django_assert_num_queries(3):
        page = client.get(reverse("deployments:list")).content.decode()

    assert all(deployment.handle in page for deployment in mine) and theirs.handle not in page
    assert "Vector database" in page and ">Restart</button>" in page


# --- the build log on the version page -------------------------------------------------


def test_the_build_status_answers_204_while_the_build_log_is_unchanged(client, version):
    build = Build.objects.create(version=version, backend="venv", base_image="hub-base:bookworm", status="running", log="step 1\n")
    url = reverse("catalog:version_build_status", args=["embedder", "1.0.0"])
    page = client.get(reverse("catalog:version_page", args=["embedder", "1.0.0"])).content.decode()
    since = re.search(r"since=(\w+)", page).group(1)

    unchanged = client.get(url, {"since": since})
    Build.objects.filter(pk=build.pk).update(log="step 1\nstep 2\n")
    changed = client.get(url, {"since": since})

    assert unchanged.status_code == 204
    assert changed.status_code == 200 and "step 2" in changed.content.decode()
    assert 'id="build-log"' in page and "data-live-log" in page and "catalog/live-log.js" in page
