"""Hermetic system packages: Debian packages resolved and downloaded on the hub side,
in a throw-away container of the base image itself (so apt resolves dependencies against
exactly what the base image has), kept under their sha256 and installed in the image
build with dpkg and no network."""

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import docker
from docker.errors import ContainerError

from .errors import BuildFailed

# Package names are passed as arguments ("$@"), never spliced into the script.
DOWNLOAD_SCRIPT = (
    'set -e; mkdir -p /debs/partial; apt-get update -qq; '
    'apt-get install --download-only --no-install-recommends -y -qq -o Dir::Cache::archives=/debs "$@"; '
    'rm -rf /debs/partial /debs/lock; chown -R "$HUB_OWNER" /debs'
)


@dataclass(frozen=True)
class LockedDeb:
    filename: str
    sha256: str


class DebCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path_of(self, deb: LockedDeb) -> Path:
        return self.root / "files" / deb.sha256 / deb.filename

    def resolve(self, packages: list[str], *, client: docker.DockerClient, base_image: str, base_image_id: str, log) -> list[LockedDeb]:
        if not packages:
            return []
        material = json.dumps({"base_image": base_image_id, "packages": sorted(packages)})
        lock_file = self.root / "locks" / f"{hashlib.sha256(material.encode()).hexdigest()}.json"
        if lock_file.exists():
            lock = [LockedDeb(**entry) for entry in json.loads(lock_file.read_text())]
            if all(self.path_of(deb).exists() for deb in lock):
                return lock
        lock = self._download(packages, client, base_image, log)
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        lock_file.write_text(json.dumps([asdict(deb) for deb in lock]))
        return lock

    def _download(self, packages: list[str], client, base_image: str, log) -> list[LockedDeb]:
        log(f"resolving system packages {', '.join(packages)} against {base_image}")
        with tempfile.TemporaryDirectory(prefix="hub-debs-") as scratch:
            try:
                client.containers.run(
                    base_image,
                    ["sh", "-c", DOWNLOAD_SCRIPT, "sh", *packages],
                    environment={"HUB_OWNER": f"{os.getuid()}:{os.getgid()}", "DEBIAN_FRONTEND": "noninteractive"},
                    volumes={scratch: {"bind": "/debs", "mode": "rw"}},
                    remove=True,
                    stderr=True,
                )
            except ContainerError as exc:
                raise BuildFailed(_explain_apt_failure(exc.stderr.decode(errors="replace") if exc.stderr else str(exc))) from None
            return [self._keep(path) for path in sorted(Path(scratch).glob("*.deb"))]

    def _keep(self, path: Path) -> LockedDeb:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        deb = LockedDeb(filename=path.name, sha256=digest)
        target = self.path_of(deb)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
        return deb


def _explain_apt_failure(stderr: str) -> str:
    missing = re.search(r"Unable to locate package (\S+)", stderr)
    if missing:
        return (
            f"no Debian package named {missing.group(1)} exists for the base image: check runtime.system_packages "
            "(use `apt-cache search` on the base image's distribution)"
        )
    return "apt could not resolve runtime.system_packages: " + " ".join(stderr.strip().splitlines()[-3:])
