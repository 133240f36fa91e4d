from django.core.management.base import BaseCommand

from hub_site.serve import serve


class Command(BaseCommand):
    help = ("Serve the hub under uvicorn (uvloop, httptools), as `make run` does. On a loopback address, "
            "when a Docker Engine answers here, the gateway (/d/) alone also answers on the Docker bridge, "
            "so an app's containers reach their parts.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, host: str, port: int, **options):
        serve(host, port)
