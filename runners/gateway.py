"""The gateway's core: forwards one ASGI request to a deployment's endpoint and streams the
answer back. Plain Python (no Django): who may call which endpoint is decided before this,
by the hub (deployments/gateway.py).

- One pool of keep-alive connections for every upstream (runners/upstream_pool.py, which
  says why not aiohttp or httpx: the hub's CPU a request is what the gateway's throughput is
  made of).
- Request and response bodies stream chunk by chunk, both ways; nothing is buffered whole.
- The hub's own credentials (`Authorization`, `Cookie`) and hop-by-hop headers never reach
  the upstream; `X-Forwarded-For/-Proto/-Host` tell it who asked.
- The deployment's upstream token goes along as `X-Hub-Upstream-Token`: its run answers only
  requests that carry it (runners/harness/upstream.py). A client's own header of that name
  is dropped, and one in an answer never reaches the client.
- A body over `max_body_bytes` is refused with 413: by its Content-Length before any
  connection is made, or, when it arrives in chunks, as soon as it grows past the limit.
- A client that disconnects while its answer streams closes the upstream connection at
  once: an endless or slow stream (a long completion) stops costing the endpoint anything.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from runners.harness.upstream import UPSTREAM_TOKEN_HEADER
from runners.upstream_pool import UpstreamError, UpstreamPool, UpstreamResponse, UpstreamTimeout

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

# RFC 9110 section 7.6.1, plus the proxy ones: meaningful for one connection only.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# The hub's credentials and what the proxy sets itself: the pool writes Host and the body's
# framing; an `Expect: 100-continue` was answered by the server in front, and the body follows.
NOT_FORWARDED = HOP_BY_HOP | {
    b"authorization", b"cookie", b"host", b"x-forwarded-proto", b"x-forwarded-host", UPSTREAM_TOKEN_HEADER,
    b"content-length", b"expect",
}
# The endpoint answers on the hub's origin: it may not set the hub's cookies, and the server
# in front (uvicorn) writes its own Date and Server. Nor may it hand back its upstream token.
NOT_RETURNED = HOP_BY_HOP | {b"set-cookie", b"date", b"server", UPSTREAM_TOKEN_HEADER}
# Whatever a template answers is data, never a page that runs in the hub's origin.
RETURNED_EXTRA = [(b"content-security-policy", b"sandbox"), (b"x-content-type-options", b"nosniff")]


@dataclass(frozen=True)
class ProxyResult:
    """What one request through the gateway did, for usage records and metrics."""

    status: int
    bytes_in: int
    bytes_out: int
    duration_s: float
    error: str = ""


OnFinish = Callable[[ProxyResult], None]


class BodyTooLarge(Exception):
    """The request body passed the endpoint's limit while it streamed in."""


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


# What proxies log for a request whose client went away (nginx's 499): nothing is sent.
CLIENT_GONE = 499


# Endpoints (the harness: uvicorn) close a keep-alive connection after 5 s idle: a request
# sent on a connection the endpoint is closing at that moment fails. Pooled connections
# expire well before the endpoint's.
KEEPALIVE_EXPIRY_SECONDS = 2.0
# What the upstream can do wrong: not answer, break off, or take too long.
UPSTREAM_ERRORS = (UpstreamError,)


class Gateway:
    """Forwards requests to upstreams through one connection pool. Create one per process;
    `aclose()` it on shutdown."""

    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 300.0, max_connections: int = 1000):
        self.pool = UpstreamPool(connect_timeout=connect_timeout, read_timeout=read_timeout,
                                 max_connections=max_connections, keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS)

    async def aclose(self) -> None:
        await self.pool.aclose()

    async def forward(self, scope: Scope, receive: Receive, send: Send, *, upstream: str, path: str,
                      upstream_token: str, max_body_bytes: int, on_finish: OnFinish | None = None) -> ProxyResult:
        """Send the request in `scope` to `upstream` + `path` (the query string is kept),
        with `upstream_token` as `X-Hub-Upstream-Token`, and stream the answer to `send`.
        Every outcome ends in a response and a result."""
        started = time.perf_counter()
        exchange = _Exchange(send)
        try:
            await self._forward(scope, receive, exchange, upstream=upstream, path=path, upstream_token=upstream_token,
                                max_body_bytes=max_body_bytes)
        finally:
            result = ProxyResult(
                status=exchange.status, bytes_in=exchange.bytes_in, bytes_out=exchange.bytes_out,
                duration_s=time.perf_counter() - started, error=exchange.error,
            )
            if on_finish is not None:
                on_finish(result)
        return result

    async def _forward(self, scope: Scope, receive: Receive, exchange: "_Exchange", *, upstream: str, path: str,
                       upstream_token: str, max_body_bytes: int) -> None:
        if is_websocket(scope):
            await exchange.refuse(501, "websocket connections are not supported by the gateway yet: use plain HTTP requests")
            return
        declared = _content_length(scope)
        if declared is not None and declared > max_body_bytes:
            await exchange.refuse(413, f"the request body is {declared} bytes; this endpoint takes at most {max_body_bytes}")
            return
        try:
            body = await _request_body(receive, exchange, max_body_bytes)
            response = await self.pool.request(
                scope["method"], upstream, _target(path, scope), _upstream_headers(scope, upstream_token), body,
                declared_length=None if isinstance(body, bytes) else declared,
            )
        except ClientGone:
            exchange.status, exchange.error = CLIENT_GONE, "the client went away before its request was complete"
            return
        except BodyTooLarge:
            await exchange.refuse(413, f"the request body grew past {max_body_bytes} bytes, the most this endpoint takes")
            return
        except ValueError as exc:
            # A path or header the pool will not write (only the hub's own calls can have one).
            await exchange.refuse(400, f"the request cannot be forwarded: {exc}")
            return
        except UPSTREAM_ERRORS as exc:
            await exchange.refuse_upstream(exc)
            return
        try:
            if _whole_and_small(response):
                await exchange.answer_whole(response)
            else:
                await _unless_client_leaves(exchange.stream(response), receive, exchange)
        finally:
            # Unread to its end (the client left, the stream broke): the connection is closed, not pooled.
            response.release()


def _upstream_headers(scope: Scope, upstream_token: str) -> list[tuple[bytes, bytes]]:
    headers = forwarded_headers(scope)
    headers.append((UPSTREAM_TOKEN_HEADER, upstream_token.encode("latin-1")))
    return headers


class _Exchange:
    """The client side of one request: what was sent back, and how much."""

    def __init__(self, send: Send):
        self._send = send
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.error = ""
        self.started = False

    async def refuse(self, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self.error = message
        await send_json_error(self._send, status, message, headers)
        self.status = status
        self.started = True

    async def refuse_upstream(self, exc: UpstreamError) -> None:
        """The upstream failed before its answer began."""
        if isinstance(exc, UpstreamTimeout):
            await self.refuse(504, f"the deployment did not answer in time: {exc}")
        else:
            await self.refuse(502, f"the deployment cannot be reached: {_reason(exc)}")

    async def start(self, response: UpstreamResponse) -> None:
        headers = [(name, value) for name, value in response.headers if name.lower() not in NOT_RETURNED]
        await self._send({"type": "http.response.start", "status": response.status, "headers": headers + RETURNED_EXTRA})
        self.status, self.started = response.status, True

    async def answer_whole(self, response: UpstreamResponse) -> None:
        """A small answer of known length: read, then sent in one piece, without a watcher
        for the client leaving (nothing long is left to stop reading)."""
        try:
            body = await response.read()
        except UPSTREAM_ERRORS as exc:
            await self.refuse(502, f"the deployment broke off its answer: {_reason(exc)}")
            return
        await self.start(response)
        self.bytes_out = len(body)
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def stream(self, response: UpstreamResponse) -> None:
        await self.start(response)
        try:
            # Raw: as the upstream encoded it (gzip stays gzip), each chunk as it arrives.
            async for chunk in response.chunks():
                self.bytes_out += len(chunk)
                await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UPSTREAM_ERRORS as exc:
            # The status is gone already: end the body; the client sees a short answer.
            self.error = f"the deployment broke off its answer: {_reason(exc)}"
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})


# Answers up to this size with a Content-Length go out in one piece (an embedding is ~8 KiB).
WHOLE_ANSWER_BYTES = 256 * 1024


def _whole_and_small(response: UpstreamResponse) -> bool:
    length = response.content_length
    return length is not None and length <= WHOLE_ANSWER_BYTES and b"text/event-stream" not in response.content_type


async def _unless_client_leaves(streaming: Awaitable[None], receive: Receive, exchange: _Exchange) -> None:
    """Run `streaming` until it ends or the client disconnects, whichever comes first. The
    server only says so through `receive()`: its `send()` drops what a gone client would
    get without a word, so the answer would otherwise be read from the upstream to its end.
    The stream stays in the request's own task (one watcher task per request, not two), so
    nothing comes between its last chunk and the caller's bookkeeping."""
    request_task = asyncio.current_task()
    streamed = left = False

    def client_left(watch: asyncio.Future) -> None:
        nonlocal left
        # Scheduled, not run, when the watcher ends: the stream may have ended meanwhile.
        if not streamed and not watch.cancelled():
            left = True
            exchange.error = "the client went away while its answer streamed"
            request_task.cancel()

    watch = asyncio.ensure_future(_disconnect(receive))
    watch.add_done_callback(client_left)
    try:
        await streaming
    except asyncio.CancelledError:
        if not left or request_task.uncancel() > 0:
            raise  # cancelled by someone else (the server shutting down)
    finally:
        streamed = True
        watch.cancel()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # the rest of a body nobody reads any more


async def _request_body(receive: Receive, exchange: _Exchange, limit: int) -> bytes | AsyncIterator[bytes]:
    """The body as bytes when it came in one piece (most requests), else a stream that
    forwards each piece as it arrives and stops as soon as the total passes `limit`."""
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientGone()
    head = first.get("body", b"")
    exchange.bytes_in = len(head)
    if exchange.bytes_in > limit:
        raise BodyTooLarge()
    if not first.get("more_body", False):
        return head

    async def rest() -> AsyncIterator[bytes]:
        if head:
            yield head
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            piece = message.get("body", b"")
            exchange.bytes_in += len(piece)
            if exchange.bytes_in > limit:
                raise BodyTooLarge()
            if piece:
                yield piece
            if not message.get("more_body", False):
                return

    return rest()


def forwarded_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The request's headers without the hub's credentials and hop-by-hop ones (also those
    the Connection header names), plus who asked, through which scheme and host."""
    headers = scope["headers"]
    named = {
        token.strip().lower() for name, value in headers if name == b"connection" for token in value.split(b",")
    }
    kept = [(name, value) for name, value in headers if name not in NOT_FORWARDED and name not in named]
    host = next((value for name, value in headers if name == b"host"), b"")
    client = (scope.get("client") or ("",))[0].encode()
    earlier = [value for name, value in kept if name == b"x-forwarded-for"]
    kept = [(name, value) for name, value in kept if name != b"x-forwarded-for"]
    chain = b", ".join([*earlier, client]) if client else b", ".join(earlier)
    if chain:
        kept.append((b"x-forwarded-for", chain))
    kept.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    if host:
        kept.append((b"x-forwarded-host", host))
    return kept


async def serve_lifespan(receive: Receive, send: Send, *, on_shutdown: Callable[[], Awaitable[None]]) -> None:
    """ASGI's lifespan for an app that holds the gateway's pool: nothing to start, and
    `on_shutdown` (closing its upstream connections) when the server stops."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def is_websocket(scope: Scope) -> bool:
    if scope["type"] == "websocket":
        return True
    return any(name == b"upgrade" and value.strip().lower() == b"websocket" for name, value in scope["headers"])


async def send_json_error(send: Send, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """An answer of the gateway itself: OpenAI-style JSON, like the harness's own errors."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = json.dumps({"error": {"message": message, "type": kind, "code": status}}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"), *headers],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """A websocket handshake (when the server speaks websocket): 501 where the server lets
    an app answer the handshake with HTTP, else a refused handshake."""
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        message = b'{"error": {"message": "websocket connections are not supported by the gateway yet", "code": 501}}'
        await send({"type": "websocket.http.response.start", "status": 501,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "websocket.http.response.body", "body": message})
    else:
        await send({"type": "websocket.close", "code": 1003})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _target(path: str, scope: Scope) -> str:
    query = scope.get("query_string", b"")
    return path + (("?" + query.decode("latin-1")) if query else "")


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
