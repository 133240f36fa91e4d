"""The jobs API: start a job (its `file` inputs as multipart uploads), read it and delete it,
with a personal deploy token. Thin: each view checks its input and calls one service or selector."""

import json

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, generics, serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from ..job_deletion import job_delete
from ..job_selectors import job_of, jobs_of
from ..jobs import UploadedInput, job_create
from ..models import Job, JobArtifact
from ..services import DeploymentRejected
from .permissions import MayDeploy
from .serializers import KEY_HINT, KEY_PATTERN, DeploymentErrorSerializer
from .views import _deployable_version, _invalid, _rejected


class JobOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobArtifact
        fields = ["name", "path", "sha256", "size"]
        read_only_fields = fields


class JobSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="handle", read_only=True, help_text="The job's public handle, e.g. j-k2m9x4qabc")
    template = serializers.CharField(source="version.template.name", read_only=True)
    version = serializers.CharField(source="version.version", read_only=True)
    node = serializers.CharField(source="node.name", read_only=True, allow_null=True)
    outputs = JobOutputSerializer(source="artifacts", many=True, read_only=True,
                                  help_text="Each declared output, stored by digest, once it succeeded")
    metrics = serializers.JSONField(read_only=True, help_text="What the job wrote in its metrics.json")
    log_tail = serializers.CharField(read_only=True, help_text="Its log's last lines, kept when it finished")

    class Meta:
        model = Job
        fields = ["id", "template", "version", "state", "reason", "inputs", "node", "metrics", "outputs", "log_tail",
                  "created_at", "started_at", "finished_at"]
        read_only_fields = fields


class JobCreateSerializer(serializers.Serializer):
    template = serializers.SlugField(max_length=64, help_text="The job template's name, e.g. finetune-classifier")
    version = serializers.CharField(max_length=64, required=False, help_text="Default: the latest version")
    inputs = serializers.JSONField(required=False, default=dict,
                                   help_text="The plain inputs by name (a JSON object); each `file` input is a "
                                             "multipart part named after the input")
    idempotency_key = serializers.RegexField(KEY_PATTERN, required=False, error_messages={"invalid": KEY_HINT},
                                             help_text="The same key again returns the same job")

    def validate_inputs(self, value):
        # Multipart sends the object as text.
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise serializers.ValidationError("send a JSON object of input names and values") from None
        if not isinstance(value, dict):
            raise serializers.ValidationError("send a JSON object of input names and values")
        return value


class JobList(generics.ListAPIView):
    """GET: your jobs, newest first (paginated). POST: run a `kind: job` template version;
    multipart when it has `file` inputs."""

    permission_classes = [MayDeploy]
    serializer_class = JobSerializer
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def get_queryset(self):
        return jobs_of(self.request.user).prefetch_related("artifacts")

    @extend_schema(request=JobCreateSerializer, responses={201: JobSerializer, 200: JobSerializer,
                                                           400: DeploymentErrorSerializer, 404: DeploymentErrorSerializer,
                                                           409: DeploymentErrorSerializer})
    def post(self, request: Request) -> Response:
        payload = JobCreateSerializer(data=request.data)
        if not payload.is_valid():
            return _invalid(payload)
        data = payload.validated_data
        version = _deployable_version(request, data["template"], data.get("version"))
        uploads = [UploadedInput(name=name, file=upload, filename=upload.name) for name, upload in request.FILES.items()]
        key = data.get("idempotency_key")
        existed = bool(key) and Job.objects.filter(owner=request.user, idempotency_key=key).exists()
        try:
            job = job_create(owner=request.user, version=version, inputs=data["inputs"], files=uploads, idempotency_key=key)
        except DeploymentRejected as exc:
            return _rejected(exc)
        return Response(JobSerializer(job).data, status=status.HTTP_200_OK if existed else status.HTTP_201_CREATED)


class JobDetail(generics.GenericAPIView):
    """GET: one of your jobs: its state, reason, outputs by digest and metrics. DELETE: remove a
    finished job, with the files it stored that no other job uses."""

    permission_classes = [MayDeploy]
    serializer_class = JobSerializer

    def get(self, request: Request, handle: str) -> Response:
        return Response(JobSerializer(self._own(request, handle)).data)

    @extend_schema(responses={204: None, 404: DeploymentErrorSerializer, 409: DeploymentErrorSerializer})
    def delete(self, request: Request, handle: str) -> Response:
        try:
            job_delete(job=self._own(request, handle), by=request.user)
        except DeploymentRejected as exc:
            return _rejected(exc)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _own(self, request: Request, handle: str) -> Job:
        job = job_of(request.user, handle)
        if job is None:
            raise exceptions.NotFound("No job with that id (or it is not yours).")
        return job
