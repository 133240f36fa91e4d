"""`manage.py serve` (what `make run` starts): on loopback, with a Docker Engine here, the
gateway alone also answers on the Docker bridge, and an app's containers on the local Docker
node are given the hub as host.docker.internal. Then the real thing: a container on the
default bridge calls the hub that `manage.py serve` started."""

import asyncio
import logging
import os
import signal
import subprocess
import sys
import urllib.request

import httpx
import pytest

from deployments.graphs import internal_gateway_url
from deployments.models import Node
from hub_site.serve import GATEWAY_ONLY_ANSWER, gateway_only_on, is_loopback, listen_sockets
from tests.netutil import free_port, wait_for_port


@pytest.mark.parametrize(("runner", "engine_url", "internal", "expected"), [
    ("docker", "", "http://127.0.0.1:8000", "http://host.docker.internal:8000"),
    ("docker", "unix:///var/run/docker.sock", "http://localhost:8123/", "http://host.docker.internal:8123/"),
    ("process", "", "http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    # A remote engine's containers cannot reach this machine's loopback either, but
    # host.docker.internal would be their own host: the operator must set the URL.
    ("docker", "tcp://gpu-7:2376", "http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ("docker", "", "http://hub.internal:8000", "http://hub.internal:8000"),
])
def test_containers_on_this_machines_engine_reach_a_loopback_hub_as_host_docker_internal(settings, runner, engine_url, internal, expected):
    settings.GATEWAY_INTERNAL_URL = internal
    assert internal_gateway_url(Node(name="n", runner=runner, engine_url=engine_url)) == expected


def test_loopback_is_loopback_and_nothing_else():
    assert all(is_loopback(host) for host in ("127.0.0.1", "127.3.2.1", "::1", "localhost"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "172.17.0.1", "hub.example", ""))


def _call(app, path: str, server_address: str) -> tuple[int | None, bytes, bool]:
    """(status, body, whether `app`'s own handler ran) for one GET through `app`."""
    reached = []

    async def inner(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"inner"})

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": path, "server": (server_address, 8000)}
    asyncio.run(app(inner)(scope, receive, send))
    return sent[0].get("status"), b"".join(m.get("body", b"") for m in sent[1:]), bool(reached)


def test_on_the_bridge_only_the_gateway_answers_and_loopback_answers_everything():
    def guarded(inner):
        return gateway_only_on({"172.17.0.1"}, inner, "/d/")

    assert _call(guarded, "/admin/", "172.17.0.1") == (404, GATEWAY_ONLY_ANSWER, False)
    assert _call(guarded, "/api/v1/templates/", "172.17.0.1")[2] is False
    assert _call(guarded, "/d/d-abc/v1/embeddings", "172.17.0.1") == (200, b"inner", True)
    assert _call(guarded, "/admin/", "127.0.0.1") == (200, b"inner", True)


def test_the_bridge_is_added_only_to_a_loopback_host_and_only_when_it_can_be_bound(caplog):
    port = free_port()
    # Any 127/8 address is this machine's: a stand-in for docker0 that every machine can bind.
    sockets, gateway_only = listen_sockets("127.0.0.1", port, bridge=lambda: "127.0.0.2")
    try:
        assert [s.getsockname() for s in sockets] == [("127.0.0.1", port), ("127.0.0.2", port)]
        assert gateway_only == {"127.0.0.2"}
    finally:
        for sock in sockets:
            sock.close()

    asked = []
    sockets, gateway_only = listen_sockets("0.0.0.0", free_port(), bridge=lambda: asked.append(1) or "127.0.0.2")
    [sock.close() for sock in sockets]
    assert (len(sockets), gateway_only, asked) == (1, set(), [])  # 0.0.0.0 holds the bridge already

    with caplog.at_level(logging.WARNING, logger="hub_site.serve"):
        sockets, gateway_only = listen_sockets("127.0.0.1", free_port(), bridge=lambda: "192.0.2.77")  # not ours
    [sock.close() for sock in sockets]
    assert (len(sockets), gateway_only) == (1, set())
    assert "cannot call their parts" in caplog.text


CALL_FROM_A_CONTAINER = """
import sys, urllib.request, urllib.error
for path in sys.argv[1:]:
    try:
        with urllib.request.urlopen("http://host.docker.internal:%s%s" % (PORT, path), timeout=20) as answer:
            print(path, answer.status, answer.read()[:80])
    except urllib.error.HTTPError as error:
        print(path, error.code, error.read()[:80])
"""


@pytest.mark.django_db(transaction=True)
def test_a_container_on_the_bridge_reaches_the_gateway_of_the_hub_make_run_serves(tmp_path):
    from tests.browser.conftest import ROOT, stop_process_group, test_database_url
    from tests.builds.conftest import BASE_IMAGE, require_engine

    require_engine()
    import docker

    client = docker.from_env()
    port = free_port()
    log = tmp_path / "serve.log"
    environment = {**os.environ, "DEBUG": "1", "DATABASE_URL": test_database_url()}
    with log.open("wb") as out:
        hub = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(port)], cwd=ROOT, env=environment,
                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for_port(port, 60), log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as page:
            assert page.status == 200  # on loopback, the whole hub
        script = CALL_FROM_A_CONTAINER.replace("PORT", str(port))
        output = client.containers.run(
            BASE_IMAGE, ["python3", "-c", script, "/d/d-nosuchthing/v1/embeddings", "/admin/", "/"],
            extra_hosts={"host.docker.internal": "host-gateway"}, remove=True, user="65534",
        ).decode()
    finally:
        stop_process_group(hub)
    lines = dict(line.split(" ", 1) for line in output.strip().splitlines())
    assert lines["/d/d-nosuchthing/v1/embeddings"].startswith("401"), output  # the gateway itself: a token is asked for
    assert lines["/admin/"].startswith("404") and "Only the deployment gateway" in lines["/admin/"], output
    assert lines["/"].startswith("404"), output
    assert "also answers on" in log.read_text()


class Served:
    """`manage.py serve` on the test database, stopped with Ctrl+C (SIGINT)."""

    def __init__(self, tmp_path, **environment: str):
        from tests.browser.conftest import ROOT, test_database_url

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "serve.log"
        environment = {**os.environ, "DEBUG": "1", "DATABASE_URL": test_database_url(), **environment}
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", str(self.port)], cwd=ROOT,
                                            env=environment, stdout=out, stderr=subprocess.STDOUT)
        self.status: int | None = None

    def __enter__(self) -> "Served":
        if not wait_for_port(self.port, 60):
            self.__exit__()
            raise AssertionError(self.log.read_text())
        return self

    def __exit__(self, *exc) -> None:
        self.process.send_signal(signal.SIGINT)  # what Ctrl+C on `make run` sends
        self.status = self.process.wait(30)


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_stops_the_hub_quietly_with_exit_status_0(tmp_path):
    with Served(tmp_path) as hub:
        pass
    assert hub.status == 0 and "Traceback" not in hub.log.read_text(), hub.log.read_text()
    assert "Application shutdown complete" in hub.log.read_text()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("every_line", [False, True])
def test_the_access_log_leaves_out_answered_gateway_requests_unless_asked(tmp_path, user_factory, version, node_factory,
                                                                         upstream, every_line):
    from deployments.endpoint_tokens import endpoint_token_create

    from .test_gateway import running

    node_factory()
    owner = user_factory("owner")
    deployment = running(owner, version, upstream.url)
    secret = endpoint_token_create(deployment=deployment, created_by=owner, name="app").secret
    with Served(tmp_path, GATEWAY_ACCESS_LOG=str(int(every_line))) as hub:
        answered = httpx.get(f"{hub.url}/d/{deployment.handle}/v1/answered", headers={"Authorization": f"Bearer {secret}"})
        refused = httpx.get(f"{hub.url}/d/{deployment.handle}/v1/refused")
        page = httpx.get(f"{hub.url}/")
    assert (answered.status_code, refused.status_code, page.status_code) == (200, 401, 200)
    log = hub.log.read_text()
    assert (f'"GET /d/{deployment.handle}/v1/answered HTTP/1.1" 200' in log) is every_line, log
    assert f'"GET /d/{deployment.handle}/v1/refused HTTP/1.1" 401' in log, log
    assert '"GET / HTTP/1.1" 200' in log, log


def test_only_uvicorns_access_lines_of_answered_gateway_requests_are_filtered():
    from hub_site.asgi import GatewaySuccessesUnlogged

    def line(path: str, status: int) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                                 ("127.0.0.1:5000", "POST", path, "1.1", status), None)

    kept = GatewaySuccessesUnlogged().filter
    assert not kept(line("/d/d-abc/v1/embeddings", 200)) and not kept(line("/d/d-abc/stream?x=1", 304))
    assert kept(line("/d/d-abc/v1/embeddings", 404)) and kept(line("/d/d-abc/v1/embeddings", 502))
    assert kept(line("/templates/d/", 200)) and kept(line("/", 200))
    assert kept(logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "something else %s", ("/d/x",), None))
