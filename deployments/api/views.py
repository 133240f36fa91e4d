"""The deployments API: deploy, watch, stop, restart, delete. Thin: each view checks
its input, asks a selector or calls one service."""

import re

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.request import Request
from rest_framework.response import Response

from hub_site.backends import runner_for
from runners.base import RunnerError
from templates_catalog.models import TemplateVersion
from templates_catalog.selectors import template_detail

from ..endpoint_tokens import CreatedEndpointToken, endpoint_token_create, endpoint_token_revoke, endpoint_token_rotate
from ..models import Deployment, EndpointToken
from ..selectors import deployment_events, deployment_of, deployments_of, endpoint_token_of, endpoint_tokens_of
from ..services import (
    DeploymentRejected,
    deployment_create,
    deployment_delete,
    deployment_plan,
    deployment_restart,
    deployment_stop,
)
from .permissions import MayDeploy
from .serializers import (
    KEY_HINT,
    KEY_PATTERN,
    DeploymentCreateSerializer,
    DeploymentErrorSerializer,
    DeploymentEventSerializer,
    DeploymentLogsSerializer,
    DeploymentSerializer,
    EndpointTokenCreatedSerializer,
    EndpointTokenCreateSerializer,
    EndpointTokenSerializer,
    PlanSerializer,
)

LOG_LINES = 200
NOT_YOURS = "No deployment with that id (or it is not yours)."
ERRORS = {400: DeploymentErrorSerializer, 404: DeploymentErrorSerializer, 409: DeploymentErrorSerializer}


def _rejected(exc: DeploymentRejected) -> Response:
    errors = [{"field": field, "message": message} for field, message in exc.errors]
    return Response({"detail": str(exc), "errors": errors}, status=exc.status)


def _invalid(serializer) -> Response:
    errors = [
        {"field": field, "message": str(message)}
        for field, messages in serializer.errors.items()
        for message in messages
    ]
    return Response({"detail": "the request is not valid", "errors": errors}, status=status.HTTP_400_BAD_REQUEST)


class _OwnDeployment(generics.GenericAPIView):
    permission_classes = [MayDeploy]
    serializer_class = DeploymentSerializer
    lookup_url_kwarg = "handle"

    def get_object(self) -> Deployment:
        return _own_deployment(self.request, self.kwargs["handle"])


class DeploymentList(generics.ListAPIView):
    """GET: your deployments, newest first. POST: deploy a template version."""

    permission_classes = [MayDeploy]
    serializer_class = DeploymentSerializer

    def get_queryset(self):
        return deployments_of(self.request.user)

    @extend_schema(
        request=DeploymentCreateSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
                                     description="the same key again returns the same deployment")],
        responses={
            201: DeploymentSerializer,
            200: OpenApiResponse(
                PolymorphicProxySerializer(component_name="DeploymentOrPlan", serializers=[DeploymentSerializer, PlanSerializer],
                                           resource_type_field_name=None),
                description="the same idempotency key was already used: that deployment; or, with `dry_run`, the plan",
            ),
            **ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        payload = DeploymentCreateSerializer(data=request.data)
        if not payload.is_valid():
            return _invalid(payload)
        data = payload.validated_data
        version = _deployable_version(request, data["template"], data.get("version"))
        header = request.headers.get("Idempotency-Key")
        if header is not None and not re.fullmatch(KEY_PATTERN, header):
            return _rejected(DeploymentRejected("the request is not valid", [("Idempotency-Key", KEY_HINT)]))
        key = data.get("idempotency_key") or header
        if data["dry_run"]:
            return self._plan(request, version)
        try:
            result = deployment_create(owner=request.user, version=version, inputs=data["inputs"], idempotency_key=key,
                                       idle_timeout_seconds=data.get("idle_timeout_seconds"))
        except DeploymentRejected as exc:
            return _rejected(exc)
        body = DeploymentSerializer(result.deployment, context={"request": self.request}).data
        return Response(body, status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)

    def _plan(self, request: Request, version: TemplateVersion) -> Response:
        try:
            plan = deployment_plan(owner=request.user, version=version)
        except DeploymentRejected as exc:
            return _rejected(exc)
        return Response(PlanSerializer(plan).data)


def _deployable_version(request: Request, name: str, wanted: str | None) -> TemplateVersion:
    template = template_detail(request.user, name)
    if template is None:
        raise exceptions.NotFound(f"No template named {name!r} (or it is private to another publisher).")
    if wanted is None:
        return TemplateVersion.objects.select_related("template__latest_version").get(pk=template.latest_version_id)
    version = TemplateVersion.objects.select_related("template__latest_version").filter(template=template, version=wanted).first()
    if version is None:
        raise exceptions.NotFound(f"{name} has no version {wanted!r}.")
    return version


class DeploymentDetail(_OwnDeployment):
    """GET: one of your deployments. DELETE: stop it and remove everything it had."""

    def get(self, request: Request, handle: str) -> Response:
        return Response(DeploymentSerializer(self.get_object(), context={"request": self.request}).data)

    @extend_schema(responses={202: DeploymentSerializer, 404: DeploymentErrorSerializer})
    def delete(self, request: Request, handle: str) -> Response:
        deployment = deployment_delete(deployment=self.get_object())
        return Response(DeploymentSerializer(deployment, context={"request": self.request}).data, status=status.HTTP_202_ACCEPTED)


class DeploymentStop(_OwnDeployment):
    @extend_schema(request=None, responses={202: DeploymentSerializer, 404: DeploymentErrorSerializer})
    def post(self, request: Request, handle: str) -> Response:
        deployment = deployment_stop(deployment=self.get_object())
        return Response(DeploymentSerializer(deployment, context={"request": self.request}).data, status=status.HTTP_202_ACCEPTED)


class DeploymentRestart(_OwnDeployment):
    @extend_schema(request=None, responses={202: DeploymentSerializer, 404: DeploymentErrorSerializer,
                                            409: DeploymentErrorSerializer})
    def post(self, request: Request, handle: str) -> Response:
        try:
            deployment = deployment_restart(deployment=self.get_object())
        except DeploymentRejected as exc:
            return _rejected(exc)
        return Response(DeploymentSerializer(deployment, context={"request": self.request}).data, status=status.HTTP_202_ACCEPTED)


class DeploymentEvents(generics.ListAPIView):
    """Every state change of one of your deployments, oldest first."""

    permission_classes = [MayDeploy]
    serializer_class = DeploymentEventSerializer

    def get_queryset(self):
        return deployment_events(_own_deployment(self.request, self.kwargs["handle"]))


class DeploymentLogs(_OwnDeployment):
    serializer_class = DeploymentLogsSerializer

    @extend_schema(responses={200: DeploymentLogsSerializer, 404: DeploymentErrorSerializer,
                              503: OpenApiResponse(OpenApiTypes.OBJECT, description="its node does not answer")})
    def get(self, request: Request, handle: str) -> Response:
        deployment = self.get_object()
        if deployment.node is None:
            return Response({"id": deployment.handle, "logs": ""})
        try:
            logs = runner_for(deployment.node).logs(deployment.handle, tail=LOG_LINES)
        except RunnerError as exc:
            return Response({"detail": f"node {deployment.node.name} does not answer: {exc}"}, status=503)
        return Response({"id": deployment.handle, "logs": logs})


# --- endpoint tokens ----------------------------------------------------------------


class EndpointTokenList(generics.ListAPIView):
    """GET: the deployment's endpoint tokens (revoked ones too), newest first. POST: a new
    token; its secret is in this answer only."""

    permission_classes = [MayDeploy]
    serializer_class = EndpointTokenSerializer

    def get_queryset(self):
        return endpoint_tokens_of(_own_deployment(self.request, self.kwargs["handle"]))

    @extend_schema(request=EndpointTokenCreateSerializer, responses={201: EndpointTokenCreatedSerializer, **ERRORS})
    def post(self, request: Request, handle: str) -> Response:
        deployment = _own_deployment(request, handle)
        payload = EndpointTokenCreateSerializer(data=request.data)
        if not payload.is_valid():
            return _invalid(payload)
        try:
            created = endpoint_token_create(
                deployment=deployment, created_by=request.user, name=payload.validated_data["name"],
                expires_at=payload.validated_data.get("expires_at"),
            )
        except DeploymentRejected as exc:
            return _rejected(exc)
        return Response(_created_body(created), status=status.HTTP_201_CREATED)


class _OwnEndpointToken(generics.GenericAPIView):
    permission_classes = [MayDeploy]
    serializer_class = EndpointTokenSerializer

    def get_object(self) -> EndpointToken:
        token = endpoint_token_of(_own_deployment(self.request, self.kwargs["handle"]), self.kwargs["token_id"])
        if token is None:
            raise exceptions.NotFound("This deployment has no endpoint token with that id.")
        return token


class EndpointTokenRevoke(_OwnEndpointToken):
    """The token stops working at once; it stays listed, marked revoked."""

    @extend_schema(request=None, responses={200: EndpointTokenSerializer, 404: DeploymentErrorSerializer})
    def post(self, request: Request, handle: str, token_id: int) -> Response:
        token = endpoint_token_revoke(token=self.get_object(), revoked_by=request.user)
        return Response(EndpointTokenSerializer(token).data)


class EndpointTokenRotate(_OwnEndpointToken):
    """A new secret under the same name and expiry; the old one stops working."""

    @extend_schema(request=None, responses={201: EndpointTokenCreatedSerializer, 404: DeploymentErrorSerializer,
                                            409: DeploymentErrorSerializer})
    def post(self, request: Request, handle: str, token_id: int) -> Response:
        try:
            created = endpoint_token_rotate(token=self.get_object(), rotated_by=request.user)
        except DeploymentRejected as exc:
            return _rejected(exc)
        return Response(_created_body(created), status=status.HTTP_201_CREATED)


def _own_deployment(request: Request, handle: str) -> Deployment:
    deployment = deployment_of(request.user, handle)
    if deployment is None:
        raise exceptions.NotFound(NOT_YOURS)
    return deployment


def _created_body(created: CreatedEndpointToken) -> dict:
    created.token.secret = created.secret
    return EndpointTokenCreatedSerializer(created.token).data

