import hashlib

import yaml
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_GET, require_POST

from builders.errors import BuildFailed

from .access import may_build, may_yank
from .builds import build_request
from .cards import catalog_cards
from .filters import TemplateFilter
from .forms import YankForm
from .manifest import Tier
from .models import Build, BundleProblem, TemplateVersion
from .readme import readme_html_for_page
from .selectors import (
    template_catalog,
    template_catalog_page,
    template_detail,
    template_tag_facets,
    template_versions_with_build_status,
    templates_visible_to,
)
from .services import PublishRejected, template_version_yank

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
            "cards": catalog_cards(list(catalog.filter(tier=tier).order_by("-updated_at")[:HOME_CARDS_PER_TIER])),
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
        "cards": catalog_cards(catalog_page.templates),
        "query": query.urlencode(),
        "facets": template_tag_facets(results, result_count=catalog_page.result_count) if valid else [],
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
        "readme_html": readme_html_for_page(latest.readme_html, title=template.title),
        "versions": template_versions_with_build_status(template),
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
    return _render_version_page(request, found, yank_form=YankForm())


def _render_version_page(request: HttpRequest, found: TemplateVersion, *, yank_form: YankForm, status: int = 200) -> HttpResponse:
    is_member = may_build(request.user, found)
    context = {
        "template": found.template,
        **_build_context(found),
        # Found by storage_check or by a download, never by hashing the bundle on a page view.
        "bundle_problem": BundleProblem.objects.filter(version=found).first(),
        "can_build": is_member,
        "can_yank": is_member and not found.yanked,
        "yank_form": yank_form,
        "readme_html": readme_html_for_page(found.readme_html),
        "changelog_html": readme_html_for_page(found.changelog_html),
        "manifest_yaml": yaml.safe_dump(found.manifest, sort_keys=False, allow_unicode=True),
        # The figures a job reported, when this version was made from its outputs: scalars only.
        "provenance_metrics": {name: value for name, value in (found.provenance.get("metrics") or {}).items()
                               if isinstance(value, str | int | float)},
    }
    build = context["build"]
    context["build_failed_by_template"] = build is not None and build.status == Build.Status.FAILED and build.failure_kind != Build.FailureKind.HUB
    return render(request, "catalog/version_page.html", context, status=status)


@login_required
@require_POST
def version_yank(request: HttpRequest, name: str, version: str) -> HttpResponse:
    found = _visible_version(request, name, version)
    if not may_yank(request.user, found):
        raise PermissionDenied("Only members of the publisher can yank its versions.")
    form = YankForm(request.POST)
    if form.is_valid():
        try:
            template_version_yank(version=found, reason=form.cleaned_data["reason"])
        except PublishRejected as exc:
            form.add_error("reason", str(exc))
        else:
            messages.success(request, f"{found.template.name} {found.version} is yanked: new deploys can no longer use it.")
            return redirect("catalog:version_page", name=name, version=version)
    return _render_version_page(request, found, yank_form=form, status=400)


@require_GET
def favicon(request: HttpRequest) -> HttpResponse:
    return redirect(static("catalog/favicon.svg"), permanent=True)


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
