"""`validate_template` answers what the hub would answer to an upload of the folder."""

import os
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from templates_catalog.models import Template, TemplateVersion

from ..factories import manifest_data


def _folder(tmp_path: Path, files: dict[str, str] | None = None, **overrides) -> Path:
    folder = tmp_path / "template"
    folder.mkdir(exist_ok=True)
    (folder / "hub.yaml").write_text(yaml.safe_dump(manifest_data(**overrides)))
    for name, text in (files or {"handler.py": "class Model:\n    pass\n"}).items():
        (folder / name).write_text(text)
    return folder


def _validate(folder: Path, **options) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("validate_template", str(folder), stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


def _refusal(folder: Path, **options) -> list[str]:
    err = StringIO()
    with pytest.raises(CommandError, match="the hub would refuse it"):
        call_command("validate_template", str(folder), stdout=StringIO(), stderr=err, **options)
    return err.getvalue().splitlines()


RAG = dict(name="rag", tier="workflow", requires=[{"template": "store", "version": ">=1.0.0", "alias": "store"}])


def test_a_folder_the_hub_accepts_is_valid_and_nothing_is_written(tmp_path, publish):
    publish(name="store")
    before = (Template.objects.count(), TemplateVersion.objects.count())

    out, _ = _validate(_folder(tmp_path, **RAG))

    assert out.strip().endswith("rag 1.0.0 (workflow, service) is valid")
    assert (Template.objects.count(), TemplateVersion.objects.count()) == before


def test_unresolvable_requires_are_reported(tmp_path, db):
    assert _refusal(_folder(tmp_path, **RAG)) == ["hub.yaml requires.0.template: no published template named 'store'; publish it first"]


def test_a_private_requirement_counts_only_for_its_publisher_and_a_private_template(tmp_path, publish, publisher):
    publish(name="store", visibility="private")
    folder = _folder(tmp_path, **RAG)

    assert "no published template named 'store'" in _refusal(folder)[0]
    assert "store is private and a public template may only require public ones" in _refusal(folder, publisher=publisher.slug)[0]
    out, _ = _validate(folder, publisher=publisher.slug, visibility="private")
    assert "is valid" in out


def test_symlinks_are_reported_instead_of_silently_left_out(tmp_path, db):
    folder = _folder(tmp_path)
    os.symlink("/etc/passwd", folder / "passwd")
    os.symlink("handler.py", folder / "alias.py")

    assert _refusal(folder) == [
        "alias.py is a symlink; bundles may contain only regular files",
        "passwd is a symlink; bundles may contain only regular files",
    ]


def test_the_hubs_bundle_limits_apply(tmp_path, db, settings):
    settings.BUNDLE_MAX_MEMBERS = 3
    folder = _folder(tmp_path, files={f"part{i}.py": "x = 1\n" for i in range(5)})

    assert _refusal(folder) == ["the bundle has more than 3 entries; ship fewer files"]


def test_manifest_errors_are_listed_field_by_field(tmp_path, db):
    folder = _folder(tmp_path, version="one", runtime={"system_packages": ["zlib1g-de.+"]})

    lines = _refusal(folder)

    assert [line.split(":")[0] for line in lines] == ["hub.yaml version", "hub.yaml runtime.system_packages.0"]


def test_a_folder_without_hub_yaml_is_refused(tmp_path, db):
    assert "has no hub.yaml at its root" in _refusal(tmp_path)[0]


def test_an_unknown_publisher_is_an_error(tmp_path, db):
    with pytest.raises(CommandError, match="no publisher with the slug 'nobody'"):
        _validate(_folder(tmp_path), publisher="nobody")
