"""Reads of jobs."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from .models import Job


def job_of(user: AbstractBaseUser | AnonymousUser, handle: str) -> Job | None:
    """One of the user's jobs by handle, or None (callers answer 404: another's job is not shown)."""
    if not user.is_authenticated:
        return None
    return Job.objects.select_related("version__template", "node", "build").filter(owner_id=user.pk, handle=handle).first()


def jobs_of(user: AbstractBaseUser) -> QuerySet[Job]:
    """The user's jobs, newest first, with what their list shows."""
    return Job.objects.select_related("version__template", "node").filter(owner_id=user.pk).order_by("-created_at", "-pk")
