"""The jobs' pages: run one (the deploy page of a `kind: job` template), watch it live,
publish its outputs as a new version, and delete it. Thin: reads through selectors, writes
through services."""

import hashlib

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hub_site.backends import runner_for
from runners.base import RunnerError
from templates_catalog.access import publishers_of
from templates_catalog.models import TemplateVersion
from templates_catalog.specs import manifest_of

from .job_deletion import job_delete
from .job_forms import JobForm, PromoteForm
from .job_selectors import job_of, jobs_of
from .jobs import UploadedInput, job_create
from .models import Job
from .promote import job_promote
from .services import DeploymentRejected

LOG_TAIL_LINES = 200
JOB_LIST_LIMIT = 200


def job_start(request: HttpRequest, version: TemplateVersion) -> HttpResponse:
    """The deploy page of a job template: its inputs, a file upload for a `file` input."""
    manifest = manifest_of(version)
    if request.method == "GET" or version.yanked:
        return _start_page(request, version, JobForm(manifest), status=200)
    form = JobForm(manifest, request.POST, request.FILES)
    if not form.is_valid():
        return _start_page(request, version, form, status=400)
    uploads = [UploadedInput(name=name, file=upload, filename=upload.name) for name, upload in form.uploads().items()]
    try:
        job = job_create(owner=request.user, version=version, inputs=form.values(), files=uploads,
                         idempotency_key=str(form.cleaned_data["idempotency_key"]))
    except DeploymentRejected as exc:
        form.add_service_errors(exc.errors)
        return _start_page(request, version, form, status=exc.status)
    return HttpResponseRedirect(reverse("deployments:job", args=[job.handle]), status=303)


def _start_page(request: HttpRequest, version: TemplateVersion, form: JobForm, *, status: int) -> HttpResponse:
    manifest = manifest_of(version)
    context = {"template": version.template, "version": version, "manifest": manifest,
               "resources": manifest.resources, "form": form}
    return render(request, "deployments/job_start.html", context, status=status)


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    return render(request, "deployments/job_list.html", {"jobs": jobs_of(request.user)[:JOB_LIST_LIMIT]})


@login_required
@require_GET
def job_page(request: HttpRequest, handle: str) -> HttpResponse:
    job = _own(request, handle)
    return render(request, "deployments/job.html", _live_context(request, job, _promote_form(request, job)))


@login_required
@require_GET
def job_live(request: HttpRequest, handle: str) -> HttpResponse:
    """The state, events, log, outputs and metrics: polled while the job is in flight."""
    job = _own(request, handle)
    context = _live_context(request, job, _promote_form(request, job))
    if request.GET.get("since") == context["live_digest"]:
        return HttpResponse(status=204)
    return render(request, "deployments/_job_live.html", context)


@login_required
@require_POST
def job_promote_view(request: HttpRequest, handle: str) -> HttpResponse:
    job = _own(request, handle)
    form = PromoteForm(publishers_of(request.user), request.POST)
    if form.is_valid():
        try:
            result = job_promote(job=job, user=request.user, publisher=form.cleaned_data["publisher"],
                                 name=form.cleaned_data["name"], version=form.cleaned_data["version"])
        except DeploymentRejected as exc:
            form.add_service_errors(exc.errors)
        else:
            created = result.version
            messages.success(request, f"Published {created.template.name} {created.version} from {job.handle}.")
            return HttpResponseRedirect(
                reverse("catalog:version_page", args=[created.template.name, created.version]), status=303)
    return render(request, "deployments/job.html", _live_context(request, job, form), status=400)


@login_required
@require_http_methods(["GET", "POST"])
def job_delete_view(request: HttpRequest, handle: str) -> HttpResponse:
    """GET asks for confirmation (a page, so it works without JavaScript); POST deletes."""
    job = _own(request, handle)
    if request.method == "GET":
        return render(request, "deployments/job_delete.html", {"job": job, "in_flight": job.state in Job.IN_FLIGHT})
    try:
        job_delete(job=job, by=request.user)
    except DeploymentRejected as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(reverse("deployments:job", args=[handle]), status=303)
    messages.success(request, f"Deleted job {handle}, with the files it stored that no other job uses.")
    return HttpResponseRedirect(reverse("deployments:job_list"), status=303)


def _own(request: HttpRequest, handle: str) -> Job:
    job = job_of(request.user, handle)
    if job is None:
        raise Http404("No such job.")
    return job


def _promote_form(request: HttpRequest, job: Job) -> PromoteForm:
    name = f"{job.version.template.name}-tuned"[:64]
    return PromoteForm(publishers_of(request.user), initial={"name": name})


def _live_context(request: HttpRequest, job: Job, promote_form: PromoteForm) -> dict:
    events = list(job.events.all())
    artifacts = list(job.artifacts.all())
    log, log_problem = _log(job)
    serves = manifest_of(job.version).serve is not None
    return {
        "job": job, "template": job.version.template, "version": job.version, "events": events,
        "artifacts": artifacts, "log": log, "log_problem": log_problem,
        "metrics": {name: value for name, value in job.metrics.items() if isinstance(value, str | int | float)},
        "in_flight": job.state in Job.IN_FLIGHT,
        "can_promote": job.state == Job.State.SUCCEEDED and serves and promote_form.fields["publisher"].queryset.exists(),
        "serves": serves, "promote_form": promote_form,
        "live_digest": hashlib.sha256(f"{job.state}|{job.updated_at.isoformat()}|{len(events)}|{log_problem}|{log}"
                                      .encode()).hexdigest()[:20],
    }


def _log(job: Job) -> tuple[str, str]:
    if job.state not in Job.IN_FLIGHT or job.node is None:
        return job.log_tail, ""
    try:
        return runner_for(job.node).logs(job.handle, tail=LOG_TAIL_LINES), ""
    except RunnerError as exc:
        return "", f"The log cannot be read right now: node {job.node.name} did not answer ({exc})."
