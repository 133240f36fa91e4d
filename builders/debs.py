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

# Package names are passed as arguments ("$@"), never spliced into the script. apt-get
# reads a name with ".", "+" or "*" as a pattern when no package has exactly that name
# (and apt-cache show/policy do too), so each name is first looked up among the exact
# package names and then asked for as ?exact-name(NAME). Sizes are summed from
# --print-uris before anything is downloaded.
DOWNLOAD_SCRIPT = r"""
set -e
mkdir -p /debs/partial
apt-get update -qq
apt-cache pkgnames > /tmp/hub-names
for name in "$@"; do
    grep -Fxq -e "$name" /tmp/hub-names || { echo "hub-missing: $name" >&2; exit 3; }
    set -- "$@" "?exact-name($name)"
    shift
done
apt-get install --print-uris -qq --no-install-recommends -y "$@" > /tmp/hub-uris
total=$(awk '{ sum += $3 } END { printf "%.0f", sum }' /tmp/hub-uris)
echo "hub-total-bytes: $total"
[ "$total" -le "$HUB_MAX_BYTES" ] || { echo "hub-too-large: $total" >&2; exit 4; }
apt-get install --download-only --no-install-recommends -y -qq -o Dir::Cache::archives=/debs "$@"
rm -rf /debs/partial /debs/lock
chown -R "$HUB_OWNER" /debs
"""
# What a name may look like (Debian policy 5.6.1): nothing else reaches apt.
_DEBIAN_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
# Part of every lock's key: bump it when the same names would resolve differently.
RESOLVER_VERSION = 2
MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class LockedDeb:
    filename: str
    sha256: str


class DebCache:
    def __init__(self, root: Path, *, max_megabytes: int = 500):
        self.store = ContentStore(root)
        self.max_megabytes = max_megabytes

    def path_of(self, deb: LockedDeb) -> Path:
        return self.store.path_of(deb.sha256, deb.filename)

    def resolve(self, packages: list[str], *, client: docker.DockerClient, base_image: str, base_image_id: str, log) -> list[LockedDeb]:
        if not packages:
            return []
        _check_names(packages)
        key = key_of({"base_image": base_image_id, "packages": sorted(packages), "resolver": RESOLVER_VERSION})
        saved = self.store.lock(key)
        if saved is not None:
            lock = [LockedDeb(**entry) for entry in saved]
            # The cap may have been lowered since this lock was saved.
            self._check_size(sum(self.path_of(deb).stat().st_size for deb in lock))
            return lock
        lock = self._download(packages, client, base_image, log)
        self.store.save_lock(key, [asdict(deb) for deb in lock])
        return lock

    def _download(self, packages: list[str], client, base_image: str, log) -> list[LockedDeb]:
        log(f"resolving system packages {', '.join(packages)} against {base_image}")
        environment = {
            "HUB_OWNER": f"{os.getuid()}:{os.getgid()}",
            "HUB_MAX_BYTES": str(self.max_megabytes * MEGABYTE),
            "DEBIAN_FRONTEND": "noninteractive",
        }
        with tempfile.TemporaryDirectory(prefix="hub-debs-") as scratch:
            try:
                output = client.containers.run(
                    base_image,
                    ["sh", "-c", DOWNLOAD_SCRIPT, "sh", *packages],
                    environment=environment,
                    volumes={scratch: {"bind": "/debs", "mode": "rw"}},
                    remove=True,
                    stderr=True,
                )
            except ContainerError as exc:
                raise BuildFailed(self._explain_failure(exc.stderr.decode(errors="replace") if exc.stderr else str(exc))) from None
            total = re.search(rb"hub-total-bytes: (\d+)", output or b"")
            paths = sorted(Path(scratch).glob("*.deb"))
            log(f"downloaded {len(paths)} Debian packages ({_megabytes(int(total.group(1)) if total else 0)})")
            return [LockedDeb(filename=path.name, sha256=self.store.keep(path)) for path in paths]

    def _check_size(self, total_bytes: int) -> None:
        if total_bytes > self.max_megabytes * MEGABYTE:
            raise BuildFailed(self._too_large(total_bytes))

    def _too_large(self, total_bytes: int) -> str:
        return (
            f"the system packages resolve to {_megabytes(total_bytes)} of Debian packages; this hub's limit is "
            f"{self.max_megabytes:,} MB (BUILD_SYSTEM_PACKAGES_MAX_MB): ask for fewer packages in runtime.system_packages"
        )

    def _explain_failure(self, stderr: str) -> str:
        missing = re.search(r"hub-missing: (\S+)", stderr)
        if missing:
            return _no_such_package(missing.group(1))
        too_large = re.search(r"hub-too-large: (\d+)", stderr)
        if too_large:
            return self._too_large(int(too_large.group(1)))
        return "apt could not resolve runtime.system_packages: " + " ".join(stderr.strip().splitlines()[-3:])


def _check_names(packages: list[str]) -> None:
    for name in packages:
        if not _DEBIAN_NAME.fullmatch(name):
            raise BuildFailed(f"runtime.system_packages: {name!r} is not a Debian package name (lowercase letters, digits, + - .)")


def _no_such_package(name: str) -> str:
    return (
        f"no Debian package named {name} exists for the base image: check runtime.system_packages "
        "(names are matched exactly, never as patterns; use `apt-cache search` on the base image's distribution)"
    )


def _megabytes(size: int) -> str:
    megabytes = size / MEGABYTE
    return f"{megabytes:,.1f} MB" if megabytes < 10 else f"{megabytes:,.0f} MB"
