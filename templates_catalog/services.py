"""Every write to the catalog goes through one of these functions."""

import hashlib
import hmac
import logging
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.storage import storages
from django.db import IntegrityError, transaction
from django.utils import timezone

from .access import may_publish
from .blobs import blob_put
from .bundles import BundleContents, BundleInvalid, BundleLimits, BundleTooLarge, bundle_extract, stream_to_file
from .manifest import FieldError, Manifest, ManifestInvalid, manifest_from_bytes
from .manifest.schema import ONE_LINE_HINT, TIER_RANK, Requirement, Tier, is_one_line
from .models import ApiToken, BundleProblem, Membership, Publisher, Tag, Template, TemplateVersion, VersionRequirement
from .readme import readme_to_html
from .search import template_search_vector_refresh
from .selectors import template_versions_sorted
from .stored_bundles import bundle_problem_forget, bundle_storage_path
from .versions import SemVer, version_in_range

logger = logging.getLogger(__name__)
MAX_YANK_REASON = 300


class PublishRejected(Exception):
    """The bundle or its manifest cannot be published; `errors` say what to fix."""

    status = 400

    def __init__(self, errors: list[FieldError] | str):
        self.errors = [FieldError("", errors)] if isinstance(errors, str) else errors
        super().__init__("; ".join(str(error) for error in self.errors))


class PublishConflict(PublishRejected):
    status = 409


class PublishTooLarge(PublishRejected):
    status = 413


@dataclass(frozen=True)
class PublishResult:
    version: TemplateVersion
    created: bool


PUBLISHER_SLUG_PATTERN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
# Paths under /publishers/ that a publisher's slug would shadow.
RESERVED_PUBLISHER_SLUGS = frozenset({"new"})


def publisher_create(*, slug: str, name: str, owner: AbstractBaseUser | None = None) -> Publisher:
    """A new publisher; `owner`, when given, becomes its first owner. Raises ValidationError
    (by field) for a malformed, reserved or taken slug and a bad name."""
    _check_publisher_slug(slug)
    publisher = Publisher(slug=slug, name=name.strip())
    publisher.full_clean(validate_unique=False)
    try:
        with transaction.atomic():
            publisher.save()
            if owner is not None:
                Membership.objects.create(publisher=publisher, user=owner, role=Membership.Role.OWNER)
    except IntegrityError:
        # Two people chose the same slug at the same moment: the second one is told, not crashed.
        raise ValidationError({"slug": _slug_taken(slug)}) from None
    return publisher


def _check_publisher_slug(slug: str) -> None:
    if not PUBLISHER_SLUG_PATTERN.match(slug):
        raise ValidationError(
            {"slug": f"“{slug}” is not a valid slug: use 1 to 64 lowercase letters, digits and hyphens, "
             "starting and ending with a letter or digit, e.g. acme-ai."}
        )
    if slug in RESERVED_PUBLISHER_SLUGS or Publisher.objects.filter(slug=slug).exists():
        raise ValidationError({"slug": _slug_taken(slug)})


def _slug_taken(slug: str) -> str:
    return f"The slug “{slug}” is taken: choose another one."


def bundle_limits() -> BundleLimits:
    return BundleLimits(
        max_bytes=settings.BUNDLE_MAX_BYTES,
        max_members=settings.BUNDLE_MAX_MEMBERS,
        max_unpacked_bytes=settings.BUNDLE_MAX_UNPACKED_BYTES,
        max_compression_ratio=settings.BUNDLE_MAX_COMPRESSION_RATIO,
    )


def template_version_publish(
    *,
    publisher: Publisher,
    bundle: BinaryIO,
    published_by: AbstractBaseUser | None = None,
    expected_name: str | None = None,
    visibility: str = Template.Visibility.PUBLIC,
    provenance: dict | None = None,
) -> PublishResult:
    """Validate a bundle stream and publish it as a new immutable version. `provenance`:
    where a version the hub makes came from (plain JSON data), recorded on it.

    The same name, version and bytes again is a no-op; the same name and version
    with other bytes is a conflict. No row is kept unless everything succeeds; the blob of
    a publish that failed is left for the sweeper, since a concurrent one may share it.
    """
    with tempfile.NamedTemporaryFile(prefix="bundle-", suffix=".tar.gz") as spooled, tempfile.TemporaryDirectory(
        prefix="bundle-"
    ) as unpacked:
        try:
            sha256, size = stream_to_file(bundle, spooled, max_bytes=settings.BUNDLE_MAX_BYTES)
            # Extracted, not only listed: proof that every member unpacks under PEP 706's rules.
            contents = bundle_extract(Path(spooled.name), Path(unpacked), bundle_limits())
            manifest = manifest_from_bytes(contents.manifest_bytes)
        except BundleTooLarge as exc:
            raise PublishTooLarge(str(exc)) from None
        except BundleInvalid as exc:
            raise PublishRejected(str(exc)) from None
        except ManifestInvalid as exc:
            raise PublishRejected([FieldError(f"hub.yaml {e.field}".strip(), e.message) for e in exc.errors]) from None
        if expected_name is not None and manifest.name != expected_name:
            raise PublishRejected(
                [FieldError("hub.yaml name", f"is {manifest.name!r} but this upload is for {expected_name!r}")]
            )
        candidate = _Candidate(publisher, manifest, contents, sha256, size, published_by, visibility, provenance or {})
        existing = _existing_version(manifest, sha256, publisher)
        if existing is None:
            return _publish_new(candidate, blob=spooled)
        # The same bytes again: nothing changes, except that a lost or damaged blob is repaired.
        damaged = BundleProblem.objects.filter(version=existing).exists()
        if _bundle_put(candidate, path=existing.bundle_path, blob=spooled, replace=damaged) or damaged:
            bundle_problem_forget(version=existing)
        return PublishResult(version=existing, created=False)


@dataclass(frozen=True)
class _Candidate:
    """A checked bundle on its way to becoming a version."""

    publisher: Publisher
    manifest: Manifest
    contents: BundleContents
    sha256: str
    size: int
    published_by: AbstractBaseUser | None
    visibility: str
    provenance: dict


def _existing_version(manifest: Manifest, sha256: str, publisher: Publisher) -> TemplateVersion | None:
    found = (
        TemplateVersion.objects.select_related("template")
        .filter(template__name=manifest.name, version=manifest.version)
        .first()
    )
    if found is None:
        return None
    if found.template.publisher_id != publisher.pk:
        raise PublishRejected(
            [FieldError("hub.yaml name", f"{manifest.name!r} belongs to another publisher; choose another name")]
        )
    if hmac.compare_digest(found.bundle_sha256, sha256):
        return found
    raise PublishConflict(
        [
            FieldError(
                "hub.yaml version",
                f"{manifest.name} {manifest.version} is already published with other contents "
                f"(sha256 {found.bundle_sha256[:12]}…); versions never change: bump the version",
            )
        ]
    )


def _publish_new(candidate: _Candidate, *, blob: BinaryIO) -> PublishResult:
    # The blob goes first, so that no committed row ever names a blob never written. If
    # anything below fails, the blob stays: another upload of the same bytes may already
    # rely on it, and the sweeper removes it later if no version ever does.
    _check_before_storing(candidate)
    path = bundle_storage_path(candidate.sha256)
    _bundle_put(candidate, path=path, blob=blob)
    try:
        with transaction.atomic():
            version = _create_version_rows(candidate, path=path)
    except IntegrityError:
        # Someone published the same version at the same moment: answer as if they were first.
        existing = _existing_version(candidate.manifest, candidate.sha256, candidate.publisher)
        if existing is None:
            raise
        return PublishResult(version=existing, created=False)
    # Again, now that the row is visible: the sweeper may have parked an old unreferenced
    # copy of these bytes while this row was not yet committed.
    _bundle_put(candidate, path=path, blob=blob)
    if settings.BUILD_ON_PUBLISH:
        from .builds import build_request  # builds depends on this module

        build_request(version=version, requested_by=candidate.published_by)
    return PublishResult(version=version, created=True)


def _bundle_put(candidate: _Candidate, *, path: str, blob: BinaryIO, replace: bool = False) -> bool:
    return blob_put(storage=storages["artifacts"], path=path, file=blob, size=candidate.size, replace=replace)


def _create_version_rows(candidate: _Candidate, *, path: str) -> TemplateVersion:
    manifest = candidate.manifest
    template = _template_for(publisher=candidate.publisher, manifest=manifest, visibility=candidate.visibility)
    requirements = manifest_requirements_resolve(
        manifest=manifest, publisher=candidate.publisher, visibility=template.visibility
    )
    semver = SemVer.parse(manifest.version)
    version = TemplateVersion.objects.create(
        template=template,
        version=manifest.version,
        major=semver.major,
        minor=semver.minor,
        patch=semver.patch,
        prerelease=semver.prerelease,
        manifest=manifest.model_dump(mode="json", by_alias=True),
        bundle_sha256=candidate.sha256,
        bundle_size=candidate.size,
        bundle_path=path,
        readme=candidate.contents.readme,
        readme_html=readme_to_html(candidate.contents.readme),
        changelog=candidate.contents.changelog,
        changelog_html=readme_to_html(candidate.contents.changelog),
        files=[[name, size] for name, size in candidate.contents.file_sizes],
        published_by=candidate.published_by,
        provenance=candidate.provenance,
    )
    VersionRequirement.objects.bulk_create(
        VersionRequirement(version=version, template=required, version_range=item.version, alias=item.alias)
        for item, required in requirements
    )
    template_refresh_latest(template=template)
    return version


def _template_for(*, publisher: Publisher, manifest: Manifest, visibility: str) -> Template:
    # Lock the row: two versions published at once must not both compute "latest".
    template = Template.objects.select_for_update().filter(name=manifest.name).first()
    if template is None:
        return Template.objects.create(
            publisher=publisher,
            name=manifest.name,
            tier=manifest.tier.value,
            kind=manifest.kind.value,
            title=manifest.title,
            summary=manifest.summary,
            visibility=visibility,
        )
    _check_template_takes(template, manifest, publisher)
    return template


def _check_template_takes(template: Template, manifest: Manifest, publisher: Publisher) -> None:
    if template.publisher_id != publisher.pk:
        raise PublishRejected(
            [FieldError("hub.yaml name", f"{manifest.name!r} belongs to another publisher; choose another name")]
        )
    if template.tier != manifest.tier.value:
        raise PublishRejected(
            [FieldError("hub.yaml tier", f"{manifest.name} is a {template.tier} template; a version cannot change it")]
        )
    if template.kind != manifest.kind.value:
        raise PublishRejected(
            [FieldError("hub.yaml kind", f"{manifest.name} is a {template.kind} template; a version cannot change it")]
        )


def _check_before_storing(candidate: "_Candidate") -> None:
    """A publisher's own mistakes are answered before a byte is stored; the same checks run
    again under the template's row lock, where a concurrent publish can still change them."""
    template = Template.objects.filter(name=candidate.manifest.name).first()
    if template is not None:
        _check_template_takes(template, candidate.manifest, candidate.publisher)
    visibility = template.visibility if template is not None else candidate.visibility
    manifest_requirements_resolve(manifest=candidate.manifest, publisher=candidate.publisher, visibility=visibility)


def manifest_requirements_resolve(
    *, manifest: Manifest, publisher: Publisher | None, visibility: str
) -> list[tuple[Requirement, Template]]:
    """Match every `requires` entry to a template the publisher may build on, or raise
    PublishRejected listing each that cannot be. Reads only: `validate_template` runs it
    too. Another publisher's private template answers exactly like a missing one."""
    errors: list[FieldError] = []
    resolved = []
    names = [item.template for item in manifest.requires]
    candidates = {
        template.name: template
        for template in Template.objects.filter(name__in=names).prefetch_related("versions")
        if template.visibility == Template.Visibility.PUBLIC or (publisher is not None and template.publisher_id == publisher.pk)
    }
    for index, item in enumerate(manifest.requires):
        problem = _requirement_problem(item, candidates.get(item.template), manifest=manifest, visibility=visibility)
        if problem is None:
            resolved.append((item, candidates[item.template]))
        else:
            errors.append(FieldError(f"hub.yaml requires.{index}.{problem[0]}", problem[1]))
    if errors:
        raise PublishRejected(errors)
    return resolved


def _requirement_problem(
    item: Requirement, required: Template | None, *, manifest: Manifest, visibility: str
) -> tuple[str, str] | None:
    """(the field at fault, what to do) for a requirement that cannot be used, else None."""
    if required is None:
        return "template", f"no published template named {item.template!r}; publish it first"
    if TIER_RANK[Tier(required.tier)] >= TIER_RANK[manifest.tier]:
        return "template", f"{item.template} is a {required.tier} template; a {manifest.tier} may only require lower tiers"
    if visibility == Template.Visibility.PUBLIC and required.visibility != Template.Visibility.PUBLIC:
        # Deploying a public template must not need (or reveal) something others cannot see.
        return "template", (
            f"{item.template} is private and a public template may only require public ones; "
            f"make {item.template} public or publish {manifest.name} as private"
        )
    usable = [v.version for v in required.versions.all() if not v.yanked]
    if not any(version_in_range(v, item.version) for v in usable):
        return "version", (
            f"no published version of {item.template} matches {item.version!r} "
            f"(available: {', '.join(sorted(usable, key=SemVer.parse)) or 'none'})"
        )
    return None


def template_refresh_latest(*, template: Template) -> Template:
    """Point the template at its highest usable version and copy what the catalog
    lists and searches from that version's manifest."""
    versions = template_versions_sorted(template)
    releases = [v for v in versions if not v.yanked and not v.prerelease]
    latest = (releases or [v for v in versions if not v.yanked] or versions or [None])[0]
    if latest is None:
        return template
    manifest = Manifest.model_validate(latest.manifest)
    template.latest_version = latest
    template.title = manifest.title
    template.summary = manifest.summary
    template.needs_gpu = manifest.needs_gpu
    template.search_text = " ".join([manifest.name, manifest.title, manifest.summary, *manifest.tags]).lower()
    template.save(update_fields=["latest_version", "title", "summary", "needs_gpu", "search_text", "updated_at"])
    template.tags.set(_tags(manifest.tags))
    template_search_vector_refresh(templates=Template.objects.filter(pk=template.pk))
    return template


def _tags(names: list[str]) -> list[Tag]:
    existing = {tag.name: tag for tag in Tag.objects.filter(name__in=names)}
    missing = [Tag(name=name) for name in names if name not in existing]
    if missing:
        Tag.objects.bulk_create(missing, ignore_conflicts=True)
        existing = {tag.name: tag for tag in Tag.objects.filter(name__in=names)}
    return [existing[name] for name in names]


def template_version_yank(*, version: TemplateVersion, reason: str) -> TemplateVersion:
    """Stop new deploys of a version. Running deployments keep it; nothing is deleted."""
    if len(reason) > MAX_YANK_REASON or not is_one_line(reason):
        raise PublishRejected(
            [FieldError("reason", f"must be one line of at most {MAX_YANK_REASON} characters, {ONE_LINE_HINT}")]
        )
    with transaction.atomic():
        version = TemplateVersion.objects.select_for_update().get(pk=version.pk)
        if version.yanked:
            return version
        version.yanked = True
        version.yanked_reason = reason
        version.yanked_at = timezone.now()
        version.save(update_fields=["yanked", "yanked_reason", "yanked_at"])
        template_refresh_latest(template=version.template)
    return version


TOKEN_PREFIX = "hub_"


@dataclass(frozen=True)
class CreatedToken:
    token: ApiToken
    secret: str


def api_token_create(
    *,
    publisher: Publisher,
    created_by: AbstractBaseUser,
    name: str,
    permission: str = ApiToken.Permission.READ,
    template_names: list[str] | None = None,
    expires_at: datetime | None = None,
) -> CreatedToken:
    """Mint a token. The secret is returned once and only its sha256 is stored."""
    if permission == ApiToken.Permission.DEPLOY:
        raise ValidationError("deploy tokens are personal: create one with api_token_create_personal")
    if not may_publish(created_by, publisher):
        raise PermissionDenied(f"you are not a member of {publisher.name}")
    return _token_mint(
        publisher=publisher, created_by=created_by, name=name, permission=permission,
        template_names=sorted(set(template_names or [])), expires_at=expires_at,
    )


def _token_mint(*, expires_at: datetime | None, **fields) -> CreatedToken:
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError("the expiry must be in the future")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        token_sha256=hashlib.sha256(secret.encode()).hexdigest(),
        expires_at=expires_at,
        **fields,
    )
    return CreatedToken(token=token, secret=secret)


def api_token_revoke(*, token: ApiToken, revoked_by: AbstractBaseUser) -> ApiToken:
    if token.publisher is None:
        if token.created_by_id != revoked_by.pk:
            raise PermissionDenied("a personal token can only be revoked by the user who created it")
    elif not may_publish(revoked_by, token.publisher):
        raise PermissionDenied(f"you are not a member of {token.publisher.name}")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def api_token_create_personal(
    *, user: AbstractBaseUser, name: str, expires_at: datetime | None = None
) -> CreatedToken:
    """Mint a personal token with the deploy permission: it acts for `user` alone, on
    deployments, and can never publish."""
    if not user.is_authenticated or not user.is_active:
        raise PermissionDenied("only an active, signed-in user may create a personal token")
    return _token_mint(
        publisher=None, created_by=user, name=name, permission=ApiToken.Permission.DEPLOY, expires_at=expires_at
    )
