"""The vector-store template, served through the harness, persisting to a temporary DATA_DIR."""

import itertools
import random

import pytest

pytestmark = pytest.mark.templates

DIMENSION = 8


def random_points(count: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    return [
        {
            "id": f"doc-{i}",
            "vector": [rng.uniform(-1, 1) for _ in range(DIMENSION)],
            "metadata": {"source": "even" if i % 2 == 0 else "odd", "page": i},
        }
        for i in range(count)
    ]


def near(vector: list[float]) -> list[float]:
    return [x + 0.01 for x in vector]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("vector-store") / "data"


@pytest.fixture(scope="module")
def store(run_template, data_dir):
    """One server for the module; each test works in a collection of its own."""
    with run_template("vector-store", env={"DATA_DIR": str(data_dir)}) as server:
        yield server


_names = itertools.count()


@pytest.fixture
def docs(store) -> str:
    name = f"docs-{next(_names)}"
    create_collection(store, name)
    return name


def create_collection(server, name: str = "docs", **options) -> dict:
    status, body = server.post_json("/collections", {"name": name, "dimension": DIMENSION, **options})
    assert status in (200, 201), body
    return body


def upsert(server, points: list[dict], collection: str = "docs") -> dict:
    status, body = server.post_json(f"/collections/{collection}/upsert", {"points": points})
    assert status == 200, body
    return body


def query_ids(server, vector, k=3, collection="docs", **options) -> list[str]:
    status, body = server.post_json(f"/collections/{collection}/query", {"vector": vector, "k": k, **options})
    assert status == 200, body
    return [match["id"] for match in body["matches"]]


def test_it_returns_the_nearest_neighbours(store, docs):
    points = random_points(40)
    upsert(store, points, docs)

    for target in (3, 17, 38):
        assert query_ids(store, near(points[target]["vector"]), k=1, collection=docs) == [f"doc-{target}"]
    status, body = store.post_json(f"/collections/{docs}/query", {"vector": points[5]["vector"], "k": 5})
    scores = [match["score"] for match in body["matches"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert body["matches"][0]["metadata"] == {"source": "odd", "page": 5}


def test_it_keeps_collections_across_a_restart(run_template, tmp_path):
    points = random_points(30)
    env = {"DATA_DIR": str(tmp_path / "data")}
    with run_template("vector-store", env=env) as first:
        create_collection(first)
        upsert(first, points)
        first.post_json("/collections/docs/delete", {"ids": ["doc-4"]})
        upsert(first, [{**points[9], "metadata": {"source": "rewritten"}}])
        before = query_ids(first, near(points[4]["vector"]), k=5)

    with run_template("vector-store", env=env) as second:
        assert second.get_json("/collections/docs")[1]["count"] == 29
        assert query_ids(second, near(points[4]["vector"]), k=5) == before
        assert "doc-4" not in before
        assert query_ids(second, points[9]["vector"], k=1, filter={"source": "rewritten"}) == ["doc-9"]


def test_acknowledged_writes_survive_a_killed_process(run_template, tmp_path):
    points = random_points(12)
    env = {"DATA_DIR": str(tmp_path / "data")}
    with run_template("vector-store", env=env) as first:
        create_collection(first)
        upsert(first, points)
        first.post_json("/collections/docs/delete", {"ids": ["doc-0"]})
        first.process.kill()  # SIGKILL: no close(), no snapshot; only the write-ahead log remains
        first.process.wait()

    with run_template("vector-store", env=env) as second:
        assert second.get_json("/collections/docs")[1]["count"] == 11
        assert query_ids(second, near(points[7]["vector"]), k=1) == ["doc-7"]


def test_filters_keep_only_matching_metadata(store, docs):
    points = random_points(40)
    upsert(store, points, docs)

    found = query_ids(store, near(points[3]["vector"]), k=10, collection=docs, filter={"source": "even"})
    assert len(found) == 10 and all(int(point_id.split("-")[1]) % 2 == 0 for point_id in found)
    assert query_ids(store, points[6]["vector"], collection=docs, filter={"source": "even", "page": 6}) == ["doc-6"]
    assert query_ids(store, points[6]["vector"], collection=docs, filter={"source": "nowhere"}) == []


def test_upsert_replaces_and_delete_removes_by_id(store, docs):
    points = random_points(10)
    upsert(store, points, docs)
    upsert(store, [{"id": "doc-1", "vector": points[8]["vector"], "metadata": {"moved": True}}], docs)

    assert set(query_ids(store, points[8]["vector"], k=2, collection=docs)) == {"doc-1", "doc-8"}
    status, body = store.post_json(f"/collections/{docs}/delete", {"ids": ["doc-8", "missing"]})
    assert (status, body) == (200, {"deleted": 1, "count": 9})
    assert query_ids(store, points[8]["vector"], k=1, collection=docs) == ["doc-1"]


def test_collections_are_created_listed_and_dropped(store, data_dir):
    assert create_collection(store, "alpha")["count"] == 0
    assert create_collection(store, "beta", metric="l2")["metric"] == "l2"

    assert store.post_json("/collections", {"name": "alpha", "dimension": DIMENSION})[0] == 200  # idempotent
    assert store.post_json("/collections", {"name": "alpha", "dimension": 3})[0] == 409
    names = [item["name"] for item in store.get_json("/collections")[1]["collections"]]
    assert {"alpha", "beta"} <= set(names)
    assert store.delete("/collections/alpha") == (200, {"deleted": "alpha"})
    assert store.get_json("/collections/alpha")[0] == 404
    assert not (data_dir / "alpha").exists() and (data_dir / "beta").is_dir()


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "UPPER", "", "x" * 64])
def test_collection_names_cannot_leave_the_data_folder(store, data_dir, name):
    status, body = store.post_json("/collections", {"name": name, "dimension": DIMENSION})

    assert status == 422 and "collection name" in body["error"]["message"]
    assert not (data_dir.parent / "escape").exists()


@pytest.mark.parametrize(
    "path, payload",
    [
        ("/collections/docs/upsert", {"points": [{"id": "a", "vector": [1, 2]}]}),
        ("/collections/docs/upsert", {"points": [{"id": "a", "vector": ["x"] * DIMENSION}]}),
        ("/collections/docs/upsert", {"points": [{"id": "a", "vector": [0] * DIMENSION, "metadata": {"k": [1]}}]}),
        ("/collections/docs/upsert", {"points": [{"id": "a", "vector": [0] * DIMENSION}] * 2}),
        ("/collections/docs/query", {"vector": [0] * DIMENSION, "k": 1000}),
        ("/collections/docs/query", {"vector": [0] * DIMENSION, "filter": "source=even"}),
        ("/collections/docs/delete", {"ids": "doc-1"}),
    ],
)
def test_it_rejects_invalid_requests_with_a_422(store, docs, path, payload):
    status, body = store.post_json(path.replace("/docs/", f"/{docs}/"), payload)

    assert status == 422, body


def test_unknown_collections_are_404(store):
    assert store.post_json("/collections/nothing/query", {"vector": [0] * DIMENSION})[0] == 404


def test_queries_also_go_through_predict(store, docs):
    points = random_points(10)
    upsert(store, points, docs)

    status, body = store.post_json("/predict", {"collection": docs, "vector": near(points[2]["vector"]), "k": 1})

    assert status == 200 and body["matches"][0]["id"] == "doc-2"


def test_without_data_dir_it_keeps_its_collections_on_the_deployments_volume(run_template, tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    with run_template("vector-store", env={"HUB_STORAGE_DIR": str(volume)}) as store:
        create_collection(store)
        upsert(store, random_points(3))
    assert (volume / "docs").is_dir()

    # DATA_DIR, when a person sets it, still wins over the volume.
    with run_template("vector-store", env={"HUB_STORAGE_DIR": str(volume), "DATA_DIR": str(tmp_path / "chosen")}) as store:
        assert store.get_json("/collections")[1] == {"collections": []}
