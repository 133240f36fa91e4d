"""Build backends: one small interface, chosen by a dotted-path setting."""

import contextlib
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import docker
from docker.errors import APIError, BuildError, ContainerError, DockerException, ImageNotFound

from runners.base import LaunchSpec
from runners.docker import container_options
from runners.process import OFFLINE, SYSTEM_PATH, free_port, harness_environment, start_in_own_group, stop_process_group

from .debs import DebCache, LockedDeb
from .errors import BuildFailed, HubFailure
from .render import BUILD_OUTPUT_DIR, LABEL_ARGS, BuildContext, harness_command
from .retry import RETRY_DELAYS, engine_retrying
from .verify import READY_PROBE, answers_200, wait_until_ready

Log = Callable[[str], None]
IMAGE_NAMESPACE = "aihub"
# Run inside a fresh build, in the template's folder, with no network: a template whose
# handler cannot even be imported fails its build instead of its first deploy.
# It imports the way the harness will (python -P, the template's folder placed after the
# hub's harness), so a bundled `harness` package cannot stand in for the check either.
IMPORT_CHECK = (
    "import importlib, os, sys\n"
    "from pathlib import Path\n"
    "from harness.loader import template_path_add\n"
    "template_path_add(Path(os.getcwd()))\n"
    "module_name, _, class_name = sys.argv[1].partition(':')\n"
    "getattr(importlib.import_module(module_name), class_name)\n"
)


@dataclass(frozen=True)
class BuiltImage:
    reference: str
    digest: str


@dataclass(frozen=True)
class LocalCommand:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


class BuildBackend(Protocol):
    name: str

    def reference_for(self, template_name: str, cache_key: str) -> str:
        """The name this backend gives the artifact of `template_name` built under `cache_key`."""

    def deb_path(self, deb: LockedDeb) -> Path:
        """Where the `.deb` file of a locked system package lies, to copy into a build context."""

    def base_image_id(self, base_image: str) -> str: ...

    def system_packages(self, packages: list[str], *, base_image: str, base_image_id: str, log: Log) -> list[LockedDeb]: ...

    def find(self, reference: str) -> BuiltImage | None: ...

    def python_version(self, base_image: str) -> str: ...

    def build(self, context: BuildContext, *, reference: str, labels: dict[str, str], log: Log) -> BuiltImage: ...

    def verify_starts(self, reference: str, *, launch: LaunchSpec, timeout: float, log: Log) -> float:
        """Start the built service `reference` as `launch` says, with no network; the seconds
        until its ready path answered 200. BuildFailed (with the log tail) if it never did."""


class DockerBackend:
    """Docker Engine through the docker SDK. The build runs with no network; with a
    registry set, the image is pushed there and referenced by its registry name."""

    name = "docker"

    def __init__(
        self,
        base_url: str | None = None,
        registry: str | None = None,
        timeout: int = 1800,
        no_cache: bool = False,
        deb_cache: DebCache | None = None,
    ):
        self.client = docker.DockerClient(base_url=base_url, timeout=timeout) if base_url else docker.from_env(timeout=timeout)
        self.registry = registry.rstrip("/") if registry else None
        self.deb_cache = deb_cache
        # Rebuild every layer (an operator's "from scratch"); cache hits by key still apply.
        self.no_cache = no_cache
        self.retry_delays = RETRY_DELAYS

    def _retrying(self, call, *, action: str, log: Log):
        return engine_retrying(call, action=action, log=log, delays=self.retry_delays)

    def reference_for(self, template_name: str, cache_key: str) -> str:
        return f"{IMAGE_NAMESPACE}/{template_name}:{cache_key[:32]}"

    def deb_path(self, deb: LockedDeb) -> Path:
        if self.deb_cache is None:
            raise HubFailure("this hub is not set up to install system packages (no Debian package cache)")
        return self.deb_cache.path_of(deb)

    def base_image_id(self, base_image: str) -> str:
        try:
            return self._retrying(lambda: self.client.images.get(base_image).id, action="reading the base image", log=_quiet)
        except ImageNotFound:
            raise HubFailure(
                f"the base image {base_image} is not on this Docker Engine: run `python manage.py make_base_image` "
                "or load it, then build again"
            ) from None

    def system_packages(self, packages: list[str], *, base_image: str, base_image_id: str, log: Log) -> list[LockedDeb]:
        if packages and self.deb_cache is None:
            raise HubFailure("this hub is not set up to install system packages (no Debian package cache)")
        if not packages:
            return []
        return self.deb_cache.resolve(packages, client=self.client, base_image=base_image, base_image_id=base_image_id, log=log)

    def python_version(self, base_image: str) -> str:
        return _python_version_in(self.client, self.base_image_id(base_image))

    def find(self, reference: str) -> BuiltImage | None:
        try:
            image = self.client.images.get(reference)
        except ImageNotFound:
            return None
        if self.registry:
            return self._pushed(image, reference)
        return BuiltImage(reference=reference, digest=image.id)

    def _pushed(self, image, reference: str) -> BuiltImage | None:
        """`image` by its digest in this hub's registry; None if it was never pushed there
        (building it again is a layer-cache hit, then a push)."""
        remote = f"{self.registry}/{reference.rsplit(':', 1)[0]}@"
        pushed = next((name for name in image.attrs.get("RepoDigests") or () if name.startswith(remote)), None)
        return BuiltImage(reference=pushed, digest=image.id) if pushed else None

    def build(self, context: BuildContext, *, reference: str, labels: dict[str, str], log: Log) -> BuiltImage:
        if self.no_cache or self.find(context.deps_image) is None:
            log(f"building the dependencies image {context.deps_image}")
            self._build(context.deps_path, context.deps_image, {}, log)
        else:
            log(f"reusing the dependencies image {context.deps_image}: same base image and lock")
        build_args = {arg: labels.get(label, "") for label, arg in LABEL_ARGS.items()}
        image = self._build(context.app_path, reference, build_args, log)
        if context.handler:
            self._check_import(image, reference, context.handler, log)
        if self.registry:
            return self._push(image, reference, log)
        return BuiltImage(reference=reference, digest=image.id)

    def _build(self, path, tag: str, build_args: dict[str, str], log: Log):
        try:
            return self._retrying(lambda: self._build_once(path, tag, build_args, log), action=f"building {tag}", log=log)
        except (APIError, BuildError, DockerException) as exc:
            raise HubFailure(f"the Docker Engine failed the build: {exc}") from None

    def _build_once(self, path, tag: str, build_args: dict[str, str], log: Log):
        stream = self.client.api.build(
            path=str(path), tag=tag, buildargs=build_args, network_mode="none",
            rm=True, forcerm=True, pull=False, decode=True, nocache=self.no_cache,
        )
        for chunk in stream:
            if "error" in chunk:
                raise BuildFailed(_build_error(chunk["error"]))
            if chunk.get("stream"):
                log(chunk["stream"].rstrip("\n"))
        return self.client.images.get(tag)

    def _check_import(self, image, reference: str, handler: str, log: Log) -> None:
        log(f"checking that {handler} imports in the image, with no network")
        try:
            self._retrying(lambda: self.client.containers.run(
                image.id, ["-P", "-c", IMPORT_CHECK, handler], entrypoint=["python"], network_disabled=True, remove=True,
                stderr=True,
            ), action="checking the import", log=log)
        except ContainerError as exc:
            # Untag it, or the next build of the same key would find it and call it a success.
            self.client.images.remove(reference, force=True)
            stderr = exc.stderr.decode(errors="replace") if exc.stderr else str(exc)
            raise BuildFailed(_import_failure(handler, stderr)) from None

    def _push(self, image, reference: str, log: Log) -> BuiltImage:
        repository, tag = reference.rsplit(":", 1)
        remote = f"{self.registry}/{repository}"
        image.tag(remote, tag)
        digest = self._retrying(lambda: self._push_once(remote, tag), action=f"pushing {remote}:{tag}", log=log)
        log(f"pushed {remote}:{tag} ({digest})")
        return BuiltImage(reference=f"{remote}@{digest}" if digest else f"{remote}:{tag}", digest=image.id)

    def _push_once(self, remote: str, tag: str) -> str | None:
        digest = None
        for chunk in self.client.api.push(remote, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise HubFailure(f"pushing to {self.registry} failed: {chunk['error']}")
            digest = chunk.get("aux", {}).get("Digest", digest)
        return digest

    def verify_starts(self, reference: str, *, launch: LaunchSpec, timeout: float, log: Log) -> float:
        log(f"starting the template with no network: {launch.ready_path} must answer within {timeout:g} s")
        options = _verify_options(reference, launch)
        container = self._retrying(lambda: self.client.containers.run(**options, detach=True),
                                   action="starting the template", log=log)
        started = time.monotonic()
        url = f"http://127.0.0.1:{launch.port}{launch.ready_path}"
        try:
            seconds = wait_until_ready(
                ready=lambda: _answers_inside(container, url), exited=lambda: _exit_reason(container),
                logs=lambda: container.logs(stdout=True, stderr=True).decode(errors="replace"),
                ready_path=launch.ready_path, timeout=timeout, started=started,
            )
        finally:
            with contextlib.suppress(DockerException):
                container.remove(force=True)
        log(f"verified: {launch.ready_path} answered 200 after {seconds:.1f} s")
        return seconds


def _quiet(line: str) -> None:
    """A log for engine calls made before a build has a log of its own."""


def _verify_options(reference: str, launch: LaunchSpec) -> dict:
    """The runner's hardened container, without a network, a GPU or the hub's labels (the
    reconciler must not mistake a start check for a deployment)."""
    options = container_options(launch, address="127.0.0.1", hub_id="")
    options.update(
        name=f"aihub-verify-{uuid.uuid4().hex[:12]}", image=reference, network_mode="none", ports={},
        labels={"io.aihub.verify": reference},
    )
    options.pop("device_requests", None)
    if launch.volume is not None:
        # A tmpfs where the deployment's volume will be: nothing of the check outlives it.
        options.pop("volumes", None)
        options["tmpfs"] = {**options["tmpfs"], launch.volume.path: "rw,nosuid,nodev,size=256m,mode=1777"}
    return options


def _answers_inside(container, url: str) -> bool:
    try:
        result = container.exec_run(["python", "-c", READY_PROBE, url])
    except DockerException:
        return False  # not running (yet, or any more): the exit check says which
    return result.exit_code == 0


def _exit_reason(container) -> str | None:
    container.reload()
    state = container.attrs["State"]
    if state["Status"] not in ("exited", "dead"):
        return None
    if state.get("OOMKilled"):
        return "it used more memory than its resources.memory_gb and was killed"
    return f"it exited with code {state.get('ExitCode')} while starting"


@functools.lru_cache(maxsize=32)
def _python_version_in(client, image_id: str) -> str:
    output = client.containers.run(
        image_id, ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], remove=True, network_disabled=True
    )
    return output.decode().strip()


def _import_failure(handler: str, stderr: str) -> str:
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
    return f"serve.handler {handler} cannot be imported in the built template: {last}"


def _build_error(message: str) -> str:
    text = message.strip()
    if "pip install" in text or "requirements.lock" in text:
        return f"installing the locked wheels failed in the image: {text}"
    if "dpkg" in text:
        return f"installing a system package failed: {text}"
    return f"a build step failed: {text}"


class VenvBackend:
    """For machines without an engine: the same locked wheels, installed with no index
    into a virtualenv under a folder, next to the harness and the template."""

    name = "venv"

    def __init__(self, root: str | os.PathLike, python: str | None = None):
        self.root = Path(root)
        self.python = python or sys.executable

    def reference_for(self, template_name: str, cache_key: str) -> str:
        return f"venv://{IMAGE_NAMESPACE}/{template_name}:{cache_key[:32]}"

    def deb_path(self, deb: LockedDeb) -> Path:
        raise BuildFailed(f"the venv backend cannot install system packages ({deb.filename}): build this template on a Docker Engine")

    def base_image_id(self, base_image: str) -> str:
        version = subprocess.run(
            [self.python, "-c", "import sys; print(sys.version)"], capture_output=True, text=True, check=True
        ).stdout.strip()
        return f"venv:{self.python}:{version}"

    def system_packages(self, packages: list[str], *, base_image: str, base_image_id: str, log: Log) -> list[LockedDeb]:
        if packages:
            raise BuildFailed(
                f"the venv backend cannot install system packages ({', '.join(packages)}): build this template on a Docker Engine"
            )
        return []

    def python_version(self, base_image: str) -> str:
        return subprocess.run(
            [self.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, check=True
        ).stdout.strip()

    def find(self, reference: str) -> BuiltImage | None:
        folder = self._folder(reference)
        return BuiltImage(reference=reference, digest=reference.rsplit(":", 1)[1]) if (folder / ".complete").exists() else None

    def build(self, context: BuildContext, *, reference: str, labels: dict[str, str], log: Log) -> BuiltImage:
        target = self._folder(reference)
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
        try:
            self._install(context, scratch, log)
            (scratch / ".complete").write_text("\n".join(f"{k}={v}" for k, v in sorted(labels.items())))
            if target.exists():
                shutil.rmtree(target)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return BuiltImage(reference=reference, digest=reference.rsplit(":", 1)[1])

    def _install(self, context: BuildContext, scratch: Path, log: Log) -> None:
        log(f"creating a virtualenv in {scratch.name}")
        subprocess.run([self.python, "-m", "venv", str(scratch / "venv")], check=True)
        result = subprocess.run(
            [
                str(scratch / "venv" / "bin" / "python"), "-m", "pip", "install", "--no-index", "--require-hashes",
                "--disable-pip-version-check", "--find-links", str(context.deps_path / "wheels"),
                "-r", str(context.deps_path / "requirements.lock"),
            ],
            capture_output=True,
            text=True,
        )
        log(result.stdout[-4000:])
        if result.returncode != 0:
            raise BuildFailed(f"installing the locked wheels failed: {result.stderr.strip()[-1000:]}")
        for part in ("harness", "template"):
            shutil.copytree(context.app_path / part, scratch / part)
        if context.build_command:
            self._run_build_command(scratch, context.build_command, log)
        if context.handler:
            self._check_import(scratch, context.handler, log)

    def _run_build_command(self, folder: Path, command: tuple[str, ...], log: Log) -> None:
        # As the import check: no network namespace without privileges here, so unlike the
        # Docker build this runs with the host's network, and as the hub's own user.
        log(f"running the build command {' '.join(command)}")
        (folder / "template" / BUILD_OUTPUT_DIR).mkdir()
        venv_bin = folder / "venv" / "bin"
        with tempfile.TemporaryDirectory(prefix="build-home-") as home:
            # Only these variables: the hub's own environment (its secrets) never reaches a template.
            environment = {
                "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(folder / "venv"),
                "HOME": home, "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8",
            }
            try:
                result = subprocess.run(list(command), cwd=folder / "template", capture_output=True, text=True,
                                        env=environment)
            except OSError as exc:
                raise BuildFailed(f"the build command {' '.join(command)} could not start: {exc.strerror}") from None
        log((result.stdout + result.stderr)[-4000:])
        if result.returncode != 0:
            raise BuildFailed(
                f"the build command {' '.join(command)} failed with exit code {result.returncode}: "
                f"{result.stderr.strip()[-1000:] or result.stdout.strip()[-1000:]}"
            )

    def _check_import(self, folder: Path, handler: str, log: Log) -> None:
        # No network namespace without privileges here: the import runs with the host's network.
        log(f"checking that {handler} imports in the virtualenv")
        result = subprocess.run(
            [str(folder / "venv" / "bin" / "python"), "-P", "-c", IMPORT_CHECK, handler],
            cwd=folder / "template", capture_output=True, text=True,
            env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(folder)},
        )
        if result.returncode != 0:
            raise BuildFailed(_import_failure(handler, result.stderr))

    def verify_starts(self, reference: str, *, launch: LaunchSpec, timeout: float, log: Log) -> float:
        # No network namespace without privileges here: the template runs with the host's network.
        log(f"starting the template: {launch.ready_path} must answer within {timeout:g} s")
        port = free_port()
        command = self.serve_command(reference, port=port)
        folder = self._folder(reference)
        with tempfile.TemporaryDirectory(prefix="hub-verify-") as scratch:
            base = {"PATH": f"{folder / 'venv' / 'bin'}:{SYSTEM_PATH}", "HOME": scratch, "LANG": "C.UTF-8"}
            storage = {"HUB_STORAGE_DIR": str(Path(scratch) / "volume")} if launch.volume is not None else {}
            env = harness_environment(
                base, harness_parent=folder, extra={**launch.environment, **storage, "PORT": str(port), **OFFLINE}
            )
            log_path = Path(scratch) / "log"
            process = start_in_own_group(command.argv, env=env, log_path=log_path, cwd=command.cwd)
            started = time.monotonic()
            try:
                seconds = wait_until_ready(
                    ready=lambda: answers_200(f"http://127.0.0.1:{port}{launch.ready_path}"),
                    exited=lambda: None if process.poll() is None else f"it exited with code {process.returncode} while starting",
                    logs=lambda: log_path.read_text(errors="replace"),
                    ready_path=launch.ready_path, timeout=timeout, started=started,
                )
            finally:
                stop_process_group(process.pid, alive=lambda: process.poll() is None, grace=5)
        log(f"verified: {launch.ready_path} answered 200 after {seconds:.1f} s")
        return seconds

    def serve_command(self, reference: str, *, port: int, host: str = "127.0.0.1") -> LocalCommand:
        """How a process runner starts a venv-built service: like the image's entrypoint,
        in the template's folder, with the harness copied beside it first on the path."""
        folder = self._folder(reference)
        argv = harness_command(python=str(folder / "venv" / "bin" / "python"), template_dir=str(folder / "template"), host=host, port=port)
        return LocalCommand(argv=argv, env={"PYTHONPATH": str(folder)}, cwd=folder / "template")

    def _folder(self, reference: str) -> Path:
        return venv_folder(self.root, reference)


_VENV_REFERENCE = re.compile(r"venv://([a-z0-9][a-z0-9._/-]{0,200}):([a-z0-9]{1,64})")


def venv_folder(root: Path, reference: str) -> Path:
    """Where the venv backend keeps the build `venv://<name>:<cache key>`: venv/, harness/, template/."""
    match = _VENV_REFERENCE.fullmatch(reference)
    if not match or ".." in match[1]:
        raise ValueError(f"{reference!r} is not a venv build reference (venv://<name>:<cache key>)")
    return Path(root) / match[1].replace("/", "_") / match[2]


def docker_engine_answers(base_url: str | None = None) -> bool:
    try:
        client = docker.DockerClient(base_url=base_url, timeout=3) if base_url else docker.from_env(timeout=3)
        client.ping()
        return True
    except DockerException:
        return False
