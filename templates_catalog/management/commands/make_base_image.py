from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from builders.backends import docker_engine_answers
from builders.base_image import DEFAULT_MIRROR, base_image_make


class Command(BaseCommand):
    help = "Build the base image locally (debootstrap + docker import), for hosts that cannot pull one."

    def add_arguments(self, parser):
        parser.add_argument("--name", default=settings.BUILD_BASE_IMAGE, help="repository:tag to create")
        parser.add_argument("--suite", default="bookworm")
        parser.add_argument("--mirror", default=DEFAULT_MIRROR, help="a Debian mirror reachable from here")

    def handle(self, *args, name: str, suite: str, mirror: str, **options):
        if not docker_engine_answers():
            raise CommandError("No Docker Engine answers (set DOCKER_HOST, or start dockerd).")
        import docker

        base_image_make(name=name, client=docker.from_env(), suite=suite, mirror=mirror, log=self.stdout.write)
