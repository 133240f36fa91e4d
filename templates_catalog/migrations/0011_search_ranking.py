"""Ranked search: a stored, weighted full-text vector per template (GIN-indexed on
PostgreSQL; 0013 moves it to a table of its own and fills it), an index for the "newest" sort and one
that answers the visibility filter alone.
SQLite keeps the column empty: its ranking reads the plain fields."""

import django.contrib.postgres.search
from django.db import migrations, models

CREATE_INDEX = "CREATE INDEX IF NOT EXISTS template_search_vector_gin ON templates_catalog_template USING gin (search_vector)"
DROP_INDEX = "DROP INDEX IF EXISTS template_search_vector_gin"


def _on_postgresql(statement):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(statement)

    return apply


class Migration(migrations.Migration):
    dependencies = [("templates_catalog", "0010_version_files_changelog")]

    operations = [
        migrations.AddField(
            model_name="template",
            name="search_vector",
            field=django.contrib.postgres.search.SearchVectorField(editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name="template",
            index=models.Index(fields=["created_at", "id"], name="template_created_idx"),
        ),
        migrations.AddIndex(
            model_name="template",
            index=models.Index(fields=["visibility", "publisher", "latest_version"], name="template_visible_idx"),
        ),
        migrations.RunPython(_on_postgresql(CREATE_INDEX), _on_postgresql(DROP_INDEX)),
        # The vectors are filled by 0013, in the table they moved to.
    ]
