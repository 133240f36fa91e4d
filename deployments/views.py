"""The deployments' pages: deploy, one deployment (live), my deployments, and the
stop / restart / delete buttons. Thin: reads through selectors, writes through services."""

import hashlib
from dataclasses import dataclass
from decimal import Decimal

from csp.decorators import csp_update
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from hub_site.backends import runner_for
from runners.base import RunnerError
from runners.scheduler import NoNodeFits, place
from templates_catalog.manifest import Kind
from templates_catalog.models import Template, TemplateVersion
from templates_catalog.selectors import template_detail
from templates_catalog.specs import manifest_of, resources_of

from .endpoint_tokens import endpoint_token_create, endpoint_token_revoke, endpoint_token_rotate
from .examples import TOKEN_VARIABLE, endpoint_examples
from .forms import DeployForm, EndpointTokenForm, TryForm
from .gateway import gateway_url
from .graphs import graph_of
from .job_views import job_start
from .models import Deployment
from .selectors import (
    deployment_events,
    deployment_of,
    deployment_usage,
    deployments_of,
    endpoint_token_of,
    endpoint_tokens_of,
    node_capacities,
    schedulable_nodes,
)
from .services import (
    DeploymentRejected,
    deployment_create,
    deployment_delete,
    deployment_plan,
    deployment_restart,
    deployment_stop,
)
from .transitions import TransitionRefused
from .try_it import TryResult, deployment_try, try_spec_of

State = Deployment.State
LOG_TAIL_LINES = 200
# States whose page keeps asking for news: the flow still moves them (every second), or a
# request may wake it or the idle timeout send it to sleep (every few seconds).
STATE_POLLED = frozenset(Deployment.IN_FLIGHT) | {State.RUNNING, State.SLEEPING}
STATE_POLL_SECONDS_MOVING = 1
STATE_POLL_SECONDS_SETTLED = 5
# States whose process may still write to its log.
LOG_POLLED = frozenset(Deployment.IN_FLIGHT) | {State.RUNNING}
# The session key of an endpoint token's secret just minted: shown by the next GET, then forgotten.
NEW_ENDPOINT_TOKEN = "new_endpoint_token"


@dataclass(frozen=True)
class NodePreview:
    node: str = ""
    price_per_hour: Decimal | None = None
    problem: str = ""


# --- deploy ------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def deploy_latest(request: HttpRequest, name: str) -> HttpResponse:
    template = _visible_template(request, name)
    if template.latest_version is None:
        raise Http404("This template has no version yet.")
    return _deploy(request, template.latest_version)


@login_required
@require_http_methods(["GET", "POST"])
def deploy_version(request: HttpRequest, name: str, version: str) -> HttpResponse:
    template = _visible_template(request, name)
    found = TemplateVersion.objects.filter(template=template, version=version).first()
    if found is None:
        raise Http404("No such version.")
    found.template = template
    return _deploy(request, found)


def _visible_template(request: HttpRequest, name: str) -> Template:
    template = template_detail(request.user, name)
    if template is None:
        # 404, not 403: a private template's existence is itself private.
        raise Http404("No such template.")
    return template


def _deploy(request: HttpRequest, version: TemplateVersion) -> HttpResponse:
    manifest = manifest_of(version)
    if manifest.kind is Kind.JOB:
        return job_start(request, version)
    if request.method == "GET" or version.yanked:
        return _deploy_page(request, version, DeployForm(manifest), status=200)
    form = DeployForm(manifest, request.POST)
    if not form.is_valid():
        return _deploy_page(request, version, form, status=400)
    try:
        result = deployment_create(
            owner=request.user, version=version, inputs=form.inputs(),
            idempotency_key=str(form.cleaned_data["idempotency_key"]), idle_timeout_seconds=form.idle_timeout(),
        )
    except DeploymentRejected as exc:
        form.add_service_errors(exc.errors)
        if any(field == "idempotency_key" for field, _ in exc.errors):
            # The page was submitted before with other values: a fresh key makes a new request.
            form = _with_fresh_key(manifest, form)
        return _deploy_page(request, version, form, status=exc.status)
    return _see_other(reverse("deployments:detail", args=[result.deployment.handle]))


def _with_fresh_key(manifest, used: DeployForm) -> DeployForm:
    data = used.data.copy()
    data["idempotency_key"] = str(DeployForm(manifest).initial["idempotency_key"])
    fresh = DeployForm(manifest, data)
    fresh.is_valid()
    fresh.add_error(None, "This page was already used to deploy with other values. Press Deploy again to make a new deployment.")
    return fresh


def _deploy_page(request: HttpRequest, version: TemplateVersion, form: DeployForm, *, status: int) -> HttpResponse:
    template = version.template
    latest = template.latest_version
    manifest = manifest_of(version)
    context = {
        "template": template,
        "version": version,
        "manifest": manifest,
        "resources": manifest.resources,
        "form": form,
        "preview": _node_preview(manifest) if not version.yanked else NodePreview(),
        **(_graph_preview(request, version) if manifest.requires and not version.yanked else {}),
        "latest": latest if latest and not latest.yanked and latest.pk != version.pk else None,
    }
    return render(request, "deployments/deploy.html", context, status=status)


def _graph_preview(request: HttpRequest, version: TemplateVersion) -> dict:
    """The plan of an app's whole graph: each part, where it would run (or what it
    reuses) and its price, or why the graph cannot be deployed."""
    try:
        plan = deployment_plan(owner=request.user, version=version)
    except DeploymentRejected as exc:
        return {"graph_problem": "; ".join(message for _, message in exc.errors)}
    return {"plan": plan, "graph_problem": plan.problem}


def _node_preview(manifest) -> NodePreview:
    """Where the deployment would go if deployed now, and what it would cost an hour."""
    nodes = list(schedulable_nodes())
    if not nodes:
        # The first deploy registers this machine as the local node (deployments.nodes).
        return NodePreview(node="this machine (registered on the first deploy)", price_per_hour=Decimal(0))
    try:
        placement = place(resources_of(manifest), node_capacities(nodes))
    except NoNodeFits as exc:
        return NodePreview(problem=str(exc))
    return NodePreview(node=placement.node, price_per_hour=placement.price_per_hour)


# --- one deployment ----------------------------------------------------------------


# A "Try it" answer may be an image, which the page shows as a data: URL (of an image type only).
TRY_IT_CSP = {"img-src": ["data:"]}


@login_required
@require_GET
@csp_update(TRY_IT_CSP)
def deployment_page(request: HttpRequest, handle: str) -> HttpResponse:
    deployment = _own(request, handle)
    return _deployment_page(request, deployment, EndpointTokenForm(), status=200)


def _deployment_page(request: HttpRequest, deployment: Deployment, token_form: EndpointTokenForm, *, status: int,
                     try_form: TryForm | None = None, try_result: TryResult | None = None) -> HttpResponse:
    created = _created_once(request, deployment)
    spec = try_spec_of(deployment)
    context = {
        "try_form": try_form or (TryForm(spec) if spec else None),
        "try_result": try_result,
        "deployment": deployment,
        "template": deployment.version.template,
        "version": deployment.version,
        "token_form": token_form,
        "tokens": list(endpoint_tokens_of(deployment)),
        "created": created,
        "examples": endpoint_examples(
            gateway_url=gateway_url(request, deployment.handle), manifest=manifest_of(deployment.version),
            readme=deployment.version.readme, secret=created["secret"] if created else None,
        ),
        "token_variable": TOKEN_VARIABLE,
        **_state_context(request, deployment),
        **_log_context(deployment),
    }
    response = render(request, "deployments/deployment.html", context, status=status)
    # The page may show a token's secret once: never let a cache keep it.
    response["Cache-Control"] = "no-store"
    return response


def _created_once(request: HttpRequest, deployment: Deployment) -> dict | None:
    created = request.session.get(NEW_ENDPOINT_TOKEN)
    if request.method != "GET" or not created or created.get("handle") != deployment.handle:
        return None
    return request.session.pop(NEW_ENDPOINT_TOKEN)


@login_required
@require_GET
def deployment_state(request: HttpRequest, handle: str) -> HttpResponse:
    """The state, the reason, the actions and the event log: polled while in flight."""
    deployment = _own(request, handle)
    context = _state_context(request, deployment)
    if request.GET.get("since") == context["state_digest"]:
        return HttpResponse(status=204)  # unchanged: htmx swaps nothing
    return render(request, "deployments/_state.html", {"deployment": deployment, **context})


@login_required
@require_GET
def deployment_logs(request: HttpRequest, handle: str) -> HttpResponse:
    """The process log: swapped only when it changed, so the reader keeps their place."""
    deployment = _own(request, handle)
    context = _log_context(deployment)
    if context["log_polled"] and request.GET.get("since") == context["log_digest"]:
        return HttpResponse(status=204)
    return render(request, "deployments/_logs.html", {"deployment": deployment, **context})


@login_required
@require_POST
@csp_update(TRY_IT_CSP)
def deployment_try_view(request: HttpRequest, handle: str) -> HttpResponse:
    """The "Try it" form: htmx swaps in the panel with the answer; without JavaScript, the page."""
    deployment = _own(request, handle)
    spec = try_spec_of(deployment)
    if spec is None:
        raise Http404("This template has no Try it form.")
    form = TryForm(spec, request.POST)
    result = None
    if form.is_valid():
        result = deployment_try(deployment=deployment, spec=spec, values=form.values(), host=request.get_host())
    if request.headers.get("HX-Request") == "true":
        # 200 even for a bad field: htmx swaps in only 2xx answers, and the form shows the error.
        return render(request, "deployments/_try.html", {"deployment": deployment, "try_form": form, "try_result": result})
    status = 200 if form.is_valid() else 400
    return _deployment_page(request, deployment, EndpointTokenForm(), status=status, try_form=form, try_result=result)


def _own(request: HttpRequest, handle: str) -> Deployment:
    deployment = deployment_of(request.user, handle)
    if deployment is None:
        raise Http404("No such deployment.")
    return deployment


def _state_context(request: HttpRequest, deployment: Deployment) -> dict:
    events = list(deployment_events(deployment))
    last_event = events[-1].pk if events else 0
    usage = deployment_usage(deployment)
    graph = graph_of(deployment) if deployment.lock else ()
    return {
        "events": events,
        "usage": usage,
        "graph": graph,
        "gateway_url": gateway_url(request, deployment.handle),
        "state_polled": deployment.state in STATE_POLLED,
        "state_moving": deployment.state in Deployment.IN_FLIGHT,
        "state_poll_seconds": STATE_POLL_SECONDS_MOVING if deployment.state in Deployment.IN_FLIGHT else STATE_POLL_SECONDS_SETTLED,
        # The awake time is left out: it grows every second, and the page need not be redrawn for it alone.
        "state_digest": _digest(f"{deployment.state}|{deployment.updated_at.isoformat()}|{last_event}|"
                                f"{usage.requests}|{usage.errors}|{deployment.wake_started_at}|{_graph_states(graph)}"),
    }


def _graph_states(nodes) -> str:
    """The parts' states, so the polled page redraws when one of them moves."""
    return ",".join(f"{node.deployment.handle}:{node.deployment.state}:{_graph_states(node.children)}" for node in nodes)


def _log_context(deployment: Deployment) -> dict:
    log, log_problem = _process_log(deployment)
    return {
        "log": log,
        "log_problem": log_problem,
        "log_polled": deployment.state in LOG_POLLED,
        "log_digest": _digest(f"{log_problem}|{log}"),
    }


def _process_log(deployment: Deployment) -> tuple[str, str]:
    if deployment.node is None:
        return "", ""
    try:
        return runner_for(deployment.node).logs(deployment.handle, tail=LOG_TAIL_LINES), ""
    except RunnerError as exc:
        return "", f"The logs cannot be read right now: node {deployment.node.name} did not answer ({exc})."


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# --- endpoint tokens ----------------------------------------------------------------


@login_required
@require_POST
def endpoint_token_create_view(request: HttpRequest, handle: str) -> HttpResponse:
    deployment = _own(request, handle)
    form = EndpointTokenForm(request.POST)
    if not form.is_valid():
        return _deployment_page(request, deployment, form, status=400)
    try:
        created = endpoint_token_create(
            deployment=deployment, created_by=request.user, name=form.cleaned_data["name"], expires_at=form.expires_at(),
        )
    except DeploymentRejected as exc:
        form.add_error(None, str(exc))
        return _deployment_page(request, deployment, form, status=exc.status)
    return _show_secret_once(request, deployment, created)


@login_required
@require_http_methods(["GET", "POST"])
def endpoint_token_revoke_view(request: HttpRequest, handle: str, token_id: int) -> HttpResponse:
    """GET asks for confirmation (a page, so it works without JavaScript); POST revokes."""
    deployment, token = _own_token(request, handle, token_id)
    if request.method == "GET":
        return _confirm(request, deployment, token, "revoke")
    endpoint_token_revoke(token=token, revoked_by=request.user)
    messages.success(request, f"Token “{token.name}” ({token.prefix}…) is revoked: it no longer opens the endpoint.")
    return _see_other(reverse("deployments:detail", args=[handle]) + "#tokens")


@login_required
@require_http_methods(["GET", "POST"])
def endpoint_token_rotate_view(request: HttpRequest, handle: str, token_id: int) -> HttpResponse:
    """GET asks for confirmation; POST replaces the secret and shows the new one once."""
    deployment, token = _own_token(request, handle, token_id)
    if request.method == "GET":
        return _confirm(request, deployment, token, "rotate")
    try:
        created = endpoint_token_rotate(token=token, rotated_by=request.user)
    except DeploymentRejected as exc:
        messages.error(request, str(exc))
        return _see_other(reverse("deployments:detail", args=[handle]) + "#tokens")
    return _show_secret_once(request, deployment, created)


def _confirm(request: HttpRequest, deployment: Deployment, token, action: str) -> HttpResponse:
    return render(request, "deployments/token_confirm.html", {"deployment": deployment, "token": token, "action": action})


def _own_token(request: HttpRequest, handle: str, token_id: int):
    deployment = _own(request, handle)
    token = endpoint_token_of(deployment, token_id)
    if token is None:
        raise Http404("No such token.")
    return deployment, token


def _show_secret_once(request: HttpRequest, deployment: Deployment, created) -> HttpResponse:
    # Post/redirect/get: a reload of the page that shows the secret must not mint another.
    request.session[NEW_ENDPOINT_TOKEN] = {"handle": deployment.handle, "secret": created.secret, "name": created.token.name}
    return _see_other(reverse("deployments:detail", args=[deployment.handle]) + "#new-token")


# --- my deployments and the buttons ------------------------------------------------


@login_required
@require_GET
def deployment_list(request: HttpRequest) -> HttpResponse:
    deployments = list(deployments_of(request.user))
    return render(request, "deployments/list.html", {"deployments": deployments})


@login_required
@require_POST
def deployment_stop_view(request: HttpRequest, handle: str) -> HttpResponse:
    deployment = _own(request, handle)
    _act(request, lambda: deployment_stop(deployment=deployment), f"Stopping {handle}.")
    return _back(request, handle)


@login_required
@require_POST
def deployment_restart_view(request: HttpRequest, handle: str) -> HttpResponse:
    deployment = _own(request, handle)
    _act(request, lambda: deployment_restart(deployment=deployment), f"Restarting {handle}.")
    return _back(request, handle)


@login_required
@require_http_methods(["GET", "POST"])
def deployment_delete_view(request: HttpRequest, handle: str) -> HttpResponse:
    """GET asks for confirmation (a page, so it works without JavaScript); POST deletes."""
    deployment = _own(request, handle)
    if request.method == "GET":
        return render(request, "deployments/delete.html", {"deployment": deployment})
    if _act(request, lambda: deployment_delete(deployment=deployment), f"Deleted {handle}: it is stopping and its data is removed."):
        return _see_other(reverse("deployments:list"))
    return _back(request, handle)


def _act(request: HttpRequest, action, done: str) -> bool:
    try:
        action()
    except (DeploymentRejected, TransitionRefused) as exc:
        messages.error(request, str(exc))
        return False
    messages.success(request, done)
    return True


def _back(request: HttpRequest, handle: str) -> HttpResponse:
    """Back where the button was: the list, or the deployment's page."""
    wanted = request.POST.get("next", "")
    if wanted and url_has_allowed_host_and_scheme(wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return _see_other(wanted)
    return _see_other(reverse("deployments:detail", args=[handle]))


def _see_other(url: str) -> HttpResponse:
    """After a POST: the browser GETs the next page (303), so reloading it posts nothing."""
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response
