"""deployment_wait_awake with the in-memory runner and the real database: exactly one wake
however many requests (and event loops, as in several processes) ask at once, one shared
poller, every request answered; a wake that fails or takes too long answers WakeFailed
with the reason within the hold limit."""

import asyncio
import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections

from deployments.models import Deployment, DeploymentEvent
from deployments.services import deployment_create, deployment_stop
from deployments.sleeping import deployments_sleep_idle
from deployments.wake import Awake, WakeFailed, deployment_wait_awake, waiting_for

from . import fakes
from .conftest import WakeWorker, drive

State = Deployment.State
WOKEN = "woken by a request"


@pytest.fixture(autouse=True)
def close_the_pollers_connection():
    yield
    # The pollers' queries run in asgiref's one sync thread: its connection must not outlive the test.
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture
def asleep(transactional_db, version, node_factory, user_factory):
    node = node_factory()
    deployment = drive(deployment_create(owner=user_factory(), version=version, inputs={}, idle_timeout_seconds=5).deployment)
    assert deployment.state == State.RUNNING, deployment.reason
    assert deployments_sleep_idle(now=deployment.running_since + timedelta(seconds=6)) == [deployment.handle]
    return Deployment.objects.get(pk=deployment.pk), fakes.ENGINES[node.engine_url]


def _ask(deployment_id: int, count: int, timeout: float, seen: list[int] | None = None) -> list:
    async def main():
        async def watch():
            # The one poller: every held request waits on it.
            for _ in range(100):
                seen.append(waiting_for(deployment_id))
                await asyncio.sleep(0.02)

        asks = [deployment_wait_awake(deployment_id=deployment_id, timeout=timeout) for _ in range(count)]
        watching = [watch()] if seen is not None else []
        return (await asyncio.gather(*asks, *watching))[:count]

    return asyncio.run(main())


def test_twenty_requests_at_once_wake_it_exactly_once_and_all_get_the_endpoint(asleep):
    deployment, engine = asleep
    worker = WakeWorker(deployment)
    seen: list[int] = []

    answers = _ask(deployment.pk, 20, timeout=30, seen=seen)

    endpoint = Deployment.objects.get(pk=deployment.pk).endpoint
    assert worker.join().state == State.RUNNING and endpoint
    assert answers == [Awake(endpoint=endpoint)] * 20
    assert DeploymentEvent.objects.filter(deployment=deployment, message=WOKEN).count() == 1
    assert engine.launches == [deployment.handle, deployment.handle]  # the first start, and the one wake
    assert max(seen) == 20 and waiting_for(deployment.pk) == 0


def test_two_processes_asking_at_once_still_wake_it_once(asleep):
    deployment, engine = asleep
    worker = WakeWorker(deployment)
    barrier = threading.Barrier(2)
    answers: list = []

    def process() -> None:
        try:
            barrier.wait()
            answers.extend(_ask(deployment.pk, 10, timeout=30))
        finally:
            connection.close()

    processes = [threading.Thread(target=process) for _ in range(2)]
    for thread in processes:
        thread.start()
    for thread in processes:
        thread.join()
    worker.join()

    assert len(answers) == 20 and all(isinstance(answer, Awake) for answer in answers)
    assert DeploymentEvent.objects.filter(deployment=deployment, message=WOKEN).count() == 1
    assert engine.launches == [deployment.handle, deployment.handle]


def test_a_wake_whose_image_no_longer_starts_answers_the_reason_within_the_hold(asleep):
    deployment, engine = asleep
    engine.exits_on_launch = 1
    worker = WakeWorker(deployment)
    started = time.monotonic()

    answers = _ask(deployment.pk, 5, timeout=20)
    worker.join()

    assert time.monotonic() - started < 20
    assert len(set(answers)) == 1 and isinstance(answers[0], WakeFailed)
    assert "exited while starting with exit code 1" in answers[0].reason
    assert "model weights not found" in answers[0].reason and answers[0].retry_after > 0


def test_a_wake_that_takes_too_long_answers_after_the_timeout_and_stops_polling(asleep):
    deployment, _ = asleep  # nothing drives the flow: it stays in scheduling
    started = time.monotonic()

    answers = _ask(deployment.pk, 3, timeout=0.5)

    assert 0.5 <= time.monotonic() - started < 5
    assert all(isinstance(answer, WakeFailed) and "not ready within 0.5 s" in answer.reason for answer in answers)
    assert waiting_for(deployment.pk) == 0
    assert Deployment.objects.get(pk=deployment.pk).state == State.SCHEDULING  # the wake itself goes on


def test_a_running_deployment_answers_at_once_and_a_stopped_one_says_so(asleep):
    deployment, _ = asleep
    worker = WakeWorker(deployment)
    assert isinstance(_ask(deployment.pk, 1, timeout=30)[0], Awake)
    worker.join()
    woken = DeploymentEvent.objects.filter(deployment=deployment, message=WOKEN).count()

    assert _ask(deployment.pk, 1, timeout=30)[0] == Awake(endpoint=Deployment.objects.get(pk=deployment.pk).endpoint)
    assert DeploymentEvent.objects.filter(deployment=deployment, message=WOKEN).count() == woken

    deployment_stop(deployment=deployment)
    answer = _ask(deployment.pk, 1, timeout=30)[0]
    assert isinstance(answer, WakeFailed) and "stopped" in answer.reason
