from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from templates_catalog.checks import template_folder_check
from templates_catalog.models import Publisher, Template
from templates_catalog.services import PublishRejected


class Command(BaseCommand):
    help = (
        "Check a template folder as the hub checks an upload: packed as `publish` packs it, the bundle's "
        "limits, hub.yaml against schema hub/v1, and every `requires` against this hub's catalog."
    )

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path)
        parser.add_argument("--publisher", help="slug of the publisher it will be published as (its private templates count)")
        parser.add_argument("--visibility", choices=Template.Visibility.values, default=Template.Visibility.PUBLIC)

    def handle(self, *args, folder: Path, publisher: str | None, visibility: str, **options):
        owner = self._publisher(publisher)
        try:
            manifest = template_folder_check(folder=folder, publisher=owner, visibility=visibility)
        except PublishRejected as exc:
            for error in exc.errors:
                self.stderr.write(str(error))
            raise CommandError(f"{folder}: {len(exc.errors)} error(s); the hub would refuse it") from None
        self.stdout.write(f"{folder}: {manifest.name} {manifest.version} ({manifest.tier}, {manifest.kind}) is valid")

    def _publisher(self, slug: str | None) -> Publisher | None:
        if slug is None:
            return None
        found = Publisher.objects.filter(slug=slug).first()
        if found is None:
            raise CommandError(f"no publisher with the slug {slug!r}")
        return found
