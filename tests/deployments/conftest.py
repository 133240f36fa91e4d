import io
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from deployments import transitions
from deployments.flow import deployment_advance
from deployments.models import Deployment, Node
from runners.harness.upstream import UPSTREAM_TOKEN_HEADER
from templates_catalog import builds
from templates_catalog.bundles import bundle_pack
from templates_catalog.models import Build
from templates_catalog.services import template_version_publish

from . import fakes

FAKE_RUNNER = "tests.deployments.fakes.FakeRunner"
ROOT = Path(__file__).resolve().parents[2]
TEXT_GENERATOR = ROOT / "fixtures" / "templates" / "text-generator"
TRAINING_STEPS = "40"


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    """Follow-up tasks are recorded, not sent to a broker: tests drive the flow themselves."""
    calls: list[tuple[int, float]] = []
    monkeypatch.setattr(transitions, "send_progress", lambda deployment_id, countdown=0: calls.append((deployment_id, countdown)))
    return calls


@pytest.fixture(autouse=True)
def deploy_settings(settings):
    settings.BUILD_BACKEND = "venv"
    settings.DEPLOY_READY_TIMEOUT_SECONDS = 30
    settings.DEPLOY_MAX_RESTARTS = 2
    builds.build_backend.cache_clear()
    yield settings
    builds.build_backend.cache_clear()


@pytest.fixture
def recorder(monkeypatch):
    """The gateway's usage counts, written only when the test flushes them (no flusher thread)."""
    from deployments import activity

    kept = activity.ActivityRecorder(flush_seconds=None)
    monkeypatch.setattr(activity, "RECORDER", kept)
    return kept


@pytest.fixture
def node_factory(db):
    made = []

    def make(name="node-a", *, price="1.00", cpus=8, memory_gb=32, gpus=(), **engine_settings) -> Node:
        url = f"fake://{name}"
        made.append(fakes.engine(url, inventory=fakes.Inventory(cpus=cpus, memory_gb=memory_gb, gpus=gpus), **engine_settings))
        return Node.objects.create(
            name=name, runner=FAKE_RUNNER, engine_url=url, cpus=cpus, memory_gb=memory_gb,
            gpus=[gpu.memory_gb for gpu in gpus], gpu_model=gpus[0].model if gpus else "", price_per_hour=Decimal(price),
        )

    yield make
    for engine in made:
        engine.close()


@pytest.fixture
def version(publish):
    return publish(
        name="embedder", resources={"cpu": 2, "memory_gb": 4},
        inputs=[{"name": "normalize", "label": "Normalise", "type": "boolean", "default": True}],
    )


@pytest.fixture
def text_generator(deploy_settings, publisher, tmp_path):
    """The text generator fixture, published, with a shorter training: a venv build of it for
    the process runner is kept under the hub's var/venvs by its cache key."""
    deploy_settings.WHEELHOUSE_DIR = ROOT / "var" / "test-wheelhouse"
    deploy_settings.DEPLOY_READY_TIMEOUT_SECONDS = 300
    folder = tmp_path / "text-generator"
    shutil.copytree(TEXT_GENERATOR, folder)
    manifest = yaml.safe_load((folder / "hub.yaml").read_text())
    command = manifest["runtime"]["build_command"]
    command[command.index("--steps") + 1] = TRAINING_STEPS
    (folder / "hub.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(folder))).version


def upstream_headers(deployment: Deployment) -> dict[str, str]:
    """What the gateway adds to reach `deployment`'s run directly, at its `endpoint`: without
    it, the run answers only its health and ready paths."""
    return {UPSTREAM_TOKEN_HEADER.decode(): deployment.upstream_token}


def finish_build(deployment: Deployment, *, error: str = "") -> None:
    """Stand in for a builder worker: the deploy flow, not the builder, is under test here."""
    if error:
        Build.objects.filter(pk=deployment.build_id).update(status=Build.Status.FAILED, error=error)
    else:
        Build.objects.filter(pk=deployment.build_id).update(
            status=Build.Status.SUCCEEDED, image_reference=f"fake://image/{deployment.version_id}"
        )


def drive(deployment: Deployment, *, until=(Deployment.State.RUNNING,), steps: int = 60) -> Deployment:
    """Run the flow's steps as the task would, completing the build when one is asked for."""
    import time

    for _ in range(steps):
        deployment.refresh_from_db()
        if deployment.state in until or deployment.state in (Deployment.State.FAILED, Deployment.State.STOPPED):
            return deployment
        if deployment.state == Deployment.State.BUILDING:
            finish_build(deployment)
        again = deployment_advance(deployment_id=deployment.pk)
        if again:
            time.sleep(0.05)
    deployment.refresh_from_db()
    return deployment


def drive_for_real(deployment: Deployment, *, steps: int = 600, pause: float = 0.2) -> Deployment:
    """Run the flow's steps as its task would, and a queued build as the build worker would."""
    import time

    from templates_catalog.builds import build_run

    for _ in range(steps):
        deployment.refresh_from_db()
        if deployment.state in (Deployment.State.RUNNING, Deployment.State.FAILED, Deployment.State.STOPPED):
            break
        if deployment.state == Deployment.State.BUILDING and Build.objects.get(pk=deployment.build_id).status == Build.Status.QUEUED:
            build_run(build_id=deployment.build_id)
        if deployment_advance(deployment_id=deployment.pk):
            time.sleep(pause)
    return deployment


class WakeWorker:
    """Stands in for the Celery worker while requests wait for a wake: in a thread, once the
    deployment leaves `sleeping`, run its flow with `drive_with` (drive or drive_for_real)."""

    def __init__(self, deployment: Deployment, drive_with=drive, **drive_options):
        import threading

        self.deployment = deployment
        self.final: Deployment | None = None
        self._drive = lambda: drive_with(deployment, **drive_options)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import time

        from django.db import connection

        try:
            deadline = time.monotonic() + 60
            while Deployment.objects.get(pk=self.deployment.pk).state == Deployment.State.SLEEPING:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            self.final = self._drive()
        finally:
            connection.close()

    def join(self) -> Deployment | None:
        self._thread.join()
        return self.final


# The build fixtures (echo template, wheelhouse settings) are shared with the build tests.
from tests.builds.conftest import build_settings, docker_client, echo_template  # noqa: E402,F401


@pytest.fixture
def process_settings(build_settings, tmp_path):  # noqa: F811 (the fixture imported above)
    """Venv builds and the process runner, each test's runs under its own VAR_DIR."""
    from templates_catalog import builds

    build_settings.BUILD_BACKEND = "venv"
    build_settings.VAR_DIR = tmp_path / "var"
    build_settings.DEPLOY_READY_TIMEOUT_SECONDS = 60
    builds.build_backend.cache_clear()
    return build_settings
