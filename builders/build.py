"""One build, start to finish, in plain Python: resolve the lock, compute the cache
key, reuse an image with that key or render a context and build it."""

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .backends import BuildBackend, BuiltImage
from .debs import LockedDeb
from .errors import BuildFailed
from .render import RENDERER_VERSION, build_context_render
from .wheelhouse import LockedWheel, Wheelhouse


@dataclass(frozen=True)
class BuildRequest:
    template_name: str
    version: str
    manifest: dict
    bundle_sha256: str
    template_dir: Path
    base_image: str
    labels: dict[str, str]


@dataclass(frozen=True)
class BuildOutcome:
    image: BuiltImage
    cache_key: str
    cache_hit: bool
    lock: list[LockedWheel]
    debs: list[LockedDeb]
    seconds: float


def cache_key_for(*, bundle_sha256: str, base_image_id: str, lock: list[LockedWheel], debs: list[LockedDeb] = ()) -> str:
    material = {
        "bundle": bundle_sha256,
        "base_image": base_image_id,
        "renderer": RENDERER_VERSION,
        "lock": [asdict(wheel) for wheel in lock],
        "debs": [asdict(deb) for deb in debs],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def image_reference(request: BuildRequest, cache_key: str, backend: BuildBackend) -> str:
    name = f"aihub/{request.template_name}"
    return f"venv://{name}:{cache_key[:32]}" if backend.name == "venv" else f"{name}:{cache_key[:32]}"


def build_execute(
    request: BuildRequest,
    *,
    backend: BuildBackend,
    wheelhouse: Wheelhouse,
    harness_dir: Path,
    harness_requirements: list[str],
    log: Callable[[str], None],
) -> BuildOutcome:
    started = time.monotonic()
    base_id = backend.base_image_id(request.base_image)
    runtime = request.manifest["runtime"]
    debs = backend.system_packages(runtime["system_packages"], base_image=request.base_image, base_image_id=base_id, log=log)
    lock = wheelhouse.resolve([*runtime["packages"], *harness_requirements], log=log)
    cache_key = cache_key_for(bundle_sha256=request.bundle_sha256, base_image_id=base_id, lock=lock, debs=debs)
    reference = image_reference(request, cache_key, backend)
    found = backend.find(reference)
    if found is not None:
        log(f"cache hit: {reference} was built from the same bundle, base image, renderer and lock")
        return BuildOutcome(found, cache_key, True, lock, debs, time.monotonic() - started)
    _require_python(backend, request)
    labels = {**request.labels, "io.aihub.cache-key": cache_key, "io.aihub.renderer-version": RENDERER_VERSION}
    log(f"building {reference}")
    with tempfile.TemporaryDirectory(prefix="hub-context-") as scratch:
        context = build_context_render(
            manifest=request.manifest,
            template_dir=request.template_dir,
            lock=lock,
            wheelhouse=wheelhouse,
            harness_dir=harness_dir,
            base_image=request.base_image,
            base_image_id=base_id,
            out=Path(scratch),
            debs=debs,
            deb_cache=getattr(backend, "deb_cache", None),
        )
        image = backend.build(context, reference=reference, labels=labels, log=log)
    return BuildOutcome(image, cache_key, False, lock, debs, time.monotonic() - started)


def _require_python(backend: BuildBackend, request: BuildRequest) -> None:
    wanted = request.manifest["runtime"]["python"]
    found = backend.python_version(request.base_image)
    if found != wanted:
        raise BuildFailed(
            f"the template asks for Python {wanted} but the base image {request.base_image} has Python {found}: "
            f"set runtime.python to {found}, or have the hub's operators provide a {wanted} base image"
        )


def read_requirements(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
