from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from templates_catalog.bundles import BundleInvalid, bundle_pack
from templates_catalog.manifest import ManifestInvalid, manifest_from_dir


class Command(BaseCommand):
    help = "Check a template folder: its hub.yaml against schema hub/v1, and that it packs into a bundle."

    def add_arguments(self, parser):
        parser.add_argument("folder", type=Path)

    def handle(self, *args, folder: Path, **options):
        try:
            manifest = manifest_from_dir(folder)
            bundle_pack(folder)
        except ManifestInvalid as exc:
            for error in exc.errors:
                self.stderr.write(f"hub.yaml {error}".replace("hub.yaml : ", "hub.yaml: "))
            raise CommandError(f"{folder}: {len(exc.errors)} error(s) in hub.yaml") from None
        except BundleInvalid as exc:
            raise CommandError(f"{folder}: {exc}") from None
        self.stdout.write(f"{folder}: {manifest.name} {manifest.version} ({manifest.tier}, {manifest.kind}) is valid")
