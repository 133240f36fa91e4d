"""The checks an upload passes, run on a folder before publishing: nothing is written."""

import os
import tempfile
from pathlib import Path

from .bundles import PACK_EXCLUDE, BundleInvalid, bundle_extract, bundle_pack
from .manifest import FieldError, Manifest, ManifestInvalid, manifest_from_bytes
from .models import Publisher, Template
from .services import PublishRejected, bundle_limits, manifest_requirements_resolve


def template_folder_check(
    *, folder: Path, publisher: Publisher | None = None, visibility: str = Template.Visibility.PUBLIC
) -> Manifest:
    """Pack `folder` exactly as `publish` does and run the hub's publish-time checks on
    the result; raise PublishRejected listing every problem found."""
    errors = [FieldError("", f"{path} is a symlink; bundles may contain only regular files") for path in _symlinks(folder)]
    try:
        manifest = _checked_bundle(folder)
        manifest_requirements_resolve(manifest=manifest, publisher=publisher, visibility=visibility)
    except PublishRejected as exc:
        errors.extend(exc.errors)
    if errors:
        raise PublishRejected(errors)
    return manifest


def _checked_bundle(folder: Path) -> Manifest:
    with tempfile.NamedTemporaryFile(prefix="bundle-", suffix=".tar.gz") as packed, tempfile.TemporaryDirectory(
        prefix="bundle-"
    ) as unpacked:
        try:
            packed.write(bundle_pack(folder))
            packed.flush()
            contents = bundle_extract(Path(packed.name), Path(unpacked), bundle_limits())
            return manifest_from_bytes(contents.manifest_bytes)
        except BundleInvalid as exc:
            raise PublishRejected(str(exc)) from None
        except ManifestInvalid as exc:
            raise PublishRejected([FieldError(f"hub.yaml {e.field}".strip(), e.message) for e in exc.errors]) from None


def _symlinks(folder: Path) -> list[str]:
    """The links the packer would leave out without a word."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if d not in PACK_EXCLUDE]
        for name in sorted([*dirs, *files]):
            path = Path(root, name)
            if path.is_symlink():
                found.append(path.relative_to(folder).as_posix())
    return sorted(found)
