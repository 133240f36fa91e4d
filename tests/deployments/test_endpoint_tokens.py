"""Endpoint tokens: the services, the API (/api/v1/deployments/<id>/tokens/) and the section
of the deployment's page, with its copy-paste examples."""

import hashlib
import re
import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deployments.endpoint_tokens import endpoint_token_create, endpoint_token_revoke, endpoint_token_rotate
from deployments.examples import endpoint_examples, first_route
from deployments.models import Deployment, EndpointToken
from deployments.services import DeploymentConflict, DeploymentRejected, deployment_create
from templates_catalog.services import api_token_create_personal
from templates_catalog.specs import manifest_of

State = Deployment.State


@pytest.fixture
def dana(user_factory):
    return user_factory("dana")


@pytest.fixture
def deployment(dana, version, node_factory) -> Deployment:
    node_factory()
    return deployment_create(owner=dana, version=version, inputs={}, idempotency_key=str(uuid.uuid4())).deployment


def api(handle: str, rest: str = "") -> str:
    return f"/api/v1/deployments/{handle}/tokens/{rest}"


def bearer(user) -> dict:
    return {"Authorization": f"Bearer {api_token_create_personal(user=user, name='script').secret}"}


# --- services -------------------------------------------------------------------------


def test_a_token_is_stored_as_its_hash_and_shown_once(deployment, dana):
    created = endpoint_token_create(deployment=deployment, created_by=dana, name="app")
    row = EndpointToken.objects.get(pk=created.token.pk)
    assert row.token_sha256 == hashlib.sha256(created.secret.encode()).hexdigest()
    assert created.secret not in str(EndpointToken.objects.filter(pk=row.pk).values().get())
    assert created.secret.startswith(row.prefix) and len(row.prefix) < 16


def test_only_the_owner_manages_a_deployments_tokens(deployment, dana, user_factory):
    mallory = user_factory("mallory")
    with pytest.raises(PermissionDenied):
        endpoint_token_create(deployment=deployment, created_by=mallory, name="mine now")
    token = endpoint_token_create(deployment=deployment, created_by=dana, name="app").token
    with pytest.raises(PermissionDenied):
        endpoint_token_revoke(token=token, revoked_by=mallory)
    with pytest.raises(PermissionDenied):
        endpoint_token_rotate(token=token, rotated_by=mallory)
    assert EndpointToken.objects.get(pk=token.pk).revoked_at is None


def test_an_expiry_in_the_past_is_refused(deployment, dana):
    with pytest.raises(DeploymentRejected, match="future"):
        endpoint_token_create(deployment=deployment, created_by=dana, name="x", expires_at=timezone.now() - timedelta(days=1))


def test_rotating_keeps_name_and_expiry_and_revokes_the_old_secret(deployment, dana):
    expires = timezone.now() + timedelta(days=3)
    old = endpoint_token_create(deployment=deployment, created_by=dana, name="app", expires_at=expires)
    new = endpoint_token_rotate(token=old.token, rotated_by=dana)
    assert (new.token.name, new.token.expires_at) == ("app", expires) and new.secret != old.secret
    assert EndpointToken.objects.get(pk=old.token.pk).revoked_at is not None
    with pytest.raises(DeploymentConflict, match="revoked"):
        endpoint_token_rotate(token=old.token, rotated_by=dana)


# --- API --------------------------------------------------------------------------------


def test_the_api_creates_lists_rotates_and_revokes(client, deployment, dana, django_assert_num_queries):
    auth = bearer(dana)
    created = client.post(api(deployment.handle), {"name": "ci"}, content_type="application/json", headers=auth)
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith(created.json()["prefix"]) and created.json()["active"] is True
    for index in range(3):
        endpoint_token_create(deployment=deployment, created_by=dana, name=f"client {index}")
    # Constant: the token with its user, its last use, the deployment, the count and the page.
    with django_assert_num_queries(5):
        listed = client.get(api(deployment.handle), headers=auth)
    assert listed.status_code == 200 and listed.json()["count"] == 4
    endpoint_token_create(deployment=deployment, created_by=dana, name="one more")
    with django_assert_num_queries(5):
        assert client.get(api(deployment.handle), headers=auth).json()["count"] == 5
    assert all("secret" not in item for item in listed.json()["results"])

    token_id = created.json()["id"]
    rotated = client.post(api(deployment.handle, f"{token_id}/rotate/"), headers=auth)
    assert rotated.status_code == 201 and rotated.json()["secret"] != secret and rotated.json()["name"] == "ci"
    revoked = client.post(api(deployment.handle, f"{rotated.json()['id']}/revoke/"), headers=auth)
    assert revoked.status_code == 200 and revoked.json()["active"] is False and revoked.json()["revoked_at"]
    again = client.post(api(deployment.handle, f"{token_id}/rotate/"), headers=auth)
    assert again.status_code == 409 and "revoked" in again.json()["detail"]


def test_the_api_answers_404_for_another_users_deployment_and_tokens(client, deployment, dana, user_factory):
    token = endpoint_token_create(deployment=deployment, created_by=dana, name="app").token
    mallory = bearer(user_factory("mallory"))
    assert client.get(api(deployment.handle), headers=mallory).status_code == 404
    assert client.post(api(deployment.handle), {"name": "x"}, content_type="application/json", headers=mallory).status_code == 404
    assert client.post(api(deployment.handle, f"{token.pk}/revoke/"), headers=mallory).status_code == 404
    assert EndpointToken.objects.get(pk=token.pk).revoked_at is None
    assert client.get(api(deployment.handle)).status_code == 401


def test_the_api_explains_bad_input(client, deployment, dana):
    auth = bearer(dana)
    answer = client.post(api(deployment.handle), {"name": ""}, content_type="application/json", headers=auth)
    assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "name"
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    answer = client.post(api(deployment.handle), {"name": "x", "expires_at": past}, content_type="application/json", headers=auth)
    assert answer.status_code == 400 and "future" in answer.json()["detail"]
    assert not EndpointToken.objects.exists()


def test_an_endpoint_token_is_no_key_to_the_api(client, deployment, dana):
    secret = endpoint_token_create(deployment=deployment, created_by=dana, name="app").secret
    assert client.get(api(deployment.handle), headers={"Authorization": f"Bearer {secret}"}).status_code == 401


# --- the page -------------------------------------------------------------------------


def page_url(deployment) -> str:
    return reverse("deployments:detail", args=[deployment.handle])


def test_the_page_creates_a_token_and_shows_its_secret_once_in_the_examples(client, deployment, dana):
    client.force_login(dana)
    posted = client.post(reverse("deployments:token_create", args=[deployment.handle]), {"name": "notebook"})
    assert posted.status_code == 303
    token = EndpointToken.objects.get(deployment=deployment)
    page = client.get(page_url(deployment))
    assert page["Cache-Control"] == "no-store"
    secret = re.search(r'id="new-token">(hubep_[^<]+)<', page.content.decode()).group(1)
    assert hashlib.sha256(secret.encode()).hexdigest() == token.token_sha256
    curl = re.search(r'id="example-curl">([^<]+)<', page.content.decode()).group(1)
    assert f"Bearer {secret}" in curl and f"http://testserver/d/{deployment.handle}/" in curl
    # Shown once: the next visit has the placeholder again.
    again = client.get(page_url(deployment)).content.decode()
    assert secret not in again and "$HUB_ENDPOINT_TOKEN" in again


def test_the_page_explains_a_bad_form_and_mints_nothing(client, deployment, dana):
    client.force_login(dana)
    posted = client.post(reverse("deployments:token_create", args=[deployment.handle]), {"name": "", "expires_in_days": "0"})
    assert posted.status_code == 400
    assert "This field is required" in posted.content.decode()
    assert not EndpointToken.objects.exists()


def test_revoking_and_rotating_ask_first_then_act(client, deployment, dana):
    client.force_login(dana)
    token = endpoint_token_create(deployment=deployment, created_by=dana, name="app").token
    rotate = reverse("deployments:token_rotate", args=[deployment.handle, token.pk])
    assert "Rotate it" in client.get(rotate).content.decode()
    assert EndpointToken.objects.get(pk=token.pk).revoked_at is None
    assert client.post(rotate).status_code == 303
    new = EndpointToken.objects.exclude(pk=token.pk).get()
    assert new.name == "app" and EndpointToken.objects.get(pk=token.pk).revoked_at is not None
    assert new.prefix in client.get(page_url(deployment)).content.decode()
    revoke = reverse("deployments:token_revoke", args=[deployment.handle, new.pk])
    assert "Revoke it" in client.get(revoke).content.decode()
    assert client.post(revoke).status_code == 303
    assert EndpointToken.objects.get(pk=new.pk).revoked_at is not None


def test_another_user_cannot_touch_the_tokens_from_the_page(client, deployment, dana, user_factory):
    token = endpoint_token_create(deployment=deployment, created_by=dana, name="app").token
    client.force_login(user_factory("mallory"))
    assert client.post(reverse("deployments:token_create", args=[deployment.handle]), {"name": "x"}).status_code == 404
    assert client.post(reverse("deployments:token_revoke", args=[deployment.handle, token.pk])).status_code == 404
    assert EndpointToken.objects.count() == 1 and EndpointToken.objects.get().revoked_at is None


def test_the_page_lists_tokens_in_constant_queries(client, deployment, dana, django_assert_num_queries):
    client.force_login(dana)
    endpoint_token_create(deployment=deployment, created_by=dana, name="first")
    with CaptureQueriesContext(connection) as one:
        client.get(page_url(deployment))
    for index in range(5):
        endpoint_token_create(deployment=deployment, created_by=dana, name=f"more {index}")
    with django_assert_num_queries(len(one.captured_queries)):
        page = client.get(page_url(deployment))
    assert page.content.decode().count("Rotate</a>") == 6


# --- the examples -----------------------------------------------------------------------


def test_openai_compatible_templates_get_the_openai_client(publish):
    embedder = manifest_of(publish(name="emb", tags=["openai-compatible", "embeddings"]))
    examples = endpoint_examples(gateway_url="http://hub.example/d/d-abc", manifest=embedder, readme="", secret=None)
    assert examples.openai and examples.url == "http://hub.example/d/d-abc/v1/embeddings"
    assert 'OpenAI(base_url="http://hub.example/d/d-abc/v1", api_key=os.environ["HUB_ENDPOINT_TOKEN"])' in examples.python
    assert "client.embeddings.create" in examples.python and '"$HUB_ENDPOINT_TOKEN"' not in examples.curl
    generator = manifest_of(publish(name="gen", tags=["openai-compatible"]))
    filled = endpoint_examples(gateway_url="http://hub.example/d/d-abc", manifest=generator, readme="", secret="hubep_s3cret")
    assert filled.url.endswith("/v1/completions") and "Bearer hubep_s3cret" in filled.curl
    assert 'api_key="hubep_s3cret"' in filled.python and "os.environ" not in filled.python
    compile(filled.python, "example", "exec")


def test_other_templates_get_the_first_route_their_readme_names_and_nothing_else_of_it():
    assert first_route("Call `GET /health`, then `POST /v1/report` with a ticker.") == ("POST", "/v1/report")
    assert first_route("nothing here") == ("POST", "/predict")
    # Publisher text never reaches the shell: anything but a plain path is ignored.
    assert first_route('`POST /x"; rm -rf ~; echo "` and `GET /$(id)`') == ("POST", "/predict")
