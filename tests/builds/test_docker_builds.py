"""Builds against the real Docker Engine (CI installs and starts one)."""

import time

import pytest
from django.core.management import call_command

from builders.backends import DockerBackend
from templates_catalog.builds import build_request, build_run
from templates_catalog.models import Build, TemplateVersion

from ..netutil import free_port
from ..swarm import registry_serving
from .conftest import BUILD_SCRIPT, BUILT_COMMAND, BUILT_HANDLER, HANDLER, SHADOW_HARNESS, WHICH_HARNESS_HANDLER


def _built(version: TemplateVersion) -> Build:
    build = build_request(version=version)
    return build_run(build_id=build.pk)


def test_label_values_stay_values(db, docker_client, build_settings, echo_template, publisher):
    version = echo_template(name="quoted", title='A "quoted" $HOME title\\ with spaces')
    build = _built(version)
    assert build.status == "succeeded", build.error + build.log_tail()
    labels = docker_client.images.get(build.image_reference).labels
    assert labels["org.opencontainers.image.title"] == 'A "quoted" $HOME title\\ with spaces'


def test_a_fixture_template_builds_and_serves_hardened(db, docker_client, build_settings, artifact_root):
    call_command("seed_catalog", stdout=open("/dev/null", "w"))
    version = TemplateVersion.objects.get(template__name="rag-pipeline")

    build = _built(version)

    assert build.status == "succeeded", build.error + build.log_tail()
    image = docker_client.images.get(build.image_reference)
    assert image.id == build.image_digest
    assert image.labels["org.opencontainers.image.version"] == version.version
    assert image.labels["org.opencontainers.image.revision"] == version.bundle_sha256
    assert image.labels["io.aihub.bundle-sha256"] == version.bundle_sha256
    assert image.labels["io.aihub.cache-key"] == build.cache_key
    assert image.labels["org.opencontainers.image.source"].endswith("/templates/rag-pipeline/")
    assert image.attrs["Config"]["User"] == "65532:65532"
    assert {wheel["name"] for wheel in build.lock} >= {"httpx", "starlette", "uvicorn"}
    _assert_serves_hardened(docker_client, build.image_reference, env={
        "EMBEDDINGS_URL": "http://127.0.0.1:9", "VECTOR_STORE_URL": "http://127.0.0.1:9", "GENERATOR_URL": "http://127.0.0.1:9",
    })




def _assert_serves_hardened(client, reference: str, env: dict) -> None:
    import urllib.request

    port = free_port()
    container = client.containers.run(
        reference, detach=True, environment=env, ports={"8080/tcp": ("127.0.0.1", port)},
        read_only=True, tmpfs={"/tmp": "size=64m"}, cap_drop=["ALL"], security_opt=["no-new-privileges"],
        mem_limit="512m", pids_limit=128,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("the image never became ready:\n" + container.logs().decode()[-2000:])
        assert container.exec_run("id -u").output.decode().strip() == "65532"
    finally:
        container.remove(force=True)


def test_a_template_shipping_its_own_harness_package_is_still_served_by_the_hubs(db, docker_client, build_settings, echo_template):

    build = _built(echo_template(name="shadow", handler=WHICH_HARNESS_HANDLER, files=SHADOW_HARNESS))
    assert build.status == "succeeded", build.error + build.log_tail()

    answer, logs = _predict_in_the_image(docker_client, build.image_reference, "hi")
    assert answer == {"echo": "hi", "harness": "/opt/hub/harness/__init__.py"}
    assert "pwned" not in logs


def test_building_the_same_version_again_is_a_cache_hit_that_builds_nothing(db, docker_client, build_settings, echo_template, monkeypatch):
    version = echo_template()
    first = _built(version)
    assert first.status == "succeeded" and not first.cache_hit

    monkeypatch.setattr(DockerBackend, "build", lambda *a, **k: pytest.fail("a cache hit must not build"))
    started = time.monotonic()
    again = _built(version)

    assert again.pk != first.pk
    assert again.status == "succeeded" and again.cache_hit
    assert (again.image_reference, again.image_digest, again.cache_key) == (first.image_reference, first.image_digest, first.cache_key)
    assert time.monotonic() - started < 5


def test_a_code_only_change_reuses_every_layer_below_the_code(db, docker_client, build_settings, echo_template):
    before = _built(echo_template(version="1.0.0"))
    after = _built(echo_template(version="1.0.1", handler=HANDLER.replace('"hello"', '"bonjour"')))

    assert before.status == after.status == "succeeded"
    old_layers = docker_client.images.get(before.image_reference).attrs["RootFS"]["Layers"]
    new_layers = docker_client.images.get(after.image_reference).attrs["RootFS"]["Layers"]
    shared = next(i for i, (a, b) in enumerate(zip(old_layers, new_layers)) if a != b)
    # Layers: base, venv, wheels, pip install, harness, template (and the workdir). All
    # below the template are shared.
    assert old_layers[:shared] == new_layers[:shared]
    assert shared >= len(new_layers) - 2 and len(new_layers) == len(old_layers)
    assert "reusing the dependencies image" in after.log
    assert "Using cache" in after.log.split("COPY template/")[0].split("COPY harness/")[1]


def test_a_bad_pin_fails_with_a_readable_reason(db, docker_client, build_settings, echo_template):
    build = _built(echo_template(packages=["six==0.0.999"]))

    assert build.status == "failed"
    assert build.error.startswith("no wheel of six==0.0.999 exists for this Python and platform")
    assert build.finished_at is not None


def test_system_packages_are_resolved_on_the_hub_and_installed_without_network(db, docker_client, build_settings, echo_template):
    build = _built(echo_template(name="with-jq", runtime_system_packages=["jq"]))

    assert build.status == "succeeded", build.error + build.log_tail()
    assert any(deb["filename"].startswith("jq_") for deb in build.system_lock)
    output = docker_client.containers.run(
        build.image_reference, entrypoint=["jq", "--version"], remove=True, network_disabled=True
    )
    assert output.decode().startswith("jq-1.")


def test_an_unknown_system_package_fails_with_a_readable_reason(db, docker_client, build_settings, echo_template):
    build = _built(echo_template(name="bad-deb", runtime_system_packages=["no-such-package-hub"]))

    assert build.status == "failed"
    assert build.error.startswith("no Debian package named no-such-package-hub exists for the base image")


def test_a_python_version_the_base_image_lacks_fails_before_building(db, docker_client, build_settings, echo_template, monkeypatch):
    monkeypatch.setattr(DockerBackend, "build", lambda *a, **k: pytest.fail("nothing should be built"))
    build = _built(echo_template(name="wants-312", runtime_python="3.12"))

    assert build.status == "failed"
    assert build.error.startswith("the template asks for Python 3.12 but the base image")
    assert "has Python 3.11" in build.error


def test_two_requests_for_the_same_version_make_one_build(db, build_settings, echo_template, docker_client):
    version = echo_template()
    first = build_request(version=version)
    second = build_request(version=version)
    assert first.pk == second.pk
    assert Build.objects.count() == 1


@pytest.fixture
def registry(tmp_path):
    with registry_serving(tmp_path) as address:
        yield address


def test_the_image_is_pushed_to_the_registry_and_pulls_back_by_digest(db, docker_client, build_settings, echo_template, registry):
    import json
    import urllib.request

    build_settings.BUILD_REGISTRY = registry
    build = _built(echo_template(name="pushed-echo"))

    assert build.status == "succeeded", build.error + build.log_tail()
    assert build.image_reference.startswith(f"{registry}/aihub/pushed-echo@sha256:")
    with urllib.request.urlopen(f"http://{registry}/v2/_catalog") as response:
        assert "aihub/pushed-echo" in json.load(response)["repositories"]
    local = f"aihub/pushed-echo:{build.cache_key[:32]}"
    assert DockerBackend(registry=registry).find(local).reference == build.image_reference
    assert DockerBackend(registry="127.0.0.1:9").find(local) is None  # never pushed there: build and push again
    docker_client.images.remove(build.image_reference.split("@")[0] + ":" + build.cache_key[:32], force=True)
    pulled = docker_client.images.pull(build.image_reference)
    assert pulled.id == build.image_digest


def test_a_registry_that_does_not_answer_fails_the_build_with_that_reason(db, docker_client, build_settings, echo_template):
    build_settings.BUILD_REGISTRY = f"127.0.0.1:{free_port()}"  # nothing listens there
    build = _built(echo_template(name="unpushed-echo"))

    assert build.status == "failed"
    assert build.error.startswith(f"pushing to {build_settings.BUILD_REGISTRY} failed: ")
    assert "connection refused" in build.error



def test_a_template_whose_handler_does_not_exist_fails_its_build(db, docker_client, build_settings, echo_template):
    version = echo_template(name="no-handler", handler="class Other:\n    pass\n")

    build = _built(version)
    again = _built(version)

    assert build.status == "failed"
    assert build.error == (
        "serve.handler handler:Echo cannot be imported in the built template: "
        "AttributeError: module 'handler' has no attribute 'Echo'"
    )
    # The refused image was untagged: the next build does not find it by its cache key.
    assert again.status == "failed" and not again.cache_hit


def test_the_build_command_runs_as_the_app_user_and_its_output_is_in_the_image(db, docker_client, build_settings, echo_template):

    version = echo_template(name="built", handler=BUILT_HANDLER, files={"build.py": BUILD_SCRIPT}, build_command=BUILT_COMMAND)
    build = _built(version)
    assert build.status == "succeeded", build.error + build.log_tail()

    answer, _ = _predict_in_the_image(docker_client, build.image_reference, "hi")
    assert answer == {"echo": "hi", "greeting": "built by uid 65532 in template"}


# Both run inside the build: one tries to rewrite the template's own code, the other to reach the network.
REWRITE_HANDLER = "from pathlib import Path\nPath('handler.py').write_text('class Echo: pass')\n"
REACH_NETWORK = "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=3)\n"


@pytest.mark.parametrize(("script", "phrase"), [(REWRITE_HANDLER, "PermissionError"), (REACH_NETWORK, "OSError")])
def test_the_build_command_can_neither_rewrite_the_template_nor_reach_the_network(
    db, docker_client, build_settings, echo_template, script, phrase
):
    build = _built(echo_template(name="build-attack", files={"build.py": script}, build_command=["python", "build.py"]))

    assert build.status == "failed"
    assert build.error == "a build step failed: The command 'python build.py' returned a non-zero code: 1"
    assert phrase in build.log_tail(), build.log_tail()


def _predict_in_the_image(docker_client, image: str, item: str) -> tuple[object, str]:
    """Run the image read-only with no capabilities, POST one item to /predict once it
    serves; the answer and the container's log. The container is always removed."""
    import json
    import urllib.request

    port = free_port()
    container = docker_client.containers.run(
        image, detach=True, ports={"8080/tcp": ("127.0.0.1", port)}, read_only=True, cap_drop=["ALL"],
    )
    try:
        body = json.dumps(item).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=body, headers={"Content-Type": "application/json"})
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return json.loads(response.read()), container.logs().decode()
            except OSError:
                container.reload()
                if container.status == "exited" or time.monotonic() > deadline:
                    pytest.fail("the image did not serve:\n" + container.logs().decode()[-2000:])
                time.sleep(0.3)
    finally:
        container.remove(force=True)
