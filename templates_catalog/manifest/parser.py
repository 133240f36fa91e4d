"""Turns the bytes of a `hub.yaml` into a `Manifest`, or into errors a publisher can act on."""

import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from .schema import ONE_LINE_PATTERN, PATTERN_HINTS, Manifest

MAX_MANIFEST_BYTES = 64 * 1024
SCHEMA_FILE = Path(__file__).with_name("hub-v1.schema.json")


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class ManifestInvalid(Exception):
    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors))


class _NoAliasLoader(yaml.SafeLoader):
    """YAML anchors and aliases have no use in a manifest and are the vehicle of
    "billion laughs" bombs, so any alias is refused before it is expanded."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ManifestInvalid(
                [FieldError("", f"line {event.start_mark.line + 1}: YAML aliases (`*name`) are not allowed in hub.yaml; write the value out")]
            )
        return super().compose_node(parent, index)


def manifest_from_bytes(raw: bytes) -> Manifest:
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestInvalid([FieldError("", f"hub.yaml is {len(raw)} bytes; the limit is {MAX_MANIFEST_BYTES}")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestInvalid([FieldError("", "hub.yaml must be UTF-8 text")]) from None
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ManifestInvalid([FieldError("", f"hub.yaml is not valid YAML: {where}{exc.problem}")]) from None
    except yaml.YAMLError as exc:
        raise ManifestInvalid([FieldError("", f"hub.yaml is not valid YAML: {exc}")]) from None
    return manifest_from_data(data)


def manifest_from_data(data: object) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestInvalid([FieldError("", "hub.yaml must be a mapping of fields such as `name:` and `version:`")])
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestInvalid([_field_error(error) for error in exc.errors()]) from None


def manifest_from_dir(folder: Path) -> Manifest:
    path = Path(folder) / "hub.yaml"
    if not path.is_file():
        raise ManifestInvalid([FieldError("", f"no hub.yaml at the root of {folder}")])
    return manifest_from_bytes(path.read_bytes())


def _field_error(error: dict) -> FieldError:
    location = [str(part) for part in error["loc"]]
    field = ".".join(location).replace("schema_", "schema")
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "string_pattern_mismatch":
        hint = PATTERN_HINTS.get(ctx.get("pattern", ""), "a value in the documented format")
        return FieldError(field, f"{error['input']!r} is not valid: write {hint}")
    if kind == "string_type" and isinstance(error["input"], (int, float)):
        hint = _hint_for(location)
        if hint:
            return FieldError(field, f"must be quoted text: write {hint}")
        return FieldError(field, f"must be text: quote it, e.g. `'{error['input']}'`")
    if kind == "extra_forbidden":
        return FieldError(field, "is not a known field: remove it or check its spelling against hub-v1.schema.json")
    if kind == "missing":
        return FieldError(field, "is required")
    if kind == "value_error":
        return FieldError(field, str(ctx.get("error", error["msg"])))
    if kind == "enum" or kind == "literal_error":
        return FieldError(field, f"{error['input']!r} is not allowed: use {ctx.get('expected', 'one of the documented values')}")
    return FieldError(field, error["msg"][0].lower() + error["msg"][1:])


def _hint_for(location: list[str]) -> str | None:
    """The pattern hint of a top-level field, so a YAML number like `1.0` is answered
    with what to write, not only with "quote it"."""
    field = Manifest.model_fields.get(location[0]) if len(location) == 1 else None
    patterns = [getattr(item, "pattern", None) for item in (field.metadata if field else [])]
    # Free text (titles, summaries) needs only quoting; formatted values need their format.
    return next((PATTERN_HINTS[p] for p in patterns if p in PATTERN_HINTS and p != ONE_LINE_PATTERN), None)


def manifest_json_schema() -> dict:
    schema = Manifest.model_json_schema(by_alias=True)
    schema["$id"] = "https://aihub.local/schemas/hub-v1.schema.json"
    schema["title"] = "AI Hub template manifest (hub.yaml), schema hub/v1"
    return schema


def manifest_json_schema_text() -> str:
    return json.dumps(manifest_json_schema(), indent=2, sort_keys=True) + "\n"
