"""Every command in the README's ```sh blocks runs as written and exits 0: on a fresh clone's
settings (a new var/ folder, no .env, no DEBUG), after `migrate` and `seed_catalog` as `make
run` does them. Commands that talk to a running hub (publish, curl) reach a live test server
with a publish token made for the test, in place of the README's `hub_…` placeholder."""

import json
import os
import re
import select
import subprocess
import time

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

from templates_catalog.bundles import bundle_pack
from templates_catalog.models import ApiToken, Membership, Publisher
from templates_catalog.services import api_token_create

REPO = settings.BASE_DIR
README = REPO / "README.md"
README_HUB = "http://127.0.0.1:8000"
TOKEN_PLACEHOLDER = "hub_…"
# The only lines not run, each with its reason. Keep this list short: a command that cannot
# be run here is a command a newcomer cannot check either.
SKIPPED = {
    r"^make (run|test)\b": "sets up a venv and then serves forever or runs the whole suite; "
    "this test replays what `make run` does (migrate, seed_catalog) itself",
    r"manage\.py make_base_image\b": "debootstraps Debian from the network (about 40 s); the build tests use its image",
}
# Commands that ask questions on a terminal, and what a newcomer types.
TTY_ANSWERS = {"createsuperuser": ["Readme-commands-pw-7", "Readme-commands-pw-7"]}


def readme_command_lines() -> list[str]:
    lines = []
    for block in re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)  # continuation lines
        lines += [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    return lines


def skip_reason(line: str) -> str | None:
    return next((reason for pattern, reason in SKIPPED.items() if re.search(pattern, line)), None)


def test_the_skip_list_is_short_and_every_entry_still_matches_a_line():
    lines = readme_command_lines()
    assert len(SKIPPED) <= 3
    for pattern in SKIPPED:
        assert any(re.search(pattern, line) for line in lines), f"{pattern!r} matches no README command: remove it"
    assert len([line for line in lines if skip_reason(line) is None]) >= 5


@pytest.fixture
def fresh_clone_env(tmp_path):
    """The environment of a fresh clone: its own var/ folder, no .env file, no DEBUG."""
    var = tmp_path / "var"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "HUB_VAR_DIR": str(var),
        "HUB_ENV_FILE": str(tmp_path / "no.env"),
    }
    for setup in ("migrate --noinput", "seed_catalog"):
        _run(f".venv/bin/python manage.py {setup}", env)
    return env


@pytest.fixture
def hub_token(db) -> str:
    """A publish token of the seeded examples' publisher on the live test server, so that
    the README's publish of fixtures/templates/vector-store is an unchanged re-upload."""
    call_command("seed_catalog", stdout=open(os.devnull, "w"))
    examples = Publisher.objects.get(slug="ai-hub")
    member = get_user_model().objects.create_user("readme-reader")
    Membership.objects.create(publisher=examples, user=member, role=Membership.Role.OWNER)
    return api_token_create(publisher=examples, created_by=member, name="readme", permission=ApiToken.Permission.PUBLISH).secret


def _run(line: str, env: dict) -> subprocess.CompletedProcess:
    answers = next((text for command, text in TTY_ANSWERS.items() if command in line and "--noinput" not in line), None)
    if answers is None:
        result = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    else:
        result = _run_on_a_terminal(line, env, answers)
    assert result.returncode == 0, f"`{line}` exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def _run_on_a_terminal(line: str, env: dict, answers: list[str]) -> subprocess.CompletedProcess:
    # A pseudo-terminal, in a session of its own (so no /dev/tty): getpass prompts on it and
    # reads from it. Each answer is typed once a prompt (ending in ": ") is shown, since
    # getpass flushes whatever was typed before it asked.
    controller, terminal = os.openpty()
    process = subprocess.Popen(
        ["bash", "-c", line], cwd=REPO, env=env, stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True
    )
    os.close(terminal)
    output, pending, deadline = b"", list(answers), time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 0.2)[0]:
                try:
                    output += os.read(controller, 4096)
                except OSError:  # the command exited and closed the terminal
                    break
                if pending and output.endswith(b": "):
                    os.write(controller, pending.pop(0).encode() + b"\n")
            elif process.poll() is not None:
                break
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return subprocess.CompletedProcess(line, process.wait(), output.decode(errors="replace"), "")


@pytest.mark.django_db(transaction=True)
def test_every_readme_command_runs_as_written(live_server, hub_token, fresh_clone_env, tmp_path):
    env = {**fresh_clone_env, "HUB_URL": live_server.url, "HUB_TOKEN": hub_token}
    (tmp_path / "vector-store.tar.gz").write_bytes(bundle_pack(REPO / "fixtures" / "templates" / "vector-store"))
    ran = []
    for line in readme_command_lines():
        if skip_reason(line):
            continue
        command = (
            line.replace(TOKEN_PLACEHOLDER, hub_token)
            .replace(README_HUB, live_server.url)
            # Scratch paths and the hand-made bundle live in the test's own folder.
            .replace("/tmp/", f"{tmp_path}/")
            .replace("@vector-store.tar.gz", f"@{tmp_path}/vector-store.tar.gz")
        )
        result = _run(command, env)
        if command.startswith("curl"):
            # curl exits 0 whatever the HTTP status: the hub's answer must be a version.
            assert "bundle_sha256" in json.loads(result.stdout), result.stdout
        ran.append(line)
    assert any("manage.py publish" in line for line in ran)
