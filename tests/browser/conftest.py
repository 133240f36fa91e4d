"""Debian's Chromium driven by Playwright, shared by every browser test."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ..environment import unavailable

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        unavailable("Debian's chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def test_database_url() -> str:
    """The test database as a DATABASE_URL, for processes a test starts (a Celery worker)."""
    from urllib.parse import quote

    from django.db import connection

    database = connection.settings_dict
    if database["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{database['NAME']}"
    credentials = quote(database["USER"] or "") + (f":{quote(database['PASSWORD'])}" if database["PASSWORD"] else "")
    return f"postgres://{credentials}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/{database['NAME']}"


@contextlib.contextmanager
def celery_worker(*, settings: dict[str, str], log: Path, name: str, options: tuple[str, ...] = ("--pool=solo",)):
    """A real Celery worker process on the test's own database and the hub's broker; its
    output goes to `log`, and it is stopped (with everything it started) afterwards."""
    env = {**os.environ, **settings, "DATABASE_URL": test_database_url(), "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "hub_site", "worker", "--loglevel=INFO", *options,
             "--without-gossip", "--without-mingle", "--hostname", f"{name}-{os.getpid()}@%h"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to a process started with start_new_session and all it started; SIGKILL if slow."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def worker(worker_settings, tmp_path):
    """A Celery worker on the settings the test module's `worker_settings` fixture gives
    (what it shares with the hub: build backend, wheelhouse, storage); yields its log."""
    log = tmp_path / "worker.log"
    with celery_worker(settings=worker_settings, log=log, name="browser-test", options=("--concurrency=2",)):
        yield log
