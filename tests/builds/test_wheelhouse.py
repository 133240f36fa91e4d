import subprocess

import pytest

from builders.errors import BuildFailed
from builders.wheelhouse import Wheelhouse


def test_a_resolved_lock_is_reused_without_calling_pip(tmp_path, monkeypatch):
    wheelhouse = Wheelhouse(tmp_path)
    lock = wheelhouse.resolve(["six==1.16.0"])
    assert [(w.name, w.version) for w in lock] == [("six", "1.16.0")]
    assert wheelhouse.path_of(lock[0]).is_file()

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip must not run for a known lock"))
    assert wheelhouse.resolve(["six==1.16.0"]) == lock


def test_a_bad_pin_fails_with_a_readable_reason(tmp_path):
    with pytest.raises(BuildFailed) as failed:
        Wheelhouse(tmp_path).resolve(["six==0.0.999"])
    assert str(failed.value).startswith("no wheel of six==0.0.999 exists for this Python and platform")


def test_sdist_only_packages_are_refused_rather_than_built_on_the_hub(tmp_path):
    # future 0.18.3 exists only as an sdist: building it would run its setup.py on the hub.
    with pytest.raises(BuildFailed, match="no wheel of future==0.18.3"):
        Wheelhouse(tmp_path).resolve(["future==0.18.3"])
