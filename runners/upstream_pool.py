"""Keep-alive HTTP/1.1 connections from the gateway to its upstreams (deployments' endpoints).

The gateway's CPU a request is what its throughput is made of: on a GPU node's machine the
hub's cores are shared with the endpoints, and each millisecond a request costs there is one
a batch of the model waits for its next callers. Measured here (2 cores, one pooled POST
with an 8 KiB JSON answer, wrk-like load): aiohttp's client took 80-130 µs of CPU a request,
this pool 12 µs. The difference is what aiohttp does for every client: a request object with
its own header multidict, a task to write the body, timers, tracing hooks, cookie handling,
URL objects. A proxy needs none of it: its request is the client's, already parsed and
checked by the server in front, and goes out in one write; the answer is parsed by
httptools (llhttp, the same C parser uvicorn uses) and handed on as it arrives.

What it does and does not do:
- `http://` and `https://` origins; one pool of idle connections per origin, the most
  recently used first; an idle connection is not reused after `keepalive_expiry` seconds
  (endpoints close theirs at 5 s: one closed under a request would fail it), nor once the
  upstream has closed it or said `Connection: close`.
- At most `max_connections` requests in flight at once; more wait for a slot.
- A body of bytes goes with its Content-Length in the same write as the head; a streamed
  body goes as it arrives, with the Content-Length the client declared, else chunked.
- An answer streams: `chunks()` yields each piece as it arrives, and reading from the
  upstream pauses while more than `PAUSE_READING_BYTES` wait for a slow client.
- Interim answers (100 Continue, 103 Early Hints) are skipped; `HEAD` answers have no body.
- A reused connection that the upstream had closed before answering (a race with its idle
  timeout) is retried once on a new one, for idempotent methods with a body of bytes only.
- Timeouts: `connect_timeout` to open a connection; `read_timeout` for each wait on the
  upstream (the head, then each piece), as aiohttp's `sock_read`: a long stream that keeps
  sending is never cut.
"""

import asyncio
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import httptools

Headers = list[tuple[bytes, bytes]]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# Unread answer bytes held for a slow client before the upstream is made to wait.
PAUSE_READING_BYTES = 1024 * 1024
RESUME_READING_BYTES = 256 * 1024
# A space, CR, LF or other control byte in a request target, or CR, LF or NUL in a header,
# would end the request line or header early: what follows would be a header or a request
# of the sender's choosing. The server in front refuses them from clients; the hub's own
# calls (Try it) are checked here.
NOT_IN_TARGET = re.compile(rb"[\x00-\x20\x7f]")
NOT_IN_HEADER_VALUE = re.compile(rb"[\x00\r\n]")
HEADER_NAME = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class UpstreamError(Exception):
    """The upstream could not be reached, broke off, or did not answer in time."""


class UpstreamUnreachable(UpstreamError):
    """No connection could be opened."""


class UpstreamTimeout(UpstreamError):
    """Nothing came from the upstream for `read_timeout` seconds (or no connection within
    `connect_timeout`)."""


class UpstreamBrokeOff(UpstreamError):
    """The connection closed, or the upstream sent something that is not HTTP, before its
    answer was complete."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int
    base_path: bytes = b""  # what the endpoint's address has after its origin, prefixed to each target

    @property
    def host_header(self) -> bytes:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return (host if self.port == default else f"{host}:{self.port}").encode("idna")


@lru_cache(maxsize=4096)
def origin_of(base_url: str) -> Origin:
    """The origin of an endpoint's base URL (`http://10.0.0.5:30012`), parsed once."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) endpoint address: {base_url!r}")
    return Origin(parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                  checked_target(parts.path.rstrip("/")) if parts.path.strip("/") else b"")


def checked_target(target: str) -> bytes:
    """The request target as it goes on the wire, refused if it could break the request line."""
    raw = target.encode("latin-1", "replace")
    if not raw.startswith(b"/") or NOT_IN_TARGET.search(raw):
        raise ValueError(f"not a valid request target: {target[:200]!r}")
    return raw


class UpstreamResponse:
    """One answer: status and headers (as the upstream sent them), then its body."""

    def __init__(self, connection: "_Connection", *, head_only: bool):
        self._connection = connection
        self.head_only = head_only
        self.status = 0
        self.headers: Headers = []
        self.content_length: int | None = None
        self.content_type = b""
        self.keep_alive = False
        self.complete = False
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future | None = None
        self._head = connection.loop.create_future()

    async def read(self) -> bytes:
        """The whole body (for answers known to be small)."""
        while not self.complete:
            await self._progress()
        body = b"".join(self._pieces)
        self._pieces.clear()
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """Each piece of the body as it arrives."""
        while True:
            if self._pieces:
                piece = self._pieces.popleft()
                self._buffered -= len(piece)
                if self._buffered <= RESUME_READING_BYTES:
                    self._connection.resume_reading()
                yield piece
            elif self.complete:
                return
            else:
                await self._progress()

    def release(self) -> None:
        """Done with it: the connection goes back to the pool if the answer was read to its
        end and the upstream keeps it open, and is closed otherwise."""
        self._connection.finished(reusable=self.complete and self.keep_alive and not self._pieces)

    def close(self) -> None:
        self._connection.finished(reusable=False)

    async def _progress(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._connection.loop.create_future()
        try:
            await self._connection.wait(self._waiter)
        finally:
            self._waiter = None

    # Called by the connection as the answer arrives.

    def head_arrived(self, status: int, headers: Headers, keep_alive: bool) -> None:
        self.status, self.headers, self.keep_alive = status, headers, keep_alive
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length" and value.isdigit():
                self.content_length = int(value)
            elif lowered == b"content-type":
                self.content_type = value
        if self.head_only:
            self.complete = True
        if not self._head.done():
            self._head.set_result(None)

    def piece_arrived(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._buffered += len(piece)
        if self._buffered > PAUSE_READING_BYTES:
            self._connection.pause_reading()
        self._wake()

    def ended(self) -> None:
        self.complete = True
        self._wake()

    def failed(self, error: UpstreamError) -> None:
        if self.complete:
            return
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its answer into the response."""

    def __init__(self, pool: "UpstreamPool", origin: Origin):
        self.pool, self.origin = pool, origin
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.used = 0  # requests sent on it so far
        self.response: UpstreamResponse | None = None
        self.got_bytes = False  # of the current answer: anything at all
        self._parser = httptools.HttpResponseParser(self)
        self._headers: Headers = []
        self._interim = False
        self._writable: asyncio.Future | None = None
        self._reading_paused = False

    # --- asyncio.Protocol

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.response is None:
            self.transport.close()  # an idle connection has nothing to say
            return
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._broke(f"the answer is not valid HTTP ({exc})")

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and not response.complete:
            if response.status and self._until_close(response):
                response.ended()  # a body without length or chunks ends where the connection does
            else:
                response.failed(UpstreamBrokeOff(f"the connection closed before the answer was complete"
                                                 f"{f' ({exc})' if exc else ''}"))
        # A body being sent stops at its next piece (`closed`); the answer's wait says why.
        self.resume_writing()

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # --- httptools callbacks

    def on_message_begin(self) -> None:
        if self.response.complete:
            # One answer a request: what follows would overwrite it while the gateway reads it.
            raise UpstreamBrokeOff("the deployment sent a second answer to one request")
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._interim = 100 <= status < 200 and status != 101
        if not self._interim:
            self.response.head_arrived(status, self._headers, self._parser.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        if not self.response.head_only:
            self.response.piece_arrived(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.response.ended()

    # --- used by the pool and the response

    async def exchange(self, head: bytes, body: bytes | AsyncIterator[bytes], *, chunked: bool,
                       head_only: bool) -> UpstreamResponse:
        """Send a request and wait for its answer's status and headers."""
        await self._send(head, body, chunked=chunked, head_only=head_only)
        return await self._head()

    async def _send(self, head: bytes, body: bytes | AsyncIterator[bytes], *, chunked: bool, head_only: bool) -> None:
        self.response = UpstreamResponse(self, head_only=head_only)
        self.got_bytes = False
        self.used += 1
        if isinstance(body, bytes):
            self.transport.write(head + body)
            return
        self.transport.write(head)
        async for piece in body:
            if self.closed:
                break  # the upstream answered early or went away: its answer says which
            if piece:
                self.transport.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            if self._writable is not None:
                await self._writable
        if chunked and not self.closed:
            self.transport.write(b"0\r\n\r\n")

    async def _head(self) -> UpstreamResponse:
        response = self.response
        await self.wait(response._head)
        if response.head_only:
            # llhttp cannot be told that this answer has no body: a new parser for the next.
            self._parser = httptools.HttpResponseParser(self)
        return response

    async def wait(self, future: asyncio.Future) -> None:
        """Wait for `future`, at most the read timeout since the last sign of life."""
        if future.done():
            return future.result()
        timer = self.loop.call_later(self.pool.read_timeout, _time_out, future, self.pool.read_timeout)
        try:
            return await future
        finally:
            timer.cancel()

    def pause_reading(self) -> None:
        if not self._reading_paused and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    def finished(self, *, reusable: bool) -> None:
        """The response is done with: back to the pool, or closed."""
        if self.response is None:
            return
        self.response = None
        if reusable and not self.closed and not self._reading_paused:
            self.pool.put_back(self)
        else:
            self.close()
        self.pool.slot_freed()

    def abandon(self) -> None:
        """Closed without a word to its response's reader (there is none yet)."""
        self.response = None
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _broke(self, reason: str) -> None:
        self.response.failed(UpstreamBrokeOff(reason))
        self.close()

    @staticmethod
    def _until_close(response: UpstreamResponse) -> bool:
        return response.content_length is None and not any(
            name.lower() == b"transfer-encoding" for name, _ in response.headers)


def _time_out(future: asyncio.Future, seconds: float) -> None:
    if not future.done():
        future.set_exception(UpstreamTimeout(f"nothing came from it for {seconds:g} s"))


class UpstreamPool:
    """Create one per process, inside or outside the event loop; `aclose()` it on shutdown."""

    def __init__(self, *, connect_timeout: float = 5.0, read_timeout: float = 300.0, max_connections: int = 1000,
                 keepalive_expiry: float = 2.0):
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive_expiry = keepalive_expiry
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[Origin, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self.closed = False

    async def request(self, method: str, base_url: str, target: str, headers: Headers,
                      body: bytes | AsyncIterator[bytes] = b"", *, declared_length: int | None = None) -> UpstreamResponse:
        """Send one request to the endpoint at `base_url` (its path, if any, before `target`) and
        return its answer once
        its status and headers have arrived. `headers` are sent as given, after Host and before
        the body's framing, which this sets: Content-Length for bytes (or `declared_length` for
        a stream), else chunked. The caller must `release()` or `close()` the answer."""
        origin = origin_of(base_url)
        head = _request_head(method, origin, origin.base_path + checked_target(target), headers, body, declared_length)
        chunked = not isinstance(body, bytes) and declared_length is None
        replayable = method in IDEMPOTENT and isinstance(body, bytes)
        await self._slots.acquire()
        connection = None
        try:
            connection = self._idle_connection(origin)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(origin)
            try:
                return await connection.exchange(head, body, chunked=chunked, head_only=method == "HEAD")
            except UpstreamBrokeOff:
                if not (reused and replayable and not connection.got_bytes):
                    raise
                connection.abandon()
                connection = await self._connect(origin)
                return await connection.exchange(head, body, chunked=chunked, head_only=method == "HEAD")
        except BaseException:
            # No answer to hand back, so nothing else will give back the slot or the connection.
            if connection is not None:
                connection.abandon()
            self._slots.release()
            raise

    def put_back(self, connection: _Connection) -> None:
        if self.closed:  # an answer that finished after the pool closed: nothing will reuse it
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle = self._idle.setdefault(connection.origin, [])
        idle.append(connection)
        # The oldest are at the front: drop those that will not be reused anyway.
        while idle and (idle[0].closed or connection.idle_since - idle[0].idle_since > self.keepalive_expiry):
            idle.pop(0).close()

    def slot_freed(self) -> None:
        self._slots.release()

    def idle_connections(self) -> int:
        return sum(1 for idle in self._idle.values() for connection in idle if not connection.closed)

    async def aclose(self) -> None:
        self.closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now, loop = time.monotonic(), asyncio.get_running_loop()
        while idle:
            connection = idle.pop()
            # (A pool used from a new event loop, as tests do, cannot write on the old one's.)
            if not connection.closed and now - connection.idle_since <= self.keepalive_expiry and connection.loop is loop:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        if self.closed:
            raise UpstreamUnreachable("the gateway is shutting down")
        loop = asyncio.get_running_loop()
        connection = _Connection(self, origin)
        tls = self._tls() if origin.scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: connection, origin.host, origin.port, ssl=tls,
                                             server_hostname=origin.host if tls else None)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"no connection to {origin.host}:{origin.port} within {self.connect_timeout:g} s") from exc
        except OSError as exc:
            raise UpstreamUnreachable(f"cannot connect to {origin.host}:{origin.port}: {exc.strerror or exc}") from exc
        return connection

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl


def _request_head(method: str, origin: Origin, target: bytes, headers: Headers, body: bytes | AsyncIterator[bytes],
                  declared_length: int | None) -> bytes:
    lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ", origin.host_header, b"\r\n"]
    for name, value in headers:
        if not HEADER_NAME.match(name) or NOT_IN_HEADER_VALUE.search(value):
            raise ValueError(f"not a valid header: {name[:100]!r}")
        lines += (name, b": ", value, b"\r\n")
    if isinstance(body, bytes):
        if body or method not in ("GET", "HEAD", "OPTIONS", "DELETE", "TRACE"):
            lines.append(b"content-length: %d\r\n" % len(body))
    elif declared_length is not None:
        lines.append(b"content-length: %d\r\n" % declared_length)
    else:
        lines.append(b"transfer-encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)
