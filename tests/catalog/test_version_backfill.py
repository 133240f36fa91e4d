"""Versions published before the hub kept file lists get them from their stored bundles."""

import io

from django.core.files.storage import storages

from templates_catalog.models import TemplateVersion
from templates_catalog.services import template_version_publish
from templates_catalog.version_backfill import versions_backfill_details

from ..factories import bundle_bytes


def _as_published_before(version: TemplateVersion) -> None:
    TemplateVersion.objects.filter(pk=version.pk).update(files=[], changelog="", changelog_html="")


def test_it_reads_the_file_list_and_changelog_back_from_the_stored_bundle(tmp_path, publisher):
    raw = bundle_bytes(tmp_path, files={"handler.py": "x = 1\n", "CHANGELOG.md": "# Changes\n\n- first\n"})
    version = template_version_publish(publisher=publisher, bundle=io.BytesIO(raw)).version
    recorded = TemplateVersion.objects.get(pk=version.pk)
    _as_published_before(version)

    filled = versions_backfill_details(version_model=TemplateVersion, storage=storages["artifacts"])

    version.refresh_from_db()
    assert filled == 1
    assert version.files == recorded.files and ["handler.py", 6] in version.files
    assert version.changelog_html == recorded.changelog_html and "<h1>Changes</h1>" in version.changelog_html


def test_a_missing_or_broken_bundle_leaves_the_version_as_it_was(publish, artifact_root):
    missing = publish(name="gone")
    broken = publish(name="broken")
    kept = publish(name="kept")
    for version in (missing, broken, kept):
        _as_published_before(version)
    storages["artifacts"].delete(missing.bundle_path)
    (artifact_root / broken.bundle_path).write_bytes(b"not a gzip file")

    filled = versions_backfill_details(version_model=TemplateVersion, storage=storages["artifacts"])

    assert filled == 1
    assert TemplateVersion.objects.get(pk=missing.pk).files == []
    assert TemplateVersion.objects.get(pk=broken.pk).files == []
    assert TemplateVersion.objects.get(pk=kept.pk).files != []


def test_versions_that_have_a_file_list_are_left_alone(publish):
    publish()
    assert versions_backfill_details(version_model=TemplateVersion, storage=storages["artifacts"]) == 0
