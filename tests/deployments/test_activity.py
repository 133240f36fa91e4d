"""The gateway's activity recorder: recording costs no query, a flush is one UPDATE per
deployment, the flusher thread writes at most once a period, counts stay exact when
threads record and flush at once, a request in flight keeps its deployment awake, and
the Prometheus page shows what was counted, to staff only unless made public."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from deployments import activity
from deployments.activity import ActivityRecorder, activity_record
from deployments.models import Deployment
from deployments.sleeping import deployments_sleep_idle
from deployments.transitions import deployment_open


@pytest.fixture
def pair(version, node_factory):
    owner = version.template.publisher.members.get()
    node = node_factory()
    return [deployment_open(owner=owner, version=version, node=node) for _ in range(2)]


def _counts(deployment: Deployment) -> tuple:
    deployment.refresh_from_db()
    return deployment.requests, deployment.errors, deployment.bytes_in, deployment.bytes_out


def test_recording_costs_no_query_and_a_flush_is_one_update_per_deployment(pair, django_assert_num_queries):
    first, second = pair
    recorder = ActivityRecorder(flush_seconds=None)
    with django_assert_num_queries(0):
        for number in range(500):
            recorder.record(deployment_id=first.pk, status=502 if number % 100 == 0 else 200, bytes_in=10, bytes_out=100)
        for _ in range(300):
            recorder.record(deployment_id=second.pk, status=0, bytes_in=1, bytes_out=0)

    with django_assert_num_queries(2):
        assert recorder.flush() == 2
    with django_assert_num_queries(0):
        assert recorder.flush() == 0

    assert _counts(first) == (500, 5, 5000, 50000)
    assert _counts(second) == (300, 300, 300, 0)  # status 0: the deployment did not answer
    assert first.last_request_at is not None and timezone.now() - first.last_request_at < timedelta(seconds=5)


def test_an_older_time_from_another_process_never_moves_the_last_request_back(pair):
    first, _ = pair
    later = timezone.now() + timedelta(hours=1)
    Deployment.objects.filter(pk=first.pk).update(last_request_at=later)
    recorder = ActivityRecorder(flush_seconds=None)
    recorder.record(deployment_id=first.pk, status=200, bytes_in=0, bytes_out=0)

    recorder.flush()

    first.refresh_from_db()
    assert first.last_request_at == later and first.requests == 1


def test_the_flusher_thread_writes_at_most_once_a_period(transactional_db, version, node_factory):
    owner = version.template.publisher.members.get()
    deployment = deployment_open(owner=owner, version=version, node=node_factory())
    recorder = ActivityRecorder(flush_seconds=1.0)
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 2.5:
        recorder.record(deployment_id=deployment.pk, status=200, bytes_in=3, bytes_out=4)
        sent += 1
        time.sleep(0.002)
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 10
    while _counts(deployment)[0] < sent and time.monotonic() < deadline:
        time.sleep(0.1)

    assert _counts(deployment) == (sent, 0, 3 * sent, 4 * sent)
    # One UPDATE per period for this one deployment, however many requests came.
    assert sent > 100 and recorder.updates_written <= int((time.monotonic() - started) / 1.0) + 1
    assert elapsed < 3.5


def test_counts_stay_exact_when_two_threads_record_and_flush_at_once(transactional_db, version, node_factory):
    owner = version.template.publisher.members.get()
    deployment = deployment_open(owner=owner, version=version, node=node_factory())
    recorders = [ActivityRecorder(flush_seconds=None), ActivityRecorder(flush_seconds=None)]  # two processes' worth
    shared = ActivityRecorder(flush_seconds=None)  # and two threads of one process
    barrier = threading.Barrier(2)
    failures = []

    def gateway(own: ActivityRecorder) -> None:
        try:
            barrier.wait()
            for number in range(2000):
                own.record(deployment_id=deployment.pk, status=500 if number % 10 == 0 else 200, bytes_in=1, bytes_out=2)
                shared.record(deployment_id=deployment.pk, status=200, bytes_in=1, bytes_out=2)
                if number % 250 == 0:
                    own.flush()
                    shared.flush()
            own.flush()
            shared.flush()
        except Exception as exc:  # reported by the assertion below, with the thread's error
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=gateway, args=(recorder,)) for recorder in recorders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert _counts(deployment) == (8000, 400, 8000, 16000)


def test_a_request_in_flight_keeps_its_deployment_from_sleeping(version, node_factory, user_factory):
    from deployments.services import deployment_create

    from .conftest import drive

    node_factory()
    deployment = drive(deployment_create(owner=user_factory(), version=version, inputs={}, idle_timeout_seconds=10).deployment)
    recorder = ActivityRecorder(flush_seconds=None)
    recorder.started(deployment_id=deployment.pk)
    Deployment.objects.filter(pk=deployment.pk).update(running_since=timezone.now() - timedelta(seconds=30))

    recorder.flush()  # a long streamed answer: the flusher marks it active at each period

    assert recorder.in_flight(deployment.pk) == 1
    assert deployments_sleep_idle() == []
    recorder.finished(deployment_id=deployment.pk)
    recorder.flush()
    assert recorder.in_flight(deployment.pk) == 0
    assert deployments_sleep_idle(now=timezone.now() + timedelta(seconds=11)) == [deployment.handle]


def _sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_module_functions_count_for_prometheus_and_metrics_is_staff_only(client, pair, user_factory, settings, monkeypatch):
    first, _ = pair
    monkeypatch.setattr(activity, "RECORDER", ActivityRecorder(flush_seconds=None))
    label = str(first.pk)
    before = _sample("hub_gateway_requests_total", deployment=label, status="5xx")

    activity_record(deployment_id=first.pk, status=503, bytes_in=7, bytes_out=11, seconds=0.02)

    assert _sample("hub_gateway_requests_total", deployment=label, status="5xx") == before + 1
    assert _sample("hub_gateway_errors_total", deployment=label) >= 1
    assert _sample("hub_gateway_bytes_total", deployment=label, direction="out") >= 11
    activity.RECORDER.flush()
    assert _counts(first) == (1, 1, 7, 11)

    assert client.get("/metrics").status_code == 404
    client.force_login(user_factory("not-staff"))
    assert client.get("/metrics").status_code == 404
    client.force_login(user_factory("operator", is_staff=True))
    page = client.get("/metrics")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/plain")
    assert f'hub_gateway_requests_total{{deployment="{label}",status="5xx"}}' in page.content.decode()

    client.logout()
    settings.HUB_METRICS_PUBLIC = True
    assert client.get("/metrics").status_code == 200


def test_a_staff_members_token_may_scrape_metrics_and_another_may_not(client, publisher, user_factory):
    from templates_catalog.services import api_token_create, api_token_create_personal

    operator = user_factory("operator", is_staff=True)
    staff_token = api_token_create_personal(user=operator, name="prometheus").secret
    member_token = api_token_create(publisher=publisher, created_by=publisher.members.get(), name="ci").secret

    assert client.get("/metrics", headers={"Authorization": f"Bearer {staff_token}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"Bearer {member_token}"}).status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer hub_not-a-token"}).status_code == 404
