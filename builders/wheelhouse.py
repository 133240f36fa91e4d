"""Hermetic Python dependencies: wheels resolved and downloaded on the hub side, kept in
a shared wheelhouse under their sha256, and locked (name, version, sha256) per build.
Images then install them with `--no-index --require-hashes` and no network."""

import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.utils import parse_wheel_filename

from .errors import BuildFailed
from .store import ContentStore, key_of


@dataclass(frozen=True)
class LockedWheel:
    name: str
    version: str
    filename: str
    sha256: str

    def requirement_line(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


class Wheelhouse:
    def __init__(self, root: Path, python_version: str = "3.11"):
        self.store = ContentStore(root)
        self.python_version = python_version

    def path_of(self, wheel: LockedWheel) -> Path:
        return self.store.path_of(wheel.sha256, wheel.filename)

    def resolve(self, requirements: list[str], log=print) -> list[LockedWheel]:
        """The lock for `requirements`, from the wheelhouse when it was resolved before
        (so an unchanged rebuild never calls pip), otherwise through `pip download`."""
        key = key_of({"python": self.python_version, "requirements": sorted(requirements)})
        saved = self.store.lock(key)
        if saved is not None:
            return [LockedWheel(**entry) for entry in saved]
        lock = self._download(requirements, log)
        self.store.save_lock(key, [asdict(wheel) for wheel in lock])
        return lock

    def _download(self, requirements: list[str], log) -> list[LockedWheel]:
        log(f"resolving {len(requirements)} pinned packages into wheels for Python {self.python_version}")
        with tempfile.TemporaryDirectory(prefix="hub-wheels-") as scratch:
            # Wheels only: building an sdist would run a stranger's setup.py on the hub.
            command = [
                sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                "--only-binary=:all:", "--python-version", self.python_version, "--dest", scratch, *requirements,
            ]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise BuildFailed(_explain_pip_failure(result.stderr))
            return [self._keep(path) for path in sorted(Path(scratch).glob("*.whl"))]

    def _keep(self, path: Path) -> LockedWheel:
        name, version, _, _ = parse_wheel_filename(path.name)
        return LockedWheel(name=str(name), version=str(version), filename=path.name, sha256=self.store.keep(path))


def _explain_pip_failure(stderr: str) -> str:
    missing = re.search(r"No matching distribution found for (\S+)", stderr)
    if missing:
        return (
            f"no wheel of {missing.group(1)} exists for this Python and platform: check the pin in "
            "runtime.packages, or choose a version that publishes wheels (source builds are not allowed)"
        )
    conflict = re.search(r"ResolutionImpossible|conflicting dependencies", stderr)
    if conflict:
        return "the pinned packages conflict with each other: " + " ".join(stderr.strip().splitlines()[-3:])
    return "pip could not resolve runtime.packages: " + " ".join(stderr.strip().splitlines()[-3:])
