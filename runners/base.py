"""The runner interface: what the hub asks of anything that runs a built template.

Plain Python, no Django. The hub parses a version's manifest once and hands a runner a
`LaunchSpec` of typed values; a runner answers with `RunState`s. One runner instance
talks to one node (a local process table, one Docker Engine, ...); the node row names
which runner it uses and `hub_site.backends.runner_for(node)` builds it.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Protocol

# Labels (Docker) or markers (processes) that tie what runs to the hub's rows.
LABEL_DEPLOYMENT = "io.aihub.deployment"
LABEL_HUB = "io.aihub.hub"


class RunnerError(Exception):
    """The runner could not do what was asked; the message is for a person."""


class NodeUnreachable(RunnerError):
    """The node's engine did not answer at all."""


class NodeLost(NodeUnreachable):
    """The node's cluster says the node is gone (it left, or is down): str(exc) completes
    "node NAME …", e.g. "left the swarm (the manager reports it down)"."""


# A handle names folders, containers and volumes: no path separators, nothing that starts with a dot.
_DEPLOYMENT_HANDLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def check_deployment_handle(deployment: str) -> str:
    """`deployment` itself when it is safe as a file and container name; RunnerError otherwise."""
    if not isinstance(deployment, str) or not _DEPLOYMENT_HANDLE.fullmatch(deployment):
        raise RunnerError(
            f"{deployment!r} is not a deployment handle: use 1 to 63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return deployment


def label_number(text: str) -> Decimal | None:
    """The number in an operator's node label (a price, a GPU's memory); None unless it is a
    finite number of 0 or more."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() and value >= 0 else None


@dataclass(frozen=True)
class Resources:
    gpus: int = 0
    gpu_memory_gb: float = 0.0
    cpu: float = 1.0
    memory_gb: float = 1.0


@dataclass(frozen=True)
class Volume:
    """Persistent storage mounted at `path`; it outlives stops and restarts and goes
    only with `remove()`."""

    path: str
    size_gb: float = 1.0


@dataclass(frozen=True)
class LaunchSpec:
    deployment: str  # the deployment's public handle, e.g. "d-7k2m9x4q"
    image: str  # a Docker image reference, or the venv build's "venv://…" reference
    kind: str = "service"  # "service" or "job"
    port: int = 8080  # the port the template listens on inside its image
    health_path: str = "/health"
    ready_path: str = "/ready"
    command: tuple[str, ...] = ()  # a job's command; services run the image's entrypoint
    resources: Resources = field(default_factory=Resources)
    environment: Mapping[str, str] = field(default_factory=dict)
    volume: Volume | None = None
    max_body_bytes: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


class RunPhase(StrEnum):
    STARTING = "starting"  # launched; the process or container is alive
    RUNNING = "running"  # alive (readiness is the hub's to check, through `endpoint`)
    EXITED = "exited"  # it stopped by itself or was killed: see exit_code and detail
    STOPPED = "stopped"  # stopped on purpose by the hub
    MISSING = "missing"  # nothing by that deployment handle on this node


@dataclass(frozen=True)
class RunState:
    deployment: str
    phase: RunPhase
    endpoint: str | None = None  # "http://host:port" the hub can reach
    exit_code: int | None = None
    detail: str = ""  # a person's explanation, e.g. "OOM killed"

    @property
    def alive(self) -> bool:
        return self.phase in (RunPhase.STARTING, RunPhase.RUNNING)


@dataclass(frozen=True)
class Gpu:
    model: str
    memory_gb: float


@dataclass(frozen=True)
class Inventory:
    """What a node really has, as probed (docker info, nvidia-smi, os.cpu_count)."""

    cpus: float
    memory_gb: float
    gpus: tuple[Gpu, ...] = ()


class Runner(Protocol):
    name: str

    def launch(self, spec: LaunchSpec) -> RunState:
        """Start `spec` (replacing a stopped run of the same deployment) and return at once."""

    def status(self, deployment: str) -> RunState: ...

    def logs(self, deployment: str, *, tail: int = 200) -> str: ...

    def stop(self, deployment: str) -> None:
        """Stop it and free its resources; keep its volume. Stopping what is gone is fine."""

    def remove(self, deployment: str) -> None:
        """Stop it and delete everything it had, its volume included. Idempotent."""

    def list(self) -> list[RunState]:
        """Everything on this node that carries this hub's labels, running or not."""

    def inventory(self) -> Inventory: ...


# --- jobs: a command that runs to completion, with input files and declared outputs ---------

# Where a job finds its input files and writes its outputs, inside a container.
JOB_INPUTS_PATH = "/inputs"
JOB_OUTPUT_PATH = "/output"


class OutputRefused(RunnerError):
    """A declared output cannot be taken: missing, not a plain file, a link, outside the job's folder, too large."""


@dataclass(frozen=True)
class JobInputFile:
    """A file on the hub's side, given to the job read-only as `$INPUT_<NAME>`."""

    name: str
    source: str  # a local path the runner reads


@dataclass(frozen=True)
class JobOutputSpec:
    name: str
    path: str  # relative to the job's output folder ($OUTPUT_DIR)


@dataclass(frozen=True)
class JobSpec:
    job: str  # the job's public handle, e.g. "j-7k2m9x4q"
    image: str
    command: tuple[str, ...]
    resources: Resources = field(default_factory=Resources)
    environment: Mapping[str, str] = field(default_factory=dict)
    input_files: tuple[JobInputFile, ...] = ()
    outputs: tuple[JobOutputSpec, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectedOutput:
    """An output copied out of a finished job into a local file."""

    name: str
    path: str
    file: str  # where the runner copied it
    sha256: str
    size: int


_OUTPUT_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def check_output_path(path: str) -> tuple[str, ...]:
    """The parts of a relative output path; OutputRefused for anything that could leave the job's folder."""
    parts = tuple(path.split("/")) if isinstance(path, str) else ()
    if not parts or len(parts) > 16 or any(not _OUTPUT_PART.fullmatch(part) or part in (".", "..") for part in parts):
        raise OutputRefused(
            f"{path!r} is not an output path: use a relative path of names made of letters, digits, '_', '.' or '-' "
            "(no '..', no leading '/'), e.g. model/classifier.pt"
        )
    return parts


class JobRunner(Protocol):
    """What a runner adds to run jobs; `status`, `logs` and `stop` of `Runner` take the job's handle."""

    def launch_job(self, spec: JobSpec) -> RunState:
        """Start the job (replacing an earlier run of the same handle) and return at once."""

    def collect_outputs(self, job: str, outputs: tuple[JobOutputSpec, ...], *, into: str, max_bytes: int) -> list[CollectedOutput]:
        """Copy each declared output of the finished job into the folder `into`; OutputRefused names the first bad one."""

    def remove_job(self, job: str) -> None:
        """Delete the job's run, its inputs and its outputs. Idempotent."""
