"""The stored full-text search vector of templates (PostgreSQL only).

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


def template_search_vector_refresh(*, templates: QuerySet) -> None:
    """Recompute the search vector of `templates` in one UPDATE. Works on the live model
    and on a migration's historical one (related models come from the queryset's model)."""
    if connections[templates.db].vendor != "postgresql":
        return
    model = templates.model
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
    templates.update(
        search_vector=SearchVector("name", weight="A", config=SEARCH_CONFIG)
        + SearchVector("title", weight="B", config=SEARCH_CONFIG)
        + SearchVector(Subquery(tags), weight="C", config=SEARCH_CONFIG)
        + SearchVector("summary", weight="D", config=SEARCH_CONFIG)
        + SearchVector(Subquery(readme), weight="D", config=SEARCH_CONFIG)
    )
