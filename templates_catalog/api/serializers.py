from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..manifest.schema import ONE_LINE_HINT, is_one_line
from ..models import Template, TemplateVersion, VersionRequirement
from ..services import MAX_YANK_REASON


class RequirementSerializer(serializers.ModelSerializer):
    template = serializers.SlugRelatedField(slug_field="name", read_only=True)
    env_var = serializers.CharField(read_only=True)

    class Meta:
        model = VersionRequirement
        fields = ["template", "version_range", "alias", "env_var"]


class VersionSerializer(serializers.ModelSerializer):
    template = serializers.SlugRelatedField(slug_field="name", read_only=True)
    requires = RequirementSerializer(source="requirements", many=True, read_only=True)
    bundle_url = serializers.SerializerMethodField()

    class Meta:
        model = TemplateVersion
        fields = [
            "template", "version", "bundle_sha256", "bundle_size", "bundle_url", "created_at",
            "yanked", "yanked_reason", "manifest", "requires",
        ]

    @extend_schema_field(serializers.URLField())
    def get_bundle_url(self, version: TemplateVersion) -> str:
        path = reverse("api:version_bundle", args=[version.template.name, version.version])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class TemplateSerializer(serializers.ModelSerializer):
    publisher = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    tags = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    latest_version = serializers.SlugRelatedField(slug_field="version", read_only=True)
    latest_sha256 = serializers.CharField(source="latest_version.bundle_sha256", read_only=True)

    class Meta:
        model = Template
        fields = [
            "name", "title", "summary", "tier", "kind", "tags", "visibility", "needs_gpu",
            "publisher", "latest_version", "latest_sha256", "updated_at",
        ]


class TemplateDetailSerializer(TemplateSerializer):
    readme_html = serializers.CharField(source="latest_version.readme_html", read_only=True)
    manifest = serializers.JSONField(source="latest_version.manifest", read_only=True)

    class Meta(TemplateSerializer.Meta):
        fields = [*TemplateSerializer.Meta.fields, "readme_html", "manifest"]


def _one_line(value: str) -> None:
    if not is_one_line(value):
        raise serializers.ValidationError(f"must be one line of text {ONE_LINE_HINT}")


class YankSerializer(serializers.Serializer):
    # Not trimmed: the reason is checked exactly as sent, a trailing `\r` included.
    reason = serializers.CharField(
        max_length=MAX_YANK_REASON, allow_blank=False, trim_whitespace=False, validators=[_one_line]
    )


class FieldErrorSerializer(serializers.Serializer):
    field = serializers.CharField()
    message = serializers.CharField()


class PublishErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = FieldErrorSerializer(many=True)
