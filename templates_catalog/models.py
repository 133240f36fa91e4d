from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.db.models import Q

from .manifest import Kind, Tier


class Publisher(models.Model):
    """An organisation that publishes templates; users belong to it through memberships."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="publishers")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    publisher = models.ForeignKey(Publisher, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["publisher", "user"], name="membership_unique"),
            models.CheckConstraint(condition=Q(role__in=["owner", "member"]), name="membership_role_valid"),
        ]


class PublisherInvitation(models.Model):
    """An owner's invitation to join a publisher. Only the sha256 of the link's secret is
    stored; the link is shown once to the owner and emailed to the address."""

    publisher = models.ForeignKey(Publisher, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    token_sha256 = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(role__in=["owner", "member"]), name="invitation_role_valid"),
            models.CheckConstraint(condition=Q(token_sha256__regex=r"^[0-9a-f]{64}$"), name="invitation_sha256_hex"),
        ]

    def __str__(self) -> str:
        return f"{self.email} to {self.publisher_id} as {self.role}"


class Tag(models.Model):
    name = models.CharField(max_length=32, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Template(models.Model):
    class Visibility(models.TextChoices):
        PUBLIC = "public"
        PRIVATE = "private"

    publisher = models.ForeignKey(Publisher, on_delete=models.PROTECT, related_name="templates")
    name = models.SlugField(max_length=64, unique=True)
    tier = models.CharField(max_length=16, choices=[(t.value, t.value.title()) for t in Tier])
    kind = models.CharField(max_length=16, choices=[(k.value, k.value.title()) for k in Kind])
    title = models.CharField(max_length=80)
    summary = models.CharField(max_length=300)
    tags = models.ManyToManyField(Tag, related_name="templates", blank=True)
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PUBLIC)
    needs_gpu = models.BooleanField(default=False)
    # The version the catalog shows: the highest non-yanked release. Kept here so
    # list pages read it with one join instead of a query per row.
    latest_version = models.ForeignKey(
        "TemplateVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Lowercased name, title, summary and tags: what the catalog search matches.
    search_text = models.TextField(blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(tier__in=[t.value for t in Tier]), name="template_tier_valid"),
            models.CheckConstraint(condition=Q(kind__in=[k.value for k in Kind]), name="template_kind_valid"),
            models.CheckConstraint(condition=Q(visibility__in=["public", "private"]), name="template_visibility_valid"),
            models.CheckConstraint(condition=~Q(name=""), name="template_name_not_empty"),
        ]
        indexes = [
            models.Index(fields=["tier", "name"]),
            models.Index(fields=["visibility", "publisher"]),
            # The catalog's "newest" sort, walked backwards.
            models.Index(fields=["created_at", "id"], name="template_created_idx"),
            # Everything the visibility filter reads: counting a large catalog page is an
            # index-only scan instead of a walk over the rows.
            models.Index(fields=["visibility", "publisher", "latest_version"], name="template_visible_idx"),
        ]

    def __str__(self) -> str:
        return self.name


class TemplateSearch(models.Model):
    """PostgreSQL's weighted full-text vectors of a template (templates_catalog.search),
    GIN-indexed. A table of its own: a vector holds the README's start (about 600 bytes
    stored), and in the template row it made every list, filter and count read it. Empty on SQLite."""

    template = models.OneToOneField(Template, on_delete=models.CASCADE, primary_key=True, related_name="search")
    # Every field but the README: which field a match is in, by its weights (search.FIELD_TIERS).
    head = SearchVectorField()
    vector = SearchVectorField()


class SearchWord(models.Model):
    """A word of some template's name, title, summary or tags: the vocabulary a search
    with a typo is corrected against (trigram-indexed on PostgreSQL, empty on SQLite).
    Words are never removed; a stale one only finds nothing."""

    word = models.CharField(max_length=64, unique=True)

    def __str__(self) -> str:
        return self.word


class TemplateVersion(models.Model):
    """One published version. Immutable: only the yank fields may change after creation."""

    MUTABLE_FIELDS = frozenset({"yanked", "yanked_reason", "yanked_at"})

    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=64)
    major = models.PositiveIntegerField()
    minor = models.PositiveIntegerField()
    patch = models.PositiveIntegerField()
    # Empty for a release; sorts after every pre-release of the same numbers.
    prerelease = models.CharField(max_length=64, blank=True, default="")
    manifest = models.JSONField()
    bundle_sha256 = models.CharField(max_length=64)
    bundle_size = models.BigIntegerField()
    bundle_path = models.CharField(max_length=255)
    readme = models.TextField(blank=True, default="")
    readme_html = models.TextField(blank=True, default="")
    changelog = models.TextField(blank=True, default="")
    changelog_html = models.TextField(blank=True, default="")
    # [[path, size in bytes], ...] of the bundle's files. Empty only for versions published
    # before it was recorded whose bundle could not be read back (see migration 0007).
    files = models.JSONField(default=list, blank=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Where a version made by the hub came from, as plain data (e.g. the job whose output it
    # serves: its handle, its inputs' and outputs' digests, its metrics); empty for an upload.
    provenance = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    yanked = models.BooleanField(default=False)
    yanked_reason = models.CharField(max_length=300, blank=True, default="")
    yanked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["template", "-major", "-minor", "-patch"]
        constraints = [
            models.UniqueConstraint(fields=["template", "version"], name="version_unique_per_template"),
            models.CheckConstraint(condition=Q(bundle_sha256__regex=r"^[0-9a-f]{64}$"), name="version_sha256_hex"),
            models.CheckConstraint(condition=Q(bundle_size__gt=0), name="version_bundle_not_empty"),
            models.CheckConstraint(condition=Q(yanked=False) | Q(yanked_at__isnull=False), name="version_yank_dated"),
        ]

    def __str__(self) -> str:
        return f"{self.template_id and self.template.name}@{self.version}"

    def save(self, *args, **kwargs) -> None:
        # The hub promises a version never changes under a deployment; only yanking may.
        if not self._state.adding:
            update_fields = kwargs.get("update_fields")
            if update_fields is None or not set(update_fields) <= self.MUTABLE_FIELDS:
                raise ValueError("A published template version is immutable; only its yank state may change.")
        super().save(*args, **kwargs)

    @property
    def short_digest(self) -> str:
        return self.bundle_sha256[:12]

    @property
    def resources(self) -> dict:
        return self.manifest.get("resources", {})


class BundleProblem(models.Model):
    """A version whose stored bundle failed a check: written by `manage.py storage_check` and
    by a download that found no blob, removed when a check passes again. The version row
    itself never changes, so the finding lives beside it."""

    class Kind(models.TextChoices):
        MISSING = "missing", "the stored bundle is missing"
        MISMATCH = "mismatch", "the stored bundle does not match its digest"

    version = models.OneToOneField(TemplateVersion, on_delete=models.CASCADE, related_name="bundle_problem")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    detected_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.version}: {self.get_kind_display()}"


class VersionRequirement(models.Model):
    """An edge a version declares in `requires`: it needs `template` in `version_range`,
    reachable under `<ALIAS>_URL`."""

    version = models.ForeignKey(TemplateVersion, on_delete=models.CASCADE, related_name="requirements")
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="required_by_edges")
    version_range = models.CharField(max_length=100)
    alias = models.CharField(max_length=32)

    class Meta:
        ordering = ["alias"]
        constraints = [
            models.UniqueConstraint(fields=["version", "alias"], name="requirement_alias_unique"),
            models.UniqueConstraint(fields=["version", "template"], name="requirement_template_unique"),
        ]

    @property
    def env_var(self) -> str:
        return f"{self.alias.upper()}_URL"

    @property
    def token_env_var(self) -> str:
        """The endpoint token to send it as `Authorization: Bearer`, made for this edge at each launch."""
        return f"{self.alias.upper()}_TOKEN"


class ApiToken(models.Model):
    """An API token: a publisher's (read, publish) or a user's personal one (deploy).
    Only the sha256 of the token is stored; the token itself is shown once, at creation."""

    class Permission(models.TextChoices):
        READ = "read", "Read only"
        PUBLISH = "publish", "Read and publish"
        DEPLOY = "deploy", "Deploy (personal)"

    # Empty for a personal token, which acts for its creator alone.
    publisher = models.ForeignKey(Publisher, on_delete=models.CASCADE, related_name="tokens", null=True, blank=True)
    name = models.CharField(max_length=64)
    # The first characters of the token, so people can tell their tokens apart.
    prefix = models.CharField(max_length=16)
    token_sha256 = models.CharField(max_length=64, unique=True)
    permission = models.CharField(max_length=16, choices=Permission.choices, default=Permission.READ)
    # Empty: every template of the publisher. Otherwise only these template names.
    template_names = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(permission__in=["read", "publish", "deploy"]), name="token_permission_valid"
            ),
            # Deploying is personal; publishing and reading belong to a publisher.
            models.CheckConstraint(
                condition=Q(permission="deploy", publisher__isnull=True)
                | (~Q(permission="deploy") & Q(publisher__isnull=False)),
                name="token_deploy_is_personal",
            ),
            models.CheckConstraint(condition=Q(token_sha256__regex=r"^[0-9a-f]{64}$"), name="token_sha256_hex"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def covers(self, template_name: str) -> bool:
        return not self.template_names or template_name in self.template_names

    @property
    def can_publish(self) -> bool:
        return self.permission == self.Permission.PUBLISH

    @property
    def can_deploy(self) -> bool:
        return self.permission == self.Permission.DEPLOY


class Build(models.Model):
    """One request to turn a version into an image. Several builds of one version may
    exist over time; the cache key decides whether any of them really builds."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    class FailureKind(models.TextChoices):
        TEMPLATE = "template", "the template's"  # fixed by publishing a new version
        HUB = "hub", "the hub's"  # building again may work once the hub is fixed

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    version = models.ForeignKey(TemplateVersion, on_delete=models.PROTECT, related_name="builds")
    # The BUILD_BACKEND asked for ("auto" included); the worker records the one it used.
    backend = models.CharField(max_length=200)
    backend_used = models.CharField(max_length=200, blank=True, default="")
    base_image = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    cache_key = models.CharField(max_length=64, blank=True, default="")
    cache_hit = models.BooleanField(default=False)
    lock = models.JSONField(default=list, blank=True)
    # The Debian packages (file, sha256) installed for runtime.system_packages.
    system_lock = models.JSONField(default=list, blank=True)
    image_reference = models.CharField(max_length=500, blank=True, default="")
    image_digest = models.CharField(max_length=100, blank=True, default="")
    log = models.TextField(blank=True, default="")
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.FloatField(null=True, blank=True)
    failure_kind = models.CharField(max_length=16, choices=FailureKind.choices, blank=True, default="")
    # The start check: True when the built service answered its ready path, None for a job
    # (nothing to start) and for builds that did not get that far.
    verified = models.BooleanField(null=True, blank=True)
    ready_seconds = models.FloatField(null=True, blank=True)
    verify_log = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["queued", "running", "succeeded", "failed"]), name="build_status_valid"
            ),
            # Two requests for the same version on the same backend make one build.
            models.UniqueConstraint(
                fields=["version", "backend", "base_image"],
                condition=Q(status__in=["queued", "running"]),
                name="build_one_active_per_version",
            ),
            models.CheckConstraint(
                condition=~Q(status="succeeded") | ~Q(image_reference=""), name="build_success_has_image"
            ),
            models.CheckConstraint(condition=~Q(status="failed") | ~Q(error=""), name="build_failure_has_reason"),
        ]

    def __str__(self) -> str:
        return f"build {self.pk} of {self.version_id} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.splitlines()[-lines:])

    @property
    def log_tail_long(self) -> str:
        return self.log_tail(400)
