"""Manifest + bundle → a Docker build context. The Dockerfile comes from a sandboxed
Jinja2 template with strict undefined, and every value that reaches it is checked
again here: a publisher's string never becomes a Dockerfile instruction."""

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from .errors import BuildFailed
from .wheelhouse import LockedWheel, Wheelhouse

# Part of every cache key: bump it whenever the Dockerfile or the context layout changes.
RENDERER_VERSION = "1"
APP_USER = "65532:65532"
HARNESS_PACKAGE = "harness"

_SAFE_WORD = re.compile(r"[A-Za-z0-9_./:=@%+,-]{1,200}")
_SAFE_IMAGE = re.compile(r"[a-z0-9][a-z0-9._/:@-]{0,254}")

DOCKERFILE = """\
FROM {{ base_image }}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp
RUN python3 -m venv /opt/venv
{% if has_debs %}
COPY debs/ /tmp/debs/
RUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs
{% endif %}
COPY requirements.lock wheels/ /tmp/wheels/
RUN pip install --no-index --require-hashes --find-links /tmp/wheels -r /tmp/wheels/requirements.lock \\
    && rm -rf /tmp/wheels
COPY {{ harness_package }}/ /opt/hub/{{ harness_package }}/
COPY template/ /opt/hub/template/
WORKDIR /opt/hub/template
ENV PYTHONPATH=/opt/hub
USER {{ user }}
{% if port %}EXPOSE {{ port }}
{% endif %}ENTRYPOINT {{ entrypoint | exec_form }}
"""


@dataclass(frozen=True)
class BuildContext:
    path: Path
    dockerfile: str
    lock: list[LockedWheel]


def _exec_form(words: list[str]) -> str:
    for word in words:
        if not _SAFE_WORD.fullmatch(word):
            raise BuildFailed(f"refusing to put {word!r} into a Dockerfile: it is not a plain command-line word")
    return json.dumps(words)


_environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
_environment.filters["exec_form"] = _exec_form
_dockerfile_template = _environment.from_string(DOCKERFILE)


def entrypoint_for(manifest: dict) -> list[str]:
    serve = manifest.get("serve")
    if manifest["kind"] == "job":
        return list(manifest["job"]["command"])
    return [
        "python", "-m", HARNESS_PACKAGE, "--template-dir", "/opt/hub/template",
        "--host", "0.0.0.0", "--port", str(int(serve["port"])),
    ]


def dockerfile_render(*, manifest: dict, base_image: str, has_debs: bool = False) -> str:
    if not _SAFE_IMAGE.fullmatch(base_image):
        raise BuildFailed(f"the base image name {base_image!r} is not a plain image reference")
    serve = manifest.get("serve") or {}
    return _dockerfile_template.render(
        base_image=base_image,
        has_debs=has_debs,
        harness_package=HARNESS_PACKAGE,
        user=APP_USER,
        port=int(serve["port"]) if manifest["kind"] == "service" else None,
        entrypoint=entrypoint_for(manifest),
    )


def build_context_render(
    *,
    manifest: dict,
    template_dir: Path,
    lock: list[LockedWheel],
    wheelhouse: Wheelhouse,
    harness_dir: Path,
    base_image: str,
    out: Path,
) -> BuildContext:
    """Lay out `out` as a build context: wheels and their hashed lock first (a layer
    that only changes with the dependencies), then the harness, then the template."""
    out.mkdir(parents=True, exist_ok=True)
    wheels = out / "wheels"
    wheels.mkdir()
    for wheel in lock:
        shutil.copy2(wheelhouse.path_of(wheel), wheels / wheel.filename)
    (out / "requirements.lock").write_text("".join(f"{wheel.requirement_line()}\n" for wheel in lock))
    shutil.copytree(harness_dir, out / HARNESS_PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "testing.py"))
    shutil.copytree(template_dir, out / "template", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dockerfile = dockerfile_render(manifest=manifest, base_image=base_image)
    (out / "Dockerfile").write_text(dockerfile)
    (out / ".dockerignore").write_text("Dockerfile\n.dockerignore\n")
    _zero_times(out)
    return BuildContext(path=out, dockerfile=dockerfile, lock=lock)


def _zero_times(root: Path) -> None:
    # The classic builder hashes file metadata with contents; fixed times keep an
    # unchanged layer's cache key unchanged across renders.
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o111 else 0o644)
        os.utime(path, (0, 0), follow_symlinks=False)
