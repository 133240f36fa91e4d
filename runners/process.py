"""The local-process runner: the embedded default, so a machine with no engine deploys too.

It runs a venv build (`venv://…`, see builders.backends.VenvBackend) as a child process:
a service is the serving harness on a free port, a job is its command in the template
folder. Each run is supervised (runners/supervise.py) in a session of its own, and all its
state lives in files under `run_root/<deployment>/`, so `status`, `logs`, `stop` and
`list` work from any process, long after the one that launched it is gone.

Also here: the launching primitives the harness's test helper shares (`harness_command`,
`harness_environment`, `start_in_own_group`, `stop_process_group`). Standard library
only at import time: template environments import this module through
`runners.harness.testing`, and they have no docker SDK.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .base import (
    CollectedOutput,
    Gpu,
    Inventory,
    JobOutputSpec,
    JobSpec,
    LaunchSpec,
    RunnerError,
    RunPhase,
    RunState,
    check_deployment_handle,
)
from .jobs import copy_outputs_from_folder
from .supervise import EXIT, LOG, PID, process_stat

SUPERVISOR = Path(__file__).with_name("supervise.py")
SPEC, STOPPED, VOLUME, HOME = "spec.json", "stopped", "volume", "home"
JOB_INPUTS, JOB_OUTPUT = "inputs", "output"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# Nothing downloads weights at run time; a template's environment cannot turn this off.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
LOG_TAIL_BYTES = 1024 * 1024


# --- launching primitives, shared with runners/harness/testing.py -------------------------

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def harness_command(python: str | Path, template_dir: Path, *, host: str, port: int, module: str = "harness",
                    extra_args: Sequence[str] = ()) -> list[str]:
    # -P: the working folder (a template's) never comes before the hub's harness on the import path.
    return [str(python), "-P", "-m", module, "--template-dir", str(template_dir), "--host", host, "--port", str(port),
            *extra_args]


def harness_environment(base: Mapping[str, str], *, harness_parent: Path,
                        extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` + `extra`, unbuffered, offline, with the folder holding the harness package first on PYTHONPATH."""
    env = {**base, "PYTHONUNBUFFERED": "1", **(extra or {}), **OFFLINE}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(harness_parent), env.get("PYTHONPATH")]))
    return env


def start_in_own_group(command: Sequence[str], *, env: Mapping[str, str], log_path: Path,
                       cwd: Path | None = None) -> subprocess.Popen:
    """Start `command` in a new session (so a new process group) with stdout and stderr in `log_path`."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(list(command), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop_process_group(pgid: int, *, alive: Callable[[], bool], grace: float) -> None:
    """SIGTERM the group (a graceful stop: the handler's close() runs), SIGKILL it if it outlives `grace`.

    `alive` says whether the group's leader still runs; the last SIGKILL ends stragglers
    (workers a server spawned) whose leader already exited.
    """
    _signal_group(pgid, signal.SIGTERM)
    if not _wait_for(lambda: not alive(), grace):
        _signal_group(pgid, signal.SIGKILL)
        _wait_for(lambda: not alive(), 10)
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# --- inventory ------------------------------------------------------------------------

def parse_nvidia_smi(output: str) -> tuple[Gpu, ...]:
    """Lines of `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits` (MiB) → GPUs."""
    gpus = []
    for line in filter(str.strip, output.splitlines()):
        name, _, mebibytes = line.rpartition(",")
        try:
            gpus.append(Gpu(model=name.strip(), memory_gb=round(float(mebibytes) / 1024, 1)))
        except ValueError:
            raise RunnerError(f"nvidia-smi answered a line this hub cannot read: {line!r}") from None
        if not name.strip():
            raise RunnerError(f"nvidia-smi answered a line this hub cannot read: {line!r}")
    return tuple(gpus)


def probe_gpus() -> tuple[Gpu, ...]:
    """This machine's GPUs, as nvidia-smi reports them; none when there is no nvidia-smi."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return ()
    result = subprocess.run([binary, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RunnerError(f"nvidia-smi failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    return parse_nvidia_smi(result.stdout)


def memory_total_gb(meminfo: str) -> float:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024**2, 1)
    raise RunnerError("/proc/meminfo has no MemTotal line")


# --- the runner -----------------------------------------------------------------------

class ProcessRunner:
    """Runs venv builds as supervised local processes. Resources are not enforced (no cgroups):
    the scheduler's bookkeeping is all that keeps this node from being overcommitted."""

    name = "process"

    def __init__(self, run_root: Path, venv_root: Path, host: str = "127.0.0.1", stop_grace: float = 10.0):
        self.run_root = Path(run_root)
        self.venv_root = Path(venv_root)
        self.host = host
        self.stop_grace = stop_grace

    def launch(self, spec: LaunchSpec) -> RunState:
        run_dir = self._run_dir(spec.deployment)
        build = self._build_folder(spec.image)
        if self.status(spec.deployment).alive:
            self.stop(spec.deployment)
        self._reset(run_dir)
        port = free_port(self.host) if spec.kind == "service" else None
        record = {"deployment": spec.deployment, "image": spec.image, "kind": spec.kind, "port": port,
                  "labels": dict(spec.labels)}
        (run_dir / SPEC).write_text(json.dumps(record))
        try:
            self._start_supervised(run_dir, self._command(spec, build, port), env=self._environment(spec, build, run_dir, port),
                                   cwd=build / "template")
        except RunnerError:
            self._reset(run_dir)
            raise
        return self.status(spec.deployment)

    def status(self, deployment: str) -> RunState:
        run_dir = self._run_dir(deployment)
        record = _read_json(run_dir / SPEC)
        if record is None:
            return RunState(deployment=deployment, phase=RunPhase.MISSING)
        pids = _read_pids(run_dir)
        if pids and _alive(pids[0], pids[1]):
            return self._alive_state(deployment, record)
        code = _recorded_exit_code(run_dir, pids)
        exit_code, detail = _describe_exit(code)
        if (run_dir / STOPPED).exists():
            return RunState(deployment=deployment, phase=RunPhase.STOPPED, exit_code=exit_code, detail="stopped by the hub")
        return RunState(deployment=deployment, phase=RunPhase.EXITED, exit_code=exit_code, detail=detail)

    def logs(self, deployment: str, *, tail: int = 200) -> str:
        log = self._run_dir(deployment) / LOG
        if not log.exists():
            return ""
        with open(log, "rb") as file:
            file.seek(max(0, log.stat().st_size - LOG_TAIL_BYTES))
            lines = file.read().decode(errors="replace").splitlines(keepends=True)
        return "".join(lines[-tail:]) if tail > 0 else ""

    def stop(self, deployment: str) -> None:
        run_dir = self._run_dir(deployment)
        if not (run_dir / SPEC).exists():
            return
        (run_dir / STOPPED).touch()
        pids = _read_pids(run_dir)
        if pids and _alive(pids[0], pids[1]):
            pid, start = pids[0], pids[1]
            stop_process_group(pid, alive=lambda: _alive(pid, start), grace=self.stop_grace)

    def remove(self, deployment: str) -> None:
        self.stop(deployment)
        run_dir = self._run_dir(deployment)
        pids = _read_pids(run_dir) if (run_dir / PID).exists() else None
        if pids:
            # The supervisor writes the exit code once its child is gone: let it finish, or
            # its last write lands in a folder being deleted and keeps the folder alive.
            _wait_for(lambda: not _alive(pids[2], pids[3]), self.stop_grace)
        shutil.rmtree(run_dir, ignore_errors=True)

    def launch_job(self, spec: JobSpec) -> RunState:
        """The job's command in the template folder; its input files copied in read-only
        (`$INPUT_<NAME>`), an empty output folder (`$OUTPUT_DIR`)."""
        run_dir = self._run_dir(spec.job)
        if self.status(spec.job).alive:
            self.stop(spec.job)
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        inputs, output = run_dir / JOB_INPUTS, run_dir / JOB_OUTPUT
        _remove_tree(inputs)
        _remove_tree(output)
        inputs.mkdir()
        output.mkdir()
        environment = dict(spec.environment)
        for item in spec.input_files:
            target = inputs / check_deployment_handle(item.name)
            shutil.copyfile(item.source, target)
            target.chmod(0o444)
            environment[f"INPUT_{item.name.upper()}"] = str(target)
        inputs.chmod(0o555)
        environment["OUTPUT_DIR"] = str(output)
        return self.launch(LaunchSpec(deployment=spec.job, image=spec.image, kind="job", command=spec.command,
                                      resources=spec.resources, environment=environment, labels=spec.labels))

    def collect_outputs(self, job: str, outputs: tuple[JobOutputSpec, ...], *, into: str,
                        max_bytes: int) -> list[CollectedOutput]:
        return copy_outputs_from_folder(self._run_dir(job) / JOB_OUTPUT, outputs, into=Path(into), max_bytes=max_bytes)

    def remove_job(self, job: str) -> None:
        _remove_tree(self._run_dir(job) / JOB_INPUTS)
        self.remove(job)

    def list(self) -> list[RunState]:
        if not self.run_root.is_dir():
            return []
        return [self.status(folder.name) for folder in sorted(self.run_root.iterdir()) if (folder / SPEC).is_file()]

    def inventory(self) -> Inventory:
        return Inventory(cpus=float(os.cpu_count() or 1), memory_gb=memory_total_gb(Path("/proc/meminfo").read_text()),
                         gpus=probe_gpus())

    def _run_dir(self, deployment: str) -> Path:
        return self.run_root / check_deployment_handle(deployment)

    def _build_folder(self, image: str) -> Path:
        # builders.backends imports the docker SDK, which template environments (that import
        # this module through the harness's test helper) do not have: import it only here.
        from builders.backends import venv_folder

        if not image.startswith("venv://"):
            raise RunnerError(f"the process runner runs venv builds (venv://…), not the Docker image {image!r}: "
                              "build with the venv backend or deploy to a Docker node")
        try:
            folder = venv_folder(self.venv_root, image)
        except ValueError as error:
            raise RunnerError(str(error)) from None
        if not (folder / ".complete").is_file():
            raise RunnerError(f"the build {image} is not on this node (nothing complete at {folder}): build it first")
        return folder

    def _reset(self, run_dir: Path) -> None:
        """Forget the last run (its pid, exit code, log); keep its volume."""
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in (SPEC, PID, EXIT, STOPPED, LOG):
            (run_dir / name).unlink(missing_ok=True)

    def _command(self, spec: LaunchSpec, build: Path, port: int | None) -> list[str]:
        if spec.kind == "job":
            if not spec.command:
                raise RunnerError(f"the job {spec.deployment} has no command to run")
            return list(spec.command)
        return harness_command(build / "venv" / "bin" / "python", build / "template", host=self.host, port=port)

    def _environment(self, spec: LaunchSpec, build: Path, run_dir: Path, port: int | None) -> dict[str, str]:
        """A fresh environment: the hub's own (its database URL, its secret key) never reaches a template."""
        home = run_dir / HOME
        home.mkdir(exist_ok=True)
        base = {"PATH": f"{build / 'venv' / 'bin'}:{SYSTEM_PATH}", "VIRTUAL_ENV": str(build / "venv"),
                "HOME": str(home), "LANG": "C.UTF-8"}
        extra = dict(spec.environment)
        if port is not None:
            extra["PORT"] = str(port)
        if spec.max_body_bytes is not None:
            extra["HUB_MAX_BODY_BYTES"] = str(spec.max_body_bytes)
        if spec.volume is not None:
            volume = run_dir / VOLUME
            volume.mkdir(exist_ok=True)
            extra["HUB_STORAGE_DIR"] = str(volume)
        return harness_environment(base, harness_parent=build, extra=extra)

    def _start_supervised(self, run_dir: Path, command: list[str], *, env: dict[str, str], cwd: Path) -> None:
        # -I: the supervisor ignores the PYTHON* variables meant for the template.
        with open(run_dir / LOG, "ab") as log:
            supervisor = subprocess.Popen(
                [sys.executable, "-I", str(SUPERVISOR), str(run_dir), "--", *command], env=env, cwd=cwd,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            )
        with supervisor.stdout:
            answer = supervisor.stdout.readline().decode(errors="replace").strip()
        if not answer.startswith("started "):
            supervisor.wait()
            reason = answer.removeprefix("failed ") or self.logs(run_dir.name, tail=20).strip() or "no reason given"
            raise RunnerError(f"could not start {command[0]}: {reason}")

    def _alive_state(self, deployment: str, record: dict) -> RunState:
        port = record.get("port")
        if port is None:
            return RunState(deployment=deployment, phase=RunPhase.RUNNING)
        endpoint = f"http://{self.host}:{port}"
        phase = RunPhase.RUNNING if _accepts_connections(self.host, port) else RunPhase.STARTING
        return RunState(deployment=deployment, phase=phase, endpoint=endpoint)


def _remove_tree(folder: Path) -> None:
    """Remove a job's folder, read-only parts (its inputs) included."""
    if folder.is_dir() and not folder.is_symlink():
        folder.chmod(0o700)
    shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int, start: int) -> bool:
    """Alive and still the process we started: a zombie is dead, and a reused pid has another start time."""
    stat = process_stat(pid)
    return stat is not None and stat[0] not in "ZXx" and stat[1] == start


def _read_pids(run_dir: Path) -> tuple[int, int, int, int] | None:
    try:
        child, child_start, supervisor, supervisor_start = map(int, (run_dir / PID).read_text().split())
    except (FileNotFoundError, ValueError):
        return None
    return child, child_start, supervisor, supervisor_start


def _recorded_exit_code(run_dir: Path, pids: tuple[int, int, int, int] | None) -> int | None:
    """The code the supervisor wrote; it may be a moment behind the child's death, so wait while it lives."""
    exit_file = run_dir / EXIT
    if pids and not exit_file.exists():
        _wait_for(lambda: exit_file.exists() or not _alive(pids[2], pids[3]), 2.0)
    try:
        return int(exit_file.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _describe_exit(code: int | None) -> tuple[int | None, str]:
    """A return code as the (exit code, detail) a person reads; a signal becomes 128+N, as shells and Docker say."""
    if code is None:
        return None, "the process is gone and its exit code was not recorded"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        return 128 - code, f"killed by {name}"
    return code, f"exited with code {code}"


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
