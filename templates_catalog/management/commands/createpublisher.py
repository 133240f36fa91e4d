from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from templates_catalog.services import publisher_create


class Command(BaseCommand):
    help = "Create a publisher with an existing user as its owner (for scripts; the web page is /publishers/new/)."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the publisher's address, e.g. acme-ai (lowercase letters, digits, hyphens)")
        parser.add_argument("--owner", required=True, help="username of the user who becomes its owner")
        parser.add_argument("--name", default="", help="display name (default: the slug)")

    def handle(self, *args, slug: str, owner: str, name: str, **options):
        user = get_user_model().objects.filter(username=owner).first()
        if user is None:
            raise CommandError(f"No user is named “{owner}”: create one first (manage.py createsuperuser, or sign up).")
        try:
            publisher = publisher_create(slug=slug, name=name or slug, owner=user)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"Created publisher {publisher.slug} ({publisher.name}) owned by {user.get_username()}.")
