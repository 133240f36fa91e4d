import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

from templates_catalog.bundles import BundleInvalid, bundle_pack
from templates_catalog.manifest import ManifestInvalid, manifest_from_dir

DEFAULT_HUB_URL = "http://127.0.0.1:8000"


class Command(BaseCommand):
    help = (
        "Pack a template folder the way the hub expects and upload it to a hub's API. "
        f"The hub and the token come from HUB_URL (default {DEFAULT_HUB_URL}) and HUB_TOKEN, or --url and --token."
    )

    def add_arguments(self, parser):
        # No --version here: Django's own --version (print Django's version) must keep working.
        parser.add_argument("folder", type=Path)
        parser.add_argument("--url", help=f"the hub's base URL (default: $HUB_URL, else {DEFAULT_HUB_URL})")
        parser.add_argument("--token", help="a publish token (default: $HUB_TOKEN)")
        parser.add_argument("--visibility", choices=["public", "private"], default="public", help="for a first version")

    def handle(self, *args, folder: Path, url: str | None, token: str | None, visibility: str, **options):
        url = (url or os.environ.get("HUB_URL") or DEFAULT_HUB_URL).rstrip("/")
        token = token or os.environ.get("HUB_TOKEN")
        if not token:
            raise CommandError("Give a publish token with --token or the HUB_TOKEN environment variable.")
        try:
            # Checked here first so a typo fails fast, before any upload.
            name = manifest_from_dir(folder).name
            bundle = bundle_pack(folder)
        except ManifestInvalid as exc:
            raise CommandError("\n".join(f"hub.yaml {error}" for error in exc.errors)) from None
        except BundleInvalid as exc:
            raise CommandError(str(exc)) from None
        status, body = _upload(f"{url}/api/v1/templates/{name}/versions/?visibility={visibility}", bundle, token)
        if status >= 400:
            errors = body.get("errors") or [{"field": "", "message": body.get("detail", body)}]
            lines = [f"{e['field']}: {e['message']}" if e["field"] else str(e["message"]) for e in errors]
            raise CommandError(f"the hub refused {name} ({status}):\n" + "\n".join(lines))
        state = "published" if status == 201 else "already published, unchanged"
        self.stdout.write(f"{body['template']} {body['version']} {state}  sha256:{body['bundle_sha256']}")
        self.stdout.write(url + reverse("catalog:version_page", args=[body["template"], body["version"]]))


def _upload(url: str, bundle: bytes, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=bundle,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/gzip", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310 - the URL is the operator's own hub
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.load(exc)
        except ValueError:
            return exc.code, {"detail": f"HTTP {exc.code} {exc.reason}"}
    except urllib.error.URLError as exc:
        raise CommandError(f"cannot reach {url}: {exc.reason}") from None
