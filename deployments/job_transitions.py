"""The one writer of a job's state: `job_transition`, with the moves it allows."""

from django.db import transaction
from django.utils import timezone

from .job_models import Job, JobEvent
from .transitions import TransitionRefused, move_wanted

__all__ = ["ALLOWED", "TransitionRefused", "job_transition", "progress_after_commit", "send_job_progress"]

State = Job.State

ALLOWED: dict[str, frozenset[str]] = {
    State.QUEUED: frozenset({State.BUILDING, State.FAILED}),
    State.BUILDING: frozenset({State.RUNNING, State.FAILED}),
    State.RUNNING: frozenset({State.SUCCEEDED, State.FAILED}),
    State.SUCCEEDED: frozenset(),
    State.FAILED: frozenset(),
}


def job_transition(*, job_id: int, to: str, message: str = "", expect: tuple[str, ...] | None = None, **fields) -> Job:
    with transaction.atomic():
        # Locked: the task and the reconciler may advance one job at the same moment.
        job = Job.objects.select_for_update().get(pk=job_id)
        current = job.state
        if not move_wanted(job.handle, current, to, expect=expect, allowed=ALLOWED, message=message):
            return job
        now = timezone.now()
        implied = {State.RUNNING: {"started_at": now}, State.SUCCEEDED: {"finished_at": now},
                   State.FAILED: {"finished_at": now, "reason": message}}.get(to, {})
        for name, value in {**implied, **fields}.items():
            setattr(job, name, value)
        job.state = to
        job.save()
        JobEvent.objects.create(job=job, from_state=current, to_state=to, message=message)
        progress_after_commit(job)
    return job


def progress_after_commit(job: Job) -> None:
    if job.state in Job.IN_FLIGHT:
        job_id = job.pk
        transaction.on_commit(lambda: send_job_progress(job_id))


def send_job_progress(job_id: int, *, countdown: float = 0) -> None:
    from .tasks import job_progress

    job_progress.apply_async((job_id,), countdown=countdown)
