"""The one adapter between a version's stored manifest and the plain layers.

The manifest is stored as JSON, where every Decimal has become a string (`resources.cpu`
is `'2'`). It is read back through the schema here, once per version instance, and
`builders/` and `runners/` get typed plain values (`TemplateSpec`, `LaunchSpec`), never
the JSON itself."""

from collections.abc import Mapping

from builders.spec import ServeSpec, TemplateSpec
from runners.base import LaunchSpec, Resources, Volume

from .manifest import Kind, Manifest
from .models import TemplateVersion

_CACHE_ATTRIBUTE = "_typed_manifest"


def manifest_of(version: TemplateVersion) -> Manifest:
    """The version's manifest as the schema's model; parsed once per instance."""
    cached = version.__dict__.get(_CACHE_ATTRIBUTE)
    if cached is None:
        cached = Manifest.model_validate(version.manifest)
        version.__dict__[_CACHE_ATTRIBUTE] = cached
    return cached


def template_spec_of(version: TemplateVersion) -> TemplateSpec:
    manifest = manifest_of(version)
    serve = manifest.serve
    return TemplateSpec(
        kind=str(manifest.kind),
        python=manifest.runtime.python,
        packages=tuple(manifest.runtime.packages),
        system_packages=tuple(manifest.runtime.system_packages),
        serve=None if serve is None else ServeSpec(
            handler=serve.handler,
            port=serve.port,
            health_path=serve.health_path,
            ready_path=serve.ready_path,
            max_batch_size=serve.batching.max_batch_size,
            max_wait_ms=serve.batching.max_wait_ms,
            max_body_bytes=serve.max_body_bytes,
        ),
        job_command=tuple(manifest.job.command) if manifest.job else (),
        build_command=tuple(manifest.runtime.build_command),
        input_defaults={item.name: item.default for item in manifest.inputs if item.default is not None},
    )


def resources_of(manifest: Manifest) -> Resources:
    resources = manifest.resources
    return Resources(
        gpus=resources.gpus,
        gpu_memory_gb=float(resources.gpu_memory_gb),
        cpu=float(resources.cpu),
        memory_gb=float(resources.memory_gb),
    )


def volume_of(manifest: Manifest) -> Volume | None:
    """The persistent volume `storage` asks for, or None."""
    storage = manifest.storage
    return None if storage is None else Volume(path=storage.path, size_gb=float(storage.size_gb))


def launch_spec_of(
    version: TemplateVersion,
    *,
    deployment: str,
    image: str,
    environment: Mapping[str, str] | None = None,
    volume: Volume | None = None,
    labels: Mapping[str, str] | None = None,
) -> LaunchSpec:
    """What a runner needs to start `version` from its built `image` (or venv reference);
    `volume` defaults to the one the manifest's `storage` asks for."""
    manifest = manifest_of(version)
    serve = manifest.serve
    return LaunchSpec(
        deployment=deployment,
        image=image,
        kind=str(manifest.kind),
        port=serve.port if serve else LaunchSpec.port,
        health_path=serve.health_path if serve else LaunchSpec.health_path,
        ready_path=serve.ready_path if serve else LaunchSpec.ready_path,
        command=tuple(manifest.job.command) if manifest.kind is Kind.JOB else (),
        resources=resources_of(manifest),
        environment=dict(environment or {}),
        volume=volume if volume is not None else volume_of(manifest),
        max_body_bytes=serve.max_body_bytes if serve else None,
        labels=dict(labels or {}),
    )
