"""Sleep when idle: a running deployment with no request for its idle timeout stops its run
(its volume stays) and becomes `sleeping`, holding nothing on its node; the next request
wakes it (deployments.wake)."""

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from hub_site.backends import runner_for
from runners.base import RunnerError

from .models import Deployment
from .transitions import TransitionRefused, deployment_transition

logger = logging.getLogger(__name__)
State = Deployment.State
# A sleep whose worker died between stopping the run and recording it is tried again after this.
SLEEP_RETRY_SECONDS = 120


def deployments_sleep_idle(*, now: datetime | None = None) -> list[str]:
    """Put every running deployment idle past its timeout to sleep. Returns their handles."""
    now = now or timezone.now()
    return [handle for pk, handle in _idle_deployments(now) if deployment_sleep(deployment_id=pk, now=now)]


def idle_seconds(deployment: Deployment, now: datetime) -> float:
    """Seconds since its last request, or since it became running if none came since."""
    became_running = deployment.running_since or deployment.created_at
    since = max(deployment.last_request_at or became_running, became_running)
    return (now - since).total_seconds()


def _is_idle(deployment: Deployment, now: datetime) -> bool:
    return deployment.idle_timeout_seconds > 0 and idle_seconds(deployment, now) >= deployment.idle_timeout_seconds


def _idle_deployments(now: datetime) -> list[tuple[int, str]]:
    stale = now - timedelta(seconds=SLEEP_RETRY_SECONDS)
    running = Deployment.objects.filter(
        Q(sleep_started_at__isnull=True) | Q(sleep_started_at__lt=stale),
        state__in=[State.RUNNING], idle_timeout_seconds__gt=0, deleted_at__isnull=True,
    ).only("pk", "handle", "idle_timeout_seconds", "last_request_at", "running_since", "created_at")
    return [(deployment.pk, deployment.handle) for deployment in running if _is_idle(deployment, now)]


def deployment_sleep(*, deployment_id: int, now: datetime | None = None) -> bool:
    """Stop the run of an idle running deployment, then record it `sleeping` (only once the
    run is stopped, so `sleeping` always means nothing runs). False when it was not idle
    after all, or something else moved it meanwhile."""
    now = now or timezone.now()
    deployment = _mark_sleeping(deployment_id, now)
    if deployment is None:
        return False
    idle = idle_seconds(deployment, now)
    try:
        runner_for(deployment.node).stop(deployment.handle)
    except RunnerError as exc:
        logger.warning("%s stays awake: its run could not be stopped (%s); the next look tries again", deployment.handle, exc)
        Deployment.objects.filter(pk=deployment_id, sleep_started_at=deployment.sleep_started_at).update(sleep_started_at=None)
        return False
    try:
        deployment_transition(
            deployment_id=deployment_id, to=State.SLEEPING, expect=(State.RUNNING,),
            message=f"went to sleep after {idle:.0f} s idle; its run is stopped, its volume kept",
        )
    except TransitionRefused as exc:
        logger.info("not recording the sleep: %s", exc)  # stopped, deleted or failed meanwhile: that move wins
        return False
    return True


def _mark_sleeping(deployment_id: int, now: datetime) -> Deployment | None:
    """Under its row lock, check again that it is still running and idle (a request may
    have come since the look), and mark the sleep begun: the reconciler must not revive the
    run being stopped, and the gateway waits for the sleep to end before waking it."""
    stale = now - timedelta(seconds=SLEEP_RETRY_SECONDS)
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update(of=("self",)).select_related("node").filter(pk=deployment_id).first()
        if deployment is None or deployment.state != State.RUNNING or deployment.deleted_at is not None:
            return None
        if deployment.sleep_started_at is not None and deployment.sleep_started_at >= stale:
            return None  # another worker is putting it to sleep
        if not _is_idle(deployment, now):
            return None
        deployment.sleep_started_at = now
        deployment.save(update_fields=["sleep_started_at"])
    return deployment
