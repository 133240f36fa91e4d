"""Write hub-v1.schema.json from the pydantic model: `python -m templates_catalog.manifest.write_schema`."""

from .parser import SCHEMA_FILE, manifest_json_schema_text

if __name__ == "__main__":
    SCHEMA_FILE.write_text(manifest_json_schema_text())
    print(f"wrote {SCHEMA_FILE}")
