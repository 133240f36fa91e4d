"""The OpenAPI schema is generated from the code, valid, served offline, and a
property-based run against it (schemathesis) finds no server error."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command

from templates_catalog.models import ApiToken
from templates_catalog.services import api_token_create


def test_the_schema_is_valid_and_documents_token_auth(client, db):
    response = client.get("/api/schema/")
    schema = yaml.safe_load(response.content)

    assert response.status_code == 200
    assert schema["components"]["securitySchemes"]["bearerToken"] == {
        "type": "http", "scheme": "bearer",
        "description": "An API token, `hub_…`: a publisher token to read and publish, a personal token with the deploy permission for deployments.",
    }
    upload = schema["paths"]["/api/v1/templates/{name}/versions/"]["post"]
    assert "application/gzip" in upload["requestBody"]["content"]
    assert {"201", "200", "400", "409", "413"} <= set(upload["responses"])
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=open(os.devnull, "w"))


def test_swagger_ui_is_served_by_the_hub_itself(client, db):
    page = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page
    assert "cdn" not in page.lower() and "unpkg" not in page.lower()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page


@pytest.fixture
def live_catalog(live_server, publish, publisher):
    publish(name="public-model", tags=["nlp"], readme="# Public")
    publish(name="secret-model", visibility="private")
    token = api_token_create(
        publisher=publisher, created_by=publisher.members.get(), name="fuzz", permission=ApiToken.Permission.PUBLISH
    )
    return live_server.url, token.secret


@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_no_server_error(live_catalog, tmp_path):
    url, secret = live_catalog
    cli = Path(sys.executable).with_name("schemathesis")
    assert cli.exists() or shutil.which("schemathesis"), "schemathesis is installed by requirements-dev.txt"
    result = subprocess.run(
        [
            str(cli), "run", f"{url}/api/schema/",
            "--checks", "not_a_server_error",
            "--max-examples", "25",
            "--seed", "20261128",
            "--header", f"Authorization: Bearer {secret}",
            "--request-timeout", "20",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
