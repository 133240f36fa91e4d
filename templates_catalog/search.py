"""The stored full-text search vector of templates, and the vocabulary typos are
corrected against (PostgreSQL only).

Weights follow what a template is best found by: name (A) > title (B) > tags (C) >
summary and the start of the README (D). PostgreSQL has four weight classes, so the
summary and the README share the last one.
"""

from django.contrib.postgres.aggregates import StringAgg
from django.contrib.postgres.search import SearchVector
from django.db import connections
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.functions import Left

SEARCH_CONFIG = "english"
# The README only adds words to find a template by; its start says what matters and
# keeps each vector small enough to rank thousands of rows per search.
README_CHARS = 2000
# Trigrams say little about shorter words.
TYPO_MIN_WORD = 3


def template_search_vector_refresh(*, templates: QuerySet) -> None:
    """Recompute the search vector of `templates` in one INSERT … SELECT (an upsert) into
    their search rows, and add their words to the vocabulary. Works on the live model and on a migration's historical one
    (related models come from the queryset's model)."""
    connection = connections[templates.db]
    if connection.vendor != "postgresql":
        return
    model = templates.model
    search_table = model._meta.get_field("search").related_model._meta.db_table
    word_table = model._meta.apps.get_model(model._meta.app_label, "SearchWord")._meta.db_table
    tagging = model.tags.through
    version_model = model._meta.get_field("latest_version").related_model
    tags = (
        tagging.objects.filter(template_id=OuterRef("pk"))
        .order_by()
        .values("template_id")
        .annotate(names=StringAgg("tag__name", " "))
        .values("names")
    )
    readme = version_model.objects.filter(pk=OuterRef("latest_version_id")).order_by().values(head=Left("readme", README_CHARS))
    vector = (
        SearchVector("name", weight="A", config=SEARCH_CONFIG)
        + SearchVector("title", weight="B", config=SEARCH_CONFIG)
        + SearchVector(Subquery(tags), weight="C", config=SEARCH_CONFIG)
        + SearchVector("summary", weight="D", config=SEARCH_CONFIG)
        + SearchVector(Subquery(readme), weight="D", config=SEARCH_CONFIG)
    )
    select, params = templates.order_by().annotate(vector=vector).values("pk", "vector").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {search_table} (template_id, vector) {select} "
            "ON CONFLICT (template_id) DO UPDATE SET vector = EXCLUDED.vector",
            params,
        )
        # Words with a letter only: a typo in a number is not one to correct.
        texts, params = templates.order_by().values("search_text").query.sql_with_params()
        cursor.execute(
            f"INSERT INTO {word_table} (word) SELECT DISTINCT word FROM "
            f"(SELECT regexp_split_to_table(search_text, '[^[:alnum:]]+') AS word FROM ({texts}) texts) words "
            f"WHERE length(word) BETWEEN {TYPO_MIN_WORD} AND 64 AND word ~ '[[:alpha:]]' ON CONFLICT (word) DO NOTHING",
            params,
        )
