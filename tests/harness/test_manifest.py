"""The harness's minimal hub.yaml reader."""

from pathlib import Path

from runners.harness.manifest import export_input_defaults, read_serve_config

ROOT = Path(__file__).resolve().parents[2]


def test_it_reads_serve_and_batching_from_a_fixture_template():
    config = read_serve_config(ROOT / "fixtures" / "templates" / "minilm-embeddings")

    assert config.handler == "handler:Embedder"
    assert (config.port, config.health_path, config.ready_path) == (8080, "/health", "/ready")
    assert config.max_batch_size >= 1 and config.max_wait_ms >= 0
    assert config.input_defaults == {"normalize": True}


def test_it_fills_in_the_schema_defaults(tmp_path):
    (tmp_path / "hub.yaml").write_text("serve:\n  handler: app:Model\n")

    config = read_serve_config(tmp_path)

    assert (config.port, config.max_batch_size, config.max_wait_ms) == (8080, 1, 0)


def test_input_defaults_never_override_what_the_runner_passed():
    environ = {"INPUT_TOP_K": "9"}

    export_input_defaults({"top_k": 4, "normalize": True, "label": "x", "optional": None}, environ)

    assert environ == {"INPUT_TOP_K": "9", "INPUT_NORMALIZE": "true", "INPUT_LABEL": "x"}
