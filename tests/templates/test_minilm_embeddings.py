"""The minilm-embeddings template, served through the harness with the real MiniLM weights."""

import base64
import math
import re
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = pytest.mark.templates


@pytest.fixture(scope="module")
def embeddings(run_template):
    with run_template("minilm-embeddings") as server:
        yield server


def embed(server, texts, **options) -> list[list[float]]:
    status, body = server.post_json("/v1/embeddings", {"input": texts, **options})
    assert status == 200, body
    return [item["embedding"] for item in body["data"]]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_it_answers_in_the_openai_embeddings_shape(embeddings):
    status, body = embeddings.post_json("/v1/embeddings", {"input": ["first text", "second text"], "model": "x"})

    assert status == 200
    assert body["object"] == "list"
    assert body["model"] == "all-MiniLM-L6-v2"
    assert [(item["object"], item["index"]) for item in body["data"]] == [("embedding", 0), ("embedding", 1)]
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 4


def test_it_returns_384_dimensional_unit_vectors(embeddings):
    (vector,) = embed(embeddings, "A single string is one input.")

    assert len(vector) == 384
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)


def test_similar_sentences_score_higher_than_unrelated_ones(embeddings):
    cat, kitten, stocks = embed(
        embeddings, ["A cat is sleeping on the mat.", "A kitten naps on a rug.", "Stock markets fell sharply today."]
    )

    assert cosine(cat, kitten) > cosine(cat, stocks) + 0.3


def test_it_gives_the_same_vector_alone_and_in_a_batch(embeddings):
    alone = embed(embeddings, "Batching must not change the answer.")[0]
    batched = embed(embeddings, ["Something else entirely.", "Batching must not change the answer."])[1]

    assert cosine(alone, batched) > 0.9999


def test_base64_encoding_carries_the_same_floats(embeddings):
    as_floats = embed(embeddings, "encode me")[0]
    as_base64 = embed(embeddings, "encode me", encoding_format="base64")[0]

    decoded = struct.unpack("<384f", base64.b64decode(as_base64))
    assert max(abs(x - y) for x, y in zip(decoded, as_floats)) < 1e-6


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"input": [101, 102]}, "must be a string"),
        ({"input": []}, "empty list"),
        ({"input": "   "}, "is empty"),
        ({"input": "x" * 9000}, "at most 8192"),
        ({"input": ["a"] * 257}, "at most 256"),
        ({"texts": ["a"]}, "needs `input`"),
        ({"input": "a", "dimensions": 128}, "384"),
    ],
)
def test_it_rejects_invalid_input_with_a_422(embeddings, payload, message):
    status, body = embeddings.post_json("/v1/embeddings", payload)

    assert status == 422
    assert message in body["error"]["message"]


def test_concurrent_requests_share_batches(embeddings):
    before = _batch_counts(embeddings)
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda i: embed(embeddings, f"concurrent sentence number {i}"), range(48)))

    batches, inputs = (after - start for after, start in zip(_batch_counts(embeddings), before))
    assert all(len(result[0]) == 384 for result in results)
    assert inputs == 48
    assert batches < inputs  # some predict() call embedded several requests' texts at once


def test_metrics_count_the_requests(embeddings):
    embed(embeddings, "counted")

    status, text = embeddings.get_json("/metrics")
    assert status == 200
    served = re.search(r'hub_requests_total\{method="POST",route="/v1/embeddings",status="200"\} (\d+)', text)
    assert served and int(served.group(1)) >= 1
    assert "hub_ready 1.0" in text


def _batch_counts(server) -> tuple[float, float]:
    text = server.get_json("/metrics")[1]
    count = re.search(r"^hub_batch_size_count (\S+)$", text, re.M)
    total = re.search(r"^hub_batch_size_sum (\S+)$", text, re.M)
    return (float(count.group(1)), float(total.group(1))) if count else (0.0, 0.0)


def test_a_full_batch_of_long_inputs_fits_under_its_body_limit(embeddings):
    # 257 inputs of 8,192 characters: over the harness's default 1 MiB, under serve.max_body_bytes
    # (8 MiB), so the handler itself answers (one input too many) instead of a 413.
    status, body = embeddings.post_json("/v1/embeddings", {"input": ["a" * 8192] * 257})
    assert status == 422 and "at most 256" in body["error"]["message"], body
