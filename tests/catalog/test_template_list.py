import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

LIST = reverse("catalog:template_list")


@pytest.fixture
def catalog(publish):
    publish(name="minilm", title="MiniLM embeddings", summary="Sentence vectors for search.", tags=["embeddings", "nlp"])
    publish(name="faiss-store", title="Vector database", summary="Nearest neighbours with filters.", tags=["vectors"])
    publish(
        name="big-llm",
        title="Large language model",
        summary="Generates text on a GPU node.",
        tags=["llm", "nlp"],
        resources={"gpus": 1, "gpu_memory_gb": 40},
    )
    publish(
        name="trainer",
        tier="workflow",
        kind="job",
        serve=None,
        job={"command": ["python", "-m", "train"]},
        title="Fine-tune trainer",
        summary="Trains a classifier on your CSV.",
        tags=["training"],
    )
    publish(name="stock-agent", tier="app", title="Stock research", summary="Ticker in, report out.", tags=["finance"])


def _names(response) -> list[str]:
    return [t.name for t in response.context["templates"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["big-llm", "faiss-store", "minilm", "stock-agent", "trainer"]),
        ("q=minilm", ["minilm"]),  # name
        ("q=DATABASE", ["faiss-store"]),  # title, case-insensitive
        ("q=neighbours", ["faiss-store"]),  # summary
        ("q=nlp", ["big-llm", "minilm"]),  # tag
        ("q=sentence+search", ["minilm"]),  # every word must match
        ("q=sentence+gpu", []),
        ("tier=workflow", ["trainer"]),
        ("tier=app", ["stock-agent"]),
        ("kind=job", ["trainer"]),
        ("kind=service&tier=atomic", ["big-llm", "faiss-store", "minilm"]),
        ("tag=nlp", ["big-llm", "minilm"]),
        ("tag=finance", ["stock-agent"]),
        ("gpu=yes", ["big-llm"]),
        ("gpu=no", ["faiss-store", "minilm", "stock-agent", "trainer"]),
        ("q=nlp&gpu=no", ["minilm"]),
    ],
)
def test_it_searches_and_filters(client, catalog, query, expected):
    response = client.get(f"{LIST}?{query}")
    assert response.status_code == 200
    assert _names(response) == expected


def test_it_reports_an_invalid_filter_instead_of_ignoring_it(client, catalog):
    response = client.get(f"{LIST}?tier=platinum")
    assert response.status_code == 200
    assert _names(response) == []
    assert "No tier called &#x27;platinum&#x27;: choose atomic, workflow or app." in response.content.decode()


def test_it_paginates_and_keeps_the_filters_in_page_links(client, publish, settings):
    settings.CATALOG_PAGE_SIZE = 2
    for index in range(5):
        publish(name=f"model-{index}", tags=["nlp"])

    first = client.get(f"{LIST}?tag=nlp")
    third = client.get(f"{LIST}?tag=nlp&page=3")

    assert _names(first) == ["model-0", "model-1"]
    assert _names(third) == ["model-4"]
    assert 'href="?tag=nlp&amp;page=2"' in first.content.decode()


def test_htmx_requests_get_only_the_results(client, catalog):
    response = client.get(f"{LIST}?q=minilm", headers={"HX-Request": "true"})
    body = response.content.decode()
    assert "MiniLM embeddings" in body
    assert "<html" not in body


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.parametrize("url", [LIST, f"{LIST}?q=model", f"{LIST}?tag=nlp&gpu=no", reverse("catalog:home")])
def test_the_number_of_queries_does_not_grow_with_the_catalog(client, user_factory, publish, url):
    # Signed in as a publisher member, so the visibility subquery is exercised too.
    client.force_login(user_factory())
    tiers = ["atomic", "workflow", "app"]
    for index in range(3):
        publish(name=f"model-{index}", tags=["nlp", f"t{index}"], tier=tiers[index])
    few = _queries(client, url)

    for index in range(3, 20):
        publish(name=f"model-{index}", tags=["nlp", f"t{index}"], tier=tiers[index % 3])
    many = _queries(client, url)

    assert many == few
    # A ranked search reads its candidates once, then the page looks them up by key.
    assert few <= 9
