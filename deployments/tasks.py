from celery import shared_task
from django.conf import settings

from . import flow, job_transitions, jobs, nodes, reconcile, sleeping
from .transitions import send_progress

DRAIN_POLL_SECONDS = 2.0


# Each step checks what is already done (the state, the runner's status) before acting,
# so a redelivered step is harmless: it may be acknowledged late.
@shared_task(name="deployments.deployment_progress", acks_late=True, reject_on_worker_lost=True)
def deployment_progress(deployment_id: int) -> None:
    again_in = flow.deployment_advance(deployment_id=deployment_id)
    if again_in is not None:
        send_progress(deployment_id, countdown=again_in)


# A job's step only looks at its run, or finishes it under the job's row lock: redelivery is harmless.
@shared_task(name="deployments.job_progress", acks_late=True, reject_on_worker_lost=True)
def job_progress(job_id: int) -> None:
    again_in = jobs.job_advance(job_id=job_id)
    if again_in is not None:
        job_transitions.send_job_progress(job_id, countdown=again_in)


@shared_task(name="deployments.jobs_reconcile")
def jobs_reconcile() -> list[str]:
    return jobs.jobs_reconcile()


@shared_task(name="deployments.deployments_reconcile")
def deployments_reconcile() -> dict:
    return vars(reconcile.deployments_reconcile())


@shared_task(name="deployments.deployments_sleep_idle")
def deployments_sleep_idle() -> list[str]:
    return sleeping.deployments_sleep_idle()


# A step moves at most one deployment and checks the state before acting: redelivery is harmless.
@shared_task(name="deployments.node_drain_step", acks_late=True, reject_on_worker_lost=True)
def node_drain_step(name: str, waiting_for: int | None = None) -> int | None:
    next_wait = nodes.node_drain_step(name=name, waiting_for=waiting_for)
    if next_wait is not None:
        nodes.send_drain_step(name, waiting_for=next_wait, countdown=DRAIN_POLL_SECONDS)
    return next_wait


def register_beat_tasks() -> None:
    """The deployments app schedules its own periodic work (Warehouse style)."""
    from hub_site.celery import app

    interval = float(settings.RECONCILE_INTERVAL_SECONDS)
    sleep_interval = float(settings.SLEEP_CHECK_INTERVAL_SECONDS)
    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        # Expires: when the worker is busy, a late reconcile (or look for idle ones) is dropped, not queued up.
        "reconcile-deployments": {
            "task": "deployments.deployments_reconcile", "schedule": interval, "options": {"expires": interval},
        },
        "reconcile-jobs": {
            "task": "deployments.jobs_reconcile", "schedule": interval, "options": {"expires": interval},
        },
        "sleep-idle-deployments": {
            "task": "deployments.deployments_sleep_idle", "schedule": sleep_interval, "options": {"expires": sleep_interval},
        },
    }
