"""Hermetic Python dependencies: wheels resolved and downloaded on the hub side, kept in
a shared wheelhouse under their sha256, and locked (name, version, sha256) per build.
Images then install them with `--no-index --require-hashes` and no network."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.utils import parse_wheel_filename

from .errors import BuildFailed


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
        self.root = Path(root)
        self.python_version = python_version

    def path_of(self, wheel: LockedWheel) -> Path:
        return self.root / "files" / wheel.sha256 / wheel.filename

    def resolve(self, requirements: list[str], log=print) -> list[LockedWheel]:
        """The lock for `requirements`, from the wheelhouse when it was resolved before
        (so an unchanged rebuild never calls pip), otherwise through `pip download`."""
        lock_file = self.root / "locks" / f"{self._key(requirements)}.json"
        if lock_file.exists():
            lock = [LockedWheel(**entry) for entry in json.loads(lock_file.read_text())]
            if all(self.path_of(wheel).exists() for wheel in lock):
                return lock
        lock = self._download(requirements, log)
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = lock_file.with_suffix(".tmp")
        temporary.write_text(json.dumps([asdict(wheel) for wheel in lock], indent=1))
        temporary.replace(lock_file)
        return lock

    def _key(self, requirements: list[str]) -> str:
        material = json.dumps({"python": self.python_version, "requirements": sorted(requirements)})
        return hashlib.sha256(material.encode()).hexdigest()

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
        digest = _sha256(path)
        wheel = LockedWheel(name=str(name), version=str(version), filename=path.name, sha256=digest)
        target = self.path_of(wheel)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
        return wheel


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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
