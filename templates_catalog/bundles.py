"""Template bundles: deterministic packing of a folder, and the checks every bundle
passes before the hub keeps it. A bundle is an archive written by a stranger, so it
is read with caps on everything and no link, device or escaping path is accepted.

No Django here: the publish command and the builders use it too.
"""

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

MANIFEST_NAME = "hub.yaml"
README_NAMES = ("README.md", "readme.md", "README.MD", "Readme.md")
CHANGELOG_NAMES = ("CHANGELOG.md", "changelog.md", "Changelog.md", "CHANGES.md")
MAX_README_BYTES = 256 * 1024
CHUNK = 1024 * 1024
# Folders and files a publisher never means to ship.
PACK_EXCLUDE = {"__pycache__", ".git", ".hg", ".svn", ".venv", "venv", "node_modules", ".pytest_cache", ".DS_Store"}


class BundleInvalid(Exception):
    """The bundle cannot be accepted; the message says what to change."""


class BundleTooLarge(BundleInvalid):
    """The bundle's compressed size is over the cap."""


@dataclass(frozen=True)
class BundleLimits:
    max_bytes: int = 100 * 1024 * 1024
    max_members: int = 2000
    max_unpacked_bytes: int = 512 * 1024 * 1024
    max_compression_ratio: int = 50
    # Small archives compress extremely well (tar pads with zeros), so the ratio
    # only matters once the unpacked size is large enough to hurt.
    ratio_applies_above_bytes: int = 64 * 1024 * 1024


@dataclass
class BundleContents:
    manifest_bytes: bytes
    readme: str
    files: list[str] = field(default_factory=list)
    unpacked_bytes: int = 0
    changelog: str = ""
    # (path, size in bytes) of every regular file, in archive order.
    file_sizes: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class HashedFile:
    path: Path
    sha256: str
    size: int


def bundle_pack(folder: Path) -> bytes:
    """Pack `folder` into a reproducible .tar.gz: sorted entries, zeroed owners and
    times, so the same files always give the same sha256 (and re-seeding is a no-op)."""
    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        raise BundleInvalid(f"{folder} has no {MANIFEST_NAME} at its root")
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in _packable_files(folder):
                info = tarfile.TarInfo(path.relative_to(folder).as_posix())
                info.size = path.stat().st_size
                info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                info.mtime = 0
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
    return raw.getvalue()


def _packable_files(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in PACK_EXCLUDE and not Path(root, d).is_symlink())
        for name in sorted(files):
            path = Path(root, name)
            if name in PACK_EXCLUDE or name.endswith(".pyc") or path.is_symlink():
                continue
            found.append(path)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def stream_to_file(source: BinaryIO, target: BinaryIO, *, max_bytes: int) -> tuple[str, int]:
    """Copy `source` to `target` chunk by chunk, hashing as it goes and stopping as
    soon as the size cap is passed, so memory never grows with the bundle."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise BundleTooLarge(f"the bundle is larger than the limit of {_mib(max_bytes)}; make it smaller")
        digest.update(chunk)
        target.write(chunk)
    if size == 0:
        raise BundleInvalid("the bundle is empty; send a .tar.gz with hub.yaml at its root")
    target.flush()
    return digest.hexdigest(), size


def bundle_inspect(path: Path, limits: BundleLimits) -> BundleContents:
    """Check a .tar.gz on disk against every rule and read its manifest and README."""
    compressed = path.stat().st_size
    if compressed > limits.max_bytes:
        raise BundleTooLarge(f"the bundle is larger than the limit of {_mib(limits.max_bytes)}; make it smaller")
    _check_gzip_stream(path, compressed, limits)
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            return _read_members(tar, limits)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise BundleInvalid(f"the bundle is not a readable .tar.gz archive ({_reason(exc)}); pack it with `tar czf`") from None


def bundle_extract(path: Path, target: Path, limits: BundleLimits) -> BundleContents:
    """Inspect, then extract into `target` with PEP 706's `data` filter as a second guard."""
    contents = bundle_inspect(path, limits)
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            tar.extractall(target, filter="data")
    except tarfile.FilterError as exc:
        raise BundleInvalid(f"the bundle has a member that cannot be unpacked safely: {exc}") from None
    return contents


def _check_gzip_stream(path: Path, compressed: int, limits: BundleLimits) -> None:
    """Decompress once without keeping anything, to refuse gzip bombs and truncated
    or non-gzip files before tarfile is given the stream."""
    unpacked = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                unpacked += len(chunk)
                if unpacked > limits.max_unpacked_bytes:
                    raise BundleInvalid(
                        f"the bundle unpacks to more than {_mib(limits.max_unpacked_bytes)}; make it smaller"
                    )
                ratio = unpacked / max(compressed, 1)
                if unpacked > limits.ratio_applies_above_bytes and ratio > limits.max_compression_ratio:
                    raise BundleInvalid(
                        f"the bundle expands more than {limits.max_compression_ratio} times when unpacked "
                        "(a compression bomb?); ship real files, not padding"
                    )
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        raise BundleInvalid(f"the bundle is not a complete gzip file ({_reason(exc)}); send the whole .tar.gz") from None


def _read_members(tar: tarfile.TarFile, limits: BundleLimits) -> BundleContents:
    contents = BundleContents(manifest_bytes=b"", readme="")
    seen: set[str] = set()
    for count, member in enumerate(tar, start=1):
        if count > limits.max_members:
            raise BundleInvalid(f"the bundle has more than {limits.max_members} entries; ship fewer files")
        name = _checked_name(member)
        if member.isdir():
            continue
        if name in seen:
            raise BundleInvalid(f"{name!r} appears twice in the bundle; pack each file once")
        seen.add(name)
        contents.unpacked_bytes += member.size
        if contents.unpacked_bytes > limits.max_unpacked_bytes:
            raise BundleInvalid(f"the bundle unpacks to more than {_mib(limits.max_unpacked_bytes)}; make it smaller")
        contents.files.append(name)
        contents.file_sizes.append((name, member.size))
        if name == MANIFEST_NAME:
            contents.manifest_bytes = _read(tar, member, 64 * 1024, "hub.yaml")
        elif name in README_NAMES and not contents.readme:
            contents.readme = _read(tar, member, MAX_README_BYTES, "README.md").decode("utf-8", errors="replace")
        elif name in CHANGELOG_NAMES and not contents.changelog:
            contents.changelog = _read(tar, member, MAX_README_BYTES, name).decode("utf-8", errors="replace")
    if not seen:
        raise BundleInvalid("the bundle is an empty archive; put hub.yaml and your code in it")
    if MANIFEST_NAME not in seen:
        nested = [name for name in seen if PurePosixPath(name).name == MANIFEST_NAME]
        where = f" (found {nested[0]!r}: pack from inside that folder)" if nested else ""
        raise BundleInvalid(f"the bundle has no hub.yaml at its root{where}")
    return contents


def _checked_name(member: tarfile.TarInfo) -> str:
    name = member.name
    if member.issym() or member.islnk():
        raise BundleInvalid(f"{name!r} is a link; bundles may contain only regular files and folders")
    if not (member.isfile() or member.isdir()):
        raise BundleInvalid(f"{name!r} is a device, pipe or other special file; bundles may contain only regular files")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BundleInvalid(f"{name!r} is an absolute path; paths in a bundle must be relative to its root")
    parts = PurePosixPath(name).parts
    if ".." in parts or "\\" in name:
        raise BundleInvalid(f"{name!r} points outside the bundle; remove `..` from paths")
    if any(ord(ch) < 32 for ch in name):
        raise BundleInvalid(f"{name!r} contains control characters; rename the file")
    clean = PurePosixPath(*[part for part in parts if part != "."]).as_posix()
    return clean


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, label: str) -> bytes:
    if member.size > limit:
        raise BundleInvalid(f"{label} is {member.size} bytes; the limit is {limit}")
    handle = tar.extractfile(member)
    assert handle is not None  # regular files always have a stream
    return handle.read()


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


def file_sha256(path: Path) -> HashedFile:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return HashedFile(path=Path(path), sha256=digest.hexdigest(), size=size)
