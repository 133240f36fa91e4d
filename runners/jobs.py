"""Taking a finished job's outputs out of its folder, safely: plain Python, no Django.

What a job writes is as untrusted as the publisher's code that wrote it: an output may be
a symbolic link to the hub's secrets, sit under a linked folder, or be far larger than
anyone asked for. Both ways out (a local folder for the process runner, the tar stream
Docker sends for a container's folder) take only regular files reached without following
any link, and stop copying at the size cap.
"""

import hashlib
import os
import stat
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from .base import CollectedOutput, JobOutputSpec, OutputRefused, check_output_path

CHUNK = 1024 * 1024


def copy_outputs_from_folder(root: Path, outputs: Iterable[JobOutputSpec], *, into: Path, max_bytes: int) -> list[CollectedOutput]:
    """Copy each output from under `root`, opening every part of its path without following links."""
    into.mkdir(parents=True, exist_ok=True)
    return [_copy_one_from_folder(root, output, into, max_bytes) for output in outputs]


def _copy_one_from_folder(root: Path, output: JobOutputSpec, into: Path, max_bytes: int) -> CollectedOutput:
    parts = check_output_path(output.path)
    try:
        descriptor = _open_without_links(root, parts)
    except FileNotFoundError:
        raise OutputRefused(f"output {output.name}: the job did not write {output.path}") from None
    except OSError as error:
        # ELOOP / ENOTDIR: a link where a folder or the file should be.
        raise OutputRefused(f"output {output.name}: {output.path} is a symbolic link or under one; "
                            f"an output must be a plain file ({error.strerror})") from None
    with os.fdopen(descriptor, "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            raise OutputRefused(f"output {output.name}: {output.path} is not a plain file")
        return _stream_copy(source, output, into, max_bytes)


def _open_without_links(root: Path, parts: tuple[str, ...]) -> int:
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            os.close(folder)
            folder = inner
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
    finally:
        os.close(folder)


def copy_outputs_from_tar(stream: BinaryIO, top: str, outputs: Iterable[JobOutputSpec], *, into: Path,
                          max_bytes: int) -> list[CollectedOutput]:
    """Copy the outputs out of the tar stream of the job's output folder (named `top` in
    the archive), as Docker's `get_archive` sends it: links arrive as links, never followed."""
    into.mkdir(parents=True, exist_ok=True)
    wanted = {f"{top}/{'/'.join(check_output_path(output.path))}": output for output in outputs}
    collected: dict[str, CollectedOutput] = {}
    links: list[str] = []
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            name = member.name.rstrip("/")
            if member.issym() or member.islnk():
                links.append(name)
            output = wanted.get(name)
            if output is None:
                continue
            if not member.isreg():
                kind = "a symbolic link" if member.issym() or member.islnk() else "not a plain file"
                raise OutputRefused(f"output {output.name}: {output.path} is {kind}; an output must be a plain file")
            if member.size > max_bytes:
                raise OutputRefused(_too_large(output, max_bytes))
            collected[name] = _stream_copy(archive.extractfile(member), output, into, max_bytes)
    return [collected[name] if name in collected else _missing(output, name, links) for name, output in wanted.items()]


def _missing(output: JobOutputSpec, name: str, links: list[str]) -> CollectedOutput:
    if any(name.startswith(link + "/") for link in links):
        raise OutputRefused(f"output {output.name}: {output.path} is under a symbolic link; an output must be a plain file")
    raise OutputRefused(f"output {output.name}: the job did not write {output.path}")


def _stream_copy(source: BinaryIO, output: JobOutputSpec, into: Path, max_bytes: int) -> CollectedOutput:
    digest = hashlib.sha256()
    size = 0
    target = into / output.name
    with open(target, "wb") as copy:
        for chunk in _chunks(source):
            size += len(chunk)
            if size > max_bytes:
                copy.close()
                target.unlink(missing_ok=True)
                raise OutputRefused(_too_large(output, max_bytes))
            digest.update(chunk)
            copy.write(chunk)
    return CollectedOutput(name=output.name, path=output.path, file=str(target), sha256=digest.hexdigest(), size=size)


def _chunks(source: BinaryIO) -> Iterator[bytes]:
    while chunk := source.read(CHUNK):
        yield chunk


def _too_large(output: JobOutputSpec, max_bytes: int) -> str:
    return f"output {output.name}: {output.path} is larger than the limit of {max_bytes} bytes"


class ChunkStream:
    """A file-like reader over an iterator of byte chunks (Docker's archive stream), which
    stops with OutputRefused past `limit` bytes: files nobody declared count too."""

    def __init__(self, chunks: Iterable[bytes], *, limit: int):
        self._chunks = iter(chunks)
        self._buffer = b""
        self._left = limit


    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._left -= len(chunk)
            if self._left < 0:
                raise OutputRefused(f"the job's output folder is larger than the limit of {self._limit_text()}")
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _limit_text(self) -> str:
        return "the outputs' size cap"
