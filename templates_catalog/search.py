"""The stored full-text search vector of templates, and the vocabulary typos are
corrected against (PostgreSQL only).

Weights follow what a template is best found by: name (A) > title (B) > tags (C) >
summary and the start of the README (D). PostgreSQL has four weight classes, so the
summary and the README share the last one; `head` holds every field but the README, so
that a summary still beats a README (see FIELD_TIERS).
"""

from django.contrib.postgres.aggregates import StringAgg
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import connections
from django.db.models import Expression, F, Func, OuterRef, QuerySet, Subquery
from django.db.models.functions import Left

SEARCH_CONFIG = "english"
# The README only adds words to find a template by; its start says what matters and
# keeps each vector small enough to rank thousands of rows per search.
README_CHARS = 2000
# Trigrams say little about shorter words.
TYPO_MIN_WORD = 3
# The fields a match is ranked by, best first, as the weights of `head` that hold them:
# the name, then up to the title, the tags and the summary. Each has a GIN index
# (migration 0014); a match in none of them is in the README only.
FIELD_TIERS = ("a", "ab", "abc", "abcd")


class HeadWeights(Func):
    """The lexemes of a `head` vector with the given weights (PostgreSQL's ts_filter).
    The weights are written into the SQL as a literal, as the indexes of migration 0014
    hold them: a bound parameter would not match those indexes."""

    function = "ts_filter"
    output_field = SearchVectorField()

    def __init__(self, weights: str, head: str = "head") -> None:
        if not weights or set(weights) - set("abcd"):
            raise ValueError(f"weights are some of a, b, c and d, not {weights!r}")
        self.template = f"%(function)s(%(expressions)s, '{{{','.join(weights)}}}')"
        super().__init__(F(head))


def head_up_to(weights: str, head: str = "head") -> Expression:
    """`head` restricted to `weights`; all four are `head` itself (its own index)."""
    return F(head) if weights == "abcd" else HeadWeights(weights, head)


def template_search_vector_refresh(*, templates: QuerySet) -> None:
    """Recompute the search vectors of `templates` (`head` and the full `vector`) in one
    INSERT … SELECT (an upsert) into their search rows, and add their words to the vocabulary. Works on the live model and on a migration's historical one
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
    head = (
        SearchVector("name", weight="A", config=SEARCH_CONFIG)
        + SearchVector("title", weight="B", config=SEARCH_CONFIG)
        + SearchVector(Subquery(tags), weight="C", config=SEARCH_CONFIG)
        + SearchVector("summary", weight="D", config=SEARCH_CONFIG)
    )
    vector = head + SearchVector(Subquery(readme), weight="D", config=SEARCH_CONFIG)
    select, params = templates.order_by().annotate(head=head, vector=vector).values("pk", "head", "vector").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {search_table} (template_id, head, vector) {select} "
            "ON CONFLICT (template_id) DO UPDATE SET head = EXCLUDED.head, vector = EXCLUDED.vector",
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
