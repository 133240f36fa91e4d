"""deployment_create: who may deploy what, inputs checked by type, idempotency under a
real race, and a request no node could ever fit failing at once with the reason."""

import threading

import pytest
from django.db import connection

from deployments.models import Deployment, Node
from deployments.nodes import node_add
from deployments.services import DeploymentConflict, DeploymentNotFound, DeploymentRejected, deployment_create
from templates_catalog.services import template_version_yank

from . import fakes


@pytest.fixture
def owner(user_factory):
    return user_factory("dana")


def test_it_creates_a_pending_deployment_with_the_manifests_resources(owner, version, node_factory, sent):
    node_factory()
    result = deployment_create(owner=owner, version=version, inputs={})

    deployment = result.deployment
    assert result.created and deployment.state == "pending" and deployment.handle.startswith("d-")
    assert (deployment.cpu, deployment.memory_gb, deployment.gpus) == (2, 4, 0)
    assert deployment.inputs == {"normalize": True}  # the default, recorded
    assert list(deployment.events.values_list("to_state", flat=True)) == ["pending"]


def test_the_same_key_twice_makes_one_deployment(owner, version, node_factory):
    node_factory()
    first = deployment_create(owner=owner, version=version, inputs={}, idempotency_key="click-1")
    second = deployment_create(owner=owner, version=version, inputs={}, idempotency_key="click-1")

    assert first.created and not second.created
    assert first.deployment.pk == second.deployment.pk and Deployment.objects.count() == 1


def test_a_key_reused_for_another_request_is_a_conflict(owner, version, node_factory):
    node_factory()
    deployment_create(owner=owner, version=version, inputs={}, idempotency_key="k")

    with pytest.raises(DeploymentConflict, match="already used"):
        deployment_create(owner=owner, version=version, inputs={"normalize": False}, idempotency_key="k")


def test_keys_are_per_owner(owner, user_factory, version, node_factory):
    node_factory()
    mine = deployment_create(owner=owner, version=version, inputs={}, idempotency_key="k").deployment
    theirs = deployment_create(owner=user_factory("eve"), version=version, inputs={}, idempotency_key="k").deployment
    assert mine.pk != theirs.pk


@pytest.mark.django_db(transaction=True)
def test_a_concurrent_double_submit_with_one_key_makes_one_deployment(owner, version, node_factory):
    node_factory()
    barrier = threading.Barrier(2)
    results, errors = [], []

    def submit():
        try:
            barrier.wait(timeout=10)
            results.append(deployment_create(owner=owner, version=version, inputs={}, idempotency_key="double-click"))
        except Exception as exc:  # reported below: the test must see every failure
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert Deployment.objects.filter(idempotency_key="double-click").count() == 1
    assert len({result.deployment.pk for result in results}) == 1
    assert sorted(result.created for result in results) == [False, True]


def test_a_yanked_version_is_a_conflict_naming_the_version_to_use(owner, publish, node_factory):
    node_factory()
    old = publish(name="embedder", version="1.0.0")
    publish(name="embedder", version="1.1.0")
    old = template_version_yank(version=old, reason="wrong weights")
    old.refresh_from_db()

    with pytest.raises(DeploymentConflict, match=r"embedder 1.0.0 is yanked \(wrong weights\).*deploy 1.1.0 instead") as caught:
        deployment_create(owner=owner, version=old, inputs={})
    assert caught.value.status == 409 and Deployment.objects.count() == 0


def test_a_version_the_user_cannot_see_is_not_found(owner, publish, other_publisher, node_factory):
    node_factory()
    private = publish(name="secret", visibility="private", owner=other_publisher)

    with pytest.raises(DeploymentNotFound) as caught:
        deployment_create(owner=owner, version=private, inputs={})
    assert caught.value.status == 404 and Deployment.objects.count() == 0


def test_an_anonymous_user_cannot_deploy(version, node_factory):
    from django.contrib.auth.models import AnonymousUser

    with pytest.raises(DeploymentNotFound):
        deployment_create(owner=AnonymousUser(), version=version, inputs={})


@pytest.fixture
def typed(publish):
    return publish(name="typed", inputs=[
        {"name": "ticker", "label": "Ticker", "type": "string", "required": True},
        {"name": "notes", "label": "Notes", "type": "text"},
        {"name": "top_k", "label": "Top k", "type": "integer", "default": 5},
        {"name": "temperature", "label": "Temperature", "type": "number"},
        {"name": "stream", "label": "Stream", "type": "boolean"},
        {"name": "size", "label": "Size", "type": "choice", "choices": ["small", "large"]},
        {"name": "corpus", "label": "Corpus", "type": "file"},
    ])


@pytest.mark.parametrize(("inputs", "field", "message"), [
    ({}, "inputs.ticker", "is required"),
    ({"ticker": 7}, "inputs.ticker", "must be text"),
    ({"ticker": "A\nB"}, "inputs.ticker", "one line"),
    ({"ticker": "AAPL", "notes": "a\x00b"}, "inputs.notes", "NUL"),
    ({"ticker": "AAPL", "top_k": "5"}, "inputs.top_k", "must be a number"),
    ({"ticker": "AAPL", "top_k": 2.5}, "inputs.top_k", "whole number"),
    ({"ticker": "AAPL", "top_k": True}, "inputs.top_k", "must be a number"),
    ({"ticker": "AAPL", "temperature": float("nan")}, "inputs.temperature", "finite"),
    ({"ticker": "AAPL", "stream": "yes"}, "inputs.stream", "true or false"),
    ({"ticker": "AAPL", "size": "huge"}, "inputs.size", "one of small, large"),
    ({"ticker": "AAPL", "corpus": "x.csv"}, "inputs.corpus", "file inputs are not supported yet"),
    ({"ticker": "AAPL", "colour": "red"}, "inputs.colour", "has no input 'colour'"),
])
def test_bad_inputs_are_refused_naming_the_field(owner, typed, node_factory, inputs, field, message):
    node_factory()
    with pytest.raises(DeploymentRejected) as caught:
        deployment_create(owner=owner, version=typed, inputs=inputs)

    assert caught.value.status == 400
    assert any(name == field and message in text for name, text in caught.value.errors), caught.value.errors
    assert Deployment.objects.count() == 0


def test_inputs_must_be_an_object(owner, typed, node_factory):
    node_factory()
    with pytest.raises(DeploymentRejected, match="not valid"):
        deployment_create(owner=owner, version=typed, inputs=["AAPL"])


def test_good_typed_inputs_are_kept_with_their_types(owner, typed, node_factory):
    node_factory()
    inputs = {"ticker": "AAPL", "top_k": 3, "temperature": 0.5, "stream": False, "size": "large", "notes": "a\nb"}
    deployment = deployment_create(owner=owner, version=typed, inputs=inputs).deployment
    assert deployment.inputs == inputs


def test_asking_for_more_than_any_node_has_fails_at_once_with_the_reason(owner, publish, node_factory):
    node_factory("small", cpus=4, memory_gb=16)
    node_factory("gpu-box", cpus=16, memory_gb=64, gpus=fakes.gpus(1, 24))
    greedy = publish(name="llm", resources={"gpus": 2, "gpu_memory_gb": 40, "cpu": 8, "memory_gb": 32})

    result = deployment_create(owner=owner, version=greedy, inputs={})

    deployment = result.deployment
    assert result.created and deployment.state == "failed"
    assert "can never start" in deployment.reason and "needs 2 GPUs with 40 GB" in deployment.reason
    assert "gpu-box" in deployment.reason
    assert list(deployment.events.values_list("to_state", flat=True)) == ["pending", "failed"]


@pytest.mark.parametrize("share, cpus", [(4, 16), (1, 4)])
def test_a_fresh_hub_registers_this_machine_as_its_first_node(owner, version, monkeypatch, settings, share, cpus):
    # Its cores count LOCAL_NODE_CPU_SHARE times: the parts of a graph share one machine's cores.
    from deployments import nodes

    settings.LOCAL_NODE_CPU_SHARE = share
    fakes.engine("fake://local", inventory=fakes.Inventory(cpus=4, memory_gb=8))
    monkeypatch.setattr(nodes, "docker_engine_answers", lambda: False)
    monkeypatch.setattr(nodes, "runner_for", lambda node: fakes.FakeRunner("fake://local"))

    deployment = deployment_create(owner=owner, version=version, inputs={}).deployment

    local = Node.objects.get()
    assert (local.name, local.runner, local.cpus, local.memory_gb) == ("local", "process", cpus, 8)
    assert deployment.state == "pending"


def test_a_node_added_by_hand_counts_each_core_once(db):
    fakes.engine("fake://box", inventory=fakes.Inventory(cpus=4, memory_gb=8))
    assert node_add(name="box", runner="tests.deployments.fakes.FakeRunner", engine_url="fake://box").cpus == 4
