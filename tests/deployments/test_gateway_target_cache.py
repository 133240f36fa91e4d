"""The gateway's lookup cache against the real database: on PostgreSQL a running deployment's
lookup is kept, and every change the gateway reads (a revoked token, a stop written as a
plain UPDATE) reaches it through the triggers' notices before the next request uses it;
the activity counters' writes do not; a lost listener connection turns the cache off until
it listens again. On SQLite there is no cache."""

import time

import httpx
import pytest
from django.db import connection

from deployments import activity
from deployments import gateway as gateway_module
from deployments.endpoint_tokens import endpoint_token_create, endpoint_token_revoke
from deployments.gateway import DeploymentGateway
from deployments.models import Deployment
from deployments.target_cache import LISTENER_NAME
from tests.gateway.conftest import served

from .test_gateway import running

State = Deployment.State
pytestmark = pytest.mark.django_db(transaction=True)
on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="notices are PostgreSQL's")


def test_the_cache_is_made_only_where_the_database_announces_changes(settings):
    assert (DeploymentGateway.from_settings().targets is not None) == (connection.vendor == "postgresql")
    settings.GATEWAY_TARGET_CACHE = False
    assert DeploymentGateway.from_settings().targets is None


@pytest.fixture
def lookups(monkeypatch):
    """How many times the gateway asked the database for a target."""
    asked = []
    looked_up = gateway_module.target_of

    async def counted(digest, handle):
        asked.append(handle)
        return await looked_up(digest, handle)

    monkeypatch.setattr(gateway_module, "target_of", counted)
    return asked


def until(condition, timeout: float = 5.0, explain=lambda: "") -> float:
    """Seconds it took `condition` to hold."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"not within the time limit {explain()}"
        time.sleep(0.005)
    return time.monotonic() - started


def _listener_state(gateway) -> str:
    """What the database and the cache say, when a notice did not arrive."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid, datname, state, query FROM pg_stat_activity WHERE application_name = %s",
                       [LISTENER_NAME])
        listeners = cursor.fetchall()
        cursor.execute("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'hub_gateway%%'")
        triggers = cursor.fetchall()
        cursor.execute("SELECT current_database(), pg_notification_queue_usage()")
        database = cursor.fetchone()
    task = gateway.targets._task
    return (f"listeners {listeners}; triggers {triggers}; database {database}; cache listening "
            f"{gateway.targets.listening}, {len(gateway.targets)} kept, generation {gateway.targets.generation}, "
            f"task {task!r}")


@on_postgresql
def test_a_kept_lookup_serves_until_the_database_announces_a_change(user_factory, version, node_factory, upstream, lookups):
    node_factory()
    owner = user_factory("owner")
    deployment = running(owner, version, upstream.url)
    token = endpoint_token_create(deployment=deployment, created_by=owner, name="app")
    gateway = DeploymentGateway.from_settings()
    with served(gateway) as url:
        def call():
            return httpx.get(f"{url}/d/{deployment.handle}/v1/models", headers={"Authorization": f"Bearer {token.secret}"})

        assert call().status_code == 200  # starts the listener
        until(lambda: gateway.targets.listening)
        assert call().status_code == 200 and len(gateway.targets) == 1
        asked = len(lookups)
        assert [call().status_code for _ in range(5)] == [200] * 5
        assert len(lookups) == asked, "a kept lookup asked the database again"

        # The gateway's own counters (the flusher's very UPDATE, every second) drop nothing.
        activity._write(deployment.pk, activity.Tally(requests=3, bytes_in=9, last_at=time.time()))
        assert Deployment.objects.get(pk=deployment.pk).requests >= 3
        time.sleep(0.2)
        assert len(gateway.targets) == 1

        endpoint_token_revoke(token=token.token, revoked_by=owner)
        assert until(lambda: len(gateway.targets) == 0, explain=lambda: _listener_state(gateway)) < 3.0
        assert call().status_code == 404

        token = endpoint_token_create(deployment=deployment, created_by=owner, name="again")
        assert call().status_code == 200 and len(gateway.targets) == 1
        # A write that goes around every service still reaches the gateway.
        Deployment.objects.filter(pk=deployment.pk).update(state=State.STOPPED, endpoint="")
        until(lambda: len(gateway.targets) == 0)
        stopped = call()
        assert stopped.status_code == 503 and "stopped" in stopped.json()["error"]["message"]
    assert len(upstream.seen) == 8  # neither the 404 nor the 503 reached it


@on_postgresql
def test_a_lost_listener_turns_the_cache_off_until_it_listens_again(user_factory, version, node_factory, upstream, lookups):
    node_factory()
    owner = user_factory("owner")
    deployment = running(owner, version, upstream.url)
    secret = endpoint_token_create(deployment=deployment, created_by=owner, name="app").secret
    gateway = DeploymentGateway.from_settings()
    gateway.targets.retry_seconds = 0.2
    with served(gateway) as url:
        def call():
            return httpx.get(f"{url}/d/{deployment.handle}/v1/models", headers={"Authorization": f"Bearer {secret}"})

        call()
        until(lambda: gateway.targets.listening)
        assert call().status_code == 200 and len(gateway.targets) == 1
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND application_name = %s", [LISTENER_NAME])
            assert cursor.fetchone()[0] is True
        until(lambda: not gateway.targets.listening or len(gateway.targets) == 0)
        asked = len(lookups)
        assert call().status_code == 200
        assert len(lookups) == asked + 1  # asked the database, as without a cache
        until(lambda: gateway.targets.listening)
        assert call().status_code == 200 and len(gateway.targets) == 1
