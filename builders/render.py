"""Manifest + bundle → two Docker build contexts. The dependencies image (base, venv,
locked wheels) is keyed by the lock alone and shared by every version with the same
lock; the app image adds the harness and the template on top of it, so a code-only
change sends a small context and rebuilds one layer.

Dockerfiles come from a sandboxed Jinja2 template with strict undefined, and every
value that reaches one is checked again here: a publisher's string never becomes a
Dockerfile instruction. Labels travel as build arguments, never as Dockerfile text."""

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from .debs import LockedDeb
from .errors import BuildFailed
from .spec import TemplateSpec
from .wheelhouse import LockedWheel, Wheelhouse

# Part of every cache key: bump it whenever a Dockerfile or the context layout changes (the
# harness's code is in the key by its digest: builders/build.py).
# 7: the harness locks the port with HUB_UPSTREAM_TOKEN.
RENDERER_VERSION = "7"
APP_USER = "65532:65532"
HARNESS_PACKAGE = "harness"
# The harness's configuration, resolved by the hub's schema, inside the harness's folder.
SERVE_CONFIG_FILE = "serve.json"
# The one folder of the template a build command may write into (the template's own files
# stay root's, so even the build cannot rewrite them); it becomes part of the image.
BUILD_OUTPUT_DIR = "build-output"
# The labels every image carries; their values arrive as build arguments.
LABEL_ARGS = {
    "org.opencontainers.image.title": "HUB_TITLE",
    "org.opencontainers.image.description": "HUB_DESCRIPTION",
    "org.opencontainers.image.version": "HUB_VERSION",
    "org.opencontainers.image.revision": "HUB_REVISION",
    "org.opencontainers.image.source": "HUB_SOURCE",
    "org.opencontainers.image.licenses": "HUB_LICENSES",
    "org.opencontainers.image.vendor": "HUB_VENDOR",
    "io.aihub.template": "HUB_TEMPLATE",
    "io.aihub.bundle-sha256": "HUB_BUNDLE_SHA256",
    "io.aihub.cache-key": "HUB_CACHE_KEY",
    "io.aihub.renderer-version": "HUB_RENDERER_VERSION",
}

_SAFE_WORD = re.compile(r"[A-Za-z0-9_./:=@%+,-]{1,200}")
_SAFE_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/:@-]{0,254}")

DEPS_DOCKERFILE = """\
FROM {{ base_image }}
{% if has_debs %}COPY debs/ /tmp/debs/
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs
{% endif %}ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp
RUN python3 -m venv /opt/venv
COPY requirements.lock wheels/ /tmp/wheels/
RUN pip install --no-index --require-hashes --find-links /tmp/wheels -r /tmp/wheels/requirements.lock \\
    && rm -rf /tmp/wheels
"""

APP_DOCKERFILE = """\
FROM {{ deps_image }}
COPY {{ harness_package }}/ /opt/hub/{{ harness_package }}/
ENV PYTHONPATH=/opt/hub
USER {{ user }}
{% if port %}EXPOSE {{ port }}
{% endif %}ENTRYPOINT {{ entrypoint | exec_form }}
COPY template/ /opt/hub/template/
WORKDIR /opt/hub/template
{% if build_command %}COPY --chown={{ user }} {{ build_output }}/ /opt/hub/template/{{ build_output }}/
RUN {{ build_command | exec_form }}
{% endif %}ARG{% for label, arg in labels %} {{ arg }}{% endfor %}
LABEL{% for label, arg in labels %} {{ label }}="${{ '{' }}{{ arg }}{{ '}' }}"{% endfor %}
"""


@dataclass(frozen=True)
class BuildContext:
    deps_path: Path
    app_path: Path
    deps_key: str
    lock: list[LockedWheel]
    debs: list[LockedDeb]
    # `module:Class` the built artifact must import before it counts as built; None for a job.
    handler: str | None = None
    # Run in the template's folder after the packages, as the app user; () for none.
    build_command: tuple[str, ...] = ()

    @property
    def deps_image(self) -> str:
        return f"aihub-deps:{self.deps_key[:32]}"


def _exec_form(words: list[str]) -> str:
    for word in words:
        if not _SAFE_WORD.fullmatch(word):
            raise BuildFailed(f"refusing to put {word!r} into a Dockerfile: it is not a plain command-line word")
    return json.dumps(words)


_environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_environment.filters["exec_form"] = _exec_form
_deps_template = _environment.from_string(DEPS_DOCKERFILE)
_app_template = _environment.from_string(APP_DOCKERFILE)


def _image(reference: str) -> str:
    if not _SAFE_IMAGE.fullmatch(reference):
        raise BuildFailed(f"the image name {reference!r} is not a plain image reference")
    return reference


def harness_command(*, python: str, template_dir: str, host: str, port: int) -> list[str]:
    """The command that serves a template through the hub's harness. `-P` keeps the working
    directory (the template's folder) off the import path, so a `harness` package in the
    bundle cannot stand in for the hub's; the harness adds the template's folder after its own."""
    return [python, "-P", "-m", HARNESS_PACKAGE, "--template-dir", template_dir, "--host", host, "--port", str(int(port))]


def entrypoint_for(spec: TemplateSpec) -> list[str]:
    if spec.is_job:
        return list(spec.job_command)
    # int() again inside harness_command: nothing but digits reaches the Dockerfile.
    return harness_command(python="python", template_dir="/opt/hub/template", host="0.0.0.0", port=spec.serve.port)


def deps_dockerfile_render(*, base_image: str, has_debs: bool = False) -> str:
    return _deps_template.render(base_image=_image(base_image), has_debs=has_debs)


def app_dockerfile_render(*, spec: TemplateSpec, deps_image: str) -> str:
    return _app_template.render(
        deps_image=_image(deps_image),
        harness_package=HARNESS_PACKAGE,
        user=APP_USER,
        port=None if spec.is_job else int(spec.serve.port),
        entrypoint=entrypoint_for(spec),
        build_command=list(spec.build_command),
        build_output=BUILD_OUTPUT_DIR,
        labels=sorted(LABEL_ARGS.items()),
    )


def deps_key_for(*, base_image_id: str, lock: list[LockedWheel], debs: list[LockedDeb] = ()) -> str:
    material = {
        "base_image": base_image_id,
        "renderer": RENDERER_VERSION,
        "lock": [asdict(w) for w in lock],
        "debs": [asdict(d) for d in debs],
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def build_context_render(
    *,
    spec: TemplateSpec,
    template_dir: Path,
    lock: list[LockedWheel],
    wheelhouse: Wheelhouse,
    harness_dir: Path,
    base_image: str,
    base_image_id: str,
    out: Path,
    debs: list[LockedDeb] = (),
    deb_path: Callable[[LockedDeb], Path] | None = None,
) -> BuildContext:
    context = BuildContext(
        deps_path=out / "deps",
        app_path=out / "app",
        deps_key=deps_key_for(base_image_id=base_image_id, lock=lock, debs=debs),
        lock=lock,
        debs=list(debs),
        handler=spec.serve.handler if spec.serve else None,
        build_command=tuple(spec.build_command),
    )
    _render_deps(context, wheelhouse, base_image, deb_path)
    _render_app(context, spec, template_dir, harness_dir)
    return context


def _render_deps(
    context: BuildContext, wheelhouse: Wheelhouse, base_image: str, deb_path: Callable[[LockedDeb], Path] | None
) -> None:
    wheels = context.deps_path / "wheels"
    wheels.mkdir(parents=True)
    for wheel in context.lock:
        shutil.copy2(wheelhouse.path_of(wheel), wheels / wheel.filename)
    if context.debs:
        (context.deps_path / "debs").mkdir()
        for deb in context.debs:
            shutil.copy2(deb_path(deb), context.deps_path / "debs" / deb.filename)
    (context.deps_path / "requirements.lock").write_text("".join(f"{w.requirement_line()}\n" for w in context.lock))
    dockerfile = deps_dockerfile_render(base_image=base_image, has_debs=bool(context.debs))
    (context.deps_path / "Dockerfile").write_text(dockerfile)
    _normalise(context.deps_path)


def _render_app(context: BuildContext, spec: TemplateSpec, template_dir: Path, harness_dir: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "testing.py")
    # A serve.json lying in a development checkout of the harness is never shipped.
    harness_ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "testing.py", SERVE_CONFIG_FILE)
    shutil.copytree(harness_dir, context.app_path / HARNESS_PACKAGE, ignore=harness_ignore)
    if spec.serve is not None:
        serve_config = json.dumps(spec.serve_config(), indent=1, sort_keys=True)
        (context.app_path / HARNESS_PACKAGE / SERVE_CONFIG_FILE).write_text(serve_config)
    shutil.copytree(template_dir, context.app_path / "template", ignore=ignore)
    if spec.build_command:
        if (context.app_path / "template" / BUILD_OUTPUT_DIR).exists():
            raise BuildFailed(
                f"the bundle holds `{BUILD_OUTPUT_DIR}`, the folder its build_command writes: rename or remove it"
            )
        # Empty: copied with the app user as owner, the one place the build command may write.
        (context.app_path / BUILD_OUTPUT_DIR).mkdir()
    (context.app_path / "Dockerfile").write_text(app_dockerfile_render(spec=spec, deps_image=context.deps_image))
    _normalise(context.app_path)


def _normalise(root: Path) -> None:
    (root / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    # Fixed modes and times: an unchanged layer's cache key stays unchanged across renders.
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o111 else 0o644)
        os.utime(path, (0, 0), follow_symlinks=False)
