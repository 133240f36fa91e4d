"""Build backends: one small interface, chosen by a dotted-path setting."""

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import docker
from docker.errors import APIError, BuildError, DockerException, ImageNotFound

from .debs import DebCache, LockedDeb
from .errors import BuildFailed
from .render import LABEL_ARGS, BuildContext, harness_command

Log = Callable[[str], None]


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

    def base_image_id(self, base_image: str) -> str: ...

    def system_packages(self, packages: list[str], *, base_image: str, base_image_id: str, log: Log) -> list[LockedDeb]: ...

    def find(self, reference: str) -> BuiltImage | None: ...

    def python_version(self, base_image: str) -> str: ...

    def build(self, context: BuildContext, *, reference: str, labels: dict[str, str], log: Log) -> BuiltImage: ...


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

    def base_image_id(self, base_image: str) -> str:
        try:
            return self.client.images.get(base_image).id
        except ImageNotFound:
            raise BuildFailed(
                f"the base image {base_image} is not on this Docker Engine: run `python manage.py make_base_image` "
                "or load it, then build again"
            ) from None

    def system_packages(self, packages: list[str], *, base_image: str, base_image_id: str, log: Log) -> list[LockedDeb]:
        if packages and self.deb_cache is None:
            raise BuildFailed("this hub is not set up to install system packages (no Debian package cache)")
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
        return BuiltImage(reference=reference, digest=image.id)

    def build(self, context: BuildContext, *, reference: str, labels: dict[str, str], log: Log) -> BuiltImage:
        if self.no_cache or self.find(context.deps_image) is None:
            log(f"building the dependencies image {context.deps_image}")
            self._build(context.deps_path, context.deps_image, {}, log)
        else:
            log(f"reusing the dependencies image {context.deps_image}: same base image and lock")
        build_args = {arg: labels.get(label, "") for label, arg in LABEL_ARGS.items()}
        image = self._build(context.app_path, reference, build_args, log)
        if self.registry:
            return self._push(image, reference, log)
        return BuiltImage(reference=reference, digest=image.id)

    def _build(self, path, tag: str, build_args: dict[str, str], log: Log):
        try:
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
        except (APIError, BuildError, DockerException) as exc:
            raise BuildFailed(f"the Docker Engine failed the build: {exc}") from None

    def _push(self, image, reference: str, log: Log) -> BuiltImage:
        repository, tag = reference.rsplit(":", 1)
        remote = f"{self.registry}/{repository}"
        image.tag(remote, tag)
        digest = None
        for chunk in self.client.api.push(remote, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise BuildFailed(f"pushing to {self.registry} failed: {chunk['error']}")
            digest = chunk.get("aux", {}).get("Digest", digest)
        log(f"pushed {remote}:{tag} ({digest})")
        return BuiltImage(reference=f"{remote}@{digest}" if digest else f"{remote}:{tag}", digest=image.id)


@functools.lru_cache(maxsize=32)
def _python_version_in(client, image_id: str) -> str:
    output = client.containers.run(
        image_id, ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], remove=True, network_disabled=True
    )
    return output.decode().strip()


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

    def serve_command(self, reference: str, *, port: int, host: str = "127.0.0.1") -> LocalCommand:
        """How a process runner starts a venv-built service: like the image's entrypoint,
        in the template's folder, with the harness copied beside it first on the path."""
        folder = self._folder(reference)
        argv = harness_command(python=str(folder / "venv" / "bin" / "python"), template_dir=str(folder / "template"), host=host, port=port)
        return LocalCommand(argv=argv, env={"PYTHONPATH": str(folder)}, cwd=folder / "template")

    def _folder(self, reference: str) -> Path:
        # reference: "venv://<name>:<cache key>"
        name, key = reference.removeprefix("venv://").rsplit(":", 1)
        return self.root / name.replace("/", "_") / key


def docker_engine_answers(base_url: str | None = None) -> bool:
    try:
        client = docker.DockerClient(base_url=base_url, timeout=3) if base_url else docker.from_env(timeout=3)
        client.ping()
        return True
    except DockerException:
        return False
