"""The lock on a deployment's own port: with HUB_UPSTREAM_TOKEN set, the harness answers only
requests that carry it (the hub's gateway adds it); health and ready stay open for the hub's
polls. Real harness processes, called over HTTP."""

import asyncio
import json

import pytest

from runners.harness.upstream import REFUSED, UpstreamLock

pytestmark = pytest.mark.templates

TOKEN = "k" * 43
HEADER = "X-Hub-Upstream-Token"
JSON = {"Content-Type": "application/json"}


def _answer(raw: tuple[int, bytes]) -> tuple[int, object]:
    status, body = raw
    return status, json.loads(body)


def test_with_the_variable_set_only_the_token_opens_the_port(serve_fake):
    with serve_fake("Doubler", env={"HUB_UPSTREAM_TOKEN": TOKEN}) as server:
        answers = {
            "none": server.request("POST", "/predict", b'{"x": 2}', JSON),
            "wrong": server.request("POST", "/predict", b'{"x": 2}', {**JSON, HEADER: "x" * 43}),
            "a prefix of it": server.request("POST", "/predict", b'{"x": 2}', {**JSON, HEADER: TOKEN[:-1]}),
            "empty": server.request("POST", "/predict", b'{"x": 2}', {**JSON, HEADER: ""}),
            "metrics": server.request("GET", "/metrics"),
            # Not 404: a caller without the token learns nothing of the routes either.
            "unknown path": server.request("GET", "/no-such-route"),
        }
        right = server.request("POST", "/predict", b'{"x": 2}', {**JSON, HEADER: TOKEN})
        route = server.request("GET", "/items/7?colour=red", headers={HEADER: TOKEN})
        health, ready = server.get_json("/health"), server.get_json("/ready")

    refused = {"error": {"message": REFUSED, "type": "invalid_request_error", "code": 403}}
    for why, answer in answers.items():
        assert _answer(answer) == (403, refused), why
    assert "gateway" in REFUSED and "/d/" in REFUSED
    assert _answer(right) == (200, {"doubled": 4, "batch_size": 1})
    assert _answer(route) == (200, {"id": "7", "query": {"colour": "red"}})
    assert health == (200, {"status": "ok"}) and ready == (200, {"ready": True})


def test_the_handler_sees_neither_the_header_nor_the_variable(serve_fake):
    # A template that echoes its headers or its environment cannot give the token away.
    with serve_fake("Doubler", env={"HUB_UPSTREAM_TOKEN": TOKEN}) as server:
        seen = _answer(server.request("GET", "/upstream-token-seen", headers={HEADER: TOKEN}))
    assert seen == (200, {"header": None, "environment": None})


def test_without_the_variable_nothing_is_checked(serve_fake):
    with serve_fake("Doubler") as server:
        plain = server.post_json("/predict", {"x": 3})
        metrics = server.request("GET", "/metrics")
    assert plain == (200, {"doubled": 6, "batch_size": 1})
    assert metrics[0] == 200


def test_a_blank_variable_stops_the_harness_rather_than_leave_the_port_open(launch_fake):
    server = launch_fake("Doubler", env={"HUB_UPSTREAM_TOKEN": "  "})
    assert server.process.wait(timeout=60) != 0
    assert "HUB_UPSTREAM_TOKEN is set but empty" in server.output()


def test_a_websocket_without_the_token_is_closed_before_it_is_accepted():
    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope)

    async def send(message):
        sent.append(message)

    lock = UpstreamLock(app, token=TOKEN, open_paths=("/health", "/ready"))
    scope = {"type": "websocket", "path": "/predict", "headers": [(b"x-hub-upstream-token", b"nope")]}
    asyncio.run(lock(scope, None, send))
    assert sent == [{"type": "websocket.close", "code": 1008}] and reached == []
