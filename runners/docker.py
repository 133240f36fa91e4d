"""The Docker runner: one Docker Engine (one GPU node), through the docker SDK.

Every container runs hardened, whatever its image: a non-root user, all capabilities
dropped, no-new-privileges, a read-only root with a small tmpfs for /tmp, memory, CPU and
pids limits from the deployment's resources, the default bridge network (never the
host's), its port published on the node's address only, and labels that tie it to its
deployment. `container_options` builds all of that from a `LaunchSpec` as plain data, so
the exact request (GPUs included) is testable without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import io
import ipaddress
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest

from .base import (
    JOB_INPUTS_PATH,
    JOB_OUTPUT_PATH,
    LABEL_DEPLOYMENT,
    LABEL_HUB,
    CollectedOutput,
    Gpu,
    Inventory,
    JobOutputSpec,
    JobSpec,
    LaunchSpec,
    NodeUnreachable,
    RunnerError,
    RunPhase,
    RunState,
    check_deployment_handle,
    check_output_path,
)
from .jobs import ChunkStream, copy_outputs_from_tar
from .process import OFFLINE, probe_gpus

APP_USER = "65532:65532"  # the user builders/render.py gives every image
TMPFS_OPTIONS = "rw,noexec,nosuid,size=256m"
PIDS_LIMIT = 1024
STOP_TIMEOUT = 10
CONTAINER_PREFIX = "aihub-"


def container_name(deployment: str) -> str:
    return CONTAINER_PREFIX + check_deployment_handle(deployment)


def volume_name(deployment: str) -> str:
    return f"{container_name(deployment)}-data"


def job_volume_names(job: str) -> tuple[str, str]:
    """The job's two volumes: its input files (mounted read-only) and its output folder."""
    return f"{container_name(job)}-inputs", f"{container_name(job)}-output"


def job_container_options(spec: JobSpec, *, address: str, hub_id: str) -> dict:
    """`container_options` of a job: the same hardening, no port, its inputs read-only."""
    inputs, output = job_volume_names(spec.job)
    environment = {**spec.environment, "OUTPUT_DIR": JOB_OUTPUT_PATH}
    for item in spec.input_files:
        environment[f"INPUT_{item.name.upper()}"] = f"{JOB_INPUTS_PATH}/{item.name}"
    launch = LaunchSpec(deployment=spec.job, image=spec.image, kind="job", command=spec.command,
                        resources=spec.resources, environment=environment, labels=spec.labels)
    options = container_options(launch, address=address, hub_id=hub_id)
    options["volumes"] = {inputs: {"bind": JOB_INPUTS_PATH, "mode": "ro"}, output: {"bind": JOB_OUTPUT_PATH, "mode": "rw"}}
    return options


HOST_ALIAS = "host.docker.internal"


def bridge_gateway_address(client: docker.DockerClient) -> str | None:
    """The host as containers on the default bridge reach it (what `host-gateway`, and so
    HOST_ALIAS, resolves to): the bridge's gateway, which the engine leaves unnamed when it
    is its subnet's first address. None when the engine has no default bridge."""
    try:
        configs = client.networks.get("bridge").attrs["IPAM"]["Config"] or []
    except (DockerException, KeyError):
        return None
    for config in configs:
        if config.get("Gateway"):
            return config["Gateway"]
        if config.get("Subnet"):
            return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))
    return None


def container_environment(spec: LaunchSpec) -> dict[str, str]:
    """What every container of `spec` gets in its environment, whichever engine runs it."""
    environment = {**spec.environment, **OFFLINE}
    if spec.max_body_bytes is not None:
        environment["HUB_MAX_BODY_BYTES"] = str(spec.max_body_bytes)
    return environment


def container_options(spec: LaunchSpec, *, address: str, hub_id: str) -> dict:
    """The keyword arguments of `client.containers.create` for `spec`, hardening included."""
    memory_bytes = int(spec.resources.memory_gb * 1024**3)
    environment = container_environment(spec)
    options = {
        "name": container_name(spec.deployment),
        "image": spec.image,
        "user": APP_USER,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "tmpfs": {"/tmp": TMPFS_OPTIONS},
        "mem_limit": memory_bytes,
        "memswap_limit": memory_bytes,  # the same as the memory limit: no swap on top of it
        "nano_cpus": int(spec.resources.cpu * 1e9),
        "pids_limit": PIDS_LIMIT,
        "privileged": False,
        "network_mode": "bridge",
        # An app reaches what it requires through the hub's gateway (GATEWAY_INTERNAL_URL):
        # `host-gateway` is the engine's name for the host, as Docker Desktop has it built in.
        "extra_hosts": {HOST_ALIAS: "host-gateway"},
        "ports": {f"{spec.port}/tcp": (address, None)} if spec.kind == "service" else {},
        "labels": {**spec.labels, LABEL_DEPLOYMENT: spec.deployment, LABEL_HUB: hub_id},
        "environment": environment,
        # The hub's reconciler restarts what died, and counts it; the engine must not hide a crash loop.
        "restart_policy": {"Name": "no"},
    }
    if spec.kind == "job" and spec.command:
        options["entrypoint"] = list(spec.command)
    if spec.resources.gpus > 0:
        options["device_requests"] = [DeviceRequest(count=spec.resources.gpus, capabilities=[["gpu"]])]
    if spec.volume is not None:
        options["volumes"] = {volume_name(spec.deployment): {"bind": spec.volume.path, "mode": "rw"}}
        environment["HUB_STORAGE_DIR"] = spec.volume.path
    return options


class DockerRunner:
    """One Docker Engine. GPUs: the engine does not report them, so `inventory()` tells the
    ones the operator declared (`gpus=`), else what nvidia-smi sees when the engine is on
    this very machine (a unix socket), else none."""

    name = "docker"

    def __init__(self, base_url: str | None = None, address: str = "127.0.0.1", hub_id: str = "aihub",
                 gpus: tuple[Gpu, ...] | None = None, timeout: int = 60):
        self.base_url = base_url
        self.address = address
        self.hub_id = hub_id
        self.gpus = gpus
        self.timeout = timeout

    @functools.cached_property
    def client(self) -> docker.DockerClient:
        # Created on first use: a node that is down must not fail the runner's construction.
        with engine_errors("connecting to the Docker Engine"):
            if self.base_url:
                return docker.DockerClient(base_url=self.base_url, timeout=self.timeout)
            return docker.from_env(timeout=self.timeout)

    def launch(self, spec: LaunchSpec) -> RunState:
        options = container_options(spec, address=self.address, hub_id=self.hub_id)
        with engine_errors(f"launching {spec.deployment}"):
            self._remove_container(options["name"])
            if spec.volume is not None:
                self._prepare_volume(spec)
            container = self._create(options)
            try:
                container.start()
            except APIError:
                container.remove(force=True)  # nothing half-launched stays behind
                raise
        return self.status(spec.deployment)

    def status(self, deployment: str) -> RunState:
        name = container_name(deployment)
        with engine_errors(f"reading the state of {deployment}"):
            try:
                container = self.client.containers.get(name)
            except NotFound:
                return RunState(deployment=deployment, phase=RunPhase.MISSING)
            return self._state_of(deployment, container.attrs)

    def logs(self, deployment: str, *, tail: int = 200) -> str:
        name = container_name(deployment)
        with engine_errors(f"reading the logs of {deployment}"):
            try:
                container = self.client.containers.get(name)
            except NotFound:
                return ""
            return container.logs(stdout=True, stderr=True, tail=tail).decode(errors="replace")

    def stop(self, deployment: str) -> None:
        name = container_name(deployment)
        with engine_errors(f"stopping {deployment}"):
            self._remove_container(name)

    def remove(self, deployment: str) -> None:
        name = container_name(deployment)
        with engine_errors(f"removing {deployment}"):
            self._remove_container(name)
            with contextlib.suppress(NotFound):
                self.client.volumes.get(volume_name(deployment)).remove()

    def launch_job(self, spec: JobSpec) -> RunState:
        options = job_container_options(spec, address=self.address, hub_id=self.hub_id)
        with engine_errors(f"launching the job {spec.job}"):
            self._remove_container(options["name"])
            self._remove_job_volumes(spec.job)
            self._prepare_job_volumes(spec)
            container = self._create(options)
            try:
                container.start()
            except APIError:
                container.remove(force=True)
                raise
        return self.status(spec.job)

    def collect_outputs(self, job: str, outputs: tuple[JobOutputSpec, ...], *, into: str,
                        max_bytes: int) -> list[CollectedOutput]:
        for output in outputs:
            check_output_path(output.path)
        with engine_errors(f"reading the outputs of {job}"):
            try:
                chunks, _ = self.client.api.get_archive(container_name(job), JOB_OUTPUT_PATH)
            except NotFound:
                raise RunnerError(f"the job {job} is no longer on this node: its outputs are gone") from None
            stream = ChunkStream(chunks, limit=max_bytes * (len(outputs) + 1))
            return copy_outputs_from_tar(stream, JOB_OUTPUT_PATH.strip("/"), outputs, into=Path(into),
                                         max_bytes=max_bytes)

    def remove_job(self, job: str) -> None:
        with engine_errors(f"removing the job {job}"):
            self._remove_container(container_name(job))
            self._remove_job_volumes(job)

    def _prepare_job_volumes(self, spec: JobSpec) -> None:
        """Fill the inputs volume and hand the output volume to the app user, in a helper
        container that never runs the template's code."""
        inputs, output = job_volume_names(spec.job)
        labels = {LABEL_DEPLOYMENT: spec.job, LABEL_HUB: self.hub_id}
        for name in (inputs, output):
            self.client.volumes.create(name, labels=labels)
        helper = self.client.containers.create(
            spec.image, entrypoint=["chown", "-R", APP_USER, JOB_OUTPUT_PATH], user="0:0", cap_drop=["ALL"],
            cap_add=["CHOWN"], security_opt=["no-new-privileges:true"], network_mode="none", labels=labels,
            volumes={inputs: {"bind": JOB_INPUTS_PATH, "mode": "rw"}, output: {"bind": JOB_OUTPUT_PATH, "mode": "rw"}},
        )
        try:
            if spec.input_files and not helper.put_archive(JOB_INPUTS_PATH, _inputs_archive(spec)):
                raise RunnerError(f"copying the input files of {spec.job} onto the node failed")
            helper.start()
            if helper.wait(timeout=self.timeout).get("StatusCode") != 0:
                raise RunnerError(f"preparing the output folder of {spec.job} failed: "
                                  f"{helper.logs().decode(errors='replace')[-500:]}")
        finally:
            helper.remove(force=True)

    def _remove_job_volumes(self, job: str) -> None:
        for name in job_volume_names(job):
            with contextlib.suppress(NotFound):
                self.client.volumes.get(name).remove(force=True)

    def list(self) -> list[RunState]:
        with engine_errors("listing this hub's containers"):
            containers = self.client.containers.list(all=True, filters={"label": f"{LABEL_HUB}={self.hub_id}"})
            return [self._state_of(container.labels.get(LABEL_DEPLOYMENT, container.name), container.attrs)
                    for container in containers]

    def inventory(self) -> Inventory:
        with engine_errors("reading the engine's resources"):
            info = self.client.info()
        return Inventory(cpus=float(info["NCPU"]), memory_gb=round(info["MemTotal"] / 1024**3, 1), gpus=self._gpus())

    def _gpus(self) -> tuple[Gpu, ...]:
        if self.gpus is not None:
            return tuple(self.gpus)
        if self.client.api.base_url == "http+docker://localhost":  # a unix socket: the engine is on this machine
            return probe_gpus()
        return ()

    def _create(self, options: dict):
        try:
            return self.client.containers.create(**options)
        except ImageNotFound:
            self._pull(options["image"])
            return self.client.containers.create(**options)

    def _pull(self, image: str) -> None:
        try:
            self.client.images.pull(image)
        except (APIError, DockerException) as error:
            raise RunnerError(f"the image {image} is not on this node and pulling it failed: {explain_engine_error(error)}") from None

    def _prepare_volume(self, spec: LaunchSpec) -> None:
        """Create the deployment's volume once, owned by the app user (a new volume is root's)."""
        name = volume_name(spec.deployment)
        with contextlib.suppress(NotFound):
            self.client.volumes.get(name)
            return
        volume = self.client.volumes.create(name, labels={LABEL_DEPLOYMENT: spec.deployment, LABEL_HUB: self.hub_id})
        try:
            self.client.containers.run(
                spec.image, entrypoint=["chown", APP_USER, "/volume"], user="0:0", cap_drop=["ALL"],
                cap_add=["CHOWN"], security_opt=["no-new-privileges:true"], network_mode="none",
                volumes={name: {"bind": "/volume", "mode": "rw"}}, remove=True,
                labels={LABEL_DEPLOYMENT: spec.deployment, LABEL_HUB: self.hub_id},
            )
        except (APIError, DockerException) as error:
            volume.remove(force=True)
            raise RunnerError(f"preparing the volume of {spec.deployment} failed: {explain_engine_error(error)}") from None

    def _remove_container(self, name: str) -> None:
        try:
            container = self.client.containers.get(name)
        except NotFound:
            return
        with contextlib.suppress(NotFound):
            if container.status == "running":
                container.stop(timeout=STOP_TIMEOUT)
            container.remove(force=True)

    def _state_of(self, deployment: str, attrs: dict) -> RunState:
        state = attrs["State"]
        status = state["Status"]
        if status in ("running", "paused"):
            return RunState(deployment=deployment, phase=RunPhase.RUNNING, endpoint=self._endpoint(attrs),
                            detail="paused on the node" if status == "paused" else "")
        if status in ("created", "restarting"):
            return RunState(deployment=deployment, phase=RunPhase.STARTING, endpoint=self._endpoint(attrs))
        return RunState(deployment=deployment, phase=RunPhase.EXITED, exit_code=state.get("ExitCode"),
                        detail=_exit_detail(state))

    def _endpoint(self, attrs: dict) -> str | None:
        for bindings in (attrs["NetworkSettings"].get("Ports") or {}).values():
            for binding in bindings or ():
                if binding.get("HostPort"):
                    return f"http://{self.address}:{binding['HostPort']}"
        return None


def _inputs_archive(spec: JobSpec) -> bytes:
    """The input files as a tar, readable by anyone in the container and writable by no one."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for item in spec.input_files:
            info = archive.gettarinfo(item.source, arcname=check_deployment_handle(item.name))
            _root_owned_read_only(info)
            with open(item.source, "rb") as source:
                archive.addfile(info, source)
    return buffer.getvalue()


def _root_owned_read_only(info: tarfile.TarInfo) -> None:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o444


def _exit_detail(state: dict) -> str:
    if state.get("OOMKilled"):
        return "OOM killed: it used more memory than its limit"
    detail = f"exited with code {state.get('ExitCode')}"
    return f"{detail}: {state['Error']}" if state.get("Error") else detail


@contextlib.contextmanager
def engine_errors(action: str) -> Iterator[None]:
    """Every SDK error becomes a RunnerError that says what failed; no answer at all, NodeUnreachable."""
    try:
        yield
    except RunnerError:
        raise
    except requests.exceptions.ConnectionError as error:
        raise NodeUnreachable(f"{action}: the Docker Engine does not answer ({error})") from None
    except DockerException as error:
        if isinstance(error.__cause__ or error.__context__, requests.exceptions.ConnectionError):
            raise NodeUnreachable(f"{action}: the Docker Engine does not answer ({explain_engine_error(error)})") from None
        raise RunnerError(f"{action}: the Docker Engine said: {explain_engine_error(error)}") from None


def explain_engine_error(error: Exception) -> str:
    return getattr(error, "explanation", None) or str(error)
