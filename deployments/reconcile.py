"""The reconciler: compare what the database says runs with what each node's runner
really runs, and repair the difference."""

import logging
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from hub_site.backends import runner_for
from runners.base import NodeLost, NodeUnreachable, Runner, RunnerError, RunPhase, RunState

from .flow import how_it_died, restarts_used_up
from .models import Deployment, Job, Node
from .services import deployment_fail
from .specs import launch_spec_for
from .transitions import TransitionRefused, deployment_transition

logger = logging.getLogger(__name__)
State = Deployment.State


@dataclass
class ReconcileReport:
    restarted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    placed_again: list[str] = field(default_factory=list)  # sent back to scheduling: their node was lost


def deployments_reconcile() -> ReconcileReport:
    report = ReconcileReport()
    expected: dict[int, dict[str, Deployment]] = defaultdict(dict)
    # One query for the deployments of every node.
    placed = Deployment.objects.filter(node__isnull=False, deleted_at__isnull=True).select_related("version", "build", "node")
    for deployment in placed:
        expected[deployment.node_id][deployment.handle] = deployment
    answered, lost = _look_at_every_node()
    # Lost nodes are marked before their deployments go back to scheduling, so no placement picks them.
    for node, exc in lost:
        _node_lost(node, expected[node.pk].values(), exc, report)
    if answered:
        Node.objects.filter(pk__in=[node.pk for node, _, _ in answered]).update(last_heartbeat=timezone.now(), lost_reason="")
    # A job's run belongs to the job flow (deployments.jobs) while the job is in flight: not an orphan.
    jobs = set(Job.objects.filter(state__in=Job.IN_FLIGHT).values_list("handle", flat=True))
    for node, runner, runs in answered:
        _reconcile_node(runner, runs, expected[node.pk], report, jobs=jobs)
    return report


def _look_at_every_node() -> tuple[list[tuple[Node, Runner, dict[str, RunState]]], list[tuple[Node, RunnerError]]]:
    answered, lost = [], []
    for node in Node.objects.order_by("pk"):
        runner = runner_for(node)
        try:
            answered.append((node, runner, {run.deployment: run for run in runner.list()}))
        except RunnerError as exc:
            lost.append((node, exc))
    return answered, lost


def _reconcile_node(runner: Runner, runs: dict[str, RunState], expected: dict[str, Deployment],
                    report: ReconcileReport, *, jobs: set[str]) -> None:
    for handle in runs.keys() - expected.keys() - jobs:
        # An orphan: no deployment (or a deleted one, or one moved elsewhere) owns it here.
        _quietly(runner.remove, handle)
        report.removed.append(handle)
    for handle, deployment in expected.items():
        run = runs.get(handle, RunState(deployment=handle, phase=RunPhase.MISSING))
        if deployment.state == State.RUNNING and not run.alive and deployment.sleep_started_at is None:
            _revive(runner, deployment, run, report)
        elif deployment.state in (State.STOPPED, State.FAILED) and run.alive:
            _quietly(runner.stop, handle)
            report.stopped.append(handle)
        elif deployment.state == State.SLEEPING and run.alive:
            _stop_if_still_sleeping(runner, deployment, report)


def _node_lost(node: Node, deployments, exc: RunnerError, report: ReconcileReport) -> None:
    """Send each deployment running (or starting) on a lost node back to scheduling, with
    `why` as its reason: the flow places it on the cheapest other node that fits and starts
    it there, or fails it with `why` and what no other node had. Its run on the lost node,
    should the node come back, is then an orphan there and is removed."""
    why = _why_lost(node, exc)
    logger.warning("%s: placing its deployments on other nodes", why)
    report.unreachable.append(node.name)
    Node.objects.filter(pk=node.pk).update(lost_reason=why)
    for deployment in deployments:
        if deployment.state in (State.STARTING, State.RUNNING):
            _transition(deployment, State.SCHEDULING, f"{why}: placing it on another node", report.placed_again,
                        node=None, endpoint="", reason=why)


def _why_lost(node: Node, exc: RunnerError) -> str:
    if isinstance(exc, NodeLost):
        return f"node {node.name} {exc}"
    if isinstance(exc, NodeUnreachable):
        return f"node {node.name} unreachable: {exc}"
    return f"node {node.name} failed: {exc}"


def _revive(runner: Runner, deployment: Deployment, run: RunState, report: ReconcileReport) -> None:
    how = how_it_died(run)
    used_up = restarts_used_up(runner, deployment, run)
    if used_up:
        _fail(deployment, used_up, report)
        return
    try:
        runner.launch(launch_spec_for(deployment))
    except RunnerError as exc:
        _fail(deployment, f"the run died ({how}) and could not be relaunched: {exc}", report)
        return
    restarted = _transition(deployment, State.STARTING, f"restarted after {how}", report.restarted,
                            restarts=deployment.restarts + 1)
    if not restarted:
        # Stopped or deleted meanwhile: the relaunched run must not outlive that.
        _quietly(runner.stop, deployment.handle)


def _stop_if_still_sleeping(runner: Runner, deployment: Deployment, report: ReconcileReport) -> None:
    """A sleeping deployment runs nothing. Checked again under its row lock: a wake may have
    launched a new run since the look, and that one must live."""
    with transaction.atomic():
        if not Deployment.objects.select_for_update().filter(pk=deployment.pk, state__in=[State.SLEEPING]).exists():
            return
        _quietly(runner.stop, deployment.handle)
    report.stopped.append(deployment.handle)


def _transition(deployment: Deployment, to: str, message: str, into: list[str], **fields) -> bool:
    try:
        deployment_transition(deployment_id=deployment.pk, to=to, expect=(deployment.state,), message=message, **fields)
    except TransitionRefused as exc:
        logger.info("reconciler: %s", exc)
        return False
    into.append(deployment.handle)
    return True


def _fail(deployment: Deployment, reason: str, report: ReconcileReport) -> None:
    """Fail it, and the graph above it, as the flow does (services.deployment_fail)."""
    try:
        failed = deployment_fail(deployment=deployment, reason=reason, expect=(deployment.state,))
    except TransitionRefused as exc:
        logger.info("reconciler: %s", exc)
        return
    report.failed += [each.handle for each in failed]


def _quietly(action, handle: str) -> None:
    try:
        action(handle)
    except RunnerError as exc:
        logger.warning("reconciler could not %s %s: %s", action.__name__, handle, exc)
