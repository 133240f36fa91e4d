"""A newcomer's whole first visit, in a real browser (Debian's Chromium driven by
Playwright), on a fresh hub with no users: sign up, create a publisher and a publish token,
publish a template with the README's own command, build it and watch the build become
verified, find it first in a search for its name, and yank it from its page.

The build is real: a Celery worker process (on the test's database and the hub's broker)
builds the template on the Docker Engine when one answers with the base image, else into a
venv. The template is tiny (one pinned wheel), so a warm run takes well under 90 s."""

import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import docker
import pytest
import yaml

from builders.backends import docker_engine_answers
from templates_catalog import builds

from ..builds.conftest import BASE_IMAGE, HANDLER
from ..factories import bundle_bytes, manifest_data
from ..test_readme_commands import README_HUB, TOKEN_PLACEHOLDER, readme_command_lines
from .conftest import celery_worker

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a-newcomers-own-password-7"
# A cold build downloads its wheel and builds two images on a busy 2-core machine.
BUILD_FINISHED_WITHIN_MS = 10 * 60 * 1000
VERIFIED = r"verified · ready in \d+\.\d s"
BUILD_FINISHED = "#build-status .badge.status-succeeded, #build-status .badge.status-failed"


def _docker_with_base_image() -> bool:
    """Docker when an engine with the base image answers; else the venv backend (a laptop).
    CI has both, so there a missing base image is a failure, not a quiet fallback."""
    if not docker_engine_answers():
        return False
    try:
        docker.from_env(timeout=5).images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        if os.environ.get("CI"):
            pytest.fail(f"CI must build on Docker, but the base image {BASE_IMAGE} is missing")
        return False
    return True


@pytest.fixture
def build_settings(settings, artifact_root):
    """The live server and the worker agree on the build backend, the base image, the
    wheelhouse and where bundles are stored: the worker reads what the publish stored."""
    settings.BUILD_BACKEND = "docker" if _docker_with_base_image() else "venv"
    settings.BUILD_BASE_IMAGE = BASE_IMAGE
    settings.BUILD_REGISTRY = ""
    settings.WHEELHOUSE_DIR = ROOT / "var" / "test-wheelhouse"
    builds.build_backend.cache_clear()
    yield {
        "BUILD_BACKEND": settings.BUILD_BACKEND,
        "BUILD_BASE_IMAGE": BASE_IMAGE,
        "BUILD_REGISTRY": "",
        "WHEELHOUSE_DIR": str(settings.WHEELHOUSE_DIR),
        "ARTIFACT_ROOT": str(artifact_root),
        "HUB_VAR_DIR": str(settings.VAR_DIR),
    }
    builds.build_backend.cache_clear()


@pytest.fixture
def worker(build_settings, tmp_path):
    log = tmp_path / "worker.log"
    with celery_worker(settings=build_settings, log=log, name="newcomer-test"):
        yield log


@pytest.fixture
def template_folder(tmp_path, settings):
    """The newcomer's own template: an echo service with one small pinned wheel. A unique
    name, so no image or venv of an earlier run can answer for this one; what its build
    made is removed afterwards."""
    name = f"newcomer-echo-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    manifest = manifest_data(
        name=name, title=f"Echo {name[-8:]}", summary="Answers every input with a greeting.",
        serve={"handler": "handler:Echo", "port": 8080},
    )
    manifest["runtime"] = {"python": "3.11", "packages": ["six==1.16.0"], "system_packages": []}
    (folder / "hub.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (folder / "README.md").write_text(f"# {name}\n\nSays hello back.\n")
    (folder / "handler.py").write_text(HANDLER)
    yield folder
    shutil.rmtree(settings.VAR_DIR / "venvs" / f"aihub_{name}", ignore_errors=True)
    if docker_engine_answers():
        client = docker.from_env(timeout=30)
        for image in client.images.list(name=f"aihub/{name}"):
            client.images.remove(image.id, force=True)


@pytest.mark.django_db(transaction=True)
def test_a_newcomer_signs_up_publishes_builds_finds_and_yanks_a_template(
    live_server, build_settings, worker, template_folder, tmp_path, browser
):
    name = template_folder.name
    timings = _Stopwatch()
    page = browser.new_page()
    page.set_default_timeout(30_000)
    server_errors = []
    page.on("response", lambda response: server_errors.append(f"{response.status} {response.url}") if response.status >= 500 else None)

    _sign_up(page, live_server.url)
    _create_publisher(page, live_server.url)
    secret = _create_publish_token(page, live_server.url)
    timings.lap("signed up, publisher and token")

    version_url = _publish_with_the_readme_command(template_folder, secret, live_server.url)
    assert version_url == f"{live_server.url}/templates/{name}/versions/1.0.0/"
    timings.lap("published with the README's command")

    page.goto(f"{live_server.url}/publishers/newcomers-lab/")
    assert page.locator(".card-name code").all_inner_texts() == [name]

    page.goto(version_url)
    with page.expect_navigation():
        page.get_by_role("button", name="Build image").click()
    page.evaluate("window.loadedOnce = true")  # survives only if the page is never reloaded
    _wait_for_a_verified_build(page, worker)
    assert page.evaluate("window.loadedOnce") is True  # the build status updated in place
    timings.lap(f"built ({build_settings['BUILD_BACKEND']})")

    _publish_a_rival_that_mentions(name, secret, live_server.url, tmp_path)
    assert _search_from_the_header(page, name) == [name, f"client-of-{name}"]
    assert re.fullmatch(VERIFIED, page.locator(".card").first.locator(".badge.verified").inner_text())

    page.locator(".card-title a").first.click()
    page.wait_for_url(re.compile(rf"/templates/{name}/$"))
    page.get_by_role("link", name="1.0.0", exact=True).click()
    page.wait_for_url(version_url)
    reason = "answers with the wrong greeting: use 1.0.1"
    page.locator("#id_reason").fill(reason)
    page.locator("#id_confirm").check()
    with page.expect_navigation():
        page.get_by_role("button", name="Yank 1.0.0").click()
    assert page.url == version_url
    assert f"Yanked: {reason}." in page.locator(".notice.error").inner_text()
    assert page.get_by_role("button", name="Build again").count() == 0  # a yanked version is not built again
    timings.lap("searched and yanked")

    assert server_errors == []
    print(timings)


def _sign_up(page, hub: str) -> None:
    page.goto(f"{hub}/")
    page.get_by_role("link", name="Sign up").click()
    page.locator("#id_username").fill("newcomer")
    page.locator("#id_email").fill("newcomer@example.internal")
    page.locator("#id_password1").fill(PASSWORD)
    page.locator("#id_password2").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.wait_for_url(re.compile(r"/publishers/$"))
    assert page.get_by_role("button", name="Sign out newcomer").is_visible()


def _create_publisher(page, hub: str) -> None:
    page.goto(f"{hub}/publishers/new/")
    page.locator("#id_name").fill("Newcomer's lab")
    page.locator("#id_slug").fill("newcomers-lab")
    page.get_by_role("button", name="Create publisher").click()
    page.wait_for_url(re.compile(r"/publishers/newcomers-lab/$"))
    assert page.locator("h1").inner_text() == "Newcomer's lab"
    assert page.locator(".empty").inner_text() == "No templates published yet."


def _create_publish_token(page, hub: str) -> str:
    page.goto(f"{hub}/account/tokens/")
    page.locator("#id_name").fill("my laptop")
    page.locator("#id_permission").select_option(label="Read and publish")
    with page.expect_navigation():
        page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-token").inner_text().strip()
    assert re.fullmatch(r"hub_\S{20,}", secret), secret
    assert page.locator("#publish-line").inner_text().startswith(f"HUB_TOKEN={secret} ")

    # Shown once: reloading the page shows it no more, and mints no other token.
    page.reload()
    assert page.locator("#new-token").count() == 0
    assert secret not in page.content()
    assert page.locator("table").inner_text().count("my laptop") == 1
    return secret


def _publish_with_the_readme_command(folder: Path, secret: str, hub: str) -> str:
    """The README's first `manage.py publish` line, as a newcomer copies it: its folder
    replaced by theirs, their token and this hub in place of the placeholders."""
    line = next(line for line in readme_command_lines() if "manage.py publish" in line)
    words = shlex.split(line)
    readme_folder = words[words.index("publish") + 1]
    command = (
        line.replace(f"publish {readme_folder}", f"publish {shlex.quote(str(folder))}")
        .replace(TOKEN_PLACEHOLDER, secret)
        .replace(README_HUB, hub)
    )
    env = {**os.environ, "HUB_URL": hub, "HUB_TOKEN": secret}
    result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    assert f"{folder.name} 1.0.0 published" in result.stdout
    return result.stdout.strip().splitlines()[-1]


def _search_from_the_header(page, query: str) -> list[str]:
    """The names of the results, in the order the catalog shows them."""
    page.locator("#header-q").fill(query)
    with page.expect_navigation():
        page.locator("#header-q").press("Enter")
    return page.locator(".card-name code").all_inner_texts()


def _wait_for_a_verified_build(page, worker_log: Path) -> None:
    # A selector, not wait_for_function: the page's policy forbids the eval that a predicate needs.
    page.wait_for_selector(BUILD_FINISHED, timeout=BUILD_FINISHED_WITHIN_MS)
    status = page.locator("#build-status").inner_text()
    if page.locator("#build-status .badge.status-failed").count():
        pytest.fail(f"the build failed: {status}\nworker log:\n{worker_log.read_text()[-4000:]}")
    assert re.fullmatch(VERIFIED, page.locator("#build-status .badge.verified").inner_text()), status


def _publish_a_rival_that_mentions(name: str, secret: str, hub: str, tmp_path: Path) -> None:
    """Another template whose name and summary contain the newcomer's name and that sorts
    before it by name: "first for its own name" means something only against a rival."""
    rival = f"client-of-{name}"
    bundle = bundle_bytes(tmp_path, name=rival, title=f"Client of {name}", summary=f"Calls {name} for you.")
    request = urllib.request.Request(
        f"{hub}/api/v1/templates/{rival}/versions/", data=bundle, method="POST",
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/gzip"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 201


class _Stopwatch:
    def __init__(self):
        self.started = self.last = time.monotonic()
        self.laps: list[str] = []

    def lap(self, what: str) -> None:
        now = time.monotonic()
        self.laps.append(f"{what}: {now - self.last:.1f} s")
        self.last = now

    def __str__(self) -> str:
        return "; ".join(self.laps) + f"; total {time.monotonic() - self.started:.1f} s"
