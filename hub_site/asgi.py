"""The hub as one ASGI application, served by uvicorn (`make run`).

Gateway requests (`/d/...`) go straight to the gateway's own async handler; everything else
to Django's ASGI handler with its whole middleware stack. The gateway skips Django's request
handling on purpose (deployments/gateway.py says why): it answers at the speed of a proxy and
holds thousands of requests without a thread each."""

import logging
import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_site.settings")
django_application = get_asgi_application()

from deployments.gateway import PREFIX, DeploymentGateway  # noqa: E402  (needs Django set up first)
from hub_site.celery import freeze_startup_objects  # noqa: E402

gateway = DeploymentGateway.from_settings()


class GatewaySuccessesUnlogged(logging.Filter):
    """Drops uvicorn's access line of a gateway request that got a 1xx-3xx answer. Those are
    counted per deployment and in /metrics; at a proxy's rate, formatting and writing a line
    each took about a tenth of the hub's CPU a request (A/B runs under wrk). Refusals and
    failures (4xx, 5xx) keep their line: someone trying tokens, an endpoint that is down."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's own call: ('%s - "%s %s HTTP/%s" %d', client, method, path, version, status).
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[4], int):
            return not (str(args[2]).startswith(PREFIX) and args[4] < 400)
        return True


if not settings.GATEWAY_ACCESS_LOG:
    logging.getLogger("uvicorn.access").addFilter(GatewaySuccessesUnlogged())
# Full garbage collections then walk only what requests allocate, not Django and the apps: one
# came every ~33 catalog requests (bench/catalog.py), so at p99 every page paid a full one.
freeze_startup_objects()


async def application(scope, receive, send) -> None:
    # Django's handler speaks no lifespan; the gateway's closes its upstream connections.
    if scope["type"] == "lifespan" or scope["path"].startswith(PREFIX):
        await gateway(scope, receive, send)
    else:
        await django_application(scope, receive, send)
