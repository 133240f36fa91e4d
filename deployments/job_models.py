"""A job: one run of a `kind: job` template to completion, its events and its outputs.
Its `state` changes only through `deployments.job_transitions.job_transition`."""

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q

from templates_catalog.models import Build, TemplateVersion

HANDLE_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


def new_job_handle() -> str:
    return "j-" + "".join(secrets.choice(HANDLE_ALPHABET) for _ in range(10))


class Job(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued"
        BUILDING = "building"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    # States the job flow still advances.
    IN_FLIGHT = (State.QUEUED, State.BUILDING, State.RUNNING)

    handle = models.CharField(max_length=16, unique=True, default=new_job_handle, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    version = models.ForeignKey(TemplateVersion, on_delete=models.PROTECT, related_name="jobs")
    build = models.ForeignKey(Build, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs")
    node = models.ForeignKey("deployments.Node", on_delete=models.PROTECT, null=True, blank=True, related_name="jobs")
    # What it asks of its node (the manifest's resources): a running job holds it, as a
    # running deployment does, so the scheduler never places two on the room of one.
    gpus = models.PositiveSmallIntegerField(default=0)
    gpu_memory_gb = models.DecimalField(max_digits=6, decimal_places=1, default=0)
    cpu = models.DecimalField(max_digits=6, decimal_places=2, default=1)
    memory_gb = models.DecimalField(max_digits=7, decimal_places=1, default=1)
    # The form's values; a file input is {"sha256": ..., "size": ..., "filename": ...}, stored by digest.
    inputs = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, editable=False)
    reason = models.TextField(blank=True, default="")
    # What the job wrote in its metrics.json, when it declares one.
    metrics = models.JSONField(default=dict, blank=True)
    # The log's last lines, kept when it finishes (its run is removed from the node then).
    log_tail = models.TextField(blank=True, default="")
    idempotency_key = models.CharField(max_length=100, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=["queued", "building", "running", "succeeded", "failed"]), name="job_state_valid"
            ),
            models.CheckConstraint(condition=~Q(state="failed") | ~Q(reason=""), name="job_failure_has_reason"),
            models.CheckConstraint(condition=~Q(state="running") | Q(node__isnull=False), name="job_running_has_node"),
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"], condition=Q(idempotency_key__isnull=False),
                name="job_idempotency_key_unique",
            ),
        ]
        indexes = [models.Index(fields=["owner", "-created_at"]), models.Index(fields=["state"])]

    def __str__(self) -> str:
        return self.handle


class JobEvent(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    from_state = models.CharField(max_length=16, blank=True, default="")
    to_state = models.CharField(max_length=16)
    message = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["at", "pk"]


class JobArtifact(models.Model):
    """One declared output of a succeeded job, stored by digest in the artifact storage."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=64)
    path = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    size = models.BigIntegerField()
    storage_path = models.CharField(max_length=255)

    class Meta:
        ordering = ["job", "name"]
        constraints = [
            models.UniqueConstraint(fields=["job", "name"], name="job_artifact_unique_name"),
            models.CheckConstraint(condition=Q(sha256__regex=r"^[0-9a-f]{64}$"), name="job_artifact_sha256_hex"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}:{self.name}"
