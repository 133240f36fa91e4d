"""The deploy flow: one step at a time, chosen by the deployment's state.

pending → (build requested) building → (image ready) scheduling → (placed) starting →
(ready path answers) running; stopping → stopped. Each step is safe to run twice: a
redelivered task finds the state moved on, or the run already launched, and does nothing.
"""

import logging
import urllib.error
import urllib.request
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from builders.errors import BuildFailed
from hub_site.backends import runner_for
from runners.base import NodeUnreachable, Runner, RunnerError, RunPhase, RunState
from runners.scheduler import NoNodeFits, place
from templates_catalog.builds import build_request
from templates_catalog.models import Build

from .models import Deployment, Node
from .nodes import node_register_local
from .selectors import node_capacities
from .specs import launch_spec_for, manifest_of, resources_of
from .transitions import TransitionRefused, deployment_transition

logger = logging.getLogger(__name__)
State = Deployment.State
BUILD_POLL_SECONDS = 2.0
READY_POLL_SECONDS = 1.0
READY_REQUEST_TIMEOUT = 2.0
LOG_TAIL_LINES = 20


def deployment_advance(*, deployment_id: int) -> float | None:
    """Advance one step. Returns the seconds after which to look again, or None when the
    deployment needs nothing more from the flow."""
    deployment = Deployment.objects.select_related("version__template", "build", "node").filter(pk=deployment_id).first()
    if deployment is None:
        return None
    step = _STEPS.get(deployment.state, _remove_if_deleted)
    try:
        return step(deployment)
    except TransitionRefused as exc:
        # A stop, a delete or the reconciler moved it first; their follow-up carries on.
        logger.info("deployment step skipped: %s", exc)
        return None
    except Exception as exc:
        logger.exception("deployment %s: the %s step crashed", deployment.handle, deployment.state)
        _fail(deployment, f"the hub hit an internal error while {deployment.state} ({type(exc).__name__}: {exc}); "
                          "report it to the hub's operators")
        return None


def _request_build(deployment: Deployment) -> float | None:
    try:
        build = build_request(version=deployment.version, requested_by=deployment.owner)
    except BuildFailed as exc:
        return _fail(deployment, str(exc))
    deployment_transition(
        deployment_id=deployment.pk, to=State.BUILDING, expect=(State.PENDING,), build=build,
        message=f"build {build.pk} requested ({build.backend})",
    )
    return None


def _await_build(deployment: Deployment) -> float | None:
    build = Build.objects.get(pk=deployment.build_id)
    if build.status in Build.ACTIVE:
        deadline = build.created_at + timedelta(seconds=settings.BUILD_TIMEOUT_SECONDS)
        if timezone.now() > deadline:
            return _fail(deployment, f"the build did not finish within {settings.BUILD_TIMEOUT_SECONDS} seconds")
        return BUILD_POLL_SECONDS
    if build.status == Build.Status.FAILED:
        return _fail(deployment, f"the build failed: {build.error}")
    how = "already built (cache hit)" if build.cache_hit else "built"
    deployment_transition(
        deployment_id=deployment.pk, to=State.SCHEDULING, expect=(State.BUILDING,),
        message=f"image {build.image_reference} {how}",
    )
    return None


def _schedule(deployment: Deployment) -> float | None:
    if not Node.objects.exists():
        node_register_local()
    resources = resources_of(manifest_of(deployment))
    with transaction.atomic():
        # Node rows locked: two deployments placed at once must not both take the last GPU.
        nodes = list(Node.objects.select_for_update().filter(schedulable=True).order_by("pk"))
        if not nodes:
            return _fail(deployment, "every node is drained: no node takes new deployments; ask the hub's operators")
        try:
            placement = place(resources, node_capacities(nodes))
        except NoNodeFits as exc:
            return _fail(deployment, str(exc))
        node = next(node for node in nodes if node.name == placement.node)
        deployment_transition(
            deployment_id=deployment.pk, to=State.STARTING, expect=(State.SCHEDULING,), node=node,
            price_per_hour=placement.price_per_hour, message=f"placed on {node.name} at {placement.price_per_hour}/hour",
        )
    return None


def _start(deployment: Deployment) -> float | None:
    runner = runner_for(deployment.node)
    try:
        run = _launched(runner, deployment)
    except NodeUnreachable as exc:
        return _fail(deployment, f"node {deployment.node.name} unreachable: {exc}")
    except RunnerError as exc:
        return _fail(deployment, f"the run could not be launched on {deployment.node.name}: {exc}")
    if run.phase == RunPhase.EXITED:
        return _fail(deployment, exit_reason(runner, run, "exited while starting"))
    ready_path = manifest_of(deployment).serve.ready_path
    if run.endpoint and _answers(run.endpoint + ready_path):
        deployment_transition(
            deployment_id=deployment.pk, to=State.RUNNING, expect=(State.STARTING,), endpoint=run.endpoint,
            message=f"ready at {run.endpoint}",
        )
        return None
    timeout = settings.DEPLOY_READY_TIMEOUT_SECONDS
    if timezone.now() - deployment.started_at > timedelta(seconds=timeout):
        reason = exit_reason(runner, run, f"was not ready at {ready_path} within {timeout} seconds")
        _stop_quietly(runner, deployment.handle)
        return _fail(deployment, reason)
    return READY_POLL_SECONDS


def _launched(runner: Runner, deployment: Deployment) -> RunState:
    with transaction.atomic():
        # Locked while deciding to launch, so a redelivered step never launches twice.
        Deployment.objects.select_for_update().filter(pk=deployment.pk).first()
        run = runner.status(deployment.handle)
        if run.phase in (RunPhase.MISSING, RunPhase.STOPPED):
            run = runner.launch(launch_spec_for(deployment))
    return run


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=READY_REQUEST_TIMEOUT) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _stop(deployment: Deployment) -> float | None:
    message = "stopped"
    if deployment.node is not None:
        runner = runner_for(deployment.node)
        try:
            if deployment.deleted_at is not None:
                runner.remove(deployment.handle)
                message = "stopped and removed, volume included"
            else:
                runner.stop(deployment.handle)
                message = "stopped; its volume is kept"
        except RunnerError as exc:
            message = f"stopped in the hub's records; node {deployment.node.name} did not answer ({exc}), " \
                      "the reconciler stops the run when it does"
    deployment_transition(deployment_id=deployment.pk, to=State.STOPPED, expect=(State.STOPPING,), message=message)
    return None


def _remove_if_deleted(deployment: Deployment) -> None:
    if deployment.deleted_at is not None and deployment.node is not None and deployment.state != State.RUNNING:
        try:
            runner_for(deployment.node).remove(deployment.handle)
        except RunnerError as exc:
            logger.warning("could not remove deleted %s: %s (the reconciler retries)", deployment.handle, exc)
    return None


def exit_reason(runner: Runner, run: RunState, what: str) -> str:
    code = f" with exit code {run.exit_code}" if run.exit_code is not None else ""
    detail = f" ({run.detail})" if run.detail else ""
    try:
        tail = runner.logs(run.deployment, tail=LOG_TAIL_LINES).strip()
    except RunnerError:
        tail = ""
    lines = f"; last log lines:\n{tail}" if tail else "; it wrote no log lines"
    return f"the run {what}{code}{detail}{lines}"


def _stop_quietly(runner: Runner, handle: str) -> None:
    try:
        runner.stop(handle)
    except RunnerError as exc:
        logger.warning("could not stop %s: %s", handle, exc)


def _fail(deployment: Deployment, reason: str) -> None:
    try:
        deployment_transition(deployment_id=deployment.pk, to=State.FAILED, expect=(deployment.state,), message=reason)
    except TransitionRefused as exc:
        logger.info("not failing %s: %s", deployment.handle, exc)
    return None


_STEPS = {
    State.PENDING: _request_build,
    State.BUILDING: _await_build,
    State.SCHEDULING: _schedule,
    State.STARTING: _start,
    State.STOPPING: _stop,
}
