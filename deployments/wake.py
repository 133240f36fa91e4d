"""Wake on the next request. The gateway awaits `deployment_wait_awake` before forwarding:
a running deployment answers at once; a sleeping one is woken (one wake, however many
requests and processes ask: the transition is guarded by the row lock and `expect`) and
every request held meanwhile awaits the same poller (runners.wakeup), which reads the
deployment's state a few times a second until it runs, fails, or is stopped."""

import asyncio
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.utils import timezone

from runners.wakeup import SharedWaits

from . import metrics
from .models import Deployment
from .transitions import TransitionRefused, deployment_transition

State = Deployment.State
POLL_SECONDS = 0.2
# Seconds a client should wait before asking again, by why the wait ended.
RETRY_AFTER_TIMEOUT = 10
RETRY_AFTER_FAILED = 60
LOOKED_AT = ("state", "endpoint", "reason", "sleep_started_at", "deleted_at", "last_wake_seconds")


@dataclass(frozen=True)
class Awake:
    endpoint: str


@dataclass(frozen=True)
class WakeFailed:
    reason: str
    retry_after: int


_WAITS: SharedWaits[Awake | WakeFailed] = SharedWaits()


def deployment_wake(*, deployment_id: int) -> bool:
    """Send a sleeping deployment back through scheduling (its own node first). True for
    the one caller whose wake it was; False when it was not sleeping (already woken)."""
    try:
        deployment_transition(
            deployment_id=deployment_id, to=State.SCHEDULING, expect=(State.SLEEPING,),
            wake_started_at=timezone.now(), message="woken by a request",
        )
    except TransitionRefused:
        return False
    return True


async def deployment_wait_awake(*, deployment_id: int, timeout: float) -> Awake | WakeFailed:
    """Awake(endpoint) once the deployment runs, waking it if it sleeps; WakeFailed with a
    reason a person can act on if it fails, is stopped or deleted, or is not running
    within `timeout` seconds."""
    answer = _answer(await _look(deployment_id))
    if answer is not None:
        return answer
    metrics.WAKE_WAITERS.inc()
    try:
        return await _WAITS.wait(deployment_id, lambda: _until_awake(deployment_id), timeout=timeout)
    except TimeoutError:
        return WakeFailed(
            reason=f"the deployment was not ready within {timeout:g} s; it is still waking, try again shortly",
            retry_after=RETRY_AFTER_TIMEOUT,
        )
    finally:
        metrics.WAKE_WAITERS.dec()


def waiting_for(deployment_id: int) -> int:
    """Requests this process holds for the deployment now."""
    return _WAITS.waiting(deployment_id)


async def _until_awake(deployment_id: int) -> Awake | WakeFailed:
    woken_at: float | None = None
    while True:
        row = await _look(deployment_id)
        answer = _answer(row)
        if answer is not None:
            if woken_at is not None and isinstance(answer, Awake):
                metrics.WAKE_SECONDS.observe(row["last_wake_seconds"] or time.monotonic() - woken_at)
            return answer
        if row["state"] == State.SLEEPING:
            if await sync_to_async(deployment_wake)(deployment_id=deployment_id):
                woken_at = time.monotonic()
            continue
        await asyncio.sleep(POLL_SECONDS)


def _answer(row: dict | None) -> Awake | WakeFailed | None:
    """The answer a look at the deployment gives, or None: wait (or wake) and look again."""
    if row is None or row["deleted_at"] is not None:
        return WakeFailed(reason="the deployment was deleted", retry_after=RETRY_AFTER_FAILED)
    current = row["state"]
    if current == State.RUNNING and row["sleep_started_at"] is None and row["endpoint"]:
        return Awake(endpoint=row["endpoint"])
    if current == State.FAILED:
        return WakeFailed(reason=f"the deployment failed: {row['reason']}", retry_after=RETRY_AFTER_FAILED)
    if current in (State.STOPPING, State.STOPPED):
        return WakeFailed(reason="the deployment is stopped; its owner can restart it on its page",
                          retry_after=RETRY_AFTER_FAILED)
    # Sleeping, going to sleep, or on its way up (a wake, a relaunch, a restart): wait.
    return None


@sync_to_async
def _look(deployment_id: int) -> dict | None:
    return Deployment.objects.filter(pk=deployment_id).values(*LOOKED_AT).first()
