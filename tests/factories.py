"""Builders of manifests and bundles for tests."""

from pathlib import Path
from typing import Any

import yaml

from templates_catalog.bundles import bundle_pack


def manifest_data(**overrides: Any) -> dict:
    data = {
        "schema": "hub/v1",
        "name": "demo-embedder",
        "version": "1.0.0",
        "tier": "atomic",
        "kind": "service",
        "title": "Demo embedder",
        "summary": "Turns sentences into vectors for the tests.",
        "tags": ["embeddings"],
        "license": "MIT",
        "serve": {"handler": "handler:Model"},
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def bundle_bytes(tmp_path: Path, readme: str = "# Demo\n", files: dict[str, str] | None = None, **overrides: Any) -> bytes:
    data = manifest_data(**overrides)
    folder = tmp_path / f"bundle-{data['name']}-{data['version']}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hub.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (folder / "README.md").write_text(readme)
    for name, content in (files or {"handler.py": "class Model:\n    pass\n"}).items():
        (folder / name).write_text(content)
    return bundle_pack(folder)
