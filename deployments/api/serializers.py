from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..gateway import gateway_url
from ..models import Deployment, DeploymentEvent, EndpointToken
from ..selectors import deployment_usage

KEY_PATTERN = r"^[\x21-\x7e]{1,100}$"
KEY_HINT = "use 1-100 printable ASCII characters without spaces"


class ResourcesSerializer(serializers.Serializer):
    gpus = serializers.IntegerField()
    gpu_memory_gb = serializers.DecimalField(max_digits=6, decimal_places=1)
    cpu = serializers.DecimalField(max_digits=6, decimal_places=2)
    memory_gb = serializers.DecimalField(max_digits=7, decimal_places=1)


class UsageSerializer(serializers.Serializer):
    requests = serializers.IntegerField(help_text="Requests through the gateway")
    errors = serializers.IntegerField(help_text="Of those, answered with a 5xx or not at all")
    bytes_in = serializers.IntegerField(help_text="Request body bytes")
    bytes_out = serializers.IntegerField(help_text="Response body bytes")
    awake_seconds = serializers.FloatField(help_text="Time it was starting or running (sleeping and stopped time is free)")
    cost = serializers.DecimalField(max_digits=16, decimal_places=6, help_text="Awake time at its nodes' prices per hour")


class DeploymentSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="handle", read_only=True, help_text="The deployment's public handle, e.g. d-k2m9x4qabc")
    template = serializers.CharField(source="version.template.name", read_only=True)
    version = serializers.CharField(source="version.version", read_only=True)
    node = serializers.CharField(source="node.name", read_only=True, allow_null=True)
    resources = ResourcesSerializer(source="*", read_only=True)
    reason = serializers.CharField(read_only=True, help_text="Why it failed, when state is `failed`")
    idle_timeout_seconds = serializers.IntegerField(read_only=True, help_text="It sleeps after this long without a request; 0: never")
    waking = serializers.SerializerMethodField(help_text="A request woke it and it is on its way back up")
    last_wake_seconds = serializers.FloatField(read_only=True, allow_null=True, help_text="How long its last wake took")
    usage = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField(
        help_text="Call it here, with `Authorization: Bearer <endpoint token>`: /d/<id> on the hub"
    )
    endpoint = serializers.CharField(
        read_only=True, help_text="Where the hub itself reaches the running container; clients use `url`"
    )
    lock = serializers.JSONField(
        read_only=True, help_text="What its `requires` resolved to: `root`, and `parts` (template, version, digest, "
                                  "requires by alias); empty for a template that requires nothing"
    )

    class Meta:
        model = Deployment
        fields = [
            "id", "template", "version", "state", "reason", "url", "endpoint", "inputs", "node", "price_per_hour",
            "resources", "restarts", "created_at", "updated_at", "started_at", "stopped_at",
            "idle_timeout_seconds", "waking", "last_wake_seconds", "last_request_at", "usage", "lock",
        ]
        read_only_fields = fields

    def get_url(self, deployment: Deployment) -> str:
        return gateway_url(self.context["request"], deployment.handle)

    def get_waking(self, deployment: Deployment) -> bool:
        return deployment.wake_started_at is not None

    @extend_schema_field(UsageSerializer)
    def get_usage(self, deployment: Deployment) -> dict:
        return UsageSerializer(deployment_usage(deployment)).data


class DeploymentCreateSerializer(serializers.Serializer):
    template = serializers.SlugField(max_length=64, help_text="The template's name, e.g. minilm-embeddings")
    version = serializers.CharField(max_length=64, required=False, help_text="Default: the latest version")
    inputs = serializers.JSONField(required=False, default=dict, help_text="The template's inputs by name")
    idle_timeout_seconds = serializers.IntegerField(
        required=False, help_text="Sleep after this many seconds without a request (0: never); default: the hub's, 900"
    )
    idempotency_key = serializers.RegexField(
        KEY_PATTERN, required=False,
        help_text="The same key again returns the same deployment (or send the Idempotency-Key header)",
        error_messages={"invalid": KEY_HINT},
    )
    dry_run = serializers.BooleanField(
        required=False, default=False,
        help_text="Deploy nothing: answer the plan (each part, its node or the deployment it reuses, its price, the total per hour)",
    )


class PlannedPartSerializer(serializers.Serializer):
    template = serializers.CharField()
    version = serializers.CharField()
    reuses = serializers.CharField(help_text="The handle of your deployment it reuses; empty when it deploys a new one")
    node = serializers.CharField()
    price_per_hour = serializers.DecimalField(max_digits=9, decimal_places=4, allow_null=True)
    problem = serializers.CharField(help_text="Why no node can take it now; empty when one can")


class PlanSerializer(serializers.Serializer):
    parts = PlannedPartSerializer(many=True, help_text="In deploy order: every part after what it requires, the template last")
    total_per_hour = serializers.DecimalField(max_digits=12, decimal_places=4)


class DeploymentEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeploymentEvent
        fields = ["at", "from_state", "to_state", "message"]
        read_only_fields = fields


class DeploymentLogsSerializer(serializers.Serializer):
    id = serializers.CharField()
    logs = serializers.CharField(help_text="The last lines its run wrote")


class ErrorItemSerializer(serializers.Serializer):
    field = serializers.CharField()
    message = serializers.CharField()


class DeploymentErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = ErrorItemSerializer(many=True)


class EndpointTokenSerializer(serializers.ModelSerializer):
    active = serializers.BooleanField(source="is_active", read_only=True, help_text="Neither revoked nor expired")

    class Meta:
        model = EndpointToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "revoked_at", "active"]
        read_only_fields = fields


class EndpointTokenCreatedSerializer(EndpointTokenSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="The token itself, shown only in this answer: send it as `Authorization: Bearer <secret>`"
    )

    class Meta(EndpointTokenSerializer.Meta):
        fields = [*EndpointTokenSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class EndpointTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64, help_text="What the token is for (one per client), e.g. staging-app")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, help_text="Default: never")
