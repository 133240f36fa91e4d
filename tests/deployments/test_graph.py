"""Deploying an app deploys its whole graph: one deployment per part, dependencies first,
each dependant wired to its requirements through the gateway with a token made for that
edge; running parts are reused; a part that fails fails the graph; stopping or deleting
an app lets go of what only it used."""

import html
import re
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from deployments.endpoint_tokens import token_digest
from deployments.flow import deployment_advance
from deployments.graphs import REUSABLE, graph_lock, graph_of, graph_plan
from deployments.models import Deployment, DeploymentEdge, EndpointToken
from deployments.reconcile import deployments_reconcile
from deployments.services import (
    DeploymentConflict,
    DeploymentRejected,
    deployment_create,
    deployment_delete,
    deployment_fail,
    deployment_plan,
    deployment_restart,
    deployment_stop,
)
from deployments.specs import launch_spec_for
from deployments.transitions import TransitionRefused
from runners.base import RunPhase
from templates_catalog.models import TemplateVersion
from templates_catalog.resolution import graph_resolve
from templates_catalog.services import template_version_yank

from ..concurrency import at_once
from . import fakes
from .conftest import finish_build

State = Deployment.State
SETTLED = (State.RUNNING, State.FAILED, State.STOPPED)


@pytest.fixture
def owner(user_factory):
    return user_factory("dana")


@pytest.fixture
def app(publish):
    """agent (app) → rag (workflow) → embedder, store (atomic): four parts, three edges."""
    publish(name="embedder", version="1.0.0", tier="atomic", resources={"cpu": 1, "memory_gb": 2},
            inputs=[{"name": "normalize", "label": "Normalise", "type": "boolean", "default": True}])
    publish(name="store", version="1.0.0", tier="atomic", resources={"cpu": 1, "memory_gb": 2})
    publish(name="rag", version="1.0.0", tier="workflow", resources={"cpu": 1, "memory_gb": 1}, requires=[
        {"template": "embedder", "version": ">=1.0.0,<2.0.0", "alias": "embeddings"},
        {"template": "store", "version": "*", "alias": "vector_store"},
    ])
    return publish(name="agent", version="1.0.0", tier="app", resources={"cpu": 1, "memory_gb": 1},
                   requires=[{"template": "rag", "version": "~=1.0", "alias": "rag"}])


def part(root: Deployment, template: str) -> Deployment:
    """The deployment serving `template` in root's graph."""
    handles = [root.pk]
    while handles:
        edges = DeploymentEdge.objects.filter(dependant_id__in=handles).select_related("requirement__version__template")
        for edge in edges:
            if edge.requirement.version.template.name == template:
                return edge.requirement
        handles = [edge.requirement_id for edge in edges]
    raise AssertionError(f"no {template} in the graph of {root.handle}")


def drive_all(*deployments: Deployment, steps: int = 300) -> list[Deployment]:
    """Run every flow as the workers would, side by side, until each one settles."""
    for _ in range(steps):
        moving = [d for d in deployments if Deployment.objects.get(pk=d.pk).state not in SETTLED]
        if not moving:
            break
        for deployment in moving:
            deployment.refresh_from_db()
            if deployment.state == State.BUILDING:
                finish_build(deployment)
            deployment_advance(deployment_id=deployment.pk)
        time.sleep(0.01)
    return [Deployment.objects.get(pk=d.pk) for d in deployments]


def graph_deployments(root: Deployment) -> list[Deployment]:
    return [root, *(part(root, name) for name in ("rag", "embedder", "store"))]


def two_apps_sharing_their_parts(owner, app) -> tuple[Deployment, Deployment]:
    first = deployment_create(owner=owner, version=app, inputs={}).deployment
    drive_all(*graph_deployments(first))
    second = deployment_create(owner=owner, version=app, inputs={}).deployment
    drive_all(second)
    return first, second


def test_it_opens_one_deployment_per_part_and_stores_the_lock(owner, app, node_factory):
    node_factory()
    root = deployment_create(owner=owner, version=app, inputs={}).deployment

    assert Deployment.objects.count() == 4
    assert [p["template"] for p in root.lock["parts"]][-1] == "agent"
    assert {p["template"]: p["version"] for p in root.lock["parts"]} == {"embedder": "1.0.0", "store": "1.0.0", "rag": "1.0.0", "agent": "1.0.0"}
    edges = set(DeploymentEdge.objects.values_list("dependant__version__template__name", "requirement__version__template__name", "alias"))
    assert edges == {("agent", "rag", "rag"), ("rag", "embedder", "embeddings"), ("rag", "store", "vector_store")}
    assert not root.graph_part and part(root, "embedder").graph_part
    assert part(root, "embedder").inputs == {"normalize": True}  # a part gets its defaults


def test_a_dependant_stays_pending_until_its_requirements_run_then_calls_them_through_the_gateway(owner, app, node_factory, settings):
    settings.GATEWAY_INTERNAL_URL = "http://hub.internal:8000"
    node_factory()
    root = deployment_create(owner=owner, version=app, inputs={}).deployment
    rag, embedder, store = part(root, "rag"), part(root, "embedder"), part(root, "store")

    assert deployment_advance(deployment_id=rag.pk) > 0
    assert Deployment.objects.get(pk=rag.pk).state == State.PENDING and rag.build_id is None

    drive_all(embedder, store)
    assert Deployment.objects.get(pk=root.pk).state == State.PENDING  # rag is not up yet
    root, rag = drive_all(root, rag)

    assert (root.state, rag.state) == (State.RUNNING, State.RUNNING)
    environment = fakes.ENGINES["fake://node-a"].runs[rag.handle].spec.environment
    assert environment["EMBEDDINGS_URL"] == f"http://hub.internal:8000/d/{embedder.handle}"
    assert environment["VECTOR_STORE_URL"] == f"http://hub.internal:8000/d/{store.handle}"
    token = EndpointToken.objects.get(token_sha256=token_digest(environment["EMBEDDINGS_TOKEN"]))
    assert token.deployment_id == embedder.pk and token.is_active
    # The token opens the edge's requirement only.
    assert token_digest(environment["EMBEDDINGS_TOKEN"]) != token_digest(environment["VECTOR_STORE_TOKEN"])
    assert "RAG_URL" in fakes.ENGINES["fake://node-a"].runs[root.handle].spec.environment


def test_a_relaunch_gets_a_fresh_token_and_the_old_one_stops_working(owner, app, node_factory):
    node_factory()
    root = deployment_create(owner=owner, version=app, inputs={}).deployment
    drive_all(*graph_deployments(root))
    first = fakes.ENGINES["fake://node-a"].runs[root.handle].spec.environment["RAG_TOKEN"]

    # What the flow, a restart and the reconciler all launch with.
    second = launch_spec_for(Deployment.objects.select_related("build").get(pk=root.pk)).environment["RAG_TOKEN"]

    assert first != second
    assert not EndpointToken.objects.filter(token_sha256=token_digest(first)).exists()
    assert EndpointToken.objects.get(token_sha256=token_digest(second)).is_active
    # However often it launches (each wake is a launch), one token per edge.
    for _ in range(3):
        launch_spec_for(Deployment.objects.select_related("build").get(pk=root.pk))
    assert EndpointToken.objects.filter(deployment=part(root, "rag")).count() == 1


def test_a_second_app_reuses_the_running_parts(owner, app, node_factory):
    node_factory()
    first = deployment_create(owner=owner, version=app, inputs={}).deployment
    drive_all(*graph_deployments(first))

    second = deployment_create(owner=owner, version=app, inputs={}).deployment

    assert Deployment.objects.count() == 5
    assert part(second, "rag").pk == part(first, "rag").pk
    (second,) = drive_all(second)
    assert second.state == State.RUNNING


def test_another_users_parts_are_never_reused(owner, user_factory, app, node_factory):
    node_factory()
    theirs = deployment_create(owner=user_factory("eve"), version=app, inputs={}).deployment
    drive_all(*graph_deployments(theirs))

    mine = deployment_create(owner=owner, version=app, inputs={}).deployment

    assert Deployment.objects.count() == 8 and part(mine, "rag").owner_id == owner.pk


def test_a_part_that_fails_fails_the_graph_with_its_reason_and_stops_what_was_started(owner, app, node_factory):
    node_factory()
    root = deployment_create(owner=owner, version=app, inputs={}).deployment
    rag, embedder, store = part(root, "rag"), part(root, "embedder"), part(root, "store")
    drive_all(store)
    deployment_advance(deployment_id=embedder.pk)
    embedder.refresh_from_db()
    finish_build(embedder, error="no wheel for torch==9.9")
    deployment_advance(deployment_id=embedder.pk)

    root, rag = drive_all(root, rag)

    # rag failed with it and stays failed (nothing of it runs); its reason names the part.
    assert rag.state == State.FAILED and not rag.events.filter(to_state=State.STOPPING).exists()
    assert rag.reason.startswith(f"its requirement embeddings (embedder 1.0.0, {embedder.handle}) failed: the build failed")
    assert root.state == State.FAILED and "no wheel for torch==9.9" in root.reason and root.reason.startswith("its requirement rag")
    store.refresh_from_db()
    assert store.state == State.STOPPING  # started for this graph alone: stopped with it
    assert not DeploymentEdge.objects.filter(released_at__isnull=True).exists()


def test_an_unresolvable_graph_is_refused_before_anything_starts(owner, publish, app, node_factory):
    node_factory()
    newer = publish(name="rag", version="2.0.0", tier="workflow", requires=[{"template": "store", "version": "*", "alias": "vector_store"}])
    strict = publish(name="agent", version="1.1.0", tier="app", requires=[{"template": "rag", "version": ">=2", "alias": "rag"}])
    template_version_yank(version=newer, reason="wrong answers")

    with pytest.raises(DeploymentRejected) as refused:
        deployment_create(owner=owner, version=strict, inputs={})

    assert refused.value.errors == [("requires", "agent → rag >=2 → none published; newest is 1.0.0")]
    assert Deployment.objects.count() == 0


def test_deleting_one_of_two_apps_leaves_the_shared_parts_and_the_last_takes_them(owner, app, node_factory):
    node_factory()
    first, second = two_apps_sharing_their_parts(owner, app)
    parts = [part(first, name) for name in ("rag", "embedder", "store")]

    deployment_delete(deployment=first)
    assert {Deployment.objects.get(pk=p.pk).state for p in parts} == {State.RUNNING}

    deployment_delete(deployment=second)
    for shared in parts:
        shared.refresh_from_db()
        assert shared.state == State.STOPPING and shared.deleted_at is not None
    drive_all(*parts, first, second)
    assert set(fakes.ENGINES["fake://node-a"].runs) == set()  # every run removed, none left behind


def test_stopping_an_app_stops_its_parts_and_it_restarts_only_by_a_new_deploy(owner, app, node_factory):
    node_factory()
    root = deployment_create(owner=owner, version=app, inputs={}).deployment
    deployments = graph_deployments(root)
    drive_all(*deployments)

    deployment_stop(deployment=root)
    states = [d.state for d in drive_all(*deployments)]

    assert states == [State.STOPPED] * 4
    assert all(d.deleted_at is None for d in drive_all(*deployments))
    with pytest.raises(DeploymentConflict, match="deploy agent again"):
        deployment_restart(deployment=root)


def test_a_deployment_its_owner_made_directly_is_reused_and_never_stopped_for_them(owner, app, node_factory):
    node_factory()
    embedder_version = TemplateVersion.objects.get(template__name="embedder")
    mine = deployment_create(owner=owner, version=embedder_version, inputs={}).deployment
    drive_all(mine)

    root = deployment_create(owner=owner, version=app, inputs={}).deployment
    assert part(root, "embedder").pk == mine.pk
    drive_all(*graph_deployments(root))
    deployment_delete(deployment=root)

    mine.refresh_from_db()
    assert mine.state == State.RUNNING and mine.deleted_at is None


@pytest.mark.django_db(transaction=True)
def test_two_apps_deleted_at_once_stop_the_shared_part_exactly_once(owner, app, node_factory):
    node_factory()
    first, second = two_apps_sharing_their_parts(owner, app)
    shared = part(first, "rag")
    barrier = threading.Barrier(2)
    errors = []

    def delete(root):
        try:
            barrier.wait(timeout=10)
            deployment_delete(deployment=root)
        except Exception as exc:  # reported below: the test must see every failure
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=delete, args=(root,)) for root in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    shared.refresh_from_db()
    assert shared.state == State.STOPPING and shared.deleted_at is not None
    assert shared.events.filter(to_state=State.STOPPING).count() == 1


def in_thread(call) -> Future:
    """Start `call` in a thread of its own, which closes its connection when done."""
    def run():
        try:
            return call()
        finally:
            connection.close()

    executor = ThreadPoolExecutor(max_workers=1)
    future = executor.submit(run)
    executor.shutdown(wait=False)
    return future


def live_deployments(owner) -> Counter:
    """How many live deployments `owner` has of each template."""
    live = Deployment.objects.filter(owner=owner, deleted_at__isnull=True, state__in=REUSABLE)
    return Counter(live.values_list("version__template__name", flat=True))


def deploy(owner, version, **options):
    return lambda: deployment_create(owner=owner, version=version, inputs={}, **options)


@pytest.mark.django_db(transaction=True)
def test_two_deploys_of_one_app_at_once_start_each_shared_part_once(owner, app, node_factory):
    node_factory()

    results, errors = at_once(deploy(owner, app), deploy(owner, app))

    assert errors == []
    first, second = (result.deployment for result in results)
    assert live_deployments(owner) == {"agent": 2, "rag": 1, "embedder": 1, "store": 1}
    shared = {name: part(first, name) for name in ("rag", "embedder", "store")}
    assert {name: part(second, name) for name in shared} == shared
    rag, embedder, store = shared.values()
    edges = set(DeploymentEdge.objects.values_list("dependant_id", "requirement_id", "alias"))
    assert edges == {
        (first.pk, rag.pk, "rag"), (second.pk, rag.pk, "rag"),
        (rag.pk, embedder.pk, "embeddings"), (rag.pk, store.pk, "vector_store"),
    }
    assert first.lock == second.lock == graph_resolve(app, user=owner).as_lock()
    assert [p["template"] for p in rag.lock["parts"]] == ["embedder", "store", "rag"]
    # And a third deploy's plan offers to reuse that one copy of each.
    plan = deployment_plan(owner=owner, version=app)
    assert {p.template: p.reuses for p in plan.parts} == {
        "embedder": embedder.handle, "store": store.handle, "rag": rag.handle, "agent": "",
    }


@pytest.mark.django_db(transaction=True)
def test_one_key_sent_twice_at_once_for_an_app_opens_its_graph_once(owner, app, node_factory):
    node_factory()

    results, errors = at_once(deploy(owner, app, idempotency_key="k"), deploy(owner, app, idempotency_key="k"))

    assert errors == []
    assert len({result.deployment.pk for result in results}) == 1
    assert sorted(result.created for result in results) == [False, True]
    assert live_deployments(owner) == {"agent": 1, "rag": 1, "embedder": 1, "store": 1}


@pytest.mark.django_db(transaction=True)
def test_two_owners_deploying_at_once_each_get_parts_of_their_own(owner, user_factory, app, node_factory):
    node_factory()
    eve = user_factory("eve")

    results, errors = at_once(deploy(owner, app), deploy(eve, app))

    assert errors == []
    for who, result in zip((owner, eve), results):
        assert live_deployments(who) == {"agent": 1, "rag": 1, "embedder": 1, "store": 1}
        assert {part(result.deployment, name).owner_id for name in ("rag", "embedder", "store")} == {who.pk}


def waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        # Within a transaction the statistics views are read once and kept: read them afresh.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite lets one writer in at a time, whoever it is")
@pytest.mark.django_db(transaction=True)
def test_an_owners_graph_opens_wait_for_each_other_and_for_no_one_else(owner, user_factory, app, node_factory):
    node_factory()
    eve = user_factory("eve")

    with transaction.atomic():
        graph_lock(owner_id=owner.pk)  # as a graph open of dana's, still inserting its parts
        mine = in_thread(deploy(owner, app))
        theirs = in_thread(deploy(eve, app))
        planned = in_thread(lambda: deployment_plan(owner=owner, version=app))

        assert theirs.result(timeout=10).created and len(planned.result(timeout=10).parts) == 4
        deadline = time.monotonic() + 10
        while not waiting_on_a_lock() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting_on_a_lock() == 1 and not mine.done()

    root = mine.result(timeout=10).deployment
    assert live_deployments(owner) == {"agent": 1, "rag": 1, "embedder": 1, "store": 1}
    assert part(root, "rag").owner_id == owner.pk


def test_the_plan_places_parts_against_one_snapshot_and_prices_the_whole(owner, app, node_factory):
    node_factory("small", price="1.00", cpus=2, memory_gb=4)
    node_factory("large", price="3.00", cpus=8, memory_gb=32)

    plan = graph_plan(owner=owner, graph=graph_resolve(app, user=owner))

    # The cheap node takes the first parts until it is full; the rest go to the large one.
    nodes = {p.template: p.node for p in plan.parts}
    assert nodes == {"embedder": "small", "store": "small", "rag": "large", "agent": "large"}
    assert plan.total_per_hour == sum(p.price_per_hour for p in plan.parts) and plan.problem == ""


def test_the_live_graph_is_read_in_one_query_per_level(owner, app, node_factory, django_assert_num_queries):
    node_factory()
    root = deployment_create(owner=owner, version=app, inputs={}).deployment

    with django_assert_num_queries(3):  # agent's edges, rag's edges, and the empty level below
        tree = graph_of(root)

    (rag,) = tree
    assert rag.alias == "rag" and {child.alias for child in rag.children} == {"embeddings", "vector_store"}


# --- pages and the API ---------------------------------------------------------------


@pytest.fixture
def signed_in(client, owner):
    client.force_login(owner)
    return client


def test_the_deploy_page_shows_each_part_its_node_and_the_total_before_the_click(signed_in, owner, app, publish, node_factory):
    node_factory("cheap", price="0.50")
    store = TemplateVersion.objects.get(template__name="store")
    running = deployment_create(owner=owner, version=store, inputs={}).deployment
    drive_all(running)

    page = signed_in.get(reverse("deployments:deploy", args=["agent"])).content.decode()

    rows = re.findall(r'<tr class="plan-part" data-template="([a-z-]+)">(.*?)</tr>', page, re.DOTALL)
    assert [name for name, _ in rows] == ["embedder", "store", "rag", "agent"]
    assert f"reuses your running <code>{running.handle}</code>" in dict(rows)["store"]
    assert "cheap" in dict(rows)["embedder"] and "0.50" in dict(rows)["embedder"]
    assert re.search(r'class="plan-total">1.50<', page)  # three new parts at 0.50; the reused one costs nothing more
    assert page.index("plan-total") < page.index(">Deploy</button>")


def test_a_graph_that_cannot_be_resolved_is_explained_and_offers_no_button(signed_in, publish, app, node_factory):
    node_factory()
    publish(name="agent", version="1.1.0", tier="app", requires=[{"template": "rag", "version": "~=1.0", "alias": "rag"}])
    TemplateVersion.objects.filter(template__name="rag").update(yanked=True, yanked_at=timezone.now())

    page = signed_in.get(reverse("deployments:deploy_version", args=["agent", "1.1.0"])).content.decode()

    assert "agent → rag ~=1.0 → every version of rag is yanked" in page
    assert ">Deploy</button>" not in page


def test_the_deployment_page_draws_the_graph_live_and_its_lock(signed_in, owner, app, node_factory, django_assert_max_num_queries):
    node_factory()
    root = deployment_create(owner=owner, version=app, inputs={}).deployment
    url = reverse("deployments:state", args=[root.handle])
    page = signed_in.get(reverse("deployments:detail", args=[root.handle])).content.decode()
    digest = re.search(r"since=([0-9a-f]+)", page).group(1)

    assert re.search(r'data-template="rag">.*?data-state="pending"', page, re.DOTALL)
    assert re.search(r'data-template="embedder">.*?data-state="pending"', page, re.DOTALL)
    assert f"sha256:{app.bundle_sha256[:12]}" in page
    assert signed_in.get(url, {"since": digest}).status_code == 204

    drive_all(part(root, "embedder"))  # only a part moved: the app's page must still redraw
    with django_assert_max_num_queries(12):
        fragment = signed_in.get(url, {"since": digest})
    assert fragment.status_code == 200
    assert re.search(r'data-template="embedder">.*?data-state="running"', fragment.content.decode(), re.DOTALL)


def test_the_api_answers_the_plan_on_a_dry_run_and_the_lock_after_a_deploy(signed_in, owner, app, node_factory):
    node_factory("cheap", price="0.25")

    plan = signed_in.post("/api/v1/deployments/", {"template": "agent", "dry_run": True}, content_type="application/json")

    assert plan.status_code == 200 and Deployment.objects.count() == 0
    assert [p["template"] for p in plan.json()["parts"]] == ["embedder", "store", "rag", "agent"]
    assert plan.json()["total_per_hour"] == "1.0000"

    made = signed_in.post("/api/v1/deployments/", {"template": "agent"}, content_type="application/json")
    assert made.status_code == 201
    assert {p["template"] for p in made.json()["lock"]["parts"]} == {"embedder", "store", "rag", "agent"}


# --- a part failing while the graph runs -----------------------------------------------


@pytest.fixture
def engine(node_factory):
    return fakes.ENGINES[node_factory().engine_url]


def running_graph(owner, app) -> tuple[Deployment, Deployment, Deployment, Deployment]:
    """(agent, rag, embedder, store), all running."""
    root = deployment_create(owner=owner, version=app, inputs={}).deployment
    deployments = drive_all(*graph_deployments(root))
    assert [d.state for d in deployments] == [State.RUNNING] * 4
    return tuple(deployments)


def die_for_good(settings, engine, *deployments: Deployment, exit_code: int = 139) -> None:
    """Their runs die, and the reconciler may not relaunch them."""
    settings.DEPLOY_MAX_RESTARTS = 0
    for deployment in deployments:
        engine.kill(deployment.handle, exit_code)


def alive(engine) -> set[str]:
    return {handle for handle, run in engine.runs.items() if run.phase == RunPhase.RUNNING}


def fresh(*deployments: Deployment) -> list[Deployment]:
    return [Deployment.objects.get(pk=d.pk) for d in deployments]


def failed_part(alias: str, deployment: Deployment) -> str:
    """The start of a dependant's reason when this part of it failed."""
    return f"its requirement {alias} ({deployment.version.template.name} 1.0.0, {deployment.handle}) failed: "


def test_a_part_that_dies_for_good_while_running_fails_the_graph_above_it_and_stops_the_rest(
    owner, app, engine, settings, django_capture_on_commit_callbacks,
):
    root, rag, embedder, store = running_graph(owner, app)
    die_for_good(settings, engine, embedder)

    with django_capture_on_commit_callbacks(execute=True):
        report = deployments_reconcile()

    root, rag, embedder, store = fresh(root, rag, embedder, store)
    assert embedder.state == State.FAILED and "died again after 0 restarts with exit code 139" in embedder.reason
    assert rag.state == State.FAILED and rag.reason == failed_part("embeddings", embedder) + embedder.reason
    assert root.state == State.FAILED and root.reason == failed_part("rag", rag) + rag.reason
    assert "exit code 139" in root.reason  # the app's reason carries the part's own reason
    assert report.failed == [embedder.handle, rag.handle, root.handle]
    assert store.state == State.STOPPING and "the last that used it" in store.events.last().message
    # The failed ones stay failed: nothing is stopped twice, their reasons stay on their pages.
    assert not DeploymentEdge.objects.filter(released_at__isnull=True).exists()
    assert not any(d.events.filter(to_state=State.STOPPING).exists() for d in (root, rag, embedder))
    # rag's and the app's runs were stopped as they failed; store's stops with its flow.
    assert alive(engine) == {store.handle}
    drive_all(store)
    assert alive(engine) == set()
    # The next pass relaunches nothing.
    again = deployments_reconcile()
    assert (again.restarted, again.failed) == ([], [])
    assert [d.state for d in fresh(root, rag, embedder, store)] == [State.FAILED] * 3 + [State.STOPPED]


def test_a_part_shared_by_two_apps_fails_both(owner, app, engine, settings, django_capture_on_commit_callbacks):
    first, second = two_apps_sharing_their_parts(owner, app)
    rag, embedder = part(first, "rag"), part(first, "embedder")
    die_for_good(settings, engine, embedder)

    with django_capture_on_commit_callbacks(execute=True):
        deployments_reconcile()

    first, second, rag = fresh(first, second, rag)
    assert rag.state == State.FAILED
    for root in (first, second):
        assert root.state == State.FAILED and root.reason == failed_part("rag", rag) + rag.reason
    assert alive(engine) == {part(first, "store").handle}  # stopping with its flow


def test_a_deployment_its_owner_made_directly_fails_the_app_that_reused_it_and_is_left_as_it_failed(
    owner, app, engine, settings, django_capture_on_commit_callbacks,
):
    embedder_version, store_version = (TemplateVersion.objects.get(template__name=name) for name in ("embedder", "store"))
    my_embedder, my_store = drive_all(*(deployment_create(owner=owner, version=v, inputs={}).deployment
                                        for v in (embedder_version, store_version)))
    root, rag, embedder, store = running_graph(owner, app)
    assert (embedder.pk, store.pk) == (my_embedder.pk, my_store.pk)
    die_for_good(settings, engine, my_embedder)

    with django_capture_on_commit_callbacks(execute=True):
        deployments_reconcile()

    root, rag, my_embedder, my_store = fresh(root, rag, my_embedder, my_store)
    assert rag.state == State.FAILED and rag.reason.startswith(failed_part("embeddings", my_embedder))
    assert root.state == State.FAILED and root.reason.startswith(failed_part("rag", rag))
    # Theirs: the one that failed is failed as it was (not stopped, not deleted); the other runs on.
    assert my_embedder.state == State.FAILED and my_embedder.deleted_at is None
    assert list(my_embedder.events.values_list("to_state", flat=True))[-1] == State.FAILED
    assert my_store.state == State.RUNNING and alive(engine) == {my_store.handle}


def test_two_parts_failing_in_one_pass_fail_the_graph_once(owner, app, engine, settings, django_capture_on_commit_callbacks):
    root, rag, embedder, store = running_graph(owner, app)
    die_for_good(settings, engine, embedder, store)

    with django_capture_on_commit_callbacks(execute=True):
        report = deployments_reconcile()
    root, rag, embedder, store = drive_all(root, rag, embedder, store)

    # The first one seen fails the graph; the other was stopped with rag, before its turn came.
    first, other = (embedder, store) if embedder.state == State.FAILED else (store, embedder)
    assert (first.state, other.state) == (State.FAILED, State.STOPPED)
    alias = {embedder.pk: "embeddings", store.pk: "vector_store"}[first.pk]
    assert rag.state == State.FAILED and rag.reason == failed_part(alias, first) + first.reason
    assert root.state == State.FAILED and root.events.filter(to_state=State.FAILED).count() == 1
    assert report.failed == [first.handle, rag.handle, root.handle]
    assert alive(engine) == set()


def fail(deployment: Deployment):
    """deployment_fail as the reconciler calls it; 'refused' when it moved on meanwhile."""
    def call():
        try:
            return [d.handle for d in deployment_fail(deployment=deployment, reason="its run died", expect=(State.RUNNING,))]
        except TransitionRefused:
            return "refused"
    return call


def stop(deployment: Deployment):
    return lambda: deployment_stop(deployment=deployment).state


def lined_up_on(row: Deployment, *calls) -> list:
    """Run each call in a thread of its own while this test holds `row` locked, and let them
    go on only once every one waits on a lock: each has taken what it takes before `row`
    (without the owner's graph lock, a row the other will want), so opposite orders deadlock."""
    with transaction.atomic():
        Deployment.objects.select_for_update().get(pk=row.pk)
        futures = [in_thread(call) for call in calls]
        deadline = time.monotonic() + 10
        while waiting_on_a_lock() < len(calls) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting_on_a_lock() == len(calls)
    return [future.result(timeout=30) for future in futures]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite lets one writer in at a time, whoever it is")
@pytest.mark.django_db(transaction=True)
def test_two_parts_of_one_graph_failing_at_once_do_not_deadlock(owner, app, engine):
    root, rag, embedder, store = running_graph(owner, app)
    engine.kill(embedder.handle)
    engine.kill(store.handle)

    # Each failure climbs to rag, then rag's release locks both parts.
    results = lined_up_on(rag, fail(embedder), fail(store))

    # The first failure fails the graph, stopping the other part with rag; the other then finds it stopping.
    first = (embedder, store)[1 - results.index("refused")]
    assert [first.handle, rag.handle, root.handle] in results
    states = {d.handle: d.state for d in drive_all(root, rag, embedder, store)}
    assert states[root.handle] == states[rag.handle] == State.FAILED
    assert sorted((states[embedder.handle], states[store.handle])) == [State.FAILED, State.STOPPED]
    assert alive(engine) == set()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite lets one writer in at a time, whoever it is")
@pytest.mark.django_db(transaction=True)
def test_a_part_failing_while_its_app_is_stopped_does_not_deadlock(owner, app, engine):
    root, rag, embedder, store = running_graph(owner, app)
    engine.kill(embedder.handle)

    # The stop goes down through rag to embedder; the failure climbs from embedder to rag.
    stopped, failed = lined_up_on(rag, stop(root), fail(embedder))

    assert stopped == State.STOPPING and failed in ("refused", [embedder.handle, rag.handle, root.handle])
    settled = drive_all(root, rag, embedder, store)
    assert {d.state for d in settled} <= {State.FAILED, State.STOPPED}
    assert alive(engine) == set()


def test_the_page_of_an_app_whose_part_failed_says_which_and_why(
    signed_in, owner, app, engine, settings, django_capture_on_commit_callbacks,
):
    root, rag, embedder, store = running_graph(owner, app)
    die_for_good(settings, engine, embedder)
    with django_capture_on_commit_callbacks(execute=True):
        deployments_reconcile()

    page = signed_in.get(reverse("deployments:detail", args=[root.handle])).content.decode()

    assert re.search(r'class="state-line"><span [^>]*data-state="failed"', page)
    reason = html.unescape(re.search(r'<pre class="reason">(.*?)</pre>', page, re.DOTALL).group(1))
    assert reason.startswith(failed_part("rag", rag) + failed_part("embeddings", embedder) + "the run died again")
    # The graph it ran with, with the part that failed and the one stopped with it.
    assert re.search(r'data-template="rag">.*?data-state="failed"', page, re.DOTALL)
    assert re.search(r'data-template="embedder">.*?data-state="failed".*?class="reason">the run died again', page, re.DOTALL)
    assert re.search(r'data-template="store">.*?data-state="stopping"', page, re.DOTALL)
