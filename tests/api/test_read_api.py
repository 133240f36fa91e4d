import base64
import hashlib

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from templates_catalog.models import TemplateVersion


@pytest.fixture
def catalog(publish):
    publish(name="minilm", title="MiniLM embeddings", summary="Sentence vectors for search.", tags=["embeddings", "nlp"])
    publish(name="big-llm", title="Large model", summary="Generates text on a GPU.", tags=["llm"], resources={"gpus": 1})
    publish(name="trainer", tier="workflow", kind="job", serve=None, job={"command": ["train"]}, summary="Trains a classifier for you.")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["big-llm", "minilm", "trainer"]),
        ("?q=sentence", ["minilm"]),
        ("?tier=workflow", ["trainer"]),
        ("?kind=job", ["trainer"]),
        ("?tag=nlp", ["minilm"]),
        ("?gpu=yes", ["big-llm"]),
        ("?gpu=no&tier=atomic", ["minilm"]),
    ],
)
def test_it_lists_with_the_catalog_filters(client, catalog, query, expected):
    response = client.get(f"/api/v1/templates/{query}")
    assert response.status_code == 200
    assert [t["name"] for t in response.json()["results"]] == expected


def test_an_invalid_filter_is_a_400_that_names_it(client, catalog):
    response = client.get("/api/v1/templates/?tier=gold")
    assert response.status_code == 400
    assert response.json()["errors"] == [{"field": "tier", "message": "No tier called 'gold': choose atomic, workflow or app."}]


def test_the_detail_carries_the_latest_manifest_and_digest(client, catalog):
    body = client.get("/api/v1/templates/minilm/").json()
    version = TemplateVersion.objects.get(template__name="minilm")
    assert body["latest_version"] == "1.0.0"
    assert body["latest_sha256"] == version.bundle_sha256
    assert body["manifest"]["name"] == "minilm"
    assert body["tags"] == ["embeddings", "nlp"]


def test_versions_are_listed_newest_first(client, publish):
    for version in ["1.0.0", "1.10.0", "1.2.0"]:
        publish(name="minilm", version=version)
    body = client.get("/api/v1/templates/minilm/versions/").json()
    assert [v["version"] for v in body["results"]] == ["1.10.0", "1.2.0", "1.0.0"]


def test_the_bundle_download_carries_its_digest(client, catalog, artifact_root):
    version = TemplateVersion.objects.get(template__name="minilm")

    response = client.get("/api/v1/templates/minilm/versions/1.0.0/bundle/")
    content = b"".join(response.streaming_content)

    assert response.status_code == 200
    assert hashlib.sha256(content).hexdigest() == version.bundle_sha256 == response["X-Bundle-SHA256"]
    assert response["Digest"] == "sha-256=" + base64.b64encode(hashlib.sha256(content).digest()).decode()
    assert response["Content-Disposition"] == 'attachment; filename="minilm-1.0.0.tar.gz"'


def test_unknown_things_are_404(client, catalog):
    assert client.get("/api/v1/templates/nope/").status_code == 404
    assert client.get("/api/v1/templates/minilm/versions/9.9.9/").status_code == 404
    assert client.get("/api/v1/templates/minilm/versions/9.9.9/bundle/").status_code == 404


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


@pytest.mark.parametrize("url", ["/api/v1/templates/", "/api/v1/templates/?q=model", "/api/v1/templates/m-0/versions/"])
def test_list_queries_do_not_grow_with_the_data(client, publish, url):
    for index in range(2):
        publish(name=f"m-{index}", version=f"1.{index}.0", title=f"model {index}", tags=["a", "b"])
    few = _queries(client, url)
    for index in range(2, 12):
        publish(name=f"m-{index}", title=f"model {index}", tags=["a", "b", f"t{index}"])
        publish(name="m-0", version=f"1.{index}.0", title="model 0")
    assert _queries(client, url) == few
