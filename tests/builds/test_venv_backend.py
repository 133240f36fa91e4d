"""The venv backend, for machines without an engine: the same locked wheels, installed
with no index, and the template served from it by the harness."""

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from builders.backends import LocalCommand, VenvBackend
from templates_catalog.builds import build_request, build_run

from ..netutil import free_port
from .conftest import BUILD_SCRIPT, BUILT_COMMAND, BUILT_HANDLER, SHADOW_HARNESS, WHICH_HARNESS_HANDLER


@pytest.fixture
def venv_settings(build_settings, tmp_path):
    build_settings.BUILD_BACKEND = "venv"
    # Changing a setting forgets backends built from the old values (hub_site.backends).
    build_settings.VAR_DIR = tmp_path / "var"
    return build_settings


def test_a_template_builds_into_a_venv_and_serves_from_it(db, venv_settings, echo_template):
    build = build_run(build_id=build_request(version=echo_template()).pk)

    assert build.status == "succeeded", build.error + build.log_tail()
    assert build.backend == build.backend_used == "venv" and build.image_reference.startswith("venv://aihub/echo:")
    folder = VenvBackend(venv_settings.VAR_DIR / "venvs")._folder(build.image_reference)
    installed = subprocess.run([str(folder / "venv/bin/python"), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    assert "six==1.16.0" in installed and "starlette==" in installed

    port = free_port()
    server = _start(VenvBackend(venv_settings.VAR_DIR / "venvs").serve_command(build.image_reference, port=port))
    try:
        answer = _wait_for_ready(port, server)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=b'"hi"', headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert b'"echo":"hi"' in response.read().replace(b" ", b"")
        assert answer == 200
    finally:
        server.terminate()
        server.communicate(timeout=10)

    again = build_run(build_id=build_request(version=build.version).pk)
    assert again.cache_hit and again.image_reference == build.image_reference


def _start(command: LocalCommand) -> subprocess.Popen:
    return subprocess.Popen(
        command.argv, env={**os.environ, **command.env}, cwd=command.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def test_a_template_shipping_its_own_harness_package_is_served_by_the_hubs_from_its_venv(db, venv_settings, echo_template):
    build = build_run(build_id=build_request(version=echo_template(name="shadow", handler=WHICH_HARNESS_HANDLER, files=SHADOW_HARNESS)).pk)
    assert build.status == "succeeded", build.error + build.log_tail()
    backend = VenvBackend(venv_settings.VAR_DIR / "venvs")
    port = free_port()

    server = _start(backend.serve_command(build.image_reference, port=port))
    try:
        _wait_for_ready(port, server)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=b'"hi"', headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    finally:
        server.terminate()
        output = server.communicate(timeout=10)[0].decode()
    assert answer == {"echo": "hi", "harness": str(backend._folder(build.image_reference) / "harness" / "__init__.py")}
    assert "pwned" not in output


def _wait_for_ready(port: int, server: subprocess.Popen) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(server.stdout.read().decode()[-2000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
                return response.status
        except OSError:
            time.sleep(0.2)
    pytest.fail("the venv-built template never became ready")
    return 0


def test_the_venv_backend_needs_no_docker(db, venv_settings, echo_template, monkeypatch):
    import docker

    monkeypatch.setattr(docker, "from_env", lambda *a, **k: pytest.fail("the venv backend must not touch Docker"))
    build = build_run(build_id=build_request(version=echo_template(name="no-docker")).pk)
    assert build.status == "succeeded", build.error
    assert Path(build.image_reference.removeprefix("venv://")).name


def test_the_venv_backend_refuses_system_packages_with_a_reason(db, venv_settings, echo_template):
    build = build_run(build_id=build_request(version=echo_template(name="needs-jq", runtime_system_packages=["jq"])).pk)
    assert build.status == "failed"
    assert "the venv backend cannot install system packages (jq): build this template on a Docker Engine" in build.error


def test_a_template_whose_handler_does_not_import_fails_its_build(db, venv_settings, echo_template):
    version = echo_template(name="broken-import", handler="import not_installed_anywhere\n")

    build = build_run(build_id=build_request(version=version).pk)

    assert build.status == "failed"
    assert build.error == (
        "serve.handler handler:Echo cannot be imported in the built template: "
        "ModuleNotFoundError: No module named 'not_installed_anywhere'"
    )
    assert not list((venv_settings.VAR_DIR / "venvs").rglob(".complete"))  # nothing half-built is kept


def test_the_build_command_runs_in_the_template_folder_and_the_handler_serves_its_output(db, venv_settings, echo_template):
    version = echo_template(name="built", handler=BUILT_HANDLER, files={"build.py": BUILD_SCRIPT}, build_command=BUILT_COMMAND)

    build = build_run(build_id=build_request(version=version).pk)

    assert build.status == "succeeded", build.error + build.log_tail()
    assert "running the build command python build.py build-output/greeting.txt" in build.log_tail()
    backend = VenvBackend(venv_settings.VAR_DIR / "venvs")
    greeting = (backend._folder(build.image_reference) / "template" / "build-output" / "greeting.txt").read_text()
    assert greeting == f"built by uid {os.getuid()} in template"
    port = free_port()
    server = _start(backend.serve_command(build.image_reference, port=port))
    try:
        assert _wait_for_ready(port, server) == 200
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=b'"hi"', headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"echo": "hi", "greeting": greeting}
    finally:
        server.terminate()
        server.communicate(timeout=10)


def test_a_failing_build_command_fails_the_build_and_keeps_nothing(db, venv_settings, echo_template):
    version = echo_template(name="build-fails", files={"build.py": "raise SystemExit('no corpus here')\n"},
                            build_command=["python", "build.py"])

    build = build_run(build_id=build_request(version=version).pk)

    assert build.status == "failed"
    assert build.error.startswith("the build command python build.py failed with exit code 1: ")
    assert "no corpus here" in build.error
    assert not list((venv_settings.VAR_DIR / "venvs").rglob(".complete"))


def test_the_build_command_never_sees_the_hubs_environment(db, venv_settings, echo_template, monkeypatch):
    monkeypatch.setenv("HUB_SECRET_KEY_FOR_TEST", "do-not-leak")
    script = "import os, sys\nfrom pathlib import Path\nPath(sys.argv[1]).write_text(repr(sorted(os.environ)))\n"
    version = echo_template(name="build-env", files={"build.py": script}, build_command=["python", "build.py", "build-output/env"])

    build = build_run(build_id=build_request(version=version).pk)

    assert build.status == "succeeded", build.error
    seen = (VenvBackend(venv_settings.VAR_DIR / "venvs")._folder(build.image_reference) / "template/build-output/env").read_text()
    assert "HUB_SECRET_KEY_FOR_TEST" not in seen and "DATABASE_URL" not in seen and "'VIRTUAL_ENV'" in seen
