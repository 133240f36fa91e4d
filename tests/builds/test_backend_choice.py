"""One place turns BUILD_BACKEND into a backend; the web process never probes Docker, the
worker resolves "auto" and records what it used; naming and the Debian package cache are
the backend's."""

from pathlib import Path

import docker
import pytest

from builders.backends import DockerBackend, VenvBackend
from builders.debs import DebCache, LockedDeb
from builders.errors import BuildFailed
from hub_site import backends
from hub_site.backends import build_backend, build_backend_resolve
from templates_catalog import builds
from templates_catalog.builds import build_request, build_run
from templates_catalog.models import Build

KEY = "ab" * 32


@pytest.fixture
def no_docker(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the web process must not talk to Docker")

    monkeypatch.setattr(docker, "from_env", refuse)
    monkeypatch.setattr(docker, "DockerClient", refuse)
    monkeypatch.setattr(backends, "docker_engine_answers", refuse)


@pytest.fixture
def stop_before_building(monkeypatch):
    """Run a build up to the point where it would build, and fail it there."""
    monkeypatch.setattr(builds, "_enqueue", lambda build_id: None)

    def stop(build, log):
        raise BuildFailed(f"stopped before building with {build.backend_used}")

    monkeypatch.setattr(builds, "_execute", stop)


def test_requesting_a_build_records_auto_without_probing_docker(db, settings, publish, no_docker):
    settings.BUILD_BACKEND = "auto"

    build = build_request(version=publish())
    again = build_request(version=build.version)

    assert (build.backend, build.backend_used) == ("auto", "")
    assert again.pk == build.pk and Build.objects.count() == 1


def test_the_worker_resolves_auto_once_and_records_it(db, settings, publish, monkeypatch, stop_before_building):
    settings.BUILD_BACKEND = "auto"
    monkeypatch.setattr(backends, "docker_engine_answers", lambda: False)

    build = build_run(build_id=build_request(version=publish()).pk)

    assert (build.backend, build.backend_used) == ("auto", "venv")
    assert build.error == "stopped before building with venv"
    assert "--- attempt 1 on venv (asked: auto)" in build.log


def test_a_retried_build_keeps_the_backend_its_first_attempt_chose(db, settings, publish, monkeypatch, stop_before_building):
    settings.BUILD_BACKEND = "auto"
    build = build_request(version=publish())
    Build.objects.filter(pk=build.pk).update(backend_used="docker", attempts=1, status="running")
    monkeypatch.setattr(backends, "docker_engine_answers", lambda: pytest.fail("a retry must not resolve auto again"))

    finished = build_run(build_id=build.pk)

    assert finished.backend_used == "docker" and "attempt 2 on docker (asked: auto)" in finished.log


def test_a_named_backend_is_used_as_is(monkeypatch):
    monkeypatch.setattr(backends, "docker_engine_answers", lambda: pytest.fail("only auto probes"))
    assert build_backend_resolve("venv") == "venv"
    assert build_backend_resolve("docker") == "docker"


def test_auto_is_not_a_backend_until_resolved():
    with pytest.raises(ValueError, match="resolve it"):
        build_backend("auto")


class OwnVenvBackend(VenvBackend):
    """An operator's backend class, named by its dotted path."""

    def __init__(self):
        super().__init__(Path("/nonexistent/venvs"))


def test_a_dotted_path_names_a_backend_class():
    backend = build_backend("tests.builds.test_backend_choice.OwnVenvBackend")
    assert isinstance(backend, OwnVenvBackend)


def test_changing_a_setting_forgets_backends_built_from_the_old_value(settings, tmp_path):
    settings.VAR_DIR = tmp_path / "one"
    first = build_backend("venv")
    settings.VAR_DIR = tmp_path / "two"
    second = build_backend("venv")
    assert (first.root, second.root) == (tmp_path / "one" / "venvs", tmp_path / "two" / "venvs")


def test_each_backend_names_its_artifacts():
    assert VenvBackend(Path("/v")).reference_for("echo", KEY) == f"venv://aihub/echo:{KEY[:32]}"
    docker_backend = DockerBackend.__new__(DockerBackend)  # no engine needed to name an image
    assert docker_backend.reference_for("echo", KEY) == f"aihub/echo:{KEY[:32]}"


def test_the_debian_package_cache_is_part_of_the_backend(tmp_path):
    deb = LockedDeb(filename="jq_1.6_amd64.deb", sha256="c" * 64)
    docker_backend = DockerBackend.__new__(DockerBackend)
    docker_backend.deb_cache = DebCache(tmp_path)
    assert docker_backend.deb_path(deb) == tmp_path / "files" / deb.sha256 / deb.filename

    docker_backend.deb_cache = None
    with pytest.raises(BuildFailed, match="no Debian package cache"):
        docker_backend.deb_path(deb)
    with pytest.raises(BuildFailed, match="the venv backend cannot install system packages"):
        VenvBackend(tmp_path).deb_path(deb)
