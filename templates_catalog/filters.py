import django_filters
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError

from .manifest import Kind, Tier
from .models import Tag, Template
from .selectors import SORTS, template_search


def _one_of(values: list[str]) -> str:
    return f"{', '.join(values[:-1])} or {values[-1]}"


def _unknown(what: str, choices: list[str]) -> dict[str, str]:
    # %(value)s is filled by Django's ChoiceField with what was asked for.
    return {"invalid_choice": f"No {what} called '%(value)s': choose {_one_of(choices)}."}


SEARCH_AND_SORT = {"q", "sort"}
TIERS = [t.value for t in Tier]
KINDS = [k.value for k in Kind]


class TemplateFilter(django_filters.FilterSet):
    """The catalog's search, filters and sort, shared by the web pages and the API.
    A value it does not know is an error that says what to choose, never ignored.
    The search and the sort apply together, after the other filters (filter_queryset)."""

    q = django_filters.CharFilter(label="Search", max_length=200)
    tier = django_filters.ChoiceFilter(
        choices=[(t, t.title()) for t in TIERS], empty_label="Any tier", error_messages=_unknown("tier", TIERS)
    )
    kind = django_filters.ChoiceFilter(
        choices=[(k, k.title()) for k in KINDS], empty_label="Any kind", error_messages=_unknown("kind", KINDS)
    )
    tag = django_filters.CharFilter(field_name="tags__name", label="Tag", max_length=32)
    gpu = django_filters.ChoiceFilter(
        choices=[("yes", "Needs a GPU"), ("no", "Runs on CPU")],
        method="filter_gpu",
        label="GPU",
        empty_label="GPU or CPU",
        error_messages={"invalid_choice": "GPU takes yes or no, not '%(value)s'."},
    )
    sort = django_filters.ChoiceFilter(
        choices=list(SORTS.items()),
        label="Sort",
        empty_label=None,
        error_messages=_unknown("sort", list(SORTS)),
        help_text="relevance (the default with a search), name (the default without) or newest",
    )

    class Meta:
        model = Template
        fields = ["q", "tier", "kind", "tag", "gpu", "sort"]

    def is_valid(self) -> bool:
        if not super().is_valid():
            return False
        tag = self.form.cleaned_data.get("tag")
        # Only tags of templates this user may see: a private template's tags stay private.
        if tag and not Tag.objects.filter(name=tag, templates__in=self.queryset.order_by().values("pk")).exists():
            self.form.add_error("tag", f"No template is tagged '{tag}'.")
            return False
        return True

    def filter_gpu(self, queryset: QuerySet[Template], name: str, value: str) -> QuerySet[Template]:
        return queryset.filter(needs_gpu=value == "yes")

    def filter_queryset(self, queryset: QuerySet[Template]) -> QuerySet[Template]:
        # Last: a ranked search picks its candidates among what the other filters keep.
        data = self.form.cleaned_data
        for name, field_filter in self.filters.items():
            if name not in SEARCH_AND_SORT:
                queryset = field_filter.filter(queryset, data.get(name))
        return template_search(queryset, data.get("q") or "", sort=data.get("sort") or "relevance")

    def error_list(self) -> list[dict[str, str]]:
        return [{"field": field, "message": message} for field, messages in self.errors.items() for message in messages]


class CatalogFilterBackend(DjangoFilterBackend):
    """Like DjangoFilterBackend, with the API's error shape: a 400 whose `errors` list
    names each wrong parameter and what to use instead."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            # Shaped into {detail, errors} by the API's exception handler, like every 400.
            raise ValidationError({error["field"]: [error["message"]] for error in filterset.error_list()})
        return filterset.qs
