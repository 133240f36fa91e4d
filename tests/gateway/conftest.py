"""Real servers for the gateway's tests: uvicorn in a thread on a free loopback port."""

import asyncio
import contextlib
import json
import threading
import time

import uvicorn

from tests.netutil import free_port


@contextlib.contextmanager
def served(app, *, lifespan: str = "off"):
    """`app` behind a real uvicorn on 127.0.0.1; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan=lifespan, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


async def read_body(receive) -> bytes:
    """An ASGI request's whole body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


class RecordingUpstream:
    """An endpoint that remembers every request it got (method, path, query, headers, body)
    and answers with them as JSON, handing back the upstream token it got as a header of its
    answer too (as a careless endpoint might); `/stream` sends five chunks 0.3 s apart;
    `/forever` sends a chunk every 50 ms until its client goes away, and notes when that was."""

    CHUNKS = 5
    PAUSE = 0.3

    def __init__(self):
        self.seen: list[dict] = []
        self.forever_left_at: float | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        seen = {
            "method": scope["method"], "path": scope["path"], "query": scope["query_string"].decode(),
            "headers": [[name.decode(), value.decode()] for name, value in scope["headers"]], "body": body.decode("latin-1"),
        }
        self.seen.append(seen)
        if scope["path"] == "/forever":
            await self._forever(receive, send)
            return
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            for index in range(self.CHUNKS):
                await send({"type": "http.response.body", "body": f"data: {index}\n\n".encode(), "more_body": True})
                await asyncio.sleep(self.PAUSE)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        answer = json.dumps(seen).encode()
        echoed = [(name, value) for name, value in scope["headers"] if name == b"x-hub-upstream-token"]
        await send({"type": "http.response.start", "status": 201 if scope["method"] == "PUT" else 200, "headers": [
            (b"content-type", b"application/json"), (b"set-cookie", b"sessionid=stolen; Path=/"), (b"x-upstream", b"yes"),
            *echoed,
        ]})
        await send({"type": "http.response.body", "body": answer})

    async def _forever(self, receive, send):
        async def chunks():
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            while True:
                await send({"type": "http.response.body", "body": b"data: more\n\n", "more_body": True})
                await asyncio.sleep(0.05)

        sending = asyncio.ensure_future(chunks())
        # uvicorn's send() drops what a gone client would get: only receive() tells.
        while (await receive())["type"] != "http.disconnect":
            pass
        self.forever_left_at = time.monotonic()
        sending.cancel()


# As `make run` has it: longer than the 5 s an endpoint's httpx client reuses a connection
# for, so the hub never closes one that a part is sending its next call on.
HUB_KEEP_ALIVE = ("--timeout-keep-alive", "30")


@contextlib.contextmanager
def hub_server(log, *, host: str = "127.0.0.1", port: int | None = None, **env):
    """The hub as `make run` serves it (uvicorn, hub_site.asgi) in a process of its own, on
    the test's database, listening on `host` (another address than loopback: for containers
    that call it back); yields its base URL."""
    import os
    import subprocess
    import sys

    from tests.browser.conftest import ROOT, stop_process_group, test_database_url
    from tests.netutil import wait_for_port

    port = port or free_port()
    environment = {**os.environ, "DEBUG": "1", "DATABASE_URL": test_database_url(), **env}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "hub_site.asgi:application", "--host", host, "--port", str(port),
             "--loop", "uvloop", "--http", "httptools", "--no-server-header",
             *HUB_KEEP_ALIVE],
            cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        if not wait_for_port(port, 60, host=host):
            raise RuntimeError(f"the hub did not start: {log.read_text()[-2000:]}")
        yield f"http://{host}:{port}"
    finally:
        stop_process_group(process)
