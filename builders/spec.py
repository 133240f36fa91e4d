"""What a build needs to know about a template, as typed plain values. The hub reads the
stored manifest back through its schema once and fills these in, so nothing in
`builders/` indexes a manifest's JSON (where every Decimal has become a string)."""

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

InputValue = str | int | float | bool


@dataclass(frozen=True)
class ServeSpec:
    """`serve` with every default filled in by the schema; the harness reads exactly these
    names from the image's resolved configuration."""

    handler: str
    port: int
    health_path: str
    ready_path: str
    max_batch_size: int
    max_wait_ms: int
    max_body_bytes: int | None = None  # None: the harness's default


@dataclass(frozen=True)
class TemplateSpec:
    kind: str  # "service" or "job"
    python: str  # "3.11"
    packages: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()
    serve: ServeSpec | None = None
    job_command: tuple[str, ...] = ()
    # Run once inside the build, in the template's folder, as the app user, with no network.
    build_command: tuple[str, ...] = ()
    input_defaults: Mapping[str, InputValue] = field(default_factory=dict)

    @property
    def is_job(self) -> bool:
        return self.kind == "job"

    def serve_config(self) -> dict:
        """The harness's configuration for this template, as written into its image."""
        if self.serve is None:
            raise ValueError("a template without `serve` has no serving configuration")
        return {**asdict(self.serve), "input_defaults": dict(self.input_defaults)}
