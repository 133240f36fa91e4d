"""POST/GET /api/v1/deployments/…: personal deploy tokens, 404 for others', errors list."""

import pytest
from django.urls import reverse

from deployments.models import Deployment
from templates_catalog.models import ApiToken
from templates_catalog.services import api_token_create, api_token_create_personal, template_version_yank

from . import fakes
from .conftest import drive

URL = "/api/v1/deployments/"


@pytest.fixture
def dana(user_factory):
    return user_factory("dana")


@pytest.fixture
def token(dana) -> str:
    return api_token_create_personal(user=dana, name="deploy script").secret


def _auth(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def deploy(client, token, version, node_factory):
    node_factory()

    def post(body=None, secret=None, **headers):
        body = {"template": "embedder"} if body is None else body
        return client.post(URL, data=body, content_type="application/json", headers={**_auth(secret or token), **headers})

    return post


def test_it_deploys_with_a_personal_token(deploy, dana):
    response = deploy({"template": "embedder", "inputs": {"normalize": False}})

    body = response.json()
    assert response.status_code == 201, body
    assert body["state"] == "pending" and body["template"] == "embedder" and body["version"] == "1.0.0"
    assert body["inputs"] == {"normalize": False} and body["resources"]["cpu"] == "2.00"
    assert Deployment.objects.get(handle=body["id"]).owner == dana
    # Clients call the hub's gateway with an endpoint token, never the container's own port.
    assert body["url"] == f"http://testserver/d/{body['id']}"


def test_the_same_key_twice_answers_200_with_the_same_deployment(deploy):
    first = deploy({"template": "embedder", "idempotency_key": "click-1"})
    second = deploy({"template": "embedder"}, **{"Idempotency-Key": "click-1"})

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"] and Deployment.objects.count() == 1


def test_asking_for_more_than_any_node_has_answers_failed_at_once_with_the_reason(deploy, publish, node_factory):
    node_factory("gpu-box", cpus=16, memory_gb=64, gpus=fakes.gpus(1, 24))
    publish(name="llm", resources={"gpus": 2, "gpu_memory_gb": 40, "cpu": 8, "memory_gb": 32})

    response = deploy({"template": "llm"})

    body = response.json()
    # Created (it is on record, with its event log), but failed before any build or placement.
    assert response.status_code == 201 and body["state"] == "failed", body
    assert "can never start" in body["reason"] and "needs 2 GPUs with 40 GB" in body["reason"]
    assert "gpu-box" in body["reason"]
    assert body["node"] is None and Deployment.objects.get(handle=body["id"]).build_id is None


def test_without_a_token_it_answers_401(client, version):
    assert client.post(URL, data={"template": "embedder"}, content_type="application/json").status_code == 401
    assert client.get(URL).status_code == 401


def test_a_publisher_token_cannot_deploy(deploy, publisher):
    secret = api_token_create(publisher=publisher, created_by=publisher.members.get(), name="ci",
                              permission=ApiToken.Permission.PUBLISH).secret
    response = deploy(secret=secret)
    assert response.status_code == 403
    assert response.json()["detail"] == "this token cannot deploy: create a personal token with the deploy permission"


def test_a_deploy_token_cannot_publish(client, token, tmp_path):
    from tests.factories import bundle_bytes

    response = client.post(reverse("api:version_list", args=["demo-embedder"]), data=bundle_bytes(tmp_path),
                           content_type="application/gzip", headers=_auth(token))
    assert response.status_code == 403 and "personal deploy token" in response.json()["detail"]


def test_a_signed_in_session_may_deploy(client, dana, version, node_factory):
    node_factory()
    client.force_login(dana)
    assert client.post(URL, data={"template": "embedder"}, content_type="application/json").status_code == 201


def test_other_users_deployments_are_404(deploy, client, user_factory):
    handle = deploy().json()["id"]
    eve = api_token_create_personal(user=user_factory("eve"), name="eve").secret

    for path in ("", "events/", "logs/"):
        assert client.get(f"{URL}{handle}/{path}", headers=_auth(eve)).status_code == 404
    assert client.post(f"{URL}{handle}/stop/", headers=_auth(eve)).status_code == 404
    assert client.delete(f"{URL}{handle}/", headers=_auth(eve)).status_code == 404
    assert client.get(URL, headers=_auth(eve)).json()["results"] == []
    assert Deployment.objects.get(handle=handle).state == "pending"


def test_bad_input_is_400_with_an_errors_list_naming_the_field(deploy):
    response = deploy({"template": "embedder", "inputs": {"normalize": "yes"}})
    assert response.status_code == 400
    assert {"field": "inputs.normalize", "message": "must be true or false, not text"} in response.json()["errors"]

    response = deploy({"template": "embedder", "idempotency_key": "has space"})
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "idempotency_key"


def test_unknown_templates_and_versions_are_404(deploy):
    assert deploy({"template": "nope"}).status_code == 404
    assert deploy({"template": "embedder", "version": "9.9.9"}).status_code == 404


def test_a_yanked_version_is_409(deploy, version, publish):
    publish(name="embedder", version="1.1.0", resources={"cpu": 2, "memory_gb": 4})
    template_version_yank(version=version, reason="broken")

    response = deploy({"template": "embedder", "version": "1.0.0"})
    assert response.status_code == 409 and "deploy 1.1.0 instead" in response.json()["detail"]


def test_events_logs_stop_restart_and_delete(deploy, client, token):
    handle = deploy().json()["id"]
    drive(Deployment.objects.get(handle=handle))

    events = client.get(f"{URL}{handle}/events/", headers=_auth(token)).json()["results"]
    assert [event["to_state"] for event in events] == ["pending", "building", "scheduling", "starting", "running"]
    logs = client.get(f"{URL}{handle}/logs/", headers=_auth(token)).json()
    assert "listening for " + handle in logs["logs"]
    assert client.post(f"{URL}{handle}/restart/", headers=_auth(token)).status_code == 409

    stopped = client.post(f"{URL}{handle}/stop/", headers=_auth(token))
    assert stopped.status_code == 202 and stopped.json()["state"] == "stopping"

    deleted = client.delete(f"{URL}{handle}/", headers=_auth(token))
    assert deleted.status_code == 202
    assert client.get(f"{URL}{handle}/", headers=_auth(token)).status_code == 404
    assert Deployment.objects.get(handle=handle).deleted_at is not None


def test_the_list_takes_a_fixed_number_of_queries(deploy, client, token, django_assert_num_queries):
    for _ in range(5):
        deploy()
    # token lookup, last_used_at, count, page.
    with django_assert_num_queries(4):
        response = client.get(URL, headers=_auth(token))
    assert len(response.json()["results"]) == 5
    assert {item["url"] for item in response.json()["results"]} == {
        f"http://testserver/d/{item['id']}" for item in response.json()["results"]}


def test_the_schema_documents_the_deployments_api(client, db):
    import yaml

    schema = yaml.safe_load(client.get("/api/schema/").content)
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/deployments/"])
    assert {"201", "200", "400", "404", "409"} <= set(paths["/api/v1/deployments/"]["post"]["responses"])
    for tail in ("{handle}/", "{handle}/events/", "{handle}/logs/", "{handle}/stop/", "{handle}/restart/"):
        assert f"/api/v1/deployments/{tail}" in paths
    assert "delete" in paths["/api/v1/deployments/{handle}/"]


def test_the_tokens_page_creates_a_personal_deploy_token(client, dana):
    client.force_login(dana)
    response = client.post("/account/tokens/", data={"kind": "personal", "personal-name": "my script"}, follow=True)

    assert response.status_code == 200 and response.redirect_chain == [("/account/tokens/", 303)]
    token = ApiToken.objects.get(created_by=dana)
    assert token.permission == "deploy" and token.publisher is None
    assert response.context["created"]["secret"].startswith("hub_")
    assert "manage.py publish" not in response.content.decode()  # a deploy token cannot publish
