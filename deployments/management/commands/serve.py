import os

from django.core.management.base import BaseCommand

from hub_site.serve import serve


class Command(BaseCommand):
    help = ("Serve the hub under uvicorn (uvloop, httptools), as `make run` does. On a loopback address, "
            "when a Docker Engine answers here, the gateway (/d/) alone also answers on the Docker bridge, "
            "so an app's containers reach their parts.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        # PORT as the settings read it: the default GATEWAY_INTERNAL_URL follows it.
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, *args, host: str, port: int, **options):
        serve(host, port)
