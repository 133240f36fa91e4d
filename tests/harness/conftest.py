"""Harness tests start tiny fake templates (fake_template/handler.py) as real harness processes."""

import shutil
from pathlib import Path

import pytest
import yaml

from runners.harness.testing import launch, serve_template
from tests.harness.support import template_python

FAKE_HANDLERS = Path(__file__).parent / "fake_template" / "handler.py"


def write_template(folder: Path, handler_class: str, *, max_batch_size: int = 1, max_wait_ms: int = 0,
                   inputs: list[dict] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FAKE_HANDLERS, folder / "handler.py")
    manifest = {
        "schema": "hub/v1", "name": "fake", "version": "1.0.0", "tier": "atomic", "kind": "service",
        "title": "Fake", "summary": "A fake template for harness tests.", "license": "MIT",
        "serve": {"handler": f"handler:{handler_class}",
                  "batching": {"max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms}},
        "inputs": list(inputs),
    }
    (folder / "hub.yaml").write_text(yaml.safe_dump(manifest))
    return folder


@pytest.fixture(scope="session")
def harness_python() -> Path:
    return template_python()


@pytest.fixture
def serve_fake(harness_python, tmp_path):
    """`with serve_fake("Doubler", max_batch_size=8, env={...}) as server:` — waits for /ready."""

    def serve(handler_class: str, *, env: dict | None = None, extra_args: list[str] = (), **manifest_options):
        folder = write_template(tmp_path / handler_class, handler_class, **manifest_options)
        return serve_template(folder, python=harness_python, env={"HUB_DEVICE": "cpu", **(env or {})},
                              extra_args=list(extra_args), ready_timeout=60)

    return serve


@pytest.fixture
def launch_fake(harness_python, tmp_path):
    """Start a fake template without waiting for /ready; the caller stops it."""

    def start(handler_class: str, *, env: dict | None = None, **manifest_options):
        folder = write_template(tmp_path / handler_class, handler_class, **manifest_options)
        return launch(folder, python=harness_python, env={"HUB_DEVICE": "cpu", **(env or {})})

    return start
