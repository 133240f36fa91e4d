"""Content-addressed blobs in the artifact storage (a local folder or an S3 bucket).

A blob's path is named by the sha256 of its bytes, so every writer of a path writes the
same bytes: writing one that is already stored is a no-op, and two writers racing on one
path both succeed. Nothing here decides that a blob is unused; the sweeper does
(`stored_bundles.blobs_sweep_unreferenced`), never an upload that failed.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage

# A local write lands in a file with this prefix first, then is renamed into place whole.
INCOMING_PREFIX = ".incoming-"


@dataclass(frozen=True)
class StoredFile:
    path: str
    modified: datetime


def blob_put(*, storage: Storage, path: str, file: BinaryIO, size: int, replace: bool = False) -> bool:
    """Store `file` (`size` bytes) at its digest-named `path` unless a whole copy is already
    there (or always, with `replace`: the copy there is known to be bad). True when this
    call wrote it. Safe for any number of concurrent writers."""
    if not replace and _stored_size(storage, path) == size:
        return False
    file.seek(0)
    if isinstance(storage, FileSystemStorage):
        _replace_local(storage, path, file)
    else:
        _replace_remote(storage, path, file)
    return True


def _stored_size(storage: Storage, path: str) -> int | None:
    try:
        return storage.size(path)
    except FileNotFoundError:
        return None


def _replace_local(storage: FileSystemStorage, path: str, file: BinaryIO) -> None:
    # Written beside the target and renamed over it: readers never see half a blob, and a
    # crash leaves only an `.incoming-` file for the sweeper, never a short blob.
    target = Path(storage.path(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, incoming = tempfile.mkstemp(dir=target.parent, prefix=INCOMING_PREFIX, suffix=".part")
    try:
        with os.fdopen(descriptor, "wb") as out:
            shutil.copyfileobj(file, out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(incoming, storage.file_permissions_mode or 0o644)
        os.replace(incoming, target)
    except BaseException:
        Path(incoming).unlink(missing_ok=True)
        raise


def _replace_remote(storage: Storage, path: str, file: BinaryIO) -> None:
    # An object store's PUT is atomic. A copy of the wrong size is replaced, not kept.
    if storage.exists(path):
        storage.delete(path)
    saved = storage.save(path, File(file, name=path))
    if saved != path:
        # Another writer stored this digest between exists() and save(); the storage then
        # saved ours under a new name. Theirs has the same bytes: drop the duplicate.
        storage.delete(saved)


def blob_move(*, storage: Storage, source: str, target: str) -> bool:
    """Move a blob to `target` (replacing what is there); False when `source` is gone."""
    if isinstance(storage, FileSystemStorage):
        Path(storage.path(target)).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(storage.path(source), storage.path(target))
        except FileNotFoundError:
            return False
        return True
    if not storage.exists(source):
        return False
    with storage.open(source, "rb") as stored:
        _replace_remote(storage, target, stored)
    storage.delete(source)
    return True


def blob_list(*, storage: Storage, prefix: str) -> Iterator[StoredFile]:
    """Files directly under `prefix` and one folder below it, with their modification time."""
    folders, files = _listdir(storage, prefix)
    for folder in folders:
        for name in _listdir(storage, f"{prefix}/{folder}")[1]:
            path = f"{prefix}/{folder}/{name}"
            yield StoredFile(path=path, modified=storage.get_modified_time(path))
    for name in files:
        path = f"{prefix}/{name}"
        yield StoredFile(path=path, modified=storage.get_modified_time(path))


def _listdir(storage: Storage, path: str) -> tuple[list[str], list[str]]:
    try:
        return storage.listdir(path)
    except FileNotFoundError:  # a local folder not created yet: nothing stored
        return [], []
