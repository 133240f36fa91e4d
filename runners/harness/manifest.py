"""The serving configuration of a template.

In a built image (or venv) the hub has already read `hub.yaml` through its schema
(hub/v1) and written the result, every default filled in, to `serve.json` beside this
module: the harness then serves exactly those values and reads no YAML. Without that file
(a template folder in development) it reads `hub.yaml` itself; its fallback defaults are
the schema's, and a test keeps them equal.
"""

import json
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
    max_body_bytes: int | None = None  # None: the harness's own default


DEFAULT_MAX_BODY_BYTES = 1024 * 1024
_NUMBERS = {"port", "max_batch_size", "max_wait_ms", "max_body_bytes"}
RESOLVED_CONFIG = Path(__file__).with_name("serve.json")


def read_serve_config(template_dir: Path, resolved: Path = RESOLVED_CONFIG) -> ServeConfig:
    if resolved.exists():
        return ServeConfig(**json.loads(resolved.read_text(encoding="utf-8")))
    return _from_hub_yaml(template_dir)


def _from_hub_yaml(template_dir: Path) -> ServeConfig:
    manifest = yaml.safe_load((template_dir / "hub.yaml").read_text(encoding="utf-8"))
    serve = manifest.get("serve") or {}
    if "handler" not in serve:
        raise SystemExit(f"{template_dir / 'hub.yaml'} has no serve.handler: nothing to serve")
    batching = serve.get("batching") or {}
    # Only what the file says; everything else takes ServeConfig's (the schema's) defaults.
    given = {key: serve[key] for key in ("port", "health_path", "ready_path", "max_body_bytes") if key in serve}
    given |= {key: batching[key] for key in ("max_batch_size", "max_wait_ms") if key in batching}
    return ServeConfig(
        handler=serve["handler"],
        **{key: int(value) if key in _NUMBERS else value for key, value in given.items()},
        input_defaults={item["name"]: item["default"] for item in manifest.get("inputs") or [] if "default" in item},
    )


def export_input_defaults(defaults: dict[str, object], environ=os.environ) -> None:
    """Set `INPUT_<NAME>` for every input the runner did not pass, so handlers read one place."""
    for name, value in defaults.items():
        if value is None:
            continue
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        environ.setdefault(f"INPUT_{name.upper()}", text)


def max_body_bytes(given: int | None, config: ServeConfig, environ=os.environ) -> int:
    """The flag, else the runner's $HUB_MAX_BODY_BYTES, else the manifest's serve.max_body_bytes, else 1 MiB."""
    if given is not None:
        return given
    if environ.get("HUB_MAX_BODY_BYTES"):
        return int(environ["HUB_MAX_BODY_BYTES"])
    return config.max_body_bytes or DEFAULT_MAX_BODY_BYTES
