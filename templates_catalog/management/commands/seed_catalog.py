import io
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from templates_catalog.bundles import BundleInvalid, bundle_pack
from templates_catalog.manifest import manifest_from_dir
from templates_catalog.manifest.schema import TIER_RANK
from templates_catalog.models import Publisher
from templates_catalog.services import PublishRejected, publisher_create, template_version_publish

FIXTURES = Path(settings.BASE_DIR) / "fixtures" / "templates"


class Command(BaseCommand):
    help = "Publish every fixture template through the same path as an upload. Running it again changes nothing."

    def add_arguments(self, parser):
        parser.add_argument("--publisher", default="ai-hub", help="slug of the publisher that owns the examples")
        parser.add_argument("--folder", type=Path, default=FIXTURES)

    def handle(self, *args, publisher: str, folder: Path, **options):
        owner = Publisher.objects.filter(slug=publisher).first() or publisher_create(
            slug=publisher, name="AI Hub examples"
        )
        for template_dir in self._in_dependency_order(folder):
            try:
                result = template_version_publish(publisher=owner, bundle=io.BytesIO(bundle_pack(template_dir)))
            except (PublishRejected, BundleInvalid) as exc:
                raise CommandError(f"{template_dir.name}: {exc}") from None
            state = "published" if result.created else "unchanged"
            self.stdout.write(f"{state:>9}  {result.version.template.name} {result.version.version}  sha256:{result.version.short_digest}")

    def _in_dependency_order(self, folder: Path) -> list[Path]:
        # Lower tiers first, so every `requires` finds what it needs already published.
        folders = [path for path in sorted(folder.iterdir()) if (path / "hub.yaml").is_file()]
        return sorted(folders, key=lambda path: TIER_RANK[manifest_from_dir(path).tier])
