"""The gateway's core (runners/gateway.py) between a real client, a real uvicorn in front of
it and a real upstream server: what reaches the upstream, what comes back, and when."""

import asyncio
import http.client
import socket
import time

import httpx
import pytest
import uvicorn

from runners.gateway import KEEPALIVE_EXPIRY_SECONDS, Gateway, ProxyResult, serve_lifespan
from tests.netutil import free_port

from .conftest import served

LIMIT = 4096
UPSTREAM_TOKEN = "the-deployments-own-" + "u" * 24


class CoreApp:
    """The core as a whole ASGI app, forwarding everything under / to one upstream."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.core = Gateway(connect_timeout=2, read_timeout=10)
        self.results: list[ProxyResult] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, on_shutdown=self.core.aclose)
            return
        await self.core.forward(scope, receive, send, upstream=self.upstream, path=scope["raw_path"].decode(),
                                upstream_token=UPSTREAM_TOKEN, max_body_bytes=LIMIT, on_finish=self.results.append)


@pytest.fixture
def proxied(upstream):
    app = CoreApp(upstream.url)
    with served(app, lifespan="on") as url:
        app.url = url
        yield app


def last_result(proxied: CoreApp, timeout: float = 5) -> ProxyResult:
    """The latest request's result: reported just after its answer's last byte went out,
    so the client may have it a moment before."""
    deadline = time.monotonic() + timeout
    while not proxied.results and time.monotonic() < deadline:
        time.sleep(0.01)
    return proxied.results[-1]


def headers_seen(request: dict) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in request["headers"]:
        found.setdefault(name, []).append(value)
    return found


def test_it_never_forwards_the_hubs_authorization_or_cookies(proxied, upstream):
    answer = httpx.get(f"{proxied.url}/v1/models", headers={
        "Authorization": "Bearer hubep_secret", "Cookie": "sessionid=abc; csrftoken=def", "X-Client": "kept",
        "Connection": "keep-alive, X-Private", "X-Private": "hop", "Proxy-Authorization": "Basic eA==",
    })
    assert answer.status_code == 200
    seen = headers_seen(upstream.seen[-1])
    assert "authorization" not in seen and "cookie" not in seen and "proxy-authorization" not in seen
    # Named by Connection: meant for this hop only.
    assert "x-private" not in seen
    assert seen["x-client"] == ["kept"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"] and seen["x-forwarded-proto"] == ["http"]
    assert seen["x-forwarded-host"] == [proxied.url.removeprefix("http://")]


def test_it_sends_the_deployments_upstream_token_and_only_that_one(proxied, upstream):
    # A client that sends its own guess (or a token it learnt elsewhere) changes nothing: the
    # upstream gets exactly one, the gateway's, and the client never sees it in the answer's headers.
    answer = httpx.get(f"{proxied.url}/v1/models", headers=[
        ("X-Hub-Upstream-Token", "a-guess"), ("x-hub-upstream-token", "another-guess"),
    ])
    assert answer.status_code == 200
    assert headers_seen(upstream.seen[-1])["x-hub-upstream-token"] == [UPSTREAM_TOKEN]
    assert "x-hub-upstream-token" not in answer.headers
    assert UPSTREAM_TOKEN not in str(answer.headers)


def test_it_passes_methods_queries_bodies_and_statuses_through(proxied, upstream):
    answer = httpx.put(f"{proxied.url}/collections/docs?limit=3&q=a%20b", content=b'{"x": 1}',
                       headers={"Content-Type": "application/json"})
    assert answer.status_code == 201
    seen = upstream.seen[-1]
    assert (seen["method"], seen["path"], seen["query"], seen["body"]) == ("PUT", "/collections/docs", "limit=3&q=a%20b", '{"x": 1}')
    assert headers_seen(seen)["content-type"] == ["application/json"]
    assert answer.headers["x-upstream"] == "yes"
    result = last_result(proxied)
    assert (result.status, result.bytes_in, result.bytes_out) == (201, 8, len(answer.content)) and result.duration_s > 0
    httpx.delete(f"{proxied.url}/collections/docs")
    assert upstream.seen[-1]["method"] == "DELETE"


def test_it_keeps_the_endpoint_from_setting_the_hubs_cookies_or_serving_pages(proxied):
    answer = httpx.get(f"{proxied.url}/anything")
    assert "set-cookie" not in answer.headers
    assert answer.headers["content-security-policy"] == "sandbox"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_it_streams_a_chunked_request_body_through(proxied, upstream):
    def pieces():
        for index in range(4):
            yield f"piece-{index};".encode()

    answer = httpx.post(f"{proxied.url}/ingest", content=pieces())
    assert answer.status_code == 200
    assert upstream.seen[-1]["body"] == "piece-0;piece-1;piece-2;piece-3;"
    assert last_result(proxied).bytes_in == len("piece-0;") * 4


def test_it_streams_the_answer_chunk_by_chunk_as_the_upstream_sends_it(proxied, upstream):
    arrivals = []
    started = time.monotonic()
    with httpx.stream("GET", f"{proxied.url}/stream", timeout=10) as answer:
        for chunk in answer.iter_raw():
            if chunk:
                arrivals.append((time.monotonic() - started, chunk))
    body = b"".join(chunk for _, chunk in arrivals)
    assert body == b"".join(f"data: {index}\n\n".encode() for index in range(upstream.CHUNKS))
    assert len(arrivals) >= 3, arrivals
    # The upstream takes 4 pauses of 0.3 s: buffered, everything would arrive at the end.
    assert arrivals[-1][0] - arrivals[0][0] > 0.8, arrivals


def test_it_closes_the_upstream_as_soon_as_the_client_leaves_a_stream(proxied, upstream):
    with httpx.stream("GET", f"{proxied.url}/forever", timeout=10) as answer:
        chunks = answer.iter_raw()  # kept: a dropped iterator closes the connection
        assert next(chunks).startswith(b"data: more")
        time.sleep(0.2)  # still streaming: the upstream has not been told anything
        assert upstream.forever_left_at is None
        left = time.monotonic()
    deadline = left + 5
    while upstream.forever_left_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.forever_left_at is not None, "the upstream kept streaming to a client that left"
    assert upstream.forever_left_at - left < 1.0
    deadline = time.monotonic() + 2
    while not proxied.results and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proxied.results[-1].error == "the client went away while its answer streamed"
    assert proxied.results[-1].status == 200


def test_it_refuses_a_declared_oversized_body_before_the_upstream_hears_of_it(proxied, upstream):
    answer = httpx.post(f"{proxied.url}/v1/embeddings", content=b"x" * (LIMIT + 1))
    assert answer.status_code == 413
    assert f"at most {LIMIT}" in answer.json()["error"]["message"]
    assert upstream.seen == []
    assert last_result(proxied).status == 413


def test_it_stops_a_chunked_body_that_grows_past_the_limit_piece_by_piece(proxied, upstream):
    def trickle():
        for _ in range(40):
            time.sleep(0.02)  # each piece arrives on its own
            yield b"y" * 1024

    answer = httpx.post(f"{proxied.url}/v1/embeddings", content=trickle())
    assert answer.status_code == 413
    assert "grew past" in answer.json()["error"]["message"]
    # Stopped at the first piece past the limit (pieces may arrive joined on a busy machine),
    # long before the 40 KiB end: the upstream never got a whole request.
    assert LIMIT < last_result(proxied).bytes_in < 20 * 1024
    assert all(len(request["body"]) <= LIMIT for request in upstream.seen)


def test_it_stops_reading_a_flood_long_before_its_end(proxied, upstream):
    answer = httpx.post(f"{proxied.url}/v1/embeddings", content=iter([b"z" * (1024 * 1024)]))
    assert answer.status_code == 413
    # What it read is the server's first buffer (about 64 KiB), not the whole megabyte.
    assert last_result(proxied).bytes_in < 200 * 1024
    assert upstream.seen == []


def test_it_answers_a_websocket_upgrade_with_501(proxied, upstream):
    answer = httpx.get(f"{proxied.url}/socket", headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    })
    assert answer.status_code == 501
    assert "websocket" in answer.json()["error"]["message"]
    assert upstream.seen == []


def test_it_answers_502_with_the_reason_when_the_upstream_is_unreachable():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        app = CoreApp(f"http://127.0.0.1:{port}")
        with served(app, lifespan="on") as url:
            answer = httpx.get(f"{url}/v1/models")
    assert answer.status_code == 502
    assert answer.json()["error"]["message"].startswith("the deployment cannot be reached:")
    assert app.results[-1].status == 502 and app.results[-1].error


def test_it_reuses_pooled_connections_to_the_upstream(proxied, upstream):
    for _ in range(5):
        httpx.get(f"{proxied.url}/again")
    ports = {dict(request["headers"]).get("x-forwarded-for") for request in upstream.seen}
    assert ports == {"127.0.0.1"}
    # One keep-alive connection served all five: the pool holds it.
    assert proxied.core.pool.idle_connections() == 1


def test_free_port_is_usable_for_the_unreachable_case():
    # Guards the test above: a fresh port is not served by anything.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{free_port()}/", timeout=1)


def test_a_cookie_one_endpoint_sets_never_reaches_the_next_request(proxied, upstream):
    # The upstream sets `sessionid=stolen` on every answer. A pooled client that kept a cookie
    # jar would send it with every later request to that host: on one node, to every other
    # user's deployment.
    httpx.get(f"{proxied.url}/first")
    httpx.get(f"{proxied.url}/second")
    assert upstream.seen[-1]["path"] == "/second"
    assert "cookie" not in headers_seen(upstream.seen[-1])


def test_it_adds_no_headers_of_its_own_client_library(proxied, upstream):
    # A client that asks for no encoding must not get a gzipped answer because the gateway asked.
    connection = http.client.HTTPConnection(proxied.url.removeprefix("http://"), timeout=10)
    connection.putrequest("GET", "/plain", skip_accept_encoding=True)
    connection.endheaders()
    assert connection.getresponse().status == 200
    connection.close()
    seen = headers_seen(upstream.seen[-1])
    assert "accept-encoding" not in seen and "user-agent" not in seen and "accept" not in seen


def test_pooled_connections_expire_well_before_an_endpoint_closes_them():
    # The harness serves every endpoint with uvicorn's keep-alive timeout: reusing a connection
    # the endpoint is closing at that moment fails the call (a ReadError, seen as a 502).
    endpoint_keep_alive = uvicorn.Config(app=None).timeout_keep_alive
    assert KEEPALIVE_EXPIRY_SECONDS <= endpoint_keep_alive - 2
    assert Gateway().pool.keepalive_expiry == KEEPALIVE_EXPIRY_SECONDS


def test_a_path_that_would_split_the_upstream_request_gets_400_and_sends_nothing(upstream):
    # Clients cannot send one (the server in front parses their request line); the hub's own
    # calls build theirs from a path, so the core checks it before anything is written.
    gateway = Gateway()
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "scheme": "http", "path": "/", "query_string": b"",
             "headers": [(b"host", b"hub")], "client": ("127.0.0.1", 0)}

    async def forward():
        try:
            return await gateway.forward(scope, receive, send, upstream=upstream.url, path="/x HTTP/1.1\r\nx-forged: 1\r\n\r\n",
                                         upstream_token=UPSTREAM_TOKEN, max_body_bytes=LIMIT)
        finally:
            await gateway.aclose()

    result = asyncio.run(forward())
    assert result.status == 400 and sent[0]["status"] == 400
    assert b"not a valid request target" in sent[1]["body"]
    assert upstream.seen == []
