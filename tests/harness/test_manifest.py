"""The harness's minimal hub.yaml reader."""

from pathlib import Path

from runners.harness.manifest import (
    DEFAULT_MAX_BODY_BYTES,
    ServeConfig,
    export_input_defaults,
    max_body_bytes,
    read_serve_config,
)

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


def test_its_fallback_defaults_are_the_schemas():
    from templates_catalog.manifest.schema import Batching, Serve

    serve, batching = Serve(handler="a:B"), Batching()
    config = ServeConfig(handler="a:B")

    assert (config.port, config.health_path, config.ready_path) == (serve.port, serve.health_path, serve.ready_path)
    assert (config.max_batch_size, config.max_wait_ms) == (batching.max_batch_size, batching.max_wait_ms)


def test_in_an_image_it_serves_the_configuration_the_hub_resolved(tmp_path):
    (tmp_path / "hub.yaml").write_text("serve:\n  handler: app:FromYaml\n  port: 1234\n")
    resolved = tmp_path / "serve.json"
    resolved.write_text(
        '{"handler": "app:Resolved", "port": 9000, "health_path": "/h", "ready_path": "/r",'
        ' "max_batch_size": 4, "max_wait_ms": 2, "input_defaults": {"top_k": 3}}'
    )

    config = read_serve_config(tmp_path, resolved=resolved)

    assert config == ServeConfig("app:Resolved", 9000, "/h", "/r", 4, 2, {"top_k": 3})


def test_without_a_resolved_file_it_reads_hub_yaml(tmp_path):
    (tmp_path / "hub.yaml").write_text("serve:\n  handler: app:FromYaml\n  port: '1234'\n")
    assert read_serve_config(tmp_path, resolved=tmp_path / "absent.json") == ServeConfig("app:FromYaml", 1234)


def test_the_resolved_body_limit_is_read_from_serve_json_and_hub_yaml(tmp_path):
    resolved = tmp_path / "serve.json"
    resolved.write_text('{"handler": "app:M", "max_body_bytes": 2048}')
    (tmp_path / "hub.yaml").write_text("serve:\n  handler: app:M\n  max_body_bytes: 4096\n")

    assert read_serve_config(tmp_path, resolved=resolved).max_body_bytes == 2048
    assert read_serve_config(tmp_path, resolved=tmp_path / "absent.json").max_body_bytes == 4096


def test_an_image_built_before_the_body_limit_existed_still_reads_its_serve_json(tmp_path):
    resolved = tmp_path / "serve.json"
    resolved.write_text('{"handler": "app:M", "port": 8080, "health_path": "/health", "ready_path": "/ready",'
                        ' "max_batch_size": 1, "max_wait_ms": 0, "input_defaults": {}}')
    assert read_serve_config(tmp_path, resolved=resolved).max_body_bytes is None


def test_the_body_limit_comes_from_the_flag_then_the_runner_then_the_manifest():
    config = ServeConfig(handler="a:B", max_body_bytes=4096)

    assert max_body_bytes(100, config, environ={"HUB_MAX_BODY_BYTES": "200"}) == 100
    assert max_body_bytes(None, config, environ={"HUB_MAX_BODY_BYTES": "200"}) == 200
    assert max_body_bytes(None, config, environ={}) == 4096
    assert max_body_bytes(None, ServeConfig(handler="a:B"), environ={}) == DEFAULT_MAX_BODY_BYTES == 1024 * 1024
