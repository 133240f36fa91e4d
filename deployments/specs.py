"""What a deployment adds to the catalog's launch adapter (templates_catalog/specs.py): its
inputs, validated by type, and its own environment and labels."""

import math

from runners.base import LaunchSpec
from runners.harness.upstream import UPSTREAM_TOKEN_ENV
from templates_catalog.manifest import Manifest
from templates_catalog.manifest.schema import Input, InputType
from templates_catalog.specs import launch_spec_of, manifest_of

from .graphs import graph_environment
from .models import Deployment

MAX_STRING_CHARS = 1000
MAX_TEXT_CHARS = 100_000


class InputsInvalid(Exception):
    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors  # (field, message)
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))


def launch_spec_for(deployment: Deployment) -> LaunchSpec:
    """The catalog's launch adapter, with what belongs to this deployment: its inputs as
    `INPUT_<NAME>` (the harness reads those), its handle, its labels, its upstream token (the
    harness then answers only the gateway), and for each of its requirements `<ALIAS>_URL`
    and `<ALIAS>_TOKEN` (a token minted for this launch)."""
    manifest = manifest_of(deployment.version)
    environment = {f"INPUT_{name.upper()}": env_text(value) for name, value in deployment.inputs.items()}
    environment["HUB_DEPLOYMENT"] = deployment.handle
    environment.update(graph_environment(deployment))
    # Last: a requirement aliased `hub_upstream` must not replace the lock's token with its own.
    environment[UPSTREAM_TOKEN_ENV] = deployment.upstream_token
    return launch_spec_of(
        deployment.version,
        deployment=deployment.handle,
        image=deployment.build.image_reference,
        environment=environment,
        labels={"io.aihub.template": manifest.name, "io.aihub.version": manifest.version},
    )


def env_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def inputs_validate(manifest: Manifest, given: object) -> dict:
    """The deploy form's values, checked by the manifest's types; defaults filled in.
    Raises InputsInvalid naming each field."""
    if not isinstance(given, dict):
        raise InputsInvalid([("inputs", "send an object of input names and values, e.g. {\"normalize\": true}")])
    declared = {item.name: item for item in manifest.inputs}
    errors = [
        (f"inputs.{name}", f"this template has no input {name!r}; it takes: {', '.join(declared) or 'none'}")
        for name in given
        if name not in declared
    ]
    values = {}
    for name, item in declared.items():
        if name not in given or given[name] is None:
            if item.required and item.default is None:
                errors.append((f"inputs.{name}", f"is required: {item.label}"))
            elif item.default is not None:
                values[name] = item.default
            continue
        problem = _input_problem(item, given[name])
        if problem:
            errors.append((f"inputs.{name}", problem))
        else:
            values[name] = given[name]
    if errors:
        raise InputsInvalid(errors)
    return values


def _input_problem(item: Input, value: object) -> str | None:
    kind = item.type
    if kind is InputType.FILE:
        return "file inputs are not supported yet"
    if kind in (InputType.STRING, InputType.TEXT, InputType.CHOICE):
        if not isinstance(value, str):
            return f"must be text, not {_json_type(value)}"
        if "\x00" in value:
            return "must not contain NUL characters"
        if kind is InputType.STRING and ("\n" in value or "\r" in value or len(value) > MAX_STRING_CHARS):
            return f"must be one line of at most {MAX_STRING_CHARS} characters"
        if kind is InputType.TEXT and len(value) > MAX_TEXT_CHARS:
            return f"must be at most {MAX_TEXT_CHARS} characters"
        if kind is InputType.CHOICE and value not in item.choices:
            return f"must be one of {', '.join(item.choices)}"
        return None
    if kind is InputType.BOOLEAN:
        return None if isinstance(value, bool) else f"must be true or false, not {_json_type(value)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, not {_json_type(value)}"
    if kind is InputType.INTEGER and not isinstance(value, int):
        return f"must be a whole number, not {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    return None


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)
