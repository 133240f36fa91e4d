"""The start check of a build: a built service must start and answer its ready path
before its build counts as verified. The starting itself is the build backend's
(`verify_starts`, in builders/); this decides whether to run it and what to start."""

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from builders.build import BuildOutcome
from hub_site.backends import build_backend

from .models import Build
from .specs import launch_spec_of, template_spec_of

# Nothing answers here: a template that calls what it requires while starting fails its check.
UNREACHABLE_URL = "http://127.0.0.1:9"
UNREACHABLE_TOKEN = "hubep_none-at-build-time"


@dataclass(frozen=True)
class Verification:
    verified: bool | None  # None: a job, which is not started at build time
    ready_seconds: float | None = None


def build_verify(*, build: Build, outcome: BuildOutcome, log: Callable[[str], None]) -> Verification:
    """Start the image `outcome` built for `build` and time it to ready; raises BuildFailed
    when it does not get there. A cache hit keeps the check an earlier build of it passed."""
    version = build.version
    spec = template_spec_of(version)
    if spec.serve is None or spec.is_job:
        # A job's `serve` (a fine-tune's) is the serving code of the versions published from
        # its outputs: it cannot start before the job has written them.
        return Verification(verified=None)
    if outcome.cache_hit:
        earlier = _earlier_verification(build, outcome.cache_key)
        if earlier is not None:
            log(f"verified before by build {earlier.pk}: ready in {earlier.ready_seconds:.1f} s; not started again")
            return Verification(verified=True, ready_seconds=earlier.ready_seconds)
    launch = launch_spec_of(
        version,
        deployment=f"verify-{build.pk}",
        image=outcome.image.reference,
        environment=_requirements_unreachable(version),
    )
    seconds = build_backend(build.backend_used).verify_starts(
        outcome.image.reference, launch=launch, timeout=settings.BUILD_VERIFY_TIMEOUT_SECONDS, log=log
    )
    return Verification(verified=True, ready_seconds=seconds)


def _requirements_unreachable(version) -> dict[str, str]:
    """What a deploy injects for each requirement (`<ALIAS>_URL`, `<ALIAS>_TOKEN`), pointing nowhere."""
    environment = {}
    for requirement in version.requirements.all():
        environment[requirement.env_var] = UNREACHABLE_URL
        environment[requirement.token_env_var] = UNREACHABLE_TOKEN
    return environment


def _earlier_verification(build: Build, cache_key: str) -> Build | None:
    return (
        Build.objects.filter(cache_key=cache_key, status=Build.Status.SUCCEEDED, verified=True)
        .exclude(pk=build.pk)
        .order_by("-finished_at")
        .first()
    )
