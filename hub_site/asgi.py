"""The hub as one ASGI application, served by uvicorn (`make run`).

Gateway requests (`/d/...`) go straight to the gateway's own async handler; everything else
to Django's ASGI handler with its whole middleware stack. The gateway skips Django's request
handling on purpose (deployments/gateway.py says why): it answers at the speed of a proxy and
holds thousands of requests without a thread each."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_site.settings")
django_application = get_asgi_application()

from deployments.gateway import PREFIX, DeploymentGateway  # noqa: E402  (needs Django set up first)
from hub_site.celery import freeze_startup_objects  # noqa: E402

gateway = DeploymentGateway.from_settings()
# Full garbage collections then walk only what requests allocate, not Django and the apps: one
# came every ~33 catalog requests (bench/catalog.py), so at p99 every page paid a full one.
freeze_startup_objects()


async def application(scope, receive, send) -> None:
    # Django's handler speaks no lifespan; the gateway's closes its upstream connections.
    if scope["type"] == "lifespan" or scope["path"].startswith(PREFIX):
        await gateway(scope, receive, send)
    else:
        await django_application(scope, receive, send)
