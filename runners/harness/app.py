"""The ASGI application around one handler: health, readiness, metrics, batching, routes."""

import asyncio
import inspect
import logging
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import jsonio
from .batching import DynamicBatcher
from .manifest import ServeConfig
from .metrics import Metrics
from .upstream import ASGIApp, UpstreamLock

log = logging.getLogger("harness")

HTTP_METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


class JSONResponse(StarletteJSONResponse):
    def render(self, content: Any) -> bytes:
        return jsonio.dumps(content)


class Problem(Exception):
    """An HTTP error answered as `{"error": {"message": ..., "type": ..., "code": status}}`."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass
class Call:
    """What a route function receives: the parsed request, and a way into the batcher."""

    body: Any
    path_params: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    _batcher: DynamicBatcher = field(repr=False)
    _loop: asyncio.AbstractEventLoop = field(repr=False)

    def predict(self, items: list) -> list:
        """Run `items` through the handler's batched predict(); for sync route functions."""
        if _on_event_loop():
            raise RuntimeError("call.predict() blocks: from an async route function use `await call.apredict(...)`")
        return asyncio.run_coroutine_threadsafe(self._batcher.submit_many(list(items)), self._loop).result()

    async def apredict(self, items: list) -> list:
        return await self._batcher.submit_many(list(items))


@dataclass
class ServingState:
    ready: bool = False
    setup_error: BaseException | None = None


def build_app(
    handler: object,
    config: ServeConfig,
    *,
    max_body_bytes: int,
    metrics: Metrics | None = None,
    on_setup_failed: Callable[[], None] = lambda: None,
    upstream_token: str | None = None,
) -> tuple[ASGIApp, ServingState]:
    """The handler's application; with `upstream_token`, locked to callers that send it
    (the hub's gateway), its health and ready paths excepted."""
    served = ServedHandler(handler, config, max_body_bytes, metrics or Metrics(), on_setup_failed)
    app = Starlette(routes=served.routes(), lifespan=served.lifespan)
    if upstream_token is None:
        return app, served.state
    return UpstreamLock(app, token=upstream_token, open_paths=(config.health_path, config.ready_path)), served.state


class ServedHandler:
    """One handler behind HTTP: its model thread, its batcher, its readiness and its routes."""

    def __init__(self, handler, config: ServeConfig, max_body_bytes: int, metrics: Metrics, on_setup_failed) -> None:
        self.handler = handler
        self.config = config
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.on_setup_failed = on_setup_failed
        self.state = ServingState()
        self.model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.batcher = DynamicBatcher(
            getattr(handler, "predict", _no_predict),
            executor=self.model_thread,
            max_batch_size=config.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            observe_batch=metrics.observe_batch,
        )

    def routes(self) -> list[Route]:
        routes = [
            Route(self.config.health_path, self._guarded(self.config.health_path, self.health, needs_ready=False)),
            Route(self.config.ready_path, self._guarded(self.config.ready_path, self.ready, needs_ready=False)),
            Route("/metrics", self.render_metrics),
        ]
        if callable(getattr(self.handler, "predict", None)):
            routes.append(Route("/predict", self._guarded("/predict", self.predict_one), methods=["POST"]))
        for method, path, fn in _handler_routes(self.handler, taken={route.path for route in routes}):
            routes.append(Route(path, self._guarded(path, self._route_endpoint(fn)), methods=[method]))
        return routes

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.batcher.start()
        setup_task = asyncio.create_task(self._run_setup())
        try:
            yield
        finally:
            setup_task.cancel()
            await self.batcher.stop()
            if self.state.ready:
                await _close_handler(self.handler, self.model_thread)
            self.model_thread.shutdown(wait=False, cancel_futures=True)

    async def _run_setup(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self.model_thread, self.handler.setup)
        except Exception as exc:
            self.state.setup_error = exc
            print(f"harness: setup() failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)
            self.on_setup_failed()
            return
        self.state.ready = True
        self.metrics.ready.set(1)
        log.info("setup() finished: ready")

    def _guarded(self, route_name: str, fn: Callable[[Request], Any], *, needs_ready: bool = True):
        """Wrap an endpoint: readiness gate, JSON errors, and the request metrics."""

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                if needs_ready and not self.state.ready:
                    raise Problem(503, "not ready: the template's setup() has not finished")
                response = await fn(request)
            except Exception as exc:  # every failure becomes a JSON error, never a bare 500 page
                response = _error_response(exc)
            elapsed = time.perf_counter() - started
            self.metrics.observe_request(route_name, request.method, response.status_code, elapsed)
            return response

        return endpoint

    def _route_endpoint(self, fn: Callable[[Call], Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            call = Call(
                body=await _read_json(request, self.max_body_bytes, required=False),
                path_params=dict(request.path_params),
                query=dict(request.query_params),
                headers=dict(request.headers),
                _batcher=self.batcher,
                _loop=asyncio.get_running_loop(),
            )
            result = await fn(call) if inspect.iscoroutinefunction(fn) else await run_in_threadpool(fn, call)
            return _to_response(result)

        return endpoint

    async def predict_one(self, request: Request) -> Response:
        payload = await _read_json(request, self.max_body_bytes, required=True)
        parse = getattr(self.handler, "parse", None)
        item = _parse_input(parse, payload) if parse else payload
        return _to_response(await self.batcher.submit(item))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        if self.state.ready:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "reason": "setup() is still running"}, status_code=503)

    async def render_metrics(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)


async def _close_handler(handler, executor) -> None:
    close = getattr(handler, "close", None)
    if callable(close):
        try:
            await asyncio.get_running_loop().run_in_executor(executor, close)
        except Exception:
            log.exception("handler close() failed")


def _handler_routes(handler: object, taken: set[str]) -> list[tuple[str, str, Callable]]:
    declared = handler.routes() if callable(getattr(handler, "routes", None)) else []
    checked = []
    for entry in declared:
        method, path, fn = entry
        method = method.upper()
        if method not in HTTP_METHODS or not path.startswith("/") or not callable(fn):
            raise SystemExit(
                f"routes(): {entry!r} is not (METHOD, '/path', function) with METHOD in {sorted(HTTP_METHODS)}"
            )
        if path in taken:
            raise SystemExit(f"routes(): {path} is already served by the harness")
        checked.append((method, path, fn))
    return checked


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _no_predict(batch: list) -> list:
    raise Problem(500, "this template has no predict() to batch into")


def _parse_input(parse: Callable[[Any], Any], payload: Any) -> Any:
    try:
        return parse(payload)
    except Problem:
        raise
    except ValueError as exc:
        raise Problem(getattr(exc, "status_code", 422), str(exc)) from exc


async def _read_json(request: Request, limit: int, *, required: bool) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Problem(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise Problem(413, f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        if required:
            raise Problem(400, "request body is empty: send a JSON document")
        return None
    try:
        return jsonio.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, f"request body is not valid JSON: {exc}") from None


def _to_response(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    status = 200
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int):
        status, result = result
    if inspect.isasyncgen(result) or isinstance(result, Iterator):
        return StreamingResponse(_server_sent_events(result), status_code=status, media_type="text/event-stream")
    return JSONResponse(result, status_code=status)


async def _server_sent_events(events) -> AsyncIterator[bytes]:
    source = events if inspect.isasyncgen(events) else iterate_in_threadpool(events)
    try:
        async for event in source:
            yield _event(event)
    except Exception as exc:  # headers are sent already: report in-band, then end the stream
        log.exception("stream failed")
        yield _event(_error_body(_status_of(exc), exc))


def _event(data: Any) -> bytes:
    return b"data: " + (data.encode() if isinstance(data, str) else jsonio.dumps(data)) + b"\n\n"


def _status_of(exc: BaseException) -> int:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and 400 <= status < 600 else 500


def _deliberate(exc: BaseException) -> bool:
    """Raised on purpose with a status (a Problem, or any exception carrying a valid
    `status_code`): its message is meant for the caller. Anything else stays in the log."""
    return isinstance(exc, Problem) or getattr(exc, "status_code", None) == _status_of(exc)


def _error_body(status: int, exc: BaseException) -> dict:
    message = str(exc) if status < 500 or _deliberate(exc) else "internal error: see the service's log"
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "code": status}}


def _error_response(exc: BaseException) -> JSONResponse:
    status = _status_of(exc)
    if status >= 500 and not _deliberate(exc):
        log.error("request failed", exc_info=exc)
    return JSONResponse(_error_body(status, exc), status_code=status)
