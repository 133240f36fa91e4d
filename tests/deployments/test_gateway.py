"""The gateway's hub side through the real ASGI hub (uvicorn in a thread): which token opens
which deployment, what everyone else gets, and what the upstream sees."""

import asyncio
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import timezone

from deployments import gateway as hub_gateway
from deployments.endpoint_tokens import endpoint_token_create, endpoint_token_revoke, endpoint_token_rotate, token_digest
from deployments.gateway import DeploymentGateway, target_of
from deployments.models import Deployment
from deployments.services import deployment_create, deployment_delete, deployment_stop
from deployments.sleeping import deployments_sleep_idle
from runners.gateway import Gateway
from tests.gateway.conftest import served

from . import fakes
from .conftest import WakeWorker, drive

State = Deployment.State
# The gateway reads in threads of its own: they see only committed rows.
pytestmark = pytest.mark.django_db(transaction=True)


def running(owner, version, endpoint: str) -> Deployment:
    deployment = deployment_create(owner=owner, version=version, inputs={}, idempotency_key=str(uuid.uuid4())).deployment
    deployment = drive(deployment)
    assert deployment.state == State.RUNNING
    # The fake runner's endpoint stands in; calls go to the recording upstream instead.
    Deployment.objects.filter(pk=deployment.pk).update(endpoint=endpoint)
    return Deployment.objects.get(pk=deployment.pk)


class Finished:
    """A real collector of what the gateway reports after each forwarded request."""

    def __init__(self):
        self.calls = []

    def __call__(self, deployment_id, result):
        self.calls.append((deployment_id, result))

    def settled(self, count: int = 1, timeout: float = 5) -> list:
        """The calls, once `count` came: each is reported just after its answer's last byte."""
        deadline = time.monotonic() + timeout
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.calls


@pytest.fixture
def hub(upstream):
    finished = Finished()
    app = DeploymentGateway(core=Gateway(connect_timeout=2, read_timeout=10), on_finish=finished)
    with served(app) as url:
        yield type("Hub", (), {"url": url, "finished": finished, "upstream": upstream})


@pytest.fixture
def owned(user_factory, version, node_factory, upstream):
    node_factory()
    owner = user_factory("owner")
    deployment = running(owner, version, upstream.url)
    created = endpoint_token_create(deployment=deployment, created_by=owner, name="app")
    return type("Owned", (), {"owner": owner, "deployment": deployment, "secret": created.secret, "token": created.token})


def call(hub, deployment, path="/v1/embeddings", secret=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    return httpx.post(f"{hub.url}/d/{deployment.handle}{path}", headers=headers, json={"input": ["hi"]}, **kwargs)


def test_it_forwards_a_request_with_the_deployments_token(hub, owned):
    answer = call(hub, owned.deployment, path="/v1/embeddings?dimensions=384", secret=owned.secret,
                  headers={"Cookie": "sessionid=abc"})
    assert answer.status_code == 200
    seen = hub.upstream.seen[-1]
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/v1/embeddings", "dimensions=384")
    names = {name for name, _ in seen["headers"]}
    assert "authorization" not in names and "cookie" not in names
    assert [deployment_id for deployment_id, _ in hub.finished.settled()] == [owned.deployment.pk]
    assert hub.finished.calls[0][1].status == 200


def test_the_upstream_gets_the_deployments_own_upstream_token_and_no_clients(hub, owned, user_factory, version):
    stranger = user_factory("stranger")
    theirs = running(stranger, version, hub.upstream.url)
    their_secret = endpoint_token_create(deployment=theirs, created_by=stranger, name="theirs").secret
    # A client that knows (or guesses) a deployment's upstream token cannot send it on.
    injected = {"X-Hub-Upstream-Token": theirs.upstream_token}
    answer = call(hub, owned.deployment, secret=owned.secret, headers=injected)
    assert answer.status_code == 200
    tokens = [value for name, value in hub.upstream.seen[-1]["headers"] if name == "x-hub-upstream-token"]
    assert tokens == [owned.deployment.upstream_token]
    # The recording upstream hands it back as a header: the gateway does not pass that on.
    assert "x-hub-upstream-token" not in answer.headers
    assert call(hub, theirs, secret=their_secret).status_code == 200
    tokens = [value for name, value in hub.upstream.seen[-1]["headers"] if name == "x-hub-upstream-token"]
    assert tokens == [theirs.upstream_token] != [owned.deployment.upstream_token]


def test_refusals_carry_no_upstream_token(hub, owned):
    answers = [
        call(hub, owned.deployment),
        call(hub, owned.deployment, secret="hubep_" + "x" * 43),
    ]
    deployment_stop(deployment=owned.deployment)
    answers.append(call(hub, owned.deployment, secret=owned.secret))
    assert [answer.status_code for answer in answers] == [401, 404, 503]
    for answer in answers:
        assert owned.deployment.upstream_token not in answer.text + str(answer.headers)


def test_without_a_bearer_token_it_answers_401_with_a_challenge(hub, owned):
    answer = call(hub, owned.deployment)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="hub"'
    assert "Authorization: Bearer" in answer.json()["error"]["message"]
    basic = call(hub, owned.deployment, headers={"Authorization": "Basic b3duZXI6cHc="})
    assert basic.status_code == 401
    assert hub.upstream.seen == [] and hub.finished.calls == []


def test_the_hubs_session_cookie_alone_does_not_open_an_endpoint(hub, owned, client):
    client.force_login(owned.owner)
    session = client.cookies["sessionid"].value
    answer = call(hub, owned.deployment, headers={"Cookie": f"sessionid={session}"})
    assert answer.status_code == 401
    assert hub.upstream.seen == []


def test_tokens_that_do_not_open_this_deployment_all_get_the_same_404(hub, owned, user_factory, version):
    stranger = user_factory("stranger")
    theirs = running(stranger, version, hub.upstream.url)
    their_secret = endpoint_token_create(deployment=theirs, created_by=stranger, name="theirs").secret
    sibling = running(owned.owner, version, hub.upstream.url)
    sibling_secret = endpoint_token_create(deployment=sibling, created_by=owned.owner, name="sibling").secret
    revoked = endpoint_token_create(deployment=owned.deployment, created_by=owned.owner, name="old")
    endpoint_token_revoke(token=revoked.token, revoked_by=owned.owner)
    expired = endpoint_token_create(deployment=owned.deployment, created_by=owned.owner, name="short",
                                    expires_at=timezone.now() + timedelta(seconds=60))
    type(expired.token).objects.filter(pk=expired.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    answers = {
        "wrong": call(hub, owned.deployment, secret="hubep_" + "x" * 43),
        "another user's deployment's": call(hub, owned.deployment, secret=their_secret),
        "another deployment's": call(hub, owned.deployment, secret=sibling_secret),
        "revoked": call(hub, owned.deployment, secret=revoked.secret),
        "expired": call(hub, owned.deployment, secret=expired.secret),
        "unknown handle": call(hub, type("D", (), {"handle": "d-nosuchthing"}), secret=owned.secret),
        "bad handle": httpx.get(f"{hub.url}/d/..%2Fadmin/x", headers={"Authorization": f"Bearer {owned.secret}"}),
    }
    for why, answer in answers.items():
        assert answer.status_code == 404, why
        # No hint: the same body whatever the reason.
        assert answer.json() == answers["wrong"].json(), why
    assert hub.upstream.seen == []
    # The right token still works.
    assert call(hub, owned.deployment, secret=owned.secret).status_code == 200


def test_a_deleted_deployments_tokens_open_nothing(hub, owned):
    deployment_delete(deployment=owned.deployment)
    assert call(hub, owned.deployment, secret=owned.secret).status_code == 404


def test_a_rotated_token_stops_working_and_its_successor_works(hub, owned):
    successor = endpoint_token_rotate(token=owned.token, rotated_by=owned.owner)
    assert call(hub, owned.deployment, secret=owned.secret).status_code == 404
    assert call(hub, owned.deployment, secret=successor.secret).status_code == 200


def test_a_deployment_that_is_not_running_answers_503_with_its_state_and_when_to_retry(hub, owned):
    deployment_stop(deployment=owned.deployment)
    answer = call(hub, owned.deployment, secret=owned.secret)
    assert answer.status_code == 503
    assert "stopped" in answer.json()["error"]["message"]
    assert int(answer.headers["retry-after"]) > 0
    assert hub.upstream.seen == []


def test_the_limit_is_the_templates_max_body_bytes(hub, user_factory, publish, node_factory):
    node_factory()
    owner = user_factory("big")
    small = publish(name="small-bodies", serve={"handler": "handler:Model", "max_body_bytes": 2048})
    deployment = running(owner, small, hub.upstream.url)
    secret = endpoint_token_create(deployment=deployment, created_by=owner, name="app").secret
    answer = httpx.post(f"{hub.url}/d/{deployment.handle}/predict", content=b"x" * 2049,
                        headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 413
    assert "at most 2048" in answer.json()["error"]["message"]
    assert hub.upstream.seen == []


def test_a_gateway_request_costs_one_query(owned, django_assert_num_queries, monkeypatch):
    # The lookup itself, run here in the test's thread, so its queries are counted.
    with django_assert_num_queries(1):
        target = target_of.func(token_digest(owned.secret), owned.deployment.handle)
    assert target.deployment_id == owned.deployment.pk and target.endpoint == owned.deployment.endpoint
    assert target.upstream_token == owned.deployment.upstream_token
    assert owned.deployment.upstream_token not in repr(target)  # logs and tracebacks show targets
    with django_assert_num_queries(1):
        assert target_of.func(token_digest("hubep_wrong"), owned.deployment.handle) is None
    # And each request does exactly one lookup, whatever its outcome.
    lookups = []
    original = hub_gateway.target_of

    async def counted(*args):
        lookups.append(args)
        return await original(*args)

    monkeypatch.setattr(hub_gateway, "target_of", counted)
    app = DeploymentGateway(core=Gateway())
    with served(app) as url:
        for _ in range(3):
            httpx.get(f"{url}/d/{owned.deployment.handle}/v1/models", headers={"Authorization": f"Bearer {owned.secret}"})
    assert len(lookups) == 3


@pytest.fixture
def close_the_pollers_connection():
    yield
    # The wake's poller reads in asgiref's one sync thread: its connection must not outlive the test.
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture
def asleep(close_the_pollers_connection, user_factory, version, node_factory):
    """A deployment of the fake runner gone to sleep, its token, and its engine."""
    node = node_factory()
    owner = user_factory("sleeper")
    deployment = drive(deployment_create(owner=owner, version=version, inputs={}, idempotency_key="sleepy").deployment)
    secret = endpoint_token_create(deployment=deployment, created_by=owner, name="app").secret
    later = deployment.running_since + timedelta(seconds=deployment.idle_timeout_seconds + 1)
    assert deployments_sleep_idle(now=later) == [deployment.handle]
    asleep = Deployment.objects.get(pk=deployment.pk)
    assert asleep.state == State.SLEEPING
    return type("Asleep", (), {"deployment": asleep, "secret": secret, "engine": fakes.ENGINES[node.engine_url]})


def _held_requests(hub, asleep, count: int) -> list[httpx.Response]:
    async def main():
        async with httpx.AsyncClient(timeout=60) as client:
            url = f"{hub.url}/d/{asleep.deployment.handle}/ready"
            headers = {"Authorization": f"Bearer {asleep.secret}"}
            return await asyncio.gather(*(client.get(url, headers=headers) for _ in range(count)))

    return asyncio.run(main())


def test_requests_to_a_sleeping_deployment_are_held_until_one_wake_answers_them_all(hub, asleep):
    worker = WakeWorker(asleep.deployment)
    answers = _held_requests(hub, asleep, 10)
    worker.join()

    assert [answer.status_code for answer in answers] == [200] * 10
    assert all(answer.json() == {"ready": True} for answer in answers)
    awake = Deployment.objects.get(pk=asleep.deployment.pk)
    assert awake.state == State.RUNNING
    assert awake.events.filter(message="woken by a request").count() == 1
    assert asleep.engine.launches.count(awake.handle) == 2  # the first start, and the one wake


def test_a_held_request_whose_wake_fails_answers_503_with_the_reason(hub, asleep):
    asleep.engine.exits_on_launch = 1
    worker = WakeWorker(asleep.deployment)
    (answer,) = _held_requests(hub, asleep, 1)
    worker.join()

    assert answer.status_code == 503
    assert "exited while starting with exit code 1" in answer.json()["error"]["message"]
    assert int(answer.headers["retry-after"]) > 0
    assert hub.finished.settled()[-1][1].status == 503
