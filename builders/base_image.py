"""A base image made locally, for hosts that cannot pull one (air-gapped sites, and
these machines): debootstrap a minimal Debian with Python, then import it."""

import subprocess
import tempfile
from pathlib import Path

import docker

DEFAULT_MIRROR = "http://deb.debian.org/debian"
PACKAGES = ["python3", "python3-venv", "ca-certificates"]
IMAGE_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["/usr/bin/python3"]',
]


def base_image_make(
    *, name: str, client: docker.DockerClient, suite: str = "bookworm", mirror: str = DEFAULT_MIRROR, log=print
) -> str:
    """Build `name` (repository:tag) and return its image id."""
    repository, _, tag = name.partition(":")
    with tempfile.TemporaryDirectory(prefix="hub-rootfs-") as rootfs:
        log(f"debootstrap {suite} from {mirror} into {rootfs}")
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, rootfs, mirror],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        _trim(Path(rootfs))
        log(f"importing the root filesystem as {name}")
        tar = subprocess.Popen(["tar", "-C", rootfs, "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        try:
            client.api.import_image_from_stream(tar.stdout, repository=repository, tag=tag or "latest", changes=IMAGE_CHANGES)
        finally:
            tar.stdout.close()
            if tar.wait() != 0:
                raise RuntimeError("tar of the root filesystem failed")
    image = client.images.get(name)
    log(f"{name} is {image.id}")
    return image.id


def _trim(rootfs: Path) -> None:
    # Package caches and docs add size and nothing a template needs.
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        subprocess.run(["rm", "-rf", str(rootfs / folder)], check=True)
        (rootfs / folder).mkdir(parents=True, exist_ok=True)
