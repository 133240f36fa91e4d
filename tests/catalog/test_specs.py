"""The stored manifest read back through the schema, once, into typed values."""

from decimal import Decimal

import pytest

from builders.spec import ServeSpec
from runners.base import Resources, Volume
from templates_catalog.models import TemplateVersion
from templates_catalog.specs import launch_spec_of, manifest_of, template_spec_of

GPU_SERVICE = {
    "resources": {"gpus": 1, "gpu_memory_gb": 16, "cpu": 2, "memory_gb": 7.5},
    "serve": {"handler": "handler:Model", "port": 9000, "batching": {"max_batch_size": 16}},
    "runtime": {"python": "3.11", "packages": ["numpy==2.1.3"], "system_packages": ["libgomp1"]},
    "inputs": [
        {"name": "top_k", "label": "Results", "type": "integer", "default": 4},
        {"name": "prefix", "label": "Prefix"},
    ],
}


@pytest.fixture
def version(publish) -> TemplateVersion:
    # Fresh from the database: the manifest as stored, Decimals turned into strings.
    return TemplateVersion.objects.get(pk=publish(**GPU_SERVICE).pk)


def test_the_stored_json_holds_strings_and_the_typed_manifest_numbers(version):
    assert version.manifest["resources"]["cpu"] == "2"
    assert manifest_of(version).resources.cpu == Decimal(2)
    assert manifest_of(version) is manifest_of(version)  # parsed once per instance


def test_builders_get_typed_values_with_every_default_filled_in(version):
    spec = template_spec_of(version)

    assert spec.kind == "service" and spec.python == "3.11"
    assert spec.packages == ("numpy==2.1.3",) and spec.system_packages == ("libgomp1",)
    assert spec.serve == ServeSpec(
        handler="handler:Model", port=9000, health_path="/health", ready_path="/ready", max_batch_size=16, max_wait_ms=0,
        max_body_bytes=None,
    )
    assert spec.input_defaults == {"top_k": 4}


def test_runners_get_numbers_not_strings(version):
    volume = Volume(path="/data", size_gb=2)
    spec = launch_spec_of(version, deployment="d-abc", image="aihub/demo-embedder:0123", environment={"A": "1"}, volume=volume)

    assert spec.resources == Resources(gpus=1, gpu_memory_gb=16.0, cpu=2.0, memory_gb=7.5)
    assert spec.resources.cpu > 1  # '2' > 1 would raise: the bug this adapter exists for
    assert (spec.port, spec.health_path, spec.ready_path, spec.kind) == (9000, "/health", "/ready", "service")
    assert spec.environment == {"A": "1"} and spec.volume == volume and spec.command == ()


def test_a_job_launches_its_command(publish):
    job = TemplateVersion.objects.get(pk=publish(
        name="trainer", tier="workflow", kind="job", serve=None, job={"command": ["python", "train.py"]}
    ).pk)

    spec = launch_spec_of(job, deployment="d-job", image="aihub/trainer:0123")

    assert spec.kind == "job" and spec.command == ("python", "train.py")
    assert template_spec_of(job).serve is None and template_spec_of(job).job_command == ("python", "train.py")


def test_storage_a_build_command_and_a_body_limit_reach_the_builder_and_the_runner(publish):
    version = TemplateVersion.objects.get(pk=publish(
        name="store", runtime={"packages": ["numpy==2.1.3"], "build_command": ["python", "prepare.py", "--out", "build"]},
        serve={"handler": "handler:Model", "max_body_bytes": 4096}, storage={"path": "/var/lib/store", "size_gb": "2.5"},
    ).pk)

    template = template_spec_of(version)
    launch = launch_spec_of(version, deployment="d-store", image="aihub/store:0123")

    assert template.build_command == ("python", "prepare.py", "--out", "build")
    assert template.serve.max_body_bytes == 4096 and template.serve_config()["max_body_bytes"] == 4096
    assert launch.volume == Volume(path="/var/lib/store", size_gb=2.5) and launch.max_body_bytes == 4096


def test_a_version_without_them_builds_and_launches_as_before(version):
    assert template_spec_of(version).build_command == ()
    assert template_spec_of(version).serve_config()["max_body_bytes"] is None
    launch = launch_spec_of(version, deployment="d-abc", image="aihub/demo-embedder:0123")
    assert launch.volume is None and launch.max_body_bytes is None
