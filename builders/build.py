"""One build, start to finish, in plain Python: resolve the lock, compute the cache
key, reuse an image with that key or render a context and build it."""

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .backends import BuildBackend, BuiltImage
from .debs import LockedDeb
from .errors import BuildFailed
from .render import RENDERER_VERSION, build_context_render
from .spec import TemplateSpec
from .wheelhouse import LockedWheel, Wheelhouse


@dataclass(frozen=True)
class BuildRequest:
    template_name: str
    version: str
    spec: TemplateSpec
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


def cache_key_for(*, bundle_sha256: str, base_image_id: str, lock: list[LockedWheel], debs: list[LockedDeb] = (),
                  harness_sha256: str = "") -> str:
    material = {
        "bundle": bundle_sha256,
        "base_image": base_image_id,
        "renderer": RENDERER_VERSION,
        "harness": harness_sha256,
        "lock": [asdict(wheel) for wheel in lock],
        "debs": [asdict(deb) for deb in debs],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def harness_digest(harness_dir: Path) -> str:
    """The harness's code as it is copied into every image and venv: a change to it is a new
    artifact, without anyone having to remember to bump RENDERER_VERSION."""
    digest = hashlib.sha256()
    for path in sorted(harness_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(harness_dir).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


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
    spec = request.spec
    debs = backend.system_packages(list(spec.system_packages), base_image=request.base_image, base_image_id=base_id, log=log)
    lock = wheelhouse.resolve([*spec.packages, *harness_requirements], log=log)
    cache_key = cache_key_for(bundle_sha256=request.bundle_sha256, base_image_id=base_id, lock=lock, debs=debs,
                              harness_sha256=harness_digest(harness_dir))
    reference = backend.reference_for(request.template_name, cache_key)
    found = backend.find(reference)
    if found is not None:
        log(f"cache hit: {reference} was built from the same bundle, base image, renderer and lock")
        return BuildOutcome(found, cache_key, True, lock, debs, time.monotonic() - started)
    _require_python(backend, request)
    labels = {**request.labels, "io.aihub.cache-key": cache_key, "io.aihub.renderer-version": RENDERER_VERSION}
    log(f"building {reference}")
    with tempfile.TemporaryDirectory(prefix="hub-context-") as scratch:
        context = build_context_render(
            spec=spec,
            template_dir=request.template_dir,
            lock=lock,
            wheelhouse=wheelhouse,
            harness_dir=harness_dir,
            base_image=request.base_image,
            base_image_id=base_id,
            out=Path(scratch),
            debs=debs,
            deb_path=backend.deb_path,
        )
        image = backend.build(context, reference=reference, labels=labels, log=log)
    return BuildOutcome(image, cache_key, False, lock, debs, time.monotonic() - started)


def _require_python(backend: BuildBackend, request: BuildRequest) -> None:
    wanted = request.spec.python
    found = backend.python_version(request.base_image)
    if found != wanted:
        raise BuildFailed(
            f"the template asks for Python {wanted} but the base image {request.base_image} has Python {found}: "
            f"set runtime.python to {found}, or have the hub's operators provide a {wanted} base image"
        )


def read_requirements(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def harness_pins_for(spec: TemplateSpec, harness_pins: list[str]) -> list[str]:
    """The harness's pins a template needs: none for a job that serves nothing, and never
    one for a package the template pins itself (its pin wins). Names are compared
    canonically: `prometheus_client==…` replaces `prometheus-client==…`."""
    if spec.serve is None:
        return []
    own = {_canonical_name(pin) for pin in spec.packages}
    return [pin for pin in harness_pins if _canonical_name(pin) not in own]


def _canonical_name(pin: str) -> str:
    try:
        return canonicalize_name(Requirement(pin).name)
    except InvalidRequirement:
        raise BuildFailed(f"{pin!r} is not a valid requirement: write `name==version`") from None
