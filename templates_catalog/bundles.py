"""Template bundles: deterministic packing of a folder, and the checks every bundle
passes before the hub keeps it. A bundle is an archive written by a stranger, so it
is read with caps on everything and no link, device or escaping path is accepted.

No Django here: the publish command and the builders use it too.
"""

import errno
import gzip
import hashlib
import io
import os
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

MANIFEST_NAME = "hub.yaml"
README_NAMES = ("README.md", "readme.md", "README.MD", "Readme.md")
CHANGELOG_NAMES = ("CHANGELOG.md", "changelog.md", "Changelog.md", "CHANGES.md")
MAX_README_BYTES = 256 * 1024
CHUNK = 1024 * 1024
# Folders and files a publisher never means to ship.
PACK_EXCLUDE = {"__pycache__", ".git", ".hg", ".svn", ".venv", "venv", "node_modules", ".pytest_cache", ".DS_Store"}
PACK_HINT = "pack the folder as .tar.gz: `tar czf bundle.tar.gz -C FOLDER .` or `python manage.py publish FOLDER`"
# Linux refuses longer file names (NAME_MAX); the path and depth caps are ours, far
# above what a template needs and far below where extraction would fail.
MAX_NAME_PART_BYTES = 255
MAX_PATH_BYTES = 1024
MAX_PATH_DEPTH = 32
# Other archive formats, recognised by their first bytes, so a publisher is told what
# they sent instead of "Not a gzipped file".
FOREIGN_MAGIC = {
    b"PK\x03\x04": "a ZIP archive",
    b"PK\x05\x06": "a ZIP archive",
    b"BZh": "a bzip2 file",
    b"\xfd7zXZ\x00": "an xz file",
    b"\x28\xb5\x2f\xfd": "a zstd file",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive",
}
# Errors of the hub's own disk, not of the bundle: those stay server errors.
SERVER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EROFS}


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
    _check_format(path)
    _check_gzip_stream(path, compressed, limits)
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            return _read_members(tar, limits)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise BundleInvalid(f"the bundle is not a readable .tar.gz archive ({_reason(exc)}); pack it with `tar czf`") from None


def bundle_extract(path: Path, target: Path, limits: BundleLimits) -> BundleContents:
    """Inspect, then extract into `target` with PEP 706's `data` filter as a second guard."""
    contents = bundle_inspect(path, limits)
    current: list[tarfile.TarInfo] = []
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            tar.extractall(target, members=_noting_current(tar, current), filter="data")
    except tarfile.FilterError as exc:
        raise BundleInvalid(f"the bundle has a member that cannot be unpacked safely: {exc}") from None
    except (tarfile.TarError, OSError, UnicodeError) as exc:
        if isinstance(exc, OSError) and exc.errno in SERVER_ERRNOS:
            raise
        # The inspection should have caught it; whatever slipped through is still the bundle's fault.
        raise BundleInvalid(_unpack_failure(current, exc)) from None
    return contents


def _unpack_failure(current: list[tarfile.TarInfo], exc: Exception) -> str:
    where = _shown(current[-1].name) if current else "a member"
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else _reason(exc)
    return f"{where} cannot be unpacked ({reason}); rename or remove it"


def _noting_current(tar: tarfile.TarFile, current: list[tarfile.TarInfo]) -> Iterator[tarfile.TarInfo]:
    """Yield every member, remembering the last one, so an extraction error can name it."""
    for member in tar:
        current[:] = [member]
        yield member


def _check_format(path: Path) -> None:
    with open(path, "rb") as handle:
        head = handle.read(512)
    kind = next((kind for magic, kind in FOREIGN_MAGIC.items() if head.startswith(magic)), None)
    if kind is None and head[257:262] == b"ustar":
        kind = "an uncompressed tar archive"
    if kind is not None:
        raise BundleInvalid(f"this is {kind}, not a .tar.gz; {PACK_HINT}")


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
    files: set[str] = set()
    folders: set[str] = set()
    for count, member in enumerate(tar, start=1):
        if count > limits.max_members:
            raise BundleInvalid(f"the bundle has more than {limits.max_members} entries; ship fewer files")
        name = _checked_name(member)
        _check_tree(member, name, files, folders)
        if member.isdir():
            folders.add(name)
            continue
        files.add(name)
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
    if not files:
        raise BundleInvalid("the bundle is an empty archive; put hub.yaml and your code in it")
    if MANIFEST_NAME not in files:
        nested = sorted(name for name in files if PurePosixPath(name).name == MANIFEST_NAME)
        where = f" (found {nested[0]!r}: pack from inside that folder)" if nested else ""
        raise BundleInvalid(f"the bundle has no hub.yaml at its root{where}")
    return contents


def _check_tree(member: tarfile.TarInfo, name: str, files: set[str], folders: set[str]) -> None:
    """Refuse what would only fail at extraction: a file where a folder is (or will be
    implied), a path beneath a file, and a file named twice."""
    parents = [parent.as_posix() for parent in PurePosixPath(name).parents][:-1]
    under_file = next((parent for parent in parents if parent in files), None)
    if under_file is not None:
        raise BundleInvalid(f"{member.name!r} is inside {under_file!r}, which is a file earlier in the bundle; rename one of them")
    folders.update(parents)
    if member.isdir() and name in files:
        raise BundleInvalid(f"{member.name!r} is a folder, but a file of the same name is earlier in the bundle; rename one of them")
    if not member.isdir() and name in folders:
        raise BundleInvalid(f"{member.name!r} is a file, but a folder of the same name is earlier in the bundle; rename one of them")
    if not member.isdir() and name in files:
        raise BundleInvalid(f"{name!r} appears twice in the bundle; pack each file once")


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
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise BundleInvalid(f"{name!r} contains control characters; rename the file")
    clean = PurePosixPath(*[part for part in parts if part != "."]).as_posix()
    if not name or (clean == "." and not member.isdir()):
        raise BundleInvalid(f"a file in the bundle has an empty name ({name!r}); give every file a name")
    if member.isfile() and name.endswith("/"):
        raise BundleInvalid(f"{name!r} is a file whose name ends with `/`; remove the `/` or make it a folder")
    _check_length(name, clean)
    return clean


def _check_length(name: str, clean: str) -> None:
    encoded = clean.encode("utf-8", errors="surrogateescape")
    if len(encoded) > MAX_PATH_BYTES:
        raise BundleInvalid(f"{_shown(name)} is a path of {len(encoded)} bytes; the limit is {MAX_PATH_BYTES}: shorten it")
    parts = clean.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        raise BundleInvalid(f"{_shown(name)} is {len(parts)} folders deep; the limit is {MAX_PATH_DEPTH}: flatten it")
    too_long = next((part for part in parts if len(part.encode("utf-8", errors="surrogateescape")) > MAX_NAME_PART_BYTES), None)
    if too_long is not None:
        raise BundleInvalid(
            f"{_shown(name)} has a name of more than {MAX_NAME_PART_BYTES} bytes ({_shown(too_long)}); shorten it"
        )


def _shown(name: str, limit: int = 80) -> str:
    """A member's name for a message, cut short when it is the problem."""
    return repr(name) if len(name) <= limit else f"{name[:limit]!r}…"


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
