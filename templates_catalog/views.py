from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from builders.errors import BuildFailed

from .builds import build_request
from .filters import TemplateFilter
from .manifest import Tier
from .models import TemplateVersion
from .selectors import (
    template_catalog,
    template_catalog_page,
    template_detail,
    template_tag_facets,
    template_versions_sorted,
    templates_visible_to,
)
from .services import user_can_publish_to

TIER_BLURBS = {
    Tier.ATOMIC: "Single building blocks: a model server or a data service.",
    Tier.WORKFLOW: "Several steps wired together: pipelines and training jobs.",
    Tier.APP: "Finished products a non-expert can use straight away.",
}
HOME_CARDS_PER_TIER = 6


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    catalog = template_catalog(request.user)
    tiers = [
        {
            "tier": tier,
            "blurb": TIER_BLURBS[tier],
            "templates": list(catalog.filter(tier=tier).order_by("-updated_at")[:HOME_CARDS_PER_TIER]),
        }
        for tier in Tier
    ]
    return render(request, "catalog/home.html", {"tiers": tiers})


@require_GET
def template_list(request: HttpRequest) -> HttpResponse:
    filterset = TemplateFilter(request.GET, queryset=template_catalog(request.user))
    valid = filterset.is_valid()
    results = filterset.qs if valid else filterset.queryset.none()
    catalog_page = template_catalog_page(results, request.GET.get("page"), settings.CATALOG_PAGE_SIZE)
    query = request.GET.copy()
    query.pop("page", None)
    facet_query = query.copy()
    facet_query.pop("tag", None)
    context = {
        "filter": filterset,
        "page": catalog_page.page,
        "templates": catalog_page.templates,
        "query": query.urlencode(),
        "facets": template_tag_facets(results, result_count=catalog_page.page.paginator.count) if valid else [],
        "facet_query": facet_query.urlencode(),
    }
    # htmx swaps only the results; a plain request (no JavaScript) gets the whole page.
    name = "catalog/_results.html" if request.headers.get("HX-Request") else "catalog/template_list.html"
    return render(request, name, context)


@require_GET
def template_page(request: HttpRequest, name: str) -> HttpResponse:
    template = template_detail(request.user, name)
    if template is None:
        # 404, not 403: a private template's existence is itself private.
        raise Http404("No such template.")
    visible = templates_visible_to(request.user)
    latest = template.latest_version
    context = {
        "template": template,
        "latest": latest,
        "manifest": latest.manifest,
        "versions": template_versions_sorted(template),
        "tags": template.tags.all(),
        "requires": latest.requirements.filter(template__in=visible).select_related("template"),
        "required_by": visible.filter(latest_version__requirements__template=template).distinct().order_by("name"),
    }
    return render(request, "catalog/template_page.html", context)


def _visible_version(request: HttpRequest, name: str, version: str) -> TemplateVersion:
    template = template_detail(request.user, name)
    if template is None:
        raise Http404("No such template.")
    found = TemplateVersion.objects.select_related("template__publisher").filter(template=template, version=version).first()
    if found is None:
        raise Http404("No such version.")
    return found


@require_GET
def version_page(request: HttpRequest, name: str, version: str) -> HttpResponse:
    found = _visible_version(request, name, version)
    context = {
        "template": found.template,
        "version": found,
        "build": found.builds.first(),
        "can_build": user_can_publish_to(request.user, found.template.publisher) if request.user.is_authenticated else False,
    }
    return render(request, "catalog/version_page.html", context)


@require_GET
def version_build_status(request: HttpRequest, name: str, version: str) -> HttpResponse:
    found = _visible_version(request, name, version)
    return render(request, "catalog/_build.html", {"version": found, "build": found.builds.first()})


@login_required
@require_POST
def version_build(request: HttpRequest, name: str, version: str) -> HttpResponse:
    found = _visible_version(request, name, version)
    if not user_can_publish_to(request.user, found.template.publisher):
        raise PermissionDenied("Only members of the publisher can build its versions.")
    try:
        build_request(version=found, requested_by=request.user)
    except BuildFailed as exc:
        messages.error(request, str(exc))
    return redirect("catalog:version_page", name=name, version=version)
