"""On PostgreSQL, a trigram index makes the catalog's substring search use an index
instead of scanning every template. SQLite (the embedded default) has no equivalent
and does not need one at its scale."""

from django.db import migrations

CREATE = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS template_search_text_trgm ON templates_catalog_template USING gin (search_text gin_trgm_ops)",
]
DROP = ["DROP INDEX IF EXISTS template_search_text_trgm"]


def _run(statements):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for statement in statements:
                schema_editor.execute(statement)

    return apply


class Migration(migrations.Migration):
    dependencies = [("templates_catalog", "0001_initial")]
    operations = [migrations.RunPython(_run(CREATE), _run(DROP))]
