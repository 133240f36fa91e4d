import io
import os
import uuid
from pathlib import Path

import pytest
import yaml

from builders.backends import docker_engine_answers
from hub_site.backends import build_backend
from templates_catalog.bundles import bundle_pack
from templates_catalog.services import template_version_publish

from ..environment import unavailable
from ..factories import manifest_data

BASE_IMAGE = os.environ.get("HUB_TEST_BASE_IMAGE", "hub-base:bookworm")
ROOT = Path(__file__).resolve().parents[2]
HANDLER = """\
class Echo:
    def setup(self):
        self.greeting = "hello"

    def predict(self, batch):
        return [{"echo": item, "greeting": self.greeting} for item in batch]
"""


def require_engine() -> None:
    """Skip on a laptop without Docker; in CI (CI set) a missing engine is a failure."""
    if not docker_engine_answers():
        unavailable("no Docker Engine answers on this machine")


@pytest.fixture
def docker_client():
    require_engine()
    import docker

    client = docker.from_env()
    try:
        client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"the base image {BASE_IMAGE} is missing: run `python manage.py make_base_image --name {BASE_IMAGE}`")
    return client


@pytest.fixture
def build_settings(settings, tmp_path_factory):
    settings.BUILD_BACKEND = "docker"
    settings.BUILD_BASE_IMAGE = BASE_IMAGE
    settings.BUILD_REGISTRY = ""
    # One wheelhouse for the whole run: wheels are downloaded once, as on a real hub.
    settings.WHEELHOUSE_DIR = ROOT / "var" / "test-wheelhouse"
    build_backend.cache_clear()
    yield settings
    build_backend.cache_clear()


def publish_folder(folder: Path, publisher):
    return template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(folder))).version


@pytest.fixture
def echo_template(tmp_path, publisher):
    """publish a tiny service template: echo_template(version=..., handler=..., packages=[...], files={path: text},
    build_command=[...])"""

    def make(version="1.0.0", handler=HANDLER, packages=None, name="echo", runtime_system_packages=(), runtime_python="3.11",
             files=None, build_command=(), **fields):
        folder = tmp_path / f"{name}-{version}"
        folder.mkdir()
        for path, text in (files or {}).items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text)
        manifest = manifest_data(name=name, version=version, serve={"handler": "handler:Echo", "port": 8080}, **fields)
        manifest["runtime"] = {
            "python": runtime_python,
            "packages": packages if packages is not None else ["six==1.16.0"],
            "system_packages": list(runtime_system_packages),
        }
        if build_command:
            manifest["runtime"]["build_command"] = list(build_command)
        (folder / "hub.yaml").write_text(yaml.safe_dump(manifest))
        # A nonce, so no image from an earlier run on this engine can answer for this one.
        (folder / "handler.py").write_text(f"{handler}\n# test run {uuid.uuid4()}\n")
        return publish_folder(folder, publisher)

    return make


# A bundle that ships its own top-level `harness` package: if it were ever imported in
# place of the hub's, the process would say so and die before serving anything.
SHADOW_HARNESS = {
    "harness/__init__.py": "import os\nprint('pwned: the template replaced the harness', flush=True)\nos._exit(3)\n",
    "harness/__main__.py": "import os\nprint('pwned: the template replaced the harness', flush=True)\nos._exit(3)\n",
}
# Says which `harness` a template's own `import harness` gets.
WHICH_HARNESS_HANDLER = """\
import harness


class Echo:
    def setup(self):
        pass

    def predict(self, batch):
        return [{"echo": item, "harness": harness.__file__} for item in batch]
"""


# A build command and a handler that serves what it wrote: proof that the command ran in
# the build, in the template's folder, and that its output is part of the built artifact.
BUILD_SCRIPT = """\
import os
import sys
from pathlib import Path

Path(sys.argv[1]).write_text(f"built by uid {os.getuid()} in {Path.cwd().name}")
"""
BUILT_COMMAND = ("python", "build.py", "build-output/greeting.txt")
BUILT_HANDLER = """\
from pathlib import Path


class Echo:
    def setup(self):
        self.greeting = (Path(__file__).parent / "build-output" / "greeting.txt").read_text()

    def predict(self, batch):
        return [{"echo": item, "greeting": self.greeting} for item in batch]
"""
