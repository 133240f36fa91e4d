import django_filters
from django.db.models import QuerySet

from .manifest import Kind, Tier
from .models import Template
from .selectors import template_search


class TemplateFilter(django_filters.FilterSet):
    """The catalog's search and filters, shared by the web pages and the API."""

    q = django_filters.CharFilter(method="filter_search", label="Search", max_length=200)
    tier = django_filters.ChoiceFilter(choices=[(t.value, t.value.title()) for t in Tier], empty_label="Any tier")
    kind = django_filters.ChoiceFilter(choices=[(k.value, k.value.title()) for k in Kind], empty_label="Any kind")
    tag = django_filters.CharFilter(field_name="tags__name", label="Tag", max_length=32)
    gpu = django_filters.ChoiceFilter(
        choices=[("yes", "Needs a GPU"), ("no", "Runs on CPU")], method="filter_gpu", label="GPU", empty_label="GPU or CPU"
    )

    class Meta:
        model = Template
        fields = ["q", "tier", "kind", "tag", "gpu"]

    def filter_search(self, queryset: QuerySet[Template], name: str, value: str) -> QuerySet[Template]:
        return template_search(queryset, value)

    def filter_gpu(self, queryset: QuerySet[Template], name: str, value: str) -> QuerySet[Template]:
        return queryset.filter(needs_gpu=value == "yes")
