"""The start check: a built service is started with no network and must answer its
ready path before its build counts as verified."""

import pytest
import yaml

from builders.backends import DockerBackend, VenvBackend
from templates_catalog.builds import build_request, build_run
from templates_catalog.models import Build

from ..factories import manifest_data
from .conftest import publish_folder

SETUP_RAISES = """\
class Echo:
    def setup(self):
        raise RuntimeError("the weights file weights.bin is missing")

    def predict(self, batch):
        return batch
"""


def _built(version) -> Build:
    return build_run(build_id=build_request(version=version).pk)


@pytest.fixture
def venv_settings(build_settings, tmp_path):
    build_settings.BUILD_BACKEND = "venv"
    build_settings.VAR_DIR = tmp_path / "var"
    return build_settings


def test_a_service_that_becomes_ready_is_verified_with_its_time_to_ready(db, docker_client, build_settings, echo_template):
    build = _built(echo_template())

    assert build.status == "succeeded", build.error + build.log_tail()
    assert build.verified is True
    assert 0 < build.ready_seconds < build_settings.BUILD_VERIFY_TIMEOUT_SECONDS
    assert "answered 200 after" in build.log
    # The check's container is gone, whatever happened.
    assert docker_client.containers.list(all=True, filters={"label": f"io.aihub.verify={build.image_reference}"}) == []


def test_the_check_runs_with_no_network(db, docker_client, build_settings, echo_template):
    handler = """\
import socket


class Echo:
    def setup(self):
        interfaces = [name for _, name in socket.if_nameindex()]
        if interfaces != ["lo"]:
            raise RuntimeError(f"a network is attached: {interfaces}")

    def predict(self, batch):
        return batch
"""
    build = _built(echo_template(handler=handler))

    assert build.status == "succeeded", build.error
    assert build.verified is True


def test_a_template_whose_setup_raises_fails_its_build_with_its_log_lines(db, docker_client, build_settings, echo_template):
    build_settings.BUILD_VERIFY_TIMEOUT_SECONDS = 60
    build = _built(echo_template(handler=SETUP_RAISES))

    assert build.status == "failed"
    assert build.failure_kind == "template"
    assert build.verified is False
    assert build.error.startswith("the template did not become ready within 60 s: it exited with code")
    assert "fix it and publish a new version, or yank this one" in build.error
    assert "the weights file weights.bin is missing" in build.error
    assert "the weights file weights.bin is missing" in build.verify_log
    assert docker_client.containers.list(all=True, filters={"label": f"io.aihub.verify={build.image_reference}"}) == []


def test_a_template_that_never_becomes_ready_fails_at_the_deadline(db, docker_client, build_settings, echo_template):
    handler = "import time\n\n\nclass Echo:\n    def setup(self):\n        time.sleep(600)\n\n    def predict(self, batch):\n        return batch\n"
    build_settings.BUILD_VERIFY_TIMEOUT_SECONDS = 3
    build = _built(echo_template(handler=handler))

    assert build.status == "failed"
    assert build.error.startswith("the template did not become ready within 3 s: /ready did not answer 200")
    assert build.verified is False


def test_a_cache_hit_keeps_the_verification_of_the_build_before_it(db, docker_client, build_settings, echo_template, monkeypatch):
    version = echo_template()
    first = _built(version)
    assert first.verified is True, first.error

    monkeypatch.setattr(DockerBackend, "verify_starts", lambda *a, **k: pytest.fail("a verified image must not be started again"))
    again = _built(version)

    assert again.cache_hit and again.status == "succeeded"
    assert (again.verified, again.ready_seconds) == (True, first.ready_seconds)
    assert f"verified before by build {first.pk}" in again.log


def test_a_cache_hit_of_an_image_never_verified_is_checked(db, docker_client, build_settings, echo_template):
    version = echo_template()
    first = _built(version)
    Build.objects.filter(pk=first.pk).update(verified=None, ready_seconds=None)  # as built before the check existed

    again = _built(version)

    assert again.cache_hit and again.verified is True and again.ready_seconds > 0


def test_a_venv_build_is_verified(db, venv_settings, echo_template):
    build = _built(echo_template())

    assert build.status == "succeeded", build.error + build.log_tail()
    assert build.verified is True and build.ready_seconds > 0


def test_a_venv_build_whose_setup_raises_fails_with_its_log_lines(db, venv_settings, echo_template):
    build = _built(echo_template(handler=SETUP_RAISES))

    assert build.status == "failed"
    assert build.failure_kind == "template" and build.verified is False
    assert "the template did not become ready within" in build.error
    assert "the weights file weights.bin is missing" in build.verify_log


def test_a_venv_build_that_ignores_its_deadline_is_stopped(db, venv_settings, echo_template):
    handler = "import time\n\n\nclass Echo:\n    def setup(self):\n        time.sleep(600)\n\n    def predict(self, batch):\n        return batch\n"
    venv_settings.BUILD_VERIFY_TIMEOUT_SECONDS = 2
    build = _built(echo_template(handler=handler))

    assert build.status == "failed" and "within 2 s" in build.error


@pytest.mark.parametrize("serve", [None, {"handler": "serve:Model"}], ids=["no serve", "serve for its outputs"])
def test_a_job_is_not_started(db, venv_settings, publisher, tmp_path, monkeypatch, serve):
    # A fine-tune declares `serve` for the versions published from its outputs: that code
    # cannot start before the job has run (the real fine-tune's build failed on it).
    monkeypatch.setattr(VenvBackend, "verify_starts", lambda *a, **k: pytest.fail("a job has nothing to start at build time"))
    manifest = manifest_data(name="once", kind="job", serve=serve, job={"command": ["python", "job.py"]})
    manifest["runtime"] = {"python": "3.11", "packages": ["six==1.16.0"]}
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "hub.yaml").write_text(yaml.safe_dump(manifest))
    (tmp_path / "job" / "job.py").write_text("print('done')\n")
    (tmp_path / "job" / "serve.py").write_text("class Model:\n    def predict(self, batch):\n        return batch\n")
    version = publish_folder(tmp_path / "job", publisher)

    build = _built(version)

    assert build.status == "succeeded", build.error
    assert build.verified is None and build.ready_seconds is None

