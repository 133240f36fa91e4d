"""A build worker killed mid-build: the build is picked up again and finishes, with a
real Celery worker process on the Redis broker."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from celery import Celery
from django.db import connection

from templates_catalog.models import Build

from ..environment import unavailable

BROKER = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")
ROOT = Path(__file__).resolve().parents[2]


def _redis_or_skip() -> None:
    try:
        redis.Redis.from_url(BROKER).flushdb()
    except redis.ConnectionError:
        unavailable(f"no Redis answers at {BROKER}")


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _start_worker(settings, name: str, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": BROKER,
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "BUILD_BACKEND": "docker",
        # Every layer really built, so the build lasts long enough to be killed mid-way
        # even when an earlier run left this lock's dependencies image behind.
        "BUILD_NO_CACHE": "1",
        "BUILD_BASE_IMAGE": settings.BUILD_BASE_IMAGE,
        "WHEELHOUSE_DIR": str(settings.WHEELHOUSE_DIR),
        "ARTIFACT_ROOT": str(settings.STORAGES["artifacts"]["OPTIONS"]["location"]),
    }
    command = [
        str(Path(sys.executable).with_name("celery")), "-A", "hub_site", "worker", "--pool=solo", "-n", f"{name}@%h",
        "--without-gossip", "--without-mingle", "--loglevel=INFO",
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _wait_for(predicate, seconds: float, what: str, log: Path):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    build = Build.objects.first()
    pytest.fail(f"timed out waiting for {what}; build: {build.status} {build.error}\n{build.log[-2000:]}\n{log.read_text()[-3000:]}")


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_build_does_not_leave_the_build_running(
    docker_client, build_settings, echo_template, tmp_path, monkeypatch
):
    _redis_or_skip()
    # Celery lets CELERY_BROKER_URL (set by CI) win over an app's own broker argument.
    monkeypatch.setenv("CELERY_BROKER_URL", BROKER)
    version = echo_template(packages=["six==1.16.0", "idna==3.10"])
    build = Build.objects.create(version=version, backend="docker", base_image=build_settings.BUILD_BASE_IMAGE)
    sender = Celery(broker=BROKER)
    sender.conf.broker_transport_options = {"visibility_timeout": 3}

    first = _start_worker(build_settings, "first", tmp_path / "first.log")
    try:
        sender.send_task("templates_catalog.build_run", args=[build.pk])
        _wait_for(
            lambda: Build.objects.filter(pk=build.pk, status="running", log__contains="Step").exists(),
            120,
            "the build to start",
            tmp_path / "first.log",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert Build.objects.get(pk=build.pk).status == "running"  # as a real crash leaves it

        second = _start_worker(build_settings, "second", tmp_path / "second.log")
        try:
            finished = _wait_for(
                lambda: Build.objects.filter(pk=build.pk, status__in=["succeeded", "failed"]).first(),
                180,
                "the build to finish",
                tmp_path / "second.log",
            )
        finally:
            second.terminate()
            second.wait(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()

    assert finished.status == "succeeded", finished.error + (tmp_path / "second.log").read_text()[-3000:]
    assert finished.attempts == 2
    assert "--- attempt 2" in finished.log
    assert docker_client.images.get(finished.image_reference).id == finished.image_digest
