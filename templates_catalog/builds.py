"""Build services: request a build of a version, run it, and repair builds whose
worker vanished. The building itself is `builders/`, plain Python behind a backend
chosen by the BUILD_BACKEND setting (see `hub_site.backends`).

The web process never constructs a backend (that may probe a Docker Engine): a build row
records the backend asked for, "auto" included, and the worker resolves "auto" when it
starts the build, records the concrete one in `backend_used` and builds with exactly it."""

import logging
import tempfile
import threading
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, Value
from django.db.models.functions import Concat
from django.utils import timezone

from builders.build import BuildRequest, build_execute, harness_pins_for, read_requirements
from builders.errors import BuildFailed, TemplateNotReady
from builders.wheelhouse import Wheelhouse
from hub_site.backends import build_backend, build_backend_resolve

from .bundles import bundle_extract
from .models import Build, TemplateVersion
from .services import bundle_limits
from .specs import manifest_of, template_spec_of
from .stored_bundles import BundleAltered, bundle_copy_verified
from .verification import build_verify

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 3
LOG_FLUSH_SECONDS = 0.5


def build_request(*, version: TemplateVersion, requested_by: AbstractBaseUser | None = None) -> Build:
    """Queue a build of `version`, or return the one already queued or running."""
    if version.yanked:
        raise BuildFailed(f"{version} is yanked: it can no longer be built or deployed")
    active = dict(version=version, backend=settings.BUILD_BACKEND, base_image=settings.BUILD_BASE_IMAGE)
    try:
        with transaction.atomic():
            build = Build.objects.create(**active, requested_by=requested_by)
            transaction.on_commit(lambda: _enqueue(build.pk))
            return build
    except IntegrityError:
        return Build.objects.get(**active, status__in=Build.ACTIVE)


def _enqueue(build_id: int) -> None:
    from .tasks import build_run as build_run_task

    build_run_task.delay(build_id)


def build_run(*, build_id: int) -> Build:
    """Run a queued build; run again one whose worker died mid-way. Safe to call twice."""
    build = _start(build_id)
    if build is None or build.finished:
        return build
    log = _LogWriter(build.pk)
    try:
        outcome = _execute(build, log)
        verification = build_verify(build=build, outcome=outcome, log=log.write)
    except BuildFailed as exc:
        log.close()
        return _finish_failed(build.pk, str(exc), failure_kind=exc.failure_kind, verify_log=exc.log_tail,
                              verified=False if isinstance(exc, TemplateNotReady) else None)
    except Exception as exc:
        log.close()
        logger.exception("build %s crashed", build.pk)
        return _finish_failed(build.pk, f"the build crashed ({type(exc).__name__}: {exc}); report it to the hub's operators",
                              failure_kind=Build.FailureKind.HUB)
    log.close()
    return _finish(
        build.pk,
        Build.Status.SUCCEEDED,
        cache_key=outcome.cache_key,
        cache_hit=outcome.cache_hit,
        lock=[asdict(wheel) for wheel in outcome.lock],
        system_lock=[asdict(deb) for deb in outcome.debs],
        image_reference=outcome.image.reference,
        image_digest=outcome.image.digest,
        duration_seconds=outcome.seconds,
        verified=verification.verified,
        ready_seconds=verification.ready_seconds,
    )


def _start(build_id: int) -> Build | None:
    with transaction.atomic():
        # Locked so a redelivered task and the original never both start it.
        build = Build.objects.select_for_update().filter(pk=build_id).first()
        if build is None or build.finished:
            return build
        if build.attempts >= MAX_ATTEMPTS:
            reason = f"the build was interrupted {build.attempts} times (a worker died each time); request it again"
            return build_transition(
                build_id=build.pk, to=Build.Status.FAILED, error=reason, failure_kind=Build.FailureKind.HUB
            )
        attempt = build.attempts + 1
        # A retried build keeps the backend its first attempt chose.
        backend_used = build.backend_used or build_backend_resolve(build.backend)
        asked = f" (asked: {build.backend})" if build.backend != backend_used else ""
        return build_transition(
            build_id=build.pk, to=Build.Status.RUNNING, attempts=attempt, backend_used=backend_used,
            log=build.log + f"--- attempt {attempt} on {backend_used}{asked}, base image {build.base_image}\n",
        )


def _execute(build: Build, log: "_LogWriter"):
    version = TemplateVersion.objects.select_related("template__publisher").get(pk=build.version_id)
    spec = template_spec_of(version)
    with tempfile.TemporaryDirectory(prefix="hub-build-") as scratch:
        template_dir = Path(scratch) / "template"
        bundle_path = Path(scratch) / "bundle.tar.gz"
        try:
            bundle_copy_verified(version=version, target=bundle_path)
        except BundleAltered as exc:
            raise BuildFailed(str(exc)) from None
        bundle_extract(bundle_path, template_dir, bundle_limits())
        request = BuildRequest(
            template_name=version.template.name,
            version=version.version,
            spec=spec,
            bundle_sha256=version.bundle_sha256,
            template_dir=template_dir,
            base_image=build.base_image,
            labels=_labels(version),
        )
        return build_execute(
            request,
            backend=build_backend(build.backend_used),
            wheelhouse=Wheelhouse(settings.WHEELHOUSE_DIR, python_version=spec.python),
            harness_dir=settings.HARNESS_DIR,
            harness_requirements=harness_pins_for(spec, read_requirements(settings.HARNESS_DIR / "requirements.txt")),
            log=log.write,
        )


def _labels(version: TemplateVersion) -> dict[str, str]:
    manifest = manifest_of(version)
    return {
        "org.opencontainers.image.title": manifest.title,
        "org.opencontainers.image.description": manifest.summary,
        "org.opencontainers.image.version": version.version,
        "org.opencontainers.image.revision": version.bundle_sha256,
        "org.opencontainers.image.source": f"{settings.HUB_PUBLIC_URL.rstrip('/')}/templates/{version.template.name}/",
        "org.opencontainers.image.licenses": manifest.license,
        "org.opencontainers.image.vendor": version.template.publisher.name,
        "io.aihub.template": version.template.name,
        "io.aihub.bundle-sha256": version.bundle_sha256,
    }


def _finish_failed(build_id: int, reason: str, *, failure_kind: str, verify_log: str = "",
                   verified: bool | None = None) -> Build:
    return _finish(
        build_id, Build.Status.FAILED, error=reason, failure_kind=failure_kind, verify_log=verify_log, verified=verified
    )


def _finish(build_id: int, to: str, **fields) -> Build:
    try:
        return build_transition(build_id=build_id, to=to, **fields)
    except BuildTransitionRefused as exc:
        # The reaper failed it meanwhile (it ran past BUILD_TIMEOUT_SECONDS): that verdict stands.
        logger.warning("build outcome not recorded: %s", exc)
        return Build.objects.get(pk=build_id)


def builds_reap_stale() -> int:
    """Fail builds whose worker vanished without the broker redelivering them, so none
    stays `running` (or `queued`) forever."""
    deadline = timezone.now() - timedelta(seconds=settings.BUILD_TIMEOUT_SECONDS)
    return builds_fail_where(
        Build.objects.filter(created_at__lt=deadline),
        reason=f"the build did not finish within {settings.BUILD_TIMEOUT_SECONDS} seconds; request it again",
    )


# --- the one place that writes Build.status -------------------------------------------

Status = Build.Status
BUILD_ALLOWED: dict[str, frozenset[str]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED}),
    # running → running: a redelivered build whose worker died starts its next attempt.
    Status.RUNNING: frozenset({Status.RUNNING, Status.SUCCEEDED, Status.FAILED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
}


class BuildTransitionRefused(Exception):
    """The move is not allowed from the build's current status; the message says why."""


def build_transition(*, build_id: int, to: str, **fields) -> Build:
    """Move a build to `to`, checked against BUILD_ALLOWED, with the timestamps that go
    with it (started_at on running; finished_at and the duration on success or failure)."""
    with transaction.atomic():
        build = Build.objects.select_for_update().get(pk=build_id)
        if to not in BUILD_ALLOWED[build.status]:
            raise BuildTransitionRefused(f"build {build.pk} cannot go from {build.status} to {to}")
        if to == Status.FAILED and not fields.get("error"):
            raise ValueError("a failed build needs an error a person can act on")
        for name, value in {**_implied_build_fields(build, to), **fields}.items():
            setattr(build, name, value)
        build.status = to
        build.save()
    return build


def builds_fail_where(queryset, *, reason: str, failure_kind: str = Build.FailureKind.HUB) -> int:
    """Fail, in one UPDATE, every build of `queryset` that may still move to failed
    (a reaper fails many at once); returns how many. The same table decides as above."""
    may_fail = [status for status, allowed in BUILD_ALLOWED.items() if Status.FAILED in allowed]
    return queryset.filter(status__in=may_fail).update(
        status=Status.FAILED, error=reason, failure_kind=failure_kind, finished_at=timezone.now()
    )


def _implied_build_fields(build: Build, to: str) -> dict:
    now = timezone.now()
    if to == Status.RUNNING:
        return {"started_at": now}
    if to in (Status.SUCCEEDED, Status.FAILED):
        duration = (now - build.started_at).total_seconds() if build.started_at else None
        return {"finished_at": now, "duration_seconds": duration}
    return {}


class _LogWriter:
    """Appends build output to the row in batches, so the page can show it live
    without a write per line."""

    def __init__(self, build_id: int):
        self.build_id = build_id
        self.pending: list[str] = []
        self.last_flush = time.monotonic()
        self.lock = threading.Lock()

    def write(self, line: str) -> None:
        with self.lock:
            self.pending.append(line)
            if time.monotonic() - self.last_flush >= LOG_FLUSH_SECONDS:
                self._flush()

    def close(self) -> None:
        with self.lock:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            text = "\n".join(self.pending) + "\n"
            Build.objects.filter(pk=self.build_id).update(log=Concat(F("log"), Value(text)))
            self.pending = []
        self.last_flush = time.monotonic()
