"""The one place that writes a deployment's `state`.

Every change goes through `deployment_transition`: it checks the move against ALLOWED,
writes the state and an event row in one transaction, and sends the follow-up task
only after that transaction commits.
"""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from .models import Deployment, DeploymentEvent
from .selectors import cost_of

State = Deployment.State

ALLOWED: dict[str, frozenset[str]] = {
    State.PENDING: frozenset({State.BUILDING, State.FAILED, State.STOPPING}),
    State.BUILDING: frozenset({State.SCHEDULING, State.FAILED, State.STOPPING}),
    State.SCHEDULING: frozenset({State.STARTING, State.FAILED, State.STOPPING}),
    State.STARTING: frozenset({State.RUNNING, State.FAILED, State.STOPPING}),
    # starting: the reconciler relaunched a run that died; scheduling: moved off a drained node;
    # sleeping: idle past its timeout, its run stopped.
    State.RUNNING: frozenset({State.STARTING, State.SCHEDULING, State.SLEEPING, State.STOPPING, State.FAILED}),
    # scheduling: woken by a request (then starting, running as any start).
    State.SLEEPING: frozenset({State.SCHEDULING, State.STOPPING, State.FAILED}),
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


def move_wanted(handle: str, current: str, to: str, *, expect: tuple[str, ...] | None,
               allowed: dict[str, set[str]], message: str) -> bool:
    """The checks every state machine here makes before a move (deployments', jobs'): False
    when it is already in `to` (a redelivered task is harmless); TransitionRefused when it
    has moved on since the caller looked, or `allowed` has no such move."""
    if expect is not None and current not in expect:
        raise TransitionRefused(f"{handle} is {current}, not {' or '.join(expect)}")
    if current == to:
        return False
    if to not in allowed[current]:
        raise TransitionRefused(f"{handle} cannot go from {current} to {to}")
    if to == "failed" and not message:
        raise ValueError("a failure needs a reason a person can act on")
    return True


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
        if not move_wanted(deployment.handle, current, to, expect=expect, allowed=ALLOWED, message=message):
            return deployment
        for name, value in {**_implied_fields(deployment, to, message), **fields}.items():
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


def _implied_fields(deployment: Deployment, to: str, message: str) -> dict:
    now = timezone.now()
    # Any move ends a sleep in progress: it either reached `sleeping` or was overtaken.
    fields = {"sleep_started_at": None, **_awake_fields(deployment, to, now), **_wake_fields(deployment, to, now)}
    if to == State.PENDING:
        fields.update(reason="", endpoint="", stopped_at=None)
    elif to == State.STARTING:
        fields.update(started_at=now)
    elif to == State.RUNNING:
        fields.update(running_since=now)
    elif to == State.SLEEPING:
        fields.update(endpoint="")
    elif to == State.FAILED:
        fields.update(reason=message, stopped_at=now)
    elif to == State.STOPPED:
        fields.update(stopped_at=now, endpoint="")
    return fields


def _awake_fields(deployment: Deployment, to: str, now: datetime) -> dict:
    """Open the billed interval on the way up; close it, adding its time and cost at the
    price of the node it ran on, on any way out."""
    if to in Deployment.AWAKE:
        return {} if deployment.awake_since else {"awake_since": now}
    if deployment.awake_since is None:
        return {}
    seconds = (now - deployment.awake_since).total_seconds()
    return {
        "awake_since": None,
        "awake_seconds": deployment.awake_seconds + seconds,
        "awake_cost": deployment.awake_cost + cost_of(seconds, deployment.price_per_hour),
    }


def _wake_fields(deployment: Deployment, to: str, now: datetime) -> dict:
    """A wake goes on through scheduling and starting; anywhere else it is over."""
    if deployment.wake_started_at is None or to in (State.SCHEDULING, State.STARTING):
        return {}
    if to == State.RUNNING:
        return {"wake_started_at": None, "last_wake_seconds": (now - deployment.wake_started_at).total_seconds()}
    return {"wake_started_at": None}


def _follow_up(deployment: Deployment) -> None:
    if deployment.state in ADVANCED_BY_FLOW:
        deployment_id = deployment.pk
        transaction.on_commit(lambda: send_progress(deployment_id))


def send_progress(deployment_id: int, *, countdown: float = 0) -> None:
    from .tasks import deployment_progress

    deployment_progress.apply_async((deployment_id,), countdown=countdown)
