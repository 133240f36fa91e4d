from celery import shared_task
from django.conf import settings

from . import flow, reconcile
from .transitions import send_progress


# Each step checks what is already done (the state, the runner's status) before acting,
# so a redelivered step is harmless: it may be acknowledged late.
@shared_task(name="deployments.deployment_progress", acks_late=True, reject_on_worker_lost=True)
def deployment_progress(deployment_id: int) -> None:
    again_in = flow.deployment_advance(deployment_id=deployment_id)
    if again_in is not None:
        send_progress(deployment_id, countdown=again_in)


@shared_task(name="deployments.deployments_reconcile")
def deployments_reconcile() -> dict:
    return vars(reconcile.deployments_reconcile())


def register_beat_tasks() -> None:
    """The deployments app schedules its own periodic work (Warehouse style)."""
    from hub_site.celery import app

    interval = float(settings.RECONCILE_INTERVAL_SECONDS)
    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        # Expires: when the worker is busy, a late reconcile is dropped, not queued up.
        "reconcile-deployments": {
            "task": "deployments.deployments_reconcile", "schedule": interval, "options": {"expires": interval},
        },
    }
