"""Fill in what publishing records today (the file list with sizes, the CHANGELOG) for
versions published before it did, by reading their stored bundles back. Migration 0007
runs it; it takes the model class so that a migration can pass its historical one."""

import logging
import shutil
import tempfile
from pathlib import Path

from django.core.files.storage import Storage

from .bundles import BundleContents, BundleInvalid, bundle_inspect
from .readme import readme_to_html

logger = logging.getLogger(__name__)


def versions_backfill_details(*, version_model, storage: Storage) -> int:
    """Record files and CHANGELOG for every version that lacks a file list; returns how many
    were filled. A bundle that is missing or unreadable leaves its version as it was (the
    page then says the file list was not recorded) instead of failing the migration."""
    from .services import bundle_limits  # services imports the models; keep this module light

    filled = 0
    for version in version_model.objects.only("pk", "bundle_path", "files").iterator():
        if version.files:
            continue
        contents = _stored_contents(storage, version.bundle_path, bundle_limits())
        if contents is None:
            continue
        version_model.objects.filter(pk=version.pk).update(
            files=[[name, size] for name, size in contents.file_sizes],
            changelog=contents.changelog,
            changelog_html=readme_to_html(contents.changelog),
        )
        filled += 1
    return filled


def _stored_contents(storage: Storage, bundle_path: str, limits) -> BundleContents | None:
    try:
        with storage.open(bundle_path, "rb") as blob, tempfile.NamedTemporaryFile(suffix=".tar.gz") as local:
            shutil.copyfileobj(blob, local)
            local.flush()
            return bundle_inspect(Path(local.name), limits)
    except (OSError, BundleInvalid) as exc:
        logger.warning("file list of %s not recorded: %s", bundle_path, exc)
        return None
