"""Jobs under test: a tiny job template, a stand-in for the build worker (the venv build of
a job needs no wheels here: its `venv` is an environment that already exists), and the
job flow driven step by step as its Celery task would."""

import io
import shutil
import sys
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from deployments import job_transitions
from deployments.jobs import job_advance
from deployments.models import Job
from deployments.nodes import node_add
from templates_catalog.bundles import bundle_pack
from templates_catalog.models import Build, TemplateVersion
from templates_catalog.services import template_version_publish
from tests.factories import manifest_data

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_ENV = ROOT / "var" / "template-env"

# What the job does is chosen by its `mode` input, so one template covers the happy path and the attacks.
JOB_SCRIPT = '''\
import json, os, sys, time
from pathlib import Path

out = Path(os.environ["OUTPUT_DIR"])
mode = os.environ.get("INPUT_MODE", "ok")
data = Path(os.environ["INPUT_DATASET"]).read_text()
print(f"read {len(data)} characters", flush=True)
try:
    Path(os.environ["INPUT_DATASET"]).write_text("tampered")
    print("the input was writable", flush=True)
except OSError:
    print("the input is read-only", flush=True)
(out / "model").mkdir()
if mode == "fail":
    print("about to fail: the dataset has no label column", flush=True)
    sys.exit(3)
if mode == "sleep":
    time.sleep(60)
if mode == "symlink":
    os.symlink("/etc/passwd", out / "model" / "weights.bin")
elif mode == "linked-folder":
    os.rmdir(out / "model")
    os.symlink("/etc", out / "model")
elif mode == "huge":
    with open(out / "model" / "weights.bin", "wb") as f:
        f.truncate(5_000_000)
else:
    (out / "model" / "weights.bin").write_bytes(data.upper().encode())
(out / "metrics.json").write_text(json.dumps({"accuracy": 0.875, "examples": len(data.splitlines())}))
print("done", flush=True)
'''


@pytest.fixture(autouse=True)
def job_settings(settings, tmp_path):
    settings.BUILD_BACKEND = "venv"
    settings.VAR_DIR = tmp_path / "var"
    settings.JOB_OUTPUT_MAX_BYTES = 1_000_000
    return settings


@pytest.fixture(autouse=True)
def sent(monkeypatch):
    """Follow-up tasks are recorded, not sent: tests drive the flow themselves."""
    calls: list[int] = []
    monkeypatch.setattr(job_transitions, "send_job_progress", lambda job_id, countdown=0: calls.append(job_id))
    return calls


@pytest.fixture
def process_node(db):
    return node_add(name="local", runner="process")


def job_manifest(name: str = "tiny-job", version: str = "1.0.0", serve: dict | None = None, **overrides) -> dict:
    return manifest_data(
        name=name, version=version, kind="job", tier="workflow", serve=serve, title="A tiny job",
        summary="Upper-cases a file, for the tests of jobs.",
        job={"command": ["python", "job.py"], "outputs": [
            {"name": "weights", "path": "model/weights.bin"}, {"name": "metrics", "path": "metrics.json"},
        ]},
        inputs=[
            {"name": "dataset", "label": "Dataset", "type": "file", "required": True},
            {"name": "mode", "label": "Mode", "type": "string", "default": "ok"},
        ],
        **overrides,
    )


@pytest.fixture
def job_template(tmp_path, publisher):
    def make(**overrides) -> TemplateVersion:
        manifest = job_manifest(**overrides)
        folder = tmp_path / f"{manifest['name']}-{manifest['version']}"
        folder.mkdir()
        (folder / "hub.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        (folder / "job.py").write_text(JOB_SCRIPT)
        (folder / "handler.py").write_text("class Model:\n    def predict(self, batch):\n        return batch\n")
        (folder / "README.md").write_text("# A tiny job\n")
        return template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(folder))).version

    return make


def stand_in_build(build: Build, *, venv: Path | None = None) -> Build:
    """Do what the venv backend's build does, minus installing wheels: the bundle's files
    in `template/`, the hub's harness beside it, and `venv` an environment that exists."""
    from django.conf import settings

    from templates_catalog.stored_bundles import bundle_copy_verified

    reference = f"venv://aihub/{build.version.template.name}:{build.version.bundle_sha256[:32]}"
    folder = settings.VAR_DIR / "venvs" / f"aihub_{build.version.template.name}" / build.version.bundle_sha256[:32]
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True)
        bundle = bundle_copy_verified(version=build.version, target=folder / "bundle.tar.gz")
        with tarfile.open(bundle) as archive:
            archive.extractall(folder / "template", filter="data")
        bundle.unlink()
        shutil.copytree(ROOT / "runners" / "harness", folder / "harness")
        (folder / "venv").symlink_to(venv or Path(sys.prefix))
        (folder / ".complete").write_text("stand-in build for the tests\n")
    Build.objects.filter(pk=build.pk).update(status=Build.Status.SUCCEEDED, image_reference=reference, image_digest=reference)
    return Build.objects.get(pk=build.pk)


def drive_job(job: Job, *, steps: int = 600, pause: float = 0.1, venv: Path | None = None, until=(),
              build_for_real: bool = False) -> Job:
    """Run the job flow's steps as its task would; a queued build is done by `stand_in_build`,
    or, `build_for_real`, by the build worker's own `build_run` (the venv backend)."""
    from templates_catalog.builds import build_run

    for _ in range(steps):
        job.refresh_from_db()
        if job.state in (Job.State.SUCCEEDED, Job.State.FAILED, *until):
            return job
        if job.state == Job.State.BUILDING and job.build.status == Build.Status.QUEUED:
            if build_for_real:
                build_run(build_id=job.build_id)
            else:
                stand_in_build(job.build, venv=venv)
        if job_advance(job_id=job.pk):
            time.sleep(pause)
    job.refresh_from_db()
    return job
