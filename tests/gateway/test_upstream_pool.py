"""The gateway's upstream pool (runners/upstream_pool.py) against raw upstream servers written
byte by byte: what it sends, what it makes of what comes back, and what it never writes."""

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from runners.upstream_pool import (
    PAUSE_READING_BYTES,
    UpstreamBrokeOff,
    UpstreamPool,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from tests.netutil import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class RawUpstream:
    """A TCP server in the test's own loop: `handler` speaks for each connection; what each
    connection received is kept, one bytes buffer a connection."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.received: list[bytearray] = []
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> "RawUpstream":
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = bytearray()
        self.received.append(seen)
        try:
            await self.handler(_Recording(reader, seen), writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


class _Recording:
    def __init__(self, reader: asyncio.StreamReader, seen: bytearray):
        self.reader, self.seen = reader, seen

    async def request(self) -> bytes:
        """One request's head and, by its Content-Length, its body."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        body = await self.reader.readexactly(length)
        self.seen += head + body
        return head + body

    async def read(self, size: int) -> bytes:
        data = await self.reader.read(size)
        self.seen += data
        return data


async def fetch(pool: UpstreamPool, url: str, method: str = "GET", target: str = "/", body: bytes = b""):
    """One request read to its end and released, as the gateway does with a small answer."""
    response = await pool.request(method, url, target, [], body)
    answer = await response.read()
    response.release()
    return response, answer


def run(scenario: Callable[[], Awaitable]):
    return asyncio.run(asyncio.wait_for(scenario(), 20))


async def answer_each_with(answer: bytes, reader, writer) -> None:
    while True:
        await reader.request()
        writer.write(answer)
        await writer.drain()


def test_a_request_goes_out_in_one_piece_with_host_and_length_and_the_answer_comes_back():
    async def scenario():
        async with RawUpstream(lambda r, w: answer_each_with(OK, r, w)) as upstream:
            pool = UpstreamPool()
            response = await pool.request("POST", upstream.url + "/base", "/v1/embeddings?x=1",
                                          [(b"content-type", b"application/json")], b'{"input": "hi"}')
            body = await response.read()
            response.release()
            await pool.aclose()
            return upstream, response, body

    upstream, response, body = run(scenario)
    assert (response.status, body) == (200, b"ok")
    port = upstream.url.rsplit(":", 1)[1]
    assert bytes(upstream.received[0]) == (
        b"POST /base/v1/embeddings?x=1 HTTP/1.1\r\nhost: 127.0.0.1:" + port.encode()
        + b"\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n" + b'{"input": "hi"}'
    )


def test_a_kept_connection_is_reused_until_it_expires():
    async def scenario():
        async with RawUpstream(lambda r, w: answer_each_with(OK, r, w)) as upstream:
            pool = UpstreamPool(keepalive_expiry=0.2)
            for pause in (0, 0, 0.4):
                await asyncio.sleep(pause)
                await fetch(pool, upstream.url)
            await pool.aclose()
            return [seen.count(b"GET / HTTP/1.1") for seen in upstream.received]

    # Two requests on the first connection; after 0.4 s idle (past 0.2) a new one.
    assert run(scenario) == [2, 1]


def test_an_idempotent_request_on_a_connection_the_upstream_closed_is_sent_again_once():
    async def closes_on_second(reader, writer):
        await reader.request()
        writer.write(OK)
        await writer.drain()
        await reader.request()  # the endpoint's idle timeout, just as this arrives: no answer

    async def scenario(method: str):
        handlers = iter([closes_on_second])

        async def handler(reader, writer):
            await next(handlers, lambda r, w: answer_each_with(OK, r, w))(reader, writer)

        async with RawUpstream(handler) as upstream:
            pool = UpstreamPool()
            await fetch(pool, upstream.url, method, body=b"x")
            try:
                second = await pool.request(method, upstream.url, "/", [], b"x")
                return second.status, len(upstream.received)
            except UpstreamBrokeOff as exc:
                return str(exc), len(upstream.received)
            finally:
                await pool.aclose()

    assert run(lambda: scenario("PUT")) == (200, 2)
    # A POST may have been acted on: it is not sent twice.
    reason, connections = run(lambda: scenario("POST"))
    assert reason.startswith("the connection closed before the answer was complete") and connections == 1


def test_interim_answers_are_skipped_and_a_head_answer_has_no_body():
    async def handler(reader, writer):
        await reader.request()
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + OK)
        await reader.request()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n")  # HEAD: the length, no body
        await reader.request()
        writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nnew")

    async def scenario():
        async with RawUpstream(handler) as upstream:
            pool = UpstreamPool()
            answers = []
            for method in ("POST", "HEAD", "GET"):
                response, body = await fetch(pool, upstream.url, method)
                answers.append((response.status, body))
            await pool.aclose()
            return answers, len(upstream.received)

    # The HEAD's connection carried the GET after it: nothing was left waiting for 5000 bytes.
    assert run(scenario) == ([(200, b"ok"), (200, b""), (201, b"new")], 1)


def test_a_body_without_length_ends_where_the_connection_does_and_is_not_reused():
    async def handler(reader, writer):
        await reader.request()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end")
        await writer.drain()

    async def scenario():
        async with RawUpstream(handler) as upstream:
            pool = UpstreamPool()
            _, body = await fetch(pool, upstream.url)
            idle = pool.idle_connections()
            await pool.aclose()
            return body, idle

    assert run(scenario) == (b"until the end", 0)


def test_chunked_answers_arrive_piece_by_piece_without_their_framing():
    release = asyncio.Event

    async def scenario():
        go_on = release()

        async def handler(reader, writer):
            await reader.request()
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await go_on.wait()
            writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
            await writer.drain()

        async with RawUpstream(handler) as upstream:
            pool = UpstreamPool()
            response = await pool.request("GET", upstream.url, "/", [])
            pieces = []
            async for piece in response.chunks():
                pieces.append(piece)
                go_on.set()  # the second piece is sent only once the first has been read
            response.release()
            await pool.aclose()
            return pieces

    assert run(scenario) == [b"first", b"second"]


def test_what_is_not_http_or_stops_mid_answer_is_an_upstream_error():
    async def garbage(reader, writer):
        await reader.request()
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    async def cut_short(reader, writer):
        await reader.request()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")

    async def scenario(handler):
        async with RawUpstream(handler) as upstream:
            pool = UpstreamPool()
            try:
                response = await pool.request("GET", upstream.url, "/", [])
                await response.read()
            finally:
                await pool.aclose()

    with pytest.raises(UpstreamBrokeOff, match="not valid HTTP"):
        run(lambda: scenario(garbage))
    with pytest.raises(UpstreamBrokeOff, match="closed before the answer was complete"):
        run(lambda: scenario(cut_short))


def test_an_upstream_that_goes_quiet_times_out_but_a_slow_steady_stream_does_not():
    async def quiet(reader, writer):
        await reader.request()
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n")
        await asyncio.sleep(5)

    async def steady(reader, writer):
        await reader.request()
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(6):  # 0.6 s in all, each piece well within the 0.3 s read timeout
            await asyncio.sleep(0.1)
            writer.write(b"1\r\na\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async def scenario(handler):
        async with RawUpstream(handler) as upstream:
            pool = UpstreamPool(read_timeout=0.3)
            try:
                response = await pool.request("GET", upstream.url, "/", [])
                return b"".join([piece async for piece in response.chunks()])
            finally:
                await pool.aclose()

    with pytest.raises(UpstreamTimeout, match="nothing came from it for 0.3 s"):
        run(lambda: scenario(quiet))
    assert run(lambda: scenario(steady)) == b"a" * 6


@pytest.mark.parametrize("target, headers", [
    ("/v1/models HTTP/1.1\r\nx-injected: yes\r\n\r\nGET /admin", []),
    ("/ok", [(b"content-type", b"text/plain\r\nx-hub-upstream-token: forged")]),
    ("/ok", [(b"bad name", b"value")]),
    ("no-slash", []),
])
def test_a_target_or_header_that_would_split_the_request_is_refused_before_anything_is_sent(target, headers):
    async def scenario():
        async with RawUpstream(lambda r, w: answer_each_with(OK, r, w)) as upstream:
            pool = UpstreamPool(max_connections=1)
            with pytest.raises(ValueError):
                await pool.request("GET", upstream.url, target, headers)
            # Nothing was written, and the one slot is free again.
            response = await pool.request("GET", upstream.url, "/after", [])
            await pool.aclose()
            return upstream.received, response.status

    received, status = run(scenario)
    assert status == 200 and len(received) == 1 and bytes(received[0]).startswith(b"GET /after HTTP/1.1\r\n")


def test_requests_beyond_the_limit_wait_for_a_slot_and_failures_give_theirs_back():
    in_flight, most = 0, 0

    async def slow(reader, writer):
        nonlocal in_flight, most
        while True:
            await reader.request()
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.1)
            in_flight -= 1
            writer.write(OK)
            await writer.drain()

    async def scenario():
        async with RawUpstream(slow) as upstream:
            pool = UpstreamPool(max_connections=2)
            for _ in range(3):
                with pytest.raises(UpstreamUnreachable):
                    await pool.request("GET", f"http://127.0.0.1:{free_port()}", "/", [])

            answers = await asyncio.gather(*(fetch(pool, upstream.url) for _ in range(6)))
            await pool.aclose()
            return [body for _, body in answers]

    assert run(scenario) == [b"ok"] * 6
    assert most == 2


def test_a_streamed_body_goes_chunked_or_with_the_length_the_client_declared():
    async def echo_raw(reader, writer):
        await reader.read(65536)
        await asyncio.sleep(0.2)
        await reader.read(65536)
        writer.write(OK)

    async def pieces():
        yield b"one,"
        await asyncio.sleep(0.05)
        yield b"two"

    async def scenario(declared):
        async with RawUpstream(echo_raw) as upstream:
            pool = UpstreamPool()
            response = await pool.request("POST", upstream.url, "/", [], pieces(), declared_length=declared)
            await response.read()
            await pool.aclose()
            return bytes(upstream.received[0])

    chunked = run(lambda: scenario(None))
    assert chunked.endswith(b"transfer-encoding: chunked\r\n\r\n4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n")
    declared = run(lambda: scenario(7))
    assert declared.endswith(b"content-length: 7\r\n\r\none,two")


def test_a_large_answer_for_a_slow_reader_stops_being_read_from_the_upstream():
    total = 64 * 1024 * 1024
    sent = 0

    async def flood(reader, writer):
        nonlocal sent
        await reader.request()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        piece = b"x" * 65536
        while sent < total:
            writer.write(piece)
            await writer.drain()
            sent += len(piece)

    async def scenario():
        async with RawUpstream(flood) as upstream:
            pool = UpstreamPool()
            response = await pool.request("GET", upstream.url, "/", [])
            pieces = response.chunks()
            await anext(pieces)
            await asyncio.sleep(0.5)  # a client that does not read
            held = response._buffered
            response.close()
            await pool.aclose()
            return held

    held = run(scenario)
    assert held <= PAUSE_READING_BYTES + 256 * 1024
    # The kernel's socket buffers take a few MiB more; the rest stayed with the upstream.
    assert sent < total // 4


def test_a_second_answer_to_one_request_leaves_the_first_as_it_was_and_closes_the_connection():
    async def two_answers(reader, writer):
        await reader.request()
        writer.write(OK + b"HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def scenario():
        async with RawUpstream(two_answers) as upstream:
            pool = UpstreamPool()
            response, body = await fetch(pool, upstream.url)
            answer = (response.status, response.headers, body, pool.idle_connections())
            await pool.aclose()
            return answer

    assert run(scenario) == (200, [(b"content-length", b"2")], b"ok", 0)


def test_an_answer_that_finishes_after_the_pool_closed_closes_its_connection():
    async def slow(reader, writer):
        await reader.request()
        await asyncio.sleep(0.2)
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(1)

    async def scenario():
        async with RawUpstream(slow) as upstream:
            pool = UpstreamPool()
            answering = asyncio.ensure_future(fetch(pool, upstream.url))
            await asyncio.sleep(0.05)
            await pool.aclose()  # the server stops while a request is in flight
            _, body = await answering
            return body, pool.idle_connections(), pool._idle

    # Answered, then closed rather than kept by a pool nothing will use again.
    assert run(scenario) == (b"ok", 0, {})
