"""A ranked search orders a bounded number of candidates, taken from the best field that
holds every word first (templates_catalog.search.FIELD_TIERS): a `head` vector of every
field but the README, GIN-indexed whole and by weights (the name; up to the title; up to
the tags). The trigram index of 0002 goes: nothing on PostgreSQL matches substrings of
`search_text` any more (it only feeds the typo vocabulary). SQLite keeps the table empty."""

import django.contrib.postgres.search
from django.db import migrations

from templates_catalog.search import template_search_vector_refresh

TABLE = "templates_catalog_templatesearch"
# The weights as literals, exactly as templates_catalog.search.HeadWeights writes them.
CREATE_INDEXES = [
    f"CREATE INDEX IF NOT EXISTS template_search_name_gin ON {TABLE} USING gin (ts_filter(head, '{{a}}'))",
    f"CREATE INDEX IF NOT EXISTS template_search_title_gin ON {TABLE} USING gin (ts_filter(head, '{{a,b}}'))",
    f"CREATE INDEX IF NOT EXISTS template_search_tags_gin ON {TABLE} USING gin (ts_filter(head, '{{a,b,c}}'))",
    f"CREATE INDEX IF NOT EXISTS template_search_head_gin ON {TABLE} USING gin (head)",
    "DROP INDEX IF EXISTS template_search_text_trgm",
]
DROP_INDEXES = [
    "DROP INDEX IF EXISTS template_search_name_gin",
    "DROP INDEX IF EXISTS template_search_title_gin",
    "DROP INDEX IF EXISTS template_search_tags_gin",
    "DROP INDEX IF EXISTS template_search_head_gin",
    "CREATE INDEX IF NOT EXISTS template_search_text_trgm ON templates_catalog_template USING gin (search_text gin_trgm_ops)",
]


def _on_postgresql(statements):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for statement in statements:
                schema_editor.execute(statement)

    return apply


def fill(apps, schema_editor):
    Template = apps.get_model("templates_catalog", "Template")
    template_search_vector_refresh(templates=Template.objects.using(schema_editor.connection.alias).all())


class Migration(migrations.Migration):
    dependencies = [("templates_catalog", "0013_search_tables")]

    operations = [
        migrations.AddField(
            model_name="templatesearch",
            name="head",
            field=django.contrib.postgres.search.SearchVectorField(default=""),
            preserve_default=False,
        ),
        # Both vectors computed afresh: this also fills a database that skipped 0013's fill.
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.RunPython(_on_postgresql(CREATE_INDEXES), _on_postgresql(DROP_INDEXES)),
    ]
