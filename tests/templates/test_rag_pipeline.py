"""The rag-pipeline template wired to real embeddings, vector-store and text-generator processes."""

import contextlib

import pytest

from runners.harness.testing import free_port
from tests.templates.agent_helpers import trained_generator

pytestmark = pytest.mark.templates

DOCUMENTS = [
    {
        "id": "eddystone",
        "source": "lighthouses/eddystone.txt",
        "metadata": {"topic": "engineering"},
        "text": (
            "The Eddystone Lighthouse stands on a dangerous reef fourteen kilometres south of Plymouth.\n\n"
            "Four lighthouses have stood on the reef. The present tower was designed by the engineer "
            "James Douglass and was first lit in 1882. Smeaton's earlier tower was taken down and rebuilt "
            "on Plymouth Hoe, where it still stands as a memorial."
        ),
    },
    {
        "id": "etna",
        "source": "volcanoes/etna.txt",
        "metadata": {"topic": "geology"},
        "text": (
            "Mount Etna is an active stratovolcano on the east coast of Sicily, between Messina and Catania.\n\n"
            "It is the tallest active volcano in Europe outside the Caucasus and one of the most active "
            "volcanoes in the world, with almost constant activity at its summit craters."
        ),
    },
    {
        "id": "sourdough",
        "source": "recipes/sourdough.txt",
        "metadata": {"topic": "cooking"},
        "text": (
            "A sourdough starter is a mixture of flour and water colonised by wild yeast and lactic acid "
            "bacteria. Feed it every day with fresh flour and water, and it will leaven bread without any "
            "commercial yeast. The bacteria give the loaf its sour taste."
        ),
    },
]


@pytest.fixture(scope="module")
def stack(run_template, tmp_path_factory):
    """Embeddings, vector store and generator as real processes, and the pipeline wired to them."""
    checkpoint = trained_generator().checkpoint
    with contextlib.ExitStack() as running:
        embeddings = running.enter_context(run_template("minilm-embeddings"))
        store = running.enter_context(
            run_template("vector-store", env={"DATA_DIR": str(tmp_path_factory.mktemp("vectors"))})
        )
        generator = running.enter_context(run_template("text-generator", env={"MODEL_PATH": str(checkpoint)}))
        wiring = {"EMBEDDINGS_URL": embeddings.url, "VECTOR_STORE_URL": store.url, "GENERATOR_URL": generator.url}
        rag = running.enter_context(run_template("rag-pipeline", env={**wiring, "INPUT_CHUNK_SIZE": "200"}))
        yield {"rag": rag, "store": store, "generator": generator, "wiring": wiring}


@pytest.fixture(scope="module")
def rag(stack):
    status, body = stack["rag"].post_json("/v1/documents", {"documents": DOCUMENTS})
    assert status == 201, body
    return stack["rag"]


def ask(rag, question: str, **options) -> dict:
    status, body = rag.post_json("/v1/answer", {"question": question, **options})
    assert status == 200, body
    return body


def test_it_chunks_embeds_and_stores_each_document(stack, rag):
    status, collection = stack["store"].get_json("/collections/documents")
    assert status == 200
    assert collection["dimension"] == 384
    assert collection["count"] >= len(DOCUMENTS) + 1  # the lighthouse text is longer than one 200-character chunk


def test_it_cites_the_chunk_that_holds_the_answer(stack, rag):
    body = ask(rag, "Who designed the present Eddystone lighthouse tower?", top_k=3)
    best = body["citations"][0]
    assert best["document_id"] == "eddystone" and best["source"] == "lighthouses/eddystone.txt"
    assert "James Douglass" in best["text"] and best["snippet"] in best["text"]
    assert best["id"].startswith("eddystone#") and best["metadata"] == {"topic": "engineering"}
    assert [citation["number"] for citation in body["citations"]] == [1, 2, 3]
    assert isinstance(body["answer"], str) and body["model"].startswith("charlm-")  # sampled: may be blank


def test_its_answer_comes_from_the_generator_given_the_cited_chunks(stack, rag):
    """The same prompt sent straight to the generator at temperature 0 gives the same answer."""
    body = ask(rag, "Where is Mount Etna?", top_k=2, temperature=0, max_tokens=40)
    sources = "\n\n".join(f"[{c['number']}] {c['source']}: {c['text']}" for c in body["citations"])
    prompt = (
        "Answer the question using only the numbered sources, and cite them like [1].\n\n"
        f"{sources}\n\nQuestion: Where is Mount Etna?\nAnswer:"
    )
    status, direct = stack["generator"].post_json(
        "/v1/completions", {"prompt": prompt, "max_tokens": 40, "temperature": 0, "stop": ["\nQuestion:"]}
    )
    assert status == 200
    assert body["citations"][0]["document_id"] == "etna"
    assert body["answer"] == direct["choices"][0]["text"].strip()


def test_it_retrieves_with_metadata_filters(rag):
    status, body = rag.post_json(
        "/v1/retrieve", {"question": "Who designed the tower?", "filter": {"topic": "cooking"}}
    )
    assert status == 200, body
    assert {match["document_id"] for match in body["matches"]} == {"sourdough"}


def test_reingesting_a_shorter_document_leaves_no_stale_chunks(rag):
    long_text = " ".join(f"Paragraph {i} about tides and the moon's pull on the sea." for i in range(20))
    for text in (long_text, "Tides are caused mainly by the moon."):
        status, body = rag.post_json(
            "/v1/documents",
            {"collection": "tides", "documents": [{"id": "tides", "source": "tides.txt", "text": text}]},
        )
        assert status == 201, body
    status, body = rag.post_json("/v1/retrieve", {"question": "What causes tides?", "collection": "tides", "top_k": 20})
    assert [match["id"] for match in body["matches"]] == ["tides#0"]


def test_it_deletes_a_document(rag):
    rag.post_json(
        "/v1/documents", {"collection": "scratch", "documents": [{"id": "a", "source": "a.txt", "text": "Alpha."}]}
    )
    status, body = rag.delete("/v1/documents/a?collection=scratch")
    assert status == 200 and body["deleted_chunks"] == 1
    status, body = rag.post_json("/v1/retrieve", {"question": "Alpha", "collection": "scratch"})
    assert body["matches"] == []


def test_a_question_with_nothing_ingested_gets_no_citations(rag):
    body = ask(rag, "Anything?", collection="empty-collection")
    assert body["citations"] == [] and body["model"] is None


@pytest.mark.parametrize(
    "path, payload",
    [
        ("/v1/documents", {"documents": []}),
        ("/v1/documents", {"documents": [{"id": "../etc", "source": "x", "text": "y"}]}),
        ("/v1/documents", {"documents": [{"id": "a", "source": "x", "text": "y", "metadata": {"text": "clash"}}]}),
        ("/v1/documents", {"documents": [{"id": "a", "source": "x", "text": "y" * 200_001}]}),
        ("/v1/answer", {"question": ""}),
        ("/v1/answer", {"question": "why?", "top_k": 500}),
        ("/v1/answer", {"question": "why?", "collection": "Bad Name"}),
    ],
)
def test_it_rejects_requests_out_of_bounds(rag, path, payload):
    status, body = rag.post_json(path, payload)
    assert status in (413, 422), body


def test_it_names_the_dependency_that_failed(run_template, stack):
    wiring = {**stack["wiring"], "GENERATOR_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    with run_template("rag-pipeline", env=wiring) as broken:
        status, body = broken.post_json("/v1/answer", {"question": "Who designed the Eddystone lighthouse?"})
    assert status == 502
    assert "the generator" in body["error"]["message"]
