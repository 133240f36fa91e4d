"""The lock on a deployment's own port: only the hub's gateway may call it.

The hub hands each deployment a secret of its own as `HUB_UPSTREAM_TOKEN`; its gateway sends
it as `X-Hub-Upstream-Token` on every request it forwards. With the variable set, a request
without it (or with another value) gets 403, except on the health and ready paths, which
the hub and the orchestrators poll without it. Unset (the harness run by hand, in a
development loop), nothing is checked.

A pure ASGI wrapper: it runs on every request of the serving path, and a Starlette
`BaseHTTPMiddleware` would cost a task and a stream per request. Standard library only.
"""

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping

UPSTREAM_TOKEN_ENV = "HUB_UPSTREAM_TOKEN"
# Lower case, as ASGI servers hand header names to the application.
UPSTREAM_TOKEN_HEADER = b"x-hub-upstream-token"
REFUSED = (
    "this port answers only the hub's gateway: call the deployment through the hub, at "
    "/d/<deployment>/<path> with `Authorization: Bearer <endpoint token>`"
)

ASGIApp = Callable[[MutableMapping, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def upstream_token_from(environ: MutableMapping[str, str]) -> str | None:
    """The token the hub set, taken out of `environ` so that the handler and anything it
    starts never see it (a template that shows its environment cannot give it away); None
    when unset. Set but blank is a mistake that would leave the port open: refused."""
    token = environ.pop(UPSTREAM_TOKEN_ENV, None)
    if token is not None and not token.strip():
        raise SystemExit(f"{UPSTREAM_TOKEN_ENV} is set but empty: unset it to serve without the gateway's lock")
    return token


class UpstreamLock:
    """Lets a request through to `app` only with the right `X-Hub-Upstream-Token`, which it
    removes first (handlers never see it, so none can echo it back); `open_paths` need none."""

    def __init__(self, app: ASGIApp, *, token: str, open_paths: Iterable[str]):
        self.app = app
        self._token = token.encode()
        self._open_paths = frozenset(open_paths)
        self._refusal = json.dumps({"error": {"message": REFUSED, "type": "invalid_request_error", "code": 403}}).encode()

    async def __call__(self, scope: MutableMapping, receive, send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self._open_paths:
            await self.app(scope, receive, send)
            return
        given, kept = None, []
        for name, value in scope["headers"]:
            if name == UPSTREAM_TOKEN_HEADER:
                given = value
            else:
                kept.append((name, value))
        if given is None or not hmac.compare_digest(given, self._token):
            await self._refuse(scope, send)
            return
        await self.app({**scope, "headers": kept}, receive, send)

    async def _refuse(self, scope: MutableMapping, send) -> None:
        if scope["type"] == "websocket":
            # Closed before it was accepted: the server answers the handshake with 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({
            "type": "http.response.start", "status": 403,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(self._refusal)).encode())],
        })
        await send({"type": "http.response.body", "body": self._refusal, "more_body": False})
