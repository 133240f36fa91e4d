"""The gateway's streaming done-when, end to end: the text generator deployed for real
(venv build, process runner), its streamed completion called through the hub as `make run`
serves it (uvicorn, hub_site.asgi) at /d/<handle>/v1/completions, arrives token by token.

The process runner, not Docker: its image build installs torch and trains in the build
(minutes on a 2-core machine), while the venv is built once and kept under the hub's
var/venvs by its cache key. The bundle is the fixture with a shorter training (the text's
quality is not under test here, its arrival is)."""

import json
import time

import httpx
import pytest

from deployments.endpoint_tokens import endpoint_token_create
from deployments.flow import deployment_advance
from deployments.models import Deployment
from deployments.nodes import node_add
from deployments.services import deployment_create, deployment_delete
from tests.gateway.conftest import hub_server

from .conftest import drive_for_real

State = Deployment.State
# Enough characters that generating them takes a while (~0.3 s here) through a fast gateway:
# spread over that time when streamed, all at the end when buffered.
TOKENS = 1000
pytestmark = pytest.mark.django_db(transaction=True)


def test_a_streamed_completion_arrives_chunk_by_chunk_through_the_gateway(text_generator, user_factory, tmp_path):
    node_add(name="local", runner="process")
    owner = user_factory("owner")
    deployment = deployment_create(owner=owner, version=text_generator, inputs={}).deployment
    try:
        started = time.monotonic()
        running = drive_for_real(deployment, steps=3000)
        print(f"\ntext generator (venv, process runner): build and start took {time.monotonic() - started:.1f} s")
        assert running.state == State.RUNNING, running.reason
        secret = endpoint_token_create(deployment=running, created_by=owner, name="stream").secret
        with hub_server(tmp_path / "hub.log") as hub:
            arrivals = _streamed(f"{hub}/d/{running.handle}/v1/completions", secret)
    finally:
        deployment_delete(deployment=deployment)
        deployment_advance(deployment_id=deployment.pk)

    # A network read can end inside an event, so the events are parsed from the whole stream;
    # the chunks only tell when the bytes arrived.
    stream = b"".join(chunk for _, chunk in arrivals)
    events = [event for event in stream.split(b"\n\n") if event.startswith(b"data: ")]
    assert events[-1] == b"data: [DONE]"
    text = "".join(json.loads(event[6:])["choices"][0]["text"] for event in events[:-1])
    assert len(text) == TOKENS
    # Buffered by the gateway, the answer would come in one piece at the end.
    assert len(arrivals) >= 10, arrivals[:3]
    first, last = arrivals[0][0], arrivals[-1][0]
    assert last - first > 0.2, f"all {len(arrivals)} chunks arrived within {last - first:.3f} s"
    assert first < 0.5 * last, (first, last)


def _streamed(url: str, secret: str) -> list[tuple[float, bytes]]:
    """Each piece of the answer with the time it reached the client."""
    body = {"prompt": "Diplomacy, n.", "max_tokens": TOKENS, "temperature": 0.8, "seed": 7, "stream": True}
    arrivals = []
    started = time.monotonic()
    with httpx.stream("POST", url, json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=60) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        for chunk in answer.iter_raw():
            arrivals.append((time.monotonic() - started, chunk))
    return arrivals
