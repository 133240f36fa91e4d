"""Hermetic system packages: Debian packages resolved and downloaded on the hub side,
in a throw-away container of the base image itself (so apt resolves dependencies against
exactly what the base image has), kept under their sha256 and installed in the image
build with dpkg and no network."""

import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import docker
from docker.errors import ContainerError

from .errors import BuildFailed
from .store import ContentStore, key_of

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
        self.store = ContentStore(root)

    def path_of(self, deb: LockedDeb) -> Path:
        return self.store.path_of(deb.sha256, deb.filename)

    def resolve(self, packages: list[str], *, client: docker.DockerClient, base_image: str, base_image_id: str, log) -> list[LockedDeb]:
        if not packages:
            return []
        key = key_of({"base_image": base_image_id, "packages": sorted(packages)})
        saved = self.store.lock(key)
        if saved is not None:
            return [LockedDeb(**entry) for entry in saved]
        lock = self._download(packages, client, base_image, log)
        self.store.save_lock(key, [asdict(deb) for deb in lock])
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
            paths = sorted(Path(scratch).glob("*.deb"))
            return [LockedDeb(filename=path.name, sha256=self.store.keep(path)) for path in paths]


def _explain_apt_failure(stderr: str) -> str:
    missing = re.search(r"Unable to locate package (\S+)", stderr)
    if missing:
        return (
            f"no Debian package named {missing.group(1)} exists for the base image: check runtime.system_packages "
            "(use `apt-cache search` on the base image's distribution)"
        )
    return "apt could not resolve runtime.system_packages: " + " ".join(stderr.strip().splitlines()[-3:])
