"""The search vector moves out of the template row into a table of its own (one row per
template, GIN-indexed on PostgreSQL): list pages and counts read narrow template rows.
And a vocabulary of the catalog's words (trigram-indexed) to correct typos against.
SQLite keeps both tables empty: its search reads the plain fields.

PostgreSQL frees a dropped column's bytes only as rows are rewritten: on a large catalog, run
`VACUUM FULL templates_catalog_template` (or pg_repack) once after this migration."""

import django.contrib.postgres.search
import django.db.models.deletion
from django.db import migrations, models

CREATE_INDEX = "CREATE INDEX IF NOT EXISTS template_search_gin ON templates_catalog_templatesearch USING gin (vector)"
CREATE_WORD_INDEX = "CREATE INDEX IF NOT EXISTS search_word_trgm ON templates_catalog_searchword USING gin (word gin_trgm_ops)"
COPY_BACK = """
UPDATE templates_catalog_template SET search_vector = s.vector
FROM templates_catalog_templatesearch s WHERE s.template_id = templates_catalog_template.id
"""
CREATE_OLD_INDEX = "CREATE INDEX IF NOT EXISTS template_search_vector_gin ON templates_catalog_template USING gin (search_vector)"


def _on_postgresql(*statements):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for statement in statements:
                schema_editor.execute(statement)

    return apply


class Migration(migrations.Migration):
    dependencies = [("templates_catalog", "0012_build_verification")]

    operations = [
        migrations.CreateModel(
            name="TemplateSearch",
            fields=[
                (
                    "template",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="search",
                        serialize=False,
                        to="templates_catalog.template",
                    ),
                ),
                ("vector", django.contrib.postgres.search.SearchVectorField()),
            ],
        ),
        migrations.CreateModel(
            name="SearchWord",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("word", models.CharField(max_length=64, unique=True)),
            ],
        ),
        migrations.RunPython(_on_postgresql(CREATE_INDEX, CREATE_WORD_INDEX), _on_postgresql(COPY_BACK, CREATE_OLD_INDEX)),
        # The vectors are filled by 0014 (they gained a second column there), computed afresh.
        # Dropping the column drops its GIN index (template_search_vector_gin) with it.
        migrations.RemoveField(model_name="template", name="search_vector"),
    ]
