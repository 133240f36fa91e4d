"""The template's folder goes on the import path after the harness's own folder, so a
top-level `harness` (or `runners`) package in a bundle never stands in for the hub's."""

import sys

from runners.harness.loader import HARNESS_ROOT, template_path_add


def test_the_template_folder_comes_right_after_the_harness_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "path", ["/usr/lib/python311.zip", str(HARNESS_ROOT), "/site-packages"])

    template_path_add(tmp_path)

    assert sys.path == ["/usr/lib/python311.zip", str(HARNESS_ROOT), str(tmp_path), "/site-packages"]


def test_a_template_folder_already_ahead_of_the_harness_is_moved_behind_it(monkeypatch, tmp_path):
    # What `python -m harness` run from inside the template's folder (without -P) would give.
    monkeypatch.setattr(sys, "path", [str(tmp_path), str(HARNESS_ROOT), "/site-packages"])

    template_path_add(tmp_path)

    assert sys.path == [str(HARNESS_ROOT), str(tmp_path), "/site-packages"]


def test_the_working_directory_entry_counts_as_the_harness_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(HARNESS_ROOT)
    monkeypatch.setattr(sys, "path", ["", "/site-packages"])

    template_path_add(tmp_path)

    assert sys.path == ["", str(tmp_path), "/site-packages"]
