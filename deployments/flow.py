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
from runners.scheduler import NoNodeFits, Placement, place
from templates_catalog.builds import build_request
from templates_catalog.models import Build
from templates_catalog.specs import manifest_of, resources_of

from .graphs import requirements_waiting
from .models import Deployment, Node
from .nodes import node_register_local
from .selectors import node_capacities, schedulable_capacities
from .services import deployment_fail
from .specs import launch_spec_for
from .transitions import TransitionRefused, deployment_count_restart, deployment_transition

logger = logging.getLogger(__name__)
State = Deployment.State
BUILD_POLL_SECONDS = 2.0  # the longest wait between two looks at a build
READY_POLL_SECONDS = 1.0  # the longest wait between two looks at the ready path
FIRST_POLL_SECONDS = 0.1
READY_REQUEST_TIMEOUT = 2.0
LOG_TAIL_LINES = 20
PLACEMENT_ATTEMPTS = 3
REQUIREMENTS_POLL_SECONDS = 1.0


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
    waiting, failed = requirements_waiting(deployment)
    if failed:
        return _fail(deployment, failed)
    if waiting:
        # Its requirements come up in their own flows; it starts when they all answer.
        return _poll_after(deployment.created_at, longest=REQUIREMENTS_POLL_SECONDS)
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
        return _poll_after(build.created_at, longest=BUILD_POLL_SECONDS)
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
    resources = resources_of(manifest_of(deployment.version))
    if _back_on_own_node(deployment, resources):
        return None
    passed_over: set[str] = set()
    for _ in range(PLACEMENT_ATTEMPTS):
        capacities = [node for node in schedulable_capacities() if node.name not in passed_over]
        if not capacities and not passed_over:
            return _fail(deployment, _placed_again_because(
                deployment, "every node is drained or lost: no node takes new deployments; ask the hub's operators"))
        try:
            placement = place(resources, capacities)
        except NoNodeFits as exc:
            return _fail(deployment, _placed_again_because(deployment, str(exc)))
        if _claim(deployment, placement, resources):
            return None
        passed_over.add(placement.node)  # taken meanwhile by another placement, or drained
    return FIRST_POLL_SECONDS  # every choice was taken meanwhile: place again with fresh numbers


def _placed_again_because(deployment: Deployment, why_nothing_fits: str) -> str:
    """A deployment sent back to scheduling because its node was lost carries that in its
    `reason` (see deployments.reconcile): its failure says both."""
    if not deployment.reason:
        return why_nothing_fits
    return f"{deployment.reason}; no other node fits it: {why_nothing_fits}"


def _back_on_own_node(deployment: Deployment, resources) -> bool:
    """A wake goes back to the node it slept on when it still fits there: its volume is there."""
    own = deployment.node
    if deployment.wake_started_at is None or own is None:
        return False
    return _claim(deployment, Placement(node=own.name, price_per_hour=own.price_per_hour), resources,
                  how="back on its own node,")


def _claim(deployment: Deployment, placement: Placement, resources, *, how: str = "placed") -> bool:
    """Move the deployment onto the chosen node if it still fits there. Placement reads
    every node unlocked (cheap); only the chosen node's row is locked, and its usage read
    again under that lock, so two placements at once never both take its last GPU."""
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(name=placement.node, schedulable=True, lost_reason="").first()
        if node is None:
            return False
        try:
            place(resources, node_capacities([node]))
        except NoNodeFits:
            return False
        deployment_transition(
            deployment_id=deployment.pk, to=State.STARTING, expect=(State.SCHEDULING,), node=node,
            price_per_hour=node.price_per_hour, message=f"{how} on {node.name} at {node.price_per_hour}/hour", reason="",
        )
    return True


def _start(deployment: Deployment) -> float | None:
    runner = runner_for(deployment.node)
    try:
        run = _launched(runner, deployment)
    except NodeUnreachable as exc:
        return _fail(deployment, f"node {deployment.node.name} unreachable: {exc}")
    except RunnerError as exc:
        return _fail(deployment, f"the run could not be launched on {deployment.node.name}: {exc}")
    if run.phase == RunPhase.EXITED:
        if deployment.restarts == 0:
            # The first launch: a template that never starts gains nothing from a retry.
            return _fail(deployment, exit_reason(runner, run, "exited while starting"))
        return _relaunch_while_starting(runner, deployment, run)
    ready_path = manifest_of(deployment.version).serve.ready_path
    if run.endpoint and _answers(run.endpoint + ready_path):
        deployment_transition(
            deployment_id=deployment.pk, to=State.RUNNING, expect=(State.STARTING,), endpoint=run.endpoint,
            message=f"ready at {run.endpoint}",
        )
        return None
    timeout = settings.DEPLOY_READY_TIMEOUT_SECONDS
    if timezone.now() - deployment.started_at > timedelta(seconds=timeout):
        reason = exit_reason(runner, run, f"was not ready at {ready_path} within {timeout} seconds")
        stop_quietly(runner, deployment.handle)
        return _fail(deployment, reason)
    return _poll_after(deployment.started_at, longest=READY_POLL_SECONDS)


def _poll_after(since, *, longest: float) -> float:
    """Look again soon at first (an image already built is a cache hit in a blink; a small
    model is ready in a second), then less often the longer it takes: a twentieth of the
    time waited so far, within [FIRST_POLL_SECONDS, longest]."""
    waited = (timezone.now() - since).total_seconds()
    return min(longest, max(FIRST_POLL_SECONDS, waited / 20))


def _relaunch_while_starting(runner: Runner, deployment: Deployment, run: RunState) -> float | None:
    """A relaunched run died again before it was ready: that uses up another restart."""
    used_up = restarts_used_up(runner, deployment, run)
    if used_up:
        return _fail(deployment, used_up)
    try:
        runner.launch(launch_spec_for(deployment))
    except RunnerError as exc:
        return _fail(deployment, f"the run died ({how_it_died(run)}) and could not be relaunched: {exc}")
    try:
        deployment_count_restart(
            deployment_id=deployment.pk,
            message=f"restarted after {how_it_died(run)} before it was ready",
        )
    except TransitionRefused:
        stop_quietly(runner, deployment.handle)  # stopped or deleted meanwhile: the new run must not outlive that
        raise
    return FIRST_POLL_SECONDS


def restarts_used_up(runner: Runner, deployment: Deployment, run: RunState) -> str:
    """The failure reason when a dead run may not be relaunched any more, else ""."""
    if deployment.restarts < settings.DEPLOY_MAX_RESTARTS:
        return ""
    return exit_reason(runner, run, f"died again after {deployment.restarts} restarts")


def how_it_died(run: RunState) -> str:
    return f"exit code {run.exit_code}" if run.exit_code is not None else f"its run was {run.phase}"


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


def stop_quietly(runner: Runner, handle: str) -> None:
    try:
        runner.stop(handle)
    except RunnerError as exc:
        logger.warning("could not stop %s: %s", handle, exc)


def _fail(deployment: Deployment, reason: str) -> None:
    """Fail it, and what it was started for (services.deployment_fail)."""
    try:
        deployment_fail(deployment=deployment, reason=reason, expect=(deployment.state,))
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
