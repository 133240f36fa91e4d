import hashlib

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from builders.errors import BuildFailed

from .access import may_build
from .builds import build_request
from .filters import TemplateFilter
from .manifest import Tier
from .models import Build, BundleProblem, TemplateVersion
from .selectors import template_catalog, template_catalog_page, template_detail, template_versions_sorted, templates_visible_to

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
    results = filterset.qs if filterset.is_valid() else filterset.queryset.none()
    catalog_page = template_catalog_page(results, request.GET.get("page"), settings.CATALOG_PAGE_SIZE)
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "filter": filterset,
        "page": catalog_page.page,
        "templates": catalog_page.templates,
        "query": query.urlencode(),
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
        **_build_context(found),
        # Found by storage_check or by a download, never by hashing the bundle on a page view.
        "bundle_problem": BundleProblem.objects.filter(version=found).first(),
        "can_build": may_build(request.user, found),
    }
    build = context["build"]
    context["build_failed_by_template"] = build is not None and build.status == Build.Status.FAILED and build.failure_kind != "hub"
    return render(request, "catalog/version_page.html", context)


@require_GET
def version_build_status(request: HttpRequest, name: str, version: str) -> HttpResponse:
    """Polled while a build runs. Answers 204 (htmx swaps nothing) while nothing changed, so
    the log a person is reading is not re-rendered under them every second."""
    context = _build_context(_visible_version(request, name, version))
    if request.GET.get("since") == context["build_digest"]:
        return HttpResponse(status=204)
    return render(request, "catalog/_build.html", context)


def _build_context(version: TemplateVersion) -> dict:
    build = version.builds.first()
    seen = f"{build.pk}|{build.status}|{build.error}|{build.image_digest}|{build.log}" if build else ""
    return {"version": version, "build": build, "build_digest": hashlib.sha256(seen.encode()).hexdigest()[:20]}


@login_required
@require_POST
def version_build(request: HttpRequest, name: str, version: str) -> HttpResponse:
    found = _visible_version(request, name, version)
    if not may_build(request.user, found):
        raise PermissionDenied("Only members of the publisher can build its versions.")
    try:
        build_request(version=found, requested_by=request.user)
    except BuildFailed as exc:
        messages.error(request, str(exc))
    return redirect("catalog:version_page", name=name, version=version)
