from django.core.management.base import BaseCommand, CommandError

from templates_catalog.models import TemplateVersion
from templates_catalog.stored_bundles import bundles_check


class Command(BaseCommand):
    help = (
        "Hash every version's stored bundle and list those whose blob is missing or no longer matches "
        "its digest; exits non-zero when any is broken. Version pages show what it found."
    )

    def handle(self, *args, **options):
        broken = bundles_check()
        for found in broken:
            version = found.version
            self.stdout.write(f"BROKEN {version.template.name} {version.version}: {found.reason} ({version.bundle_path})")
        if broken:
            raise CommandError(f"{len(broken)} version(s) have a broken stored bundle")
        self.stdout.write(f"OK: all {TemplateVersion.objects.count()} stored bundles are present and match their digests")
