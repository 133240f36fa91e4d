"""Just enough of `hub.yaml` to serve a template.

The hub validated the whole manifest at publish time (schema hub/v1); images do not carry
the hub's schema package, so this reader takes the `serve` and `inputs` sections as given
and only fills in the schema's defaults.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml


@dataclass(frozen=True)
class ServeConfig:
    handler: str
    port: int = 8080
    health_path: str = "/health"
    ready_path: str = "/ready"
    max_batch_size: int = 1
    max_wait_ms: int = 0
    input_defaults: dict[str, object] = field(default_factory=dict)


def read_serve_config(template_dir: Path) -> ServeConfig:
    manifest = yaml.safe_load((template_dir / "hub.yaml").read_text(encoding="utf-8"))
    serve = manifest.get("serve") or {}
    if "handler" not in serve:
        raise SystemExit(f"{template_dir / 'hub.yaml'} has no serve.handler: nothing to serve")
    batching = serve.get("batching") or {}
    return ServeConfig(
        handler=serve["handler"],
        port=int(serve.get("port", 8080)),
        health_path=serve.get("health_path", "/health"),
        ready_path=serve.get("ready_path", "/ready"),
        max_batch_size=int(batching.get("max_batch_size", 1)),
        max_wait_ms=int(batching.get("max_wait_ms", 0)),
        input_defaults={item["name"]: item["default"] for item in manifest.get("inputs") or [] if "default" in item},
    )


def export_input_defaults(defaults: dict[str, object], environ=os.environ) -> None:
    """Set `INPUT_<NAME>` for every input the runner did not pass, so handlers read one place."""
    for name, value in defaults.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        environ.setdefault(f"INPUT_{name.upper()}", text)
