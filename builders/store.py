"""Files kept under their sha256, and locks (lists of such files) kept under the hash of
what was resolved: shared by the wheelhouse and the Debian package cache."""

import hashlib
import json
import shutil
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def key_of(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


class ContentStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path_of(self, sha256: str, filename: str) -> Path:
        return self.root / "files" / sha256 / filename

    def keep(self, path: Path) -> str:
        """Move `path` into the store (unless an identical file is there) and return its sha256."""
        digest = file_sha256(path)
        target = self.path_of(digest, path.name)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
        return digest

    def lock(self, key: str) -> list[dict] | None:
        """A saved lock whose every file is still in the store, or None."""
        lock_file = self.root / "locks" / f"{key}.json"
        if not lock_file.exists():
            return None
        entries = json.loads(lock_file.read_text())
        return entries if all(self.path_of(e["sha256"], e["filename"]).exists() for e in entries) else None

    def save_lock(self, key: str, entries: list[dict]) -> None:
        lock_file = self.root / "locks" / f"{key}.json"
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = lock_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(entries, indent=1))
        temporary.replace(lock_file)
