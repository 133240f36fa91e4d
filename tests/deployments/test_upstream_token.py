"""Each deployment's upstream token: made with it, one per deployment (existing rows too), handed
to its run as HUB_UPSTREAM_TOKEN, and never shown on a page, in the API or in the admin."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from deployments.models import Deployment
from deployments.services import deployment_create
from templates_catalog.services import api_token_create_personal

from . import fakes
from .conftest import drive
from .test_graph import drive_all, part

BEFORE, ADDED = ("deployments", "0007_job_resources"), ("deployments", "0008_deployment_upstream_token")


@pytest.fixture
def owner(user_factory):
    return user_factory("dana")


def test_each_deployment_gets_its_own_at_creation(owner, version, node_factory):
    node_factory()
    first, second = (deployment_create(owner=owner, version=version, inputs={}, idempotency_key=key).deployment
                     for key in ("one", "two"))
    assert first.upstream_token != second.upstream_token
    assert len(first.upstream_token) >= 43  # 32 random bytes, base64url


def test_its_run_gets_it_as_hub_upstream_token(owner, version, node_factory):
    node_factory()
    deployment = drive(deployment_create(owner=owner, version=version, inputs={}).deployment)
    spec = fakes.ENGINES["fake://node-a"].runs[deployment.handle].spec
    assert spec.environment["HUB_UPSTREAM_TOKEN"] == deployment.upstream_token


def test_a_requirement_aliased_hub_upstream_does_not_replace_it(owner, publish, node_factory):
    # `<ALIAS>_TOKEN` of an alias `hub_upstream` is HUB_UPSTREAM_TOKEN: the lock's token must win,
    # or the run would answer its requirement's token and refuse its own gateway.
    publish(name="embedder", version="1.0.0", tier="atomic")
    app = publish(name="shell", version="1.0.0", tier="app",
                  requires=[{"template": "embedder", "version": "*", "alias": "hub_upstream"}])
    node_factory()
    root = deployment_create(owner=owner, version=app, inputs={}).deployment
    root, _ = drive_all(root, part(root, "embedder"))
    environment = fakes.ENGINES["fake://node-a"].runs[root.handle].spec.environment
    assert environment["HUB_UPSTREAM_TOKEN"] == root.upstream_token
    assert environment["HUB_UPSTREAM_URL"].endswith(f"/d/{part(root, 'embedder').handle}")


def test_it_is_shown_nowhere(owner, version, node_factory, client, admin_client):
    node_factory()
    deployment = drive(deployment_create(owner=owner, version=version, inputs={}).deployment)
    secret = deployment.upstream_token
    client.force_login(owner)
    api = {"Authorization": f"Bearer {api_token_create_personal(user=owner, name='script').secret}"}
    pages = {
        "its page": client.get(reverse("deployments:detail", args=[deployment.handle])),
        "its state": client.get(reverse("deployments:state", args=[deployment.handle])),
        "my deployments": client.get(reverse("deployments:list")),
        "the API's list": client.get("/api/v1/deployments/", headers=api),
        "the API's detail": client.get(f"/api/v1/deployments/{deployment.handle}/", headers=api),
        "the admin's list": admin_client.get(reverse("admin:deployments_deployment_changelist")),
        "the admin's page": admin_client.get(reverse("admin:deployments_deployment_change", args=[deployment.pk])),
    }
    for where, response in pages.items():
        assert response.status_code == 200, where
        assert secret not in response.content.decode(), where
    assert deployment.handle in pages["the admin's page"].content.decode()  # the page did show the deployment


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_each_existing_deployment_a_token_of_its_own(owner, version, node_factory):
    node_factory()
    handles = [deployment_create(owner=owner, version=version, inputs={}, idempotency_key=str(n)).deployment.handle
               for n in range(3)]
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    try:
        executor.migrate([BEFORE])
        executor.loader.build_graph()
        executor.migrate([ADDED])

        tokens = dict(Deployment.objects.filter(handle__in=handles).values_list("handle", "upstream_token"))
        assert len(set(tokens.values())) == 3 and all(len(token) >= 43 for token in tokens.values())
    finally:
        # Back to every app's latest migration: the tests after this one run on the whole schema
        # (left at 0008, the gateway's change triggers of 0009 were gone for the rest of the run).
        executor.loader.build_graph()
        executor.migrate(latest)
