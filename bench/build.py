"""Build times for one template: cold, unchanged rebuild, and after a code-only change.

Uses the real build path (publish → build_request → build_run) on a throw-away test
database and the Docker Engine (BUILD_BASE_IMAGE, default hub-base:bookworm; make it with
`manage.py make_base_image`). Wheels come from the hub's wheelhouse, so the cold time is
the image build itself, not downloads; it runs with Docker's layer cache off, so it
installs every wheel as a fresh engine would. Targets: unchanged under 1 s; code change at most
10% of cold.

    python bench/build.py [--template vector-store]
"""

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_site.settings")
os.environ.setdefault("DEBUG", "1")
os.environ["BUILD_BACKEND"] = "docker"
os.environ.setdefault("BUILD_BASE_IMAGE", "hub-base:bookworm")

import django  # noqa: E402

django.setup()

import docker  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from hub_site.backends import build_backend  # noqa: E402
from templates_catalog import builds  # noqa: E402
from templates_catalog.builds import build_request, build_run  # noqa: E402
from templates_catalog.bundles import bundle_pack  # noqa: E402
from templates_catalog.services import publisher_create, template_version_publish  # noqa: E402


def publish(folder: Path, publisher):
    return template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(folder))).version


@contextlib.contextmanager
def layer_cache(*, enabled: bool):
    """The cold build runs with Docker's layer cache off, as on a fresh engine."""
    settings.BUILD_NO_CACHE = not enabled
    build_backend.cache_clear()
    try:
        yield
    finally:
        settings.BUILD_NO_CACHE = False
        build_backend.cache_clear()


def timed_build(version) -> tuple[float, object]:
    # The bench runs each build in this process; no worker should get a copy.
    builds._enqueue = lambda build_id: None
    started = time.perf_counter()
    build = build_run(build_id=build_request(version=version).pk)
    seconds = time.perf_counter() - started
    if build.status != "succeeded":
        raise SystemExit(f"build failed: {build.error}\n{build.log_tail()}")
    return seconds, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", default="vector-store", help="a folder under fixtures/templates")
    args = parser.parse_args()
    client = docker.from_env()
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        with tempfile.TemporaryDirectory(prefix="hub-bench-build-") as scratch:
            folder = shutil.copytree(ROOT / "fixtures" / "templates" / args.template, Path(scratch) / args.template)
            # A marker only this run has, so no earlier image or layer of this code exists.
            handler = folder / "handler.py"
            handler.write_text(handler.read_text() + f"\n# bench run {time.time_ns()}\n")
            publisher = publisher_create(slug="bench", name="Bench")
            first = publish(folder, publisher)

            with layer_cache(enabled=False):
                cold, cold_build = timed_build(first)
            unchanged, again = timed_build(first)
            handler.write_text(handler.read_text() + "# a code-only change\n")
            manifest = folder / "hub.yaml"
            manifest.write_text(manifest.read_text().replace(f"version: {first.version}", "version: 99.0.0"))
            code_change, changed = timed_build(publish(folder, publisher))
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)

    print(f"template: {args.template}; base image {os.environ['BUILD_BASE_IMAGE']}; {os.cpu_count()} CPUs")
    print(f"cold build            {cold:7.2f} s   ({cold_build.image_reference})")
    print(f"unchanged rebuild     {unchanged:7.2f} s   cache hit: {again.cache_hit}")
    print(f"code-only change      {code_change:7.2f} s   cache hit: {changed.cache_hit}")
    print(f"unchanged / cold      {unchanged / cold:7.3f}   (target: unchanged under 1 s) {'OK' if unchanged < 1 else 'OVER'}")
    print(f"code change / cold    {code_change / cold:7.3f}   (target: at most 0.10) {'OK' if code_change / cold <= 0.10 else 'OVER'}")
    for build in (cold_build, changed):
        client.images.remove(build.image_reference, force=True)


if __name__ == "__main__":
    main()
