from django.contrib import admin

from .models import ApiToken, Build, Membership, Publisher, Tag, Template, TemplateVersion, VersionRequirement


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Publisher)
class PublisherAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    search_fields = ["name"]


@admin.register(Template)
class TemplateAdmin(admin.ModelAdmin):
    list_display = ["name", "title", "tier", "kind", "visibility", "publisher", "latest_version", "needs_gpu"]
    list_filter = ["tier", "kind", "visibility", "needs_gpu"]
    list_select_related = ["publisher", "latest_version"]
    search_fields = ["name", "title", "summary"]
    # Catalog fields follow the latest version; only visibility is an editorial choice.
    readonly_fields = ["name", "tier", "kind", "title", "summary", "needs_gpu", "latest_version", "publisher", "tags"]


class RequirementInline(admin.TabularInline):
    model = VersionRequirement
    fk_name = "version"
    extra = 0
    can_delete = False
    readonly_fields = ["template", "version_range", "alias"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(TemplateVersion)
class TemplateVersionAdmin(admin.ModelAdmin):
    list_display = ["template", "version", "bundle_sha256", "yanked", "created_at"]
    list_filter = ["yanked"]
    list_select_related = ["template"]
    search_fields = ["template__name", "version", "bundle_sha256"]
    inlines = [RequirementInline]
    exclude = ["readme_html"]

    def get_readonly_fields(self, request, obj=None):
        # Versions are immutable: the admin shows them, never edits them.
        return [field.name for field in self.model._meta.fields if field.name != "readme_html"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "publisher", "permission", "created_by", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["permission"]
    list_select_related = ["publisher", "created_by"]
    search_fields = ["name", "prefix", "publisher__name"]
    # Only the hash is stored; nothing here could show a token again.
    readonly_fields = ["prefix", "token_sha256", "created_by", "created_at", "last_used_at"]


@admin.register(Build)
class BuildAdmin(admin.ModelAdmin):
    list_display = ["pk", "version", "status", "backend", "cache_hit", "duration_seconds", "created_at"]
    list_filter = ["status", "backend", "cache_hit"]
    list_select_related = ["version__template"]
    search_fields = ["version__template__name", "cache_key", "image_digest"]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False
