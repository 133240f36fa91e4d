"""The gateway's hub side: `/d/<handle>/<path>` with `Authorization: Bearer <endpoint token>`
reaches that deployment's endpoint; everything else is refused without a hint.

A plain ASGI application, dispatched to by `hub_site/asgi.py` before Django's handler: every
gateway request would otherwise pay for the sync middleware (sessions, CSRF, auth, messages,
WhiteNoise), each a hop between the event loop and a thread, and none of it applies here (no
session is read, no page rendered). What it needs of Django is one indexed query per request,
kept on PostgreSQL until the database announces a change (deployments/target_cache.py); the
forwarding is `runners.gateway`'s.

| answer | when |
| --- | --- |
| 401 + `WWW-Authenticate` | no `Authorization: Bearer` (a session cookie alone included) |
| 404, always the same | a wrong, revoked or expired token, another deployment's token, a deleted deployment |
| held, then forwarded | the deployment sleeps or is on its way up: woken once, waited for up to `GATEWAY_WAKE_HOLD_SECONDS` |
| 503 + `Retry-After` | its wake failed or took longer than that, or it is stopped or failed: the reason says which |
"""

import asyncio
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.db.models.functions import Now

from runners.gateway import (
    Gateway,
    ProxyResult,
    Receive,
    Scope,
    Send,
    refuse_websocket,
    send_json_error,
    serve_lifespan,
)
from runners.harness.manifest import DEFAULT_MAX_BODY_BYTES

from .activity import activity_finished, activity_record, activity_started
from .endpoint_tokens import token_digest
from .models import Deployment, EndpointToken
from .target_cache import LISTENER_NAME, TargetCache
from .wake import WakeFailed, deployment_wait_awake

State = Deployment.State
PREFIX = "/d/"
# /d/<handle> or /d/<handle>/<path>; the path is forwarded as the client encoded it.
GATEWAY_PATH = re.compile(rb"^/d/(?P<handle>[a-z0-9-]{1,16})(?P<path>/[^?#]*)?$")
BEARER = re.compile(r"^bearer\s+(?P<secret>[\x21-\x7e]{1,200})\s*$", re.IGNORECASE)
UNAUTHORIZED = (
    "send `Authorization: Bearer <token>` with an endpoint token of this deployment "
    "(create one on the deployment's page); the hub's session cookie does not open endpoints"
)
NOT_FOUND = "no deployment endpoint here for this token"

OnFinish = Callable[[int, ProxyResult], None] | None


@dataclass(frozen=True)
class Target:
    """What the gateway needs to know of the deployment a token opens."""

    deployment_id: int
    handle: str
    # Read, never written here: deployments change state only through their transitions.
    seen_state: str
    going_to_sleep: bool
    endpoint: str
    max_body_bytes: int
    # Sent to its run, which answers nothing else; kept out of reprs (logs, tracebacks).
    upstream_token: str = field(repr=False)
    # The expiry of the token that opened it (None: never, or no token: the hub's own call).
    token_expires_at: datetime | None = None

    @property
    def answers_now(self) -> bool:
        """Running at a known address and not on its way to sleep: forwarded as it is."""
        return self.seen_state == State.RUNNING and bool(self.endpoint) and not self.going_to_sleep


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    retry_after: int


class DeploymentGateway:
    """The ASGI application for `/d/`. `on_finish(deployment_id, result)` is called after
    each request that reached a deployment's turn (usage, activity); it must be cheap and
    must not block. A request being forwarded keeps its deployment from sleeping. With
    `targets`, running deployments' lookups are kept while the database announces changes."""

    def __init__(self, *, core: Gateway, on_finish: OnFinish = None, targets: TargetCache | None = None):
        self.core = core
        self.on_finish = on_finish or record_activity
        self.targets = targets

    @classmethod
    def from_settings(cls, *, on_finish: OnFinish | None = None) -> "DeploymentGateway":
        core = Gateway(
            connect_timeout=settings.GATEWAY_CONNECT_TIMEOUT_SECONDS, read_timeout=settings.GATEWAY_READ_TIMEOUT_SECONDS,
            max_connections=settings.GATEWAY_MAX_CONNECTIONS,
        )
        targets = None
        if settings.GATEWAY_TARGET_CACHE and connection.vendor == "postgresql":
            targets = TargetCache(connect=_listener_connection, keep_seconds=settings.GATEWAY_TARGET_CACHE_SECONDS)
        return cls(core=core, on_finish=on_finish, targets=targets)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # Served alone or as part of the hub: its upstream connections close with the server.
            await serve_lifespan(receive, send, on_shutdown=self.aclose)
            return
        if scope["type"] == "websocket":
            await refuse_websocket(scope, receive, send)
            return
        matched = GATEWAY_PATH.match(scope.get("raw_path") or scope["path"].encode())
        if matched is None:
            await send_json_error(send, 404, NOT_FOUND)
            return
        secret = bearer_secret(scope)
        if secret is None:
            await send_json_error(send, 401, UNAUTHORIZED, [(b"www-authenticate", b'Bearer realm="hub"')])
            return
        target = await self._target(token_digest(secret), matched["handle"].decode())
        if target is None:
            await send_json_error(send, 404, NOT_FOUND)
            return
        await self.serve(target, scope, receive, send, path=(matched["path"] or b"/").decode("latin-1"))

    async def serve(self, target: Target, scope: Scope, receive: Receive, send: Send, *, path: str) -> None:
        """Forward a request whose caller may call `target`: wake it if need be, count it."""
        endpoint = await endpoint_of(target)
        if isinstance(endpoint, Refusal):
            await send_json_error(send, endpoint.status, endpoint.message, [(b"retry-after", str(endpoint.retry_after).encode())])
            self.on_finish(target.deployment_id, ProxyResult(status=endpoint.status, bytes_in=0, bytes_out=0, duration_s=0.0,
                                                             error=endpoint.message))
            return
        activity_started(deployment_id=target.deployment_id)
        try:
            await self.core.forward(
                scope, receive, send, upstream=endpoint, path=path, upstream_token=target.upstream_token,
                max_body_bytes=target.max_body_bytes, on_finish=lambda result: self.on_finish(target.deployment_id, result),
            )
        finally:
            activity_finished(deployment_id=target.deployment_id)

    async def _target(self, digest: str, handle: str) -> Target | None:
        if self.targets is None:
            return await target_of(digest, handle)
        kept = self.targets.get(digest, handle)
        if kept is not None:
            return kept
        generation = self.targets.generation
        target = await target_of(digest, handle)
        # Only a running deployment is kept: any other answer depends on what happens next
        # (a wake, a stop), which the wait for it reads from the database anyway.
        if target is not None and target.answers_now:
            expires_at = target.token_expires_at.timestamp() if target.token_expires_at else None
            self.targets.put(digest, handle, target, token_expires_at=expires_at, generation=generation)
        return target

    async def aclose(self) -> None:
        if self.targets is not None:
            await self.targets.aclose()
        await self.core.aclose()



async def endpoint_of(target: Target) -> str | Refusal:
    """Where to forward the request, or why not now: the one place that decides what a
    request to a deployment that is not running gets. A running deployment costs no more
    than the token's lookup; anything else is held while it wakes (or comes up)."""
    if target.answers_now:
        return target.endpoint
    awake = await deployment_wait_awake(deployment_id=target.deployment_id, timeout=settings.GATEWAY_WAKE_HOLD_SECONDS)
    if isinstance(awake, WakeFailed):
        return Refusal(503, f"deployment {target.handle} cannot answer: {awake.reason}", awake.retry_after)
    return awake.endpoint


@dataclass(frozen=True)
class CallAnswer:
    status: int
    content_type: str
    body: bytes
    # The answer grew past the caller's limit: `body` holds only its beginning.
    too_large: bool = False


def target_for(deployment: Deployment) -> Target:
    """The gateway's view of a deployment the caller has already been allowed to call."""
    serve = deployment.version.manifest.get("serve") or {}
    return Target(deployment_id=deployment.pk, handle=deployment.handle, seen_state=deployment.state,
                  going_to_sleep=deployment.sleep_started_at is not None, endpoint=deployment.endpoint,
                  max_body_bytes=_body_limit(serve.get("max_body_bytes")), upstream_token=deployment.upstream_token)


async def deployment_call(*, target: Target, method: str, path: str, query: str = "", body: bytes = b"",
                          content_type: str = "", host: str = "hub", max_answer_bytes: int, timeout: float) -> CallAnswer:
    """One request from the hub itself to a deployment, through the gateway's own path (a
    sleeping deployment wakes, the request counts as usage), with no token: the caller has
    checked who may call it. The answer is read up to `max_answer_bytes`; past that, and
    past `timeout` seconds (a wake included), the request is abandoned."""
    gateway = DeploymentGateway.from_settings()
    collected = _Collected(body, max_answer_bytes)
    headers = [(b"host", host.encode("ascii", "replace")), (b"content-length", str(len(body)).encode())]
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    scope = {"type": "http", "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(), "headers": headers, "client": ("127.0.0.1", 0)}
    try:
        async with asyncio.timeout(timeout):
            await gateway.serve(target, scope, collected.receive, collected.send, path=path)
    except TimeoutError:
        message = f"deployment {target.handle} did not answer within {timeout:g} s"
        return CallAnswer(status=504, content_type="application/json", body=_error_body(504, message))
    finally:
        await gateway.aclose()
    return collected.answer()


class _Collected:
    """The ASGI client side of `deployment_call`: sends the body, keeps the answer, and
    says it has left (as a browser that closes the tab) once the answer is too large."""

    def __init__(self, body: bytes, limit: int):
        self._body, self._limit = body, limit
        self._sent_body = False
        self._full = asyncio.Event()
        self.answer_status, self.content_type, self.chunks, self.size = 0, "", [], 0

    async def receive(self) -> dict:
        if not self._sent_body:
            self._sent_body = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._full.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.answer_status = message["status"]
            self.content_type = next((value.decode("latin-1") for name, value in message["headers"]
                                      if name.lower() == b"content-type"), "")
            return
        piece = message.get("body", b"")
        if self._full.is_set() or not piece:
            return
        self.chunks.append(piece)
        self.size += len(piece)
        if self.size > self._limit:
            self._full.set()

    def answer(self) -> CallAnswer:
        body = b"".join(self.chunks)
        return CallAnswer(status=self.answer_status, content_type=self.content_type, body=body[: self._limit],
                          too_large=len(body) > self._limit)


def _error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "server_error", "code": status}}).encode()


def gateway_url(request, handle: str) -> str:
    """The address a deployment's owner calls it at, with an endpoint token: the hub's own."""
    return request.build_absolute_uri(f"{PREFIX}{handle}")


def record_activity(deployment_id: int, result: ProxyResult) -> None:
    activity_record(deployment_id=deployment_id, status=result.status, bytes_in=result.bytes_in,
                    bytes_out=result.bytes_out, seconds=result.duration_s)


def bearer_secret(scope: Scope) -> str | None:
    header = next((value for name, value in scope["headers"] if name == b"authorization"), None)
    if header is None:
        return None
    matched = BEARER.match(header.decode("latin-1"))
    return matched["secret"] if matched else None


# Stand-ins compiled into the lookup's SQL, swapped for the request's values: no digest is
# this short and no handle starts with NUL.
DIGEST_PARAM, HANDLE_PARAM = "\x00digest", "\x00handle"


def live_targets(*, digest: str, handle: str):
    """Rows of the deployment that a live token of `handle` opens, with what the gateway
    needs of it. `Now()` is the database's clock, so the SQL holds no per-request time."""
    return (
        EndpointToken.objects.filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=Now()),
            token_sha256=digest, revoked_at__isnull=True, deployment__handle=handle, deployment__deleted_at__isnull=True,
        )
        .values_list("deployment_id", "deployment__state", "deployment__sleep_started_at", "deployment__endpoint",
                     "deployment__version__manifest__serve__max_body_bytes", "deployment__upstream_token", "expires_at")
        .order_by()[:1]
    )


@functools.cache
def _target_sql(vendor: str) -> tuple[str, tuple]:
    # Compiled by the ORM once per database kind: compiling the query is about 1 ms of CPU,
    # five times what running it costs, on every gateway request.
    return live_targets(digest=DIGEST_PARAM, handle=HANDLE_PARAM).query.sql_with_params()


# Not thread-sensitive: lookups run in the loop's thread pool side by side (each thread
# keeps its own connection, reused for DATABASE_CONN_MAX_AGE), instead of queueing for
# Django's one shared thread as `afirst()` would.
@sync_to_async(thread_sensitive=False)
def target_of(digest: str, handle: str) -> Target | None:
    """The running-or-not deployment that a live token of `handle` opens, in one query by
    the token's unique hash. Anything else (unknown, revoked, expired, another deployment's,
    deleted) is None: the caller answers the same 404 for all of them."""
    if not connection.in_atomic_block:
        # What Django's request_started does: drop a connection that broke or aged out.
        connection.close_if_unusable_or_obsolete()
    sql, compiled = _target_sql(connection.vendor)
    values = {DIGEST_PARAM: digest, HANDLE_PARAM: handle}
    params = [values.get(param, param) if isinstance(param, str) else param for param in compiled]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    deployment_id, seen_state, sleep_started_at, endpoint, max_body_bytes, upstream_token, expires_at = row
    return Target(deployment_id=deployment_id, handle=handle, seen_state=seen_state,
                  going_to_sleep=sleep_started_at is not None, endpoint=endpoint,
                  max_body_bytes=_body_limit(max_body_bytes), upstream_token=upstream_token,
                  token_expires_at=_aware(expires_at))


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite's cursor gives the stored UTC time without its zone.
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _listener_connection():
    """A connection of its own to the hub's database for the cache's LISTEN: as Django's
    connections are made, autocommit (a notice arrives only outside a transaction)."""
    params = connection.get_connection_params()
    for django_only in ("cursor_factory", "context"):
        params.pop(django_only, None)
    params["application_name"] = LISTENER_NAME
    return psycopg.AsyncConnection.connect(**params, autocommit=True)


def _body_limit(raw: object) -> int:
    # The manifest's value as the cursor hands it back (no ORM converters): a number, JSON
    # text of one, or of null when the manifest leaves it out.
    value = json.loads(raw) if isinstance(raw, str) else raw
    return int(value or DEFAULT_MAX_BODY_BYTES)
