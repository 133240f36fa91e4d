"""Try it against deployments that really run: a sleeping one is woken by the form, as a
call with a token would wake it, and the text generator (venv build, process runner)
answers the prompt its fixture's `serve.try` declares."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse

from deployments.flow import deployment_advance
from deployments.models import Deployment
from deployments.nodes import node_add
from deployments.services import deployment_create, deployment_delete
from deployments.sleeping import deployments_sleep_idle

from .conftest import WakeWorker, drive, drive_for_real

State = Deployment.State
HX = {"HTTP_HX_REQUEST": "true"}
# The wake worker and the build run in threads of their own: they see only committed rows.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("recorder")]


@pytest.fixture
def owner(user_factory, client):
    user = user_factory("owner")
    client.force_login(user)
    return user


def test_the_form_wakes_a_sleeping_deployment_and_shows_its_answer(client, owner, publish, node_factory, recorder):
    node_factory()
    version = publish(name="sleepy", serve={"handler": "handler:Model", "try": {"path": "/ready", "method": "GET"}})
    deployment = drive(deployment_create(owner=owner, version=version, inputs={}, idempotency_key="sleepy").deployment)
    later = deployment.running_since + timedelta(seconds=deployment.idle_timeout_seconds + 1)
    assert deployments_sleep_idle(now=later) == [deployment.handle]
    worker = WakeWorker(deployment)

    response = client.post(reverse("deployments:try", args=[deployment.handle]), **HX)
    worker.join()

    assert response.status_code == 200
    answer = response.content.decode().split('id="try-answer"')[1]
    assert "&quot;ready&quot;: true" in answer
    awake = Deployment.objects.get(pk=deployment.pk)
    assert awake.state == State.RUNNING and awake.events.filter(message="woken by a request").count() == 1
    recorder.flush()
    awake.refresh_from_db()
    assert awake.requests == 1


def test_the_text_generator_answers_its_try_it_form_for_real(client, owner, text_generator, recorder):
    node_add(name="local", runner="process")
    deployment = deployment_create(owner=owner, version=text_generator, inputs={}).deployment
    try:
        running = drive_for_real(deployment, steps=3000)
        assert running.state == State.RUNNING, running.reason
        page = client.get(reverse("deployments:detail", args=[running.handle])).content.decode()
        assert 'name="try-prompt"' in page and 'name="try-max_tokens" value="200"' in page

        response = client.post(
            reverse("deployments:try", args=[running.handle]),
            {"try-prompt": "Diplomacy, n.", "try-max_tokens": "60", "try-temperature": "0.8"}, **HX,
        )
    finally:
        deployment_delete(deployment=deployment)
        deployment_advance(deployment_id=deployment.pk)

    assert response.status_code == 200
    answer = response.content.decode().split('id="try-answer"')[1]
    assert 'role="alert"' not in answer, answer[:500]
    shown = re.search(r'<pre class="try-text" tabindex="0"><code>(.*?)</code></pre>', answer, re.DOTALL)
    assert shown and shown.group(1), answer[:500]
    # 60 characters of generated text, each escaped at most to a 6-character entity.
    assert 1 <= len(shown.group(1)) <= 60 * 6
    recorder.flush()
    deployment.refresh_from_db()
    assert (deployment.requests, deployment.errors) == (1, 0)
