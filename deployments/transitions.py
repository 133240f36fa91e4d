"""The one place that writes a deployment's `state`.

Every change goes through `deployment_transition`: it checks the move against ALLOWED,
writes the state and an event row in one transaction, and sends the follow-up task
only after that transaction commits.
"""

from django.db import transaction
from django.utils import timezone

from .models import Deployment, DeploymentEvent

State = Deployment.State

ALLOWED: dict[str, frozenset[str]] = {
    State.PENDING: frozenset({State.BUILDING, State.FAILED, State.STOPPING}),
    State.BUILDING: frozenset({State.SCHEDULING, State.FAILED, State.STOPPING}),
    State.SCHEDULING: frozenset({State.STARTING, State.FAILED, State.STOPPING}),
    State.STARTING: frozenset({State.RUNNING, State.FAILED, State.STOPPING}),
    # starting: the reconciler relaunched a run that died; scheduling: moved off a drained node.
    State.RUNNING: frozenset({State.STARTING, State.SCHEDULING, State.STOPPING, State.FAILED}),
    State.STOPPING: frozenset({State.STOPPED, State.FAILED}),
    State.STOPPED: frozenset({State.PENDING}),
    # stopping: a failed deployment may still have a run to clean up.
    State.FAILED: frozenset({State.PENDING, State.STOPPING}),
}
# Entering these states hands the deployment to the flow task.
ADVANCED_BY_FLOW = frozenset(Deployment.IN_FLIGHT)


class TransitionRefused(Exception):
    """The move is not allowed from the deployment's current state; the message says why."""


def deployment_open(**fields) -> Deployment:
    """Create a deployment in `pending`, with its first event; the flow starts on commit."""
    with transaction.atomic():
        deployment = Deployment.objects.create(**fields)
        DeploymentEvent.objects.create(deployment=deployment, to_state=deployment.state, message="deployment requested")
        _follow_up(deployment)
    return deployment


def deployment_transition(
    *, deployment_id: int, to: str, message: str = "", expect: tuple[str, ...] | None = None, **fields
) -> Deployment:
    """Move a deployment to `to`. `expect`: the states the caller saw; if the deployment
    has moved on since, the move is refused instead of overwriting someone else's.
    Moving to the current state again is a no-op, so a redelivered task is harmless."""
    with transaction.atomic():
        # Locked: two tasks (the flow, the reconciler, a stop) may race for one deployment.
        deployment = Deployment.objects.select_for_update().get(pk=deployment_id)
        current = deployment.state
        if expect is not None and current not in expect:
            raise TransitionRefused(f"{deployment.handle} is {current}, not {' or '.join(expect)}")
        if current == to:
            return deployment
        if to not in ALLOWED[current]:
            raise TransitionRefused(f"{deployment.handle} cannot go from {current} to {to}")
        if to == State.FAILED and not message:
            raise ValueError("a failure needs a reason a person can act on")
        for name, value in {**_implied_fields(to, message), **fields}.items():
            setattr(deployment, name, value)
        deployment.state = to
        deployment.save()
        DeploymentEvent.objects.create(deployment=deployment, from_state=current, to_state=to, message=message)
        _follow_up(deployment)
    return deployment


def deployment_count_restart(*, deployment_id: int, message: str) -> Deployment:
    """A run relaunched while its deployment was still `starting` (it died before it was
    ready): one more restart, and the ready timeout counts afresh. The state stays
    `starting`, so this is not a move of ALLOWED; the event log still shows it."""
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment_id)
        if deployment.state != State.STARTING:
            raise TransitionRefused(f"{deployment.handle} is {deployment.state}, not starting")
        deployment.restarts += 1
        deployment.started_at = timezone.now()
        deployment.save(update_fields=["restarts", "started_at"])
        DeploymentEvent.objects.create(
            deployment=deployment, from_state=State.STARTING, to_state=State.STARTING, message=message
        )
    return deployment


def _implied_fields(to: str, message: str) -> dict:
    now = timezone.now()
    if to == State.PENDING:
        return {"reason": "", "endpoint": "", "stopped_at": None}
    if to == State.STARTING:
        return {"started_at": now}
    if to == State.FAILED:
        return {"reason": message, "stopped_at": now}
    if to == State.STOPPED:
        return {"stopped_at": now, "endpoint": ""}
    return {}


def _follow_up(deployment: Deployment) -> None:
    if deployment.state in ADVANCED_BY_FLOW:
        deployment_id = deployment.pk
        transaction.on_commit(lambda: send_progress(deployment_id))


def send_progress(deployment_id: int, *, countdown: float = 0) -> None:
    from .tasks import deployment_progress

    deployment_progress.apply_async((deployment_id,), countdown=countdown)
